//! The Kubernetes objects of a cluster, built from its spec: member Pods,
//! their PersistentVolumeClaims, the peer and client Services and the
//! PodDisruptionBudget. Pure functions, so every field is unit-tested
//! without an API server. Names and labels follow the CoreOS operator, so
//! dashboards, selectors and runbooks written for it keep working.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::api::{EtcdCluster, PodPolicy};
use crate::controller::{MemberPlan, MemberUrls, StartMode};

pub const LABEL_APP: &str = "app";
pub const LABEL_CLUSTER: &str = "etcd_cluster";
/// The member name, on Pods and PVCs (CoreOS `etcd_node`).
pub const LABEL_NODE: &str = "etcd_node";
/// The etcd version a member runs (CoreOS `etcd.version`).
pub const ANNOTATION_VERSION: &str = "etcd.version";
/// The extra etcd flags a member Pod was created with (a JSON list), so a
/// change of the spec's flags is seen without parsing the command line.
pub const ANNOTATION_FLAGS: &str = "etcd.database.coreos.com/etcd-flags";
/// The cluster incarnation token, so a Pod recreated for a member keeps it.
pub const ANNOTATION_TOKEN: &str = "etcd.database.coreos.com/cluster-token";
pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
/// etcd's metrics and /health listener (plain HTTP), for the readiness probe.
pub const METRICS_PORT: i32 = 2381;
/// Where member data lives in the Pod (CoreOS layout).
pub const DATA_MOUNT: &str = "/var/etcd";
pub const DATA_DIR: &str = "/var/etcd/data";
const DATA_VOLUME: &str = "etcd-data";
/// CoreOS mount points of the static TLS Secrets.
const PEER_TLS_DIR: &str = "/etc/etcdtls/member/peer-tls";
const SERVER_TLS_DIR: &str = "/etc/etcdtls/member/server-tls";
/// CoreOS default image repository.
pub const DEFAULT_REPOSITORY: &str = "quay.io/coreos/etcd";
/// The field manager of every object the operator applies.
pub const FIELD_MANAGER: &str = "etcd-operator";

/// Labels every object of the cluster carries (and the Services select on).
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_APP.to_string(), "etcd".to_string()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
    ])
}

/// `app=etcd,etcd_cluster=<name>`, for list calls.
pub fn cluster_selector(cluster: &str) -> String {
    format!("{LABEL_APP}=etcd,{LABEL_CLUSTER}={cluster}")
}

fn namespace(cluster: &EtcdCluster) -> String {
    cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn name(cluster: &EtcdCluster) -> String {
    cluster.metadata.name.clone().unwrap_or_default()
}

/// The controller reference every object carries, so deleting the
/// EtcdCluster garbage-collects its Pods, PVCs, Services and budget.
pub fn owner(cluster: &EtcdCluster) -> Vec<OwnerReference> {
    cluster.controller_owner_ref(&()).into_iter().collect()
}

fn meta(cluster: &EtcdCluster, object: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(object.to_string()),
        namespace: Some(namespace(cluster)),
        labels: Some(cluster_labels(&name(cluster))),
        owner_references: Some(owner(cluster)),
        ..Default::default()
    }
}

fn static_tls(cluster: &EtcdCluster) -> (Option<String>, Option<String>) {
    let member = cluster
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.static_tls.as_ref())
        .and_then(|s| s.member.as_ref());
    (
        member.and_then(|m| m.peer_secret.clone()),
        member.and_then(|m| m.server_secret.clone()),
    )
}

/// `<member>.<cluster>.<namespace>.svc[.<domain>]`: the member's stable
/// name through the headless peer Service (Pod hostname + subdomain).
pub fn member_host(cluster: &EtcdCluster, member: &str) -> String {
    let mut host = format!("{member}.{}.{}.svc", name(cluster), namespace(cluster));
    if let Some(domain) = cluster
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.cluster_domain.as_deref())
        .map(|d| d.trim_matches('.'))
        .filter(|d| !d.is_empty())
    {
        host.push('.');
        host.push_str(domain);
    }
    host
}

/// The URLs a member advertises, and the operator dials: stable DNS names,
/// so a member recreated with its PVC on another IP keeps its identity in
/// the membership, and TLS certificates name them (CoreOS guidance:
/// `*.<cluster>.<namespace>.svc`).
pub fn member_urls(cluster: &EtcdCluster, member: &str) -> MemberUrls {
    let (peer_tls, server_tls) = static_tls(cluster);
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let host = member_host(cluster, member);
    MemberUrls {
        peer: format!("{}://{host}:{PEER_PORT}", scheme(peer_tls.is_some())),
        client: format!("{}://{host}:{CLIENT_PORT}", scheme(server_tls.is_some())),
    }
}

/// The container image of a version: `<repository>:v<version>`.
pub fn image(cluster: &EtcdCluster, version: &str) -> String {
    let repo = cluster
        .spec
        .repository
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REPOSITORY);
    format!("{repo}:v{}", version.trim_start_matches('v'))
}

/// Does the cluster keep member data on PersistentVolumeClaims?
pub fn uses_pvc(cluster: &EtcdCluster) -> bool {
    cluster
        .spec
        .pod
        .as_ref()
        .is_some_and(|p| p.persistent_volume_claim_spec.is_some())
}

/// The etcd command line of a member.
pub fn etcd_command(cluster: &EtcdCluster, plan: &MemberPlan) -> Vec<String> {
    let urls = member_urls(cluster, &plan.name);
    let (peer_tls, server_tls) = static_tls(cluster);
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let initial: Vec<String> = plan
        .initial_cluster
        .iter()
        .map(|(n, p)| format!("{n}={p}"))
        .collect();
    let state = match plan.mode {
        StartMode::Seed | StartMode::Restore => "new",
        StartMode::Join | StartMode::ForceNewCluster => "existing",
    };
    let mut cmd = vec![
        "/usr/local/bin/etcd".to_string(),
        format!("--data-dir={DATA_DIR}"),
        format!("--name={}", plan.name),
        format!("--initial-advertise-peer-urls={}", urls.peer),
        format!(
            "--listen-peer-urls={}://0.0.0.0:{PEER_PORT}",
            scheme(peer_tls.is_some())
        ),
        format!(
            "--listen-client-urls={}://0.0.0.0:{CLIENT_PORT}",
            scheme(server_tls.is_some())
        ),
        format!("--advertise-client-urls={}", urls.client),
        format!("--initial-cluster={}", initial.join(",")),
        format!("--initial-cluster-state={state}"),
        format!("--initial-cluster-token={}", plan.cluster_token),
        // Plain-HTTP /health for the readiness probe, whatever client TLS
        // requires of the client port.
        format!("--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}"),
    ];
    if plan.mode == StartMode::ForceNewCluster {
        cmd.push("--force-new-cluster".into());
    }
    if peer_tls.is_some() {
        cmd.extend([
            "--peer-client-cert-auth=true".to_string(),
            format!("--peer-trusted-ca-file={PEER_TLS_DIR}/peer-ca.crt"),
            format!("--peer-cert-file={PEER_TLS_DIR}/peer.crt"),
            format!("--peer-key-file={PEER_TLS_DIR}/peer.key"),
        ]);
    }
    if server_tls.is_some() {
        cmd.extend([
            "--client-cert-auth=true".to_string(),
            format!("--trusted-ca-file={SERVER_TLS_DIR}/server-ca.crt"),
            format!("--cert-file={SERVER_TLS_DIR}/server.crt"),
            format!("--key-file={SERVER_TLS_DIR}/server.key"),
        ]);
    }
    cmd.extend(plan.flags.iter().cloned());
    cmd
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CoreOS default init container image.
pub const DEFAULT_BUSYBOX: &str = "busybox:1.36";
/// Where a restoring member's init container puts the fetched snapshot.
const SNAPSHOT_FILE: &str = "/var/etcd/snapshot.db";

fn data_mount() -> VolumeMount {
    VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_MOUNT.into(),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The init container image: the policy's `busyboxImage`, or ours.
fn busybox(cluster: &EtcdCluster) -> String {
    cluster
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.busybox_image.clone())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| DEFAULT_BUSYBOX.to_string())
}

/// The user and group member Pods run as when `spec.pod.securityContext` is
/// not set: the unprivileged `nonroot` id the operator's own chart uses.
pub const MEMBER_UID: i64 = 65532;

/// The Pod-level security of member Pods: the policy's `securityContext` as
/// given (a CoreOS user keeps theirs), else non-root with the data volume
/// owned by the members' group (`fsGroup`); the runtime's default seccomp
/// profile unless the policy names one. With [`container_security`] this is
/// what the Pod Security `restricted` level asks for.
fn pod_security(policy: &PodPolicy) -> PodSecurityContext {
    let mut sc = policy
        .security_context
        .clone()
        .unwrap_or_else(|| PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(MEMBER_UID),
            run_as_group: Some(MEMBER_UID),
            fs_group: Some(MEMBER_UID),
            ..Default::default()
        });
    sc.seccomp_profile.get_or_insert_with(|| SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
    sc
}

/// Every container the operator runs for a member (etcd, its init
/// containers, a restore probe): no privilege escalation, no capabilities,
/// nothing written outside the data volume. etcd, `etcdutl` and busybox
/// need none of them.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// Requests when `spec.pod.resources` is not set: a floor, so members are
/// `Burstable` (not the first evicted, as `BestEffort` Pods are) without
/// claiming much of a small node. No limits: a memory limit kills etcd
/// under a load spike. Size real clusters with `spec.pod.resources`.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        ..Default::default()
    }
}

/// The init container every member starts with: wait until the member's
/// own DNS name resolves. etcd dials and advertises that name at once, and
/// a peer with client-certificate authentication checks a joining member's
/// certificate against the reverse DNS name of its address; both exist only
/// once cluster DNS has seen the Pod in the headless Service, a moment after
/// the Pod has its address. Started earlier, etcd exits ("could not retrieve
/// cluster information", "does not match any of DNSNames") and the member
/// is lost. busybox's `nslookup` does not apply the search list to a name
/// with dots, so the script tries the name under each search domain itself
/// (the Pod's resolver does, and so finds `.svc.<cluster domain>` whatever
/// that domain is). `spec.pod.DNSTimeoutInSecond` bounds the wait (0 or unset: no
/// bound), as in the CoreOS operator; on timeout the Pod fails and the
/// operator sees a failed member.
pub fn dns_wait_container(cluster: &EtcdCluster, member: &str) -> Container {
    let timeout = cluster
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.dns_timeout_in_second)
        .unwrap_or(0)
        .max(0);
    let host = member_host(cluster, member);
    Container {
        name: "check-dns".into(),
        image: Some(busybox(cluster)),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                r#"timeout={timeout}; waited=0
resolves() {{
  for domain in "" $(sed -n 's/^search //p' /etc/resolv.conf); do
    nslookup "$MEMBER_HOST${{domain:+.$domain}}" >/dev/null 2>&1 && return 0
  done
  return 1
}}
until resolves; do
  if [ "$timeout" -gt 0 ] && [ "$waited" -ge "$timeout" ]; then
    echo "$MEMBER_HOST did not resolve within ${{timeout}}s (spec.pod.DNSTimeoutInSecond)"; exit 1
  fi
  sleep 1; waited=$((waited + 1))
done"#
            ),
        ]),
        env: Some(vec![env("MEMBER_HOST", &host)]),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

/// The volume of a restoring member's snapshot token, mounted into its
/// `fetch-snapshot` init container only.
const TOKEN_VOLUME: &str = "snapshot-token";
const TOKEN_DIR: &str = "/var/run/etcd-operator/snapshot";
const TOKEN_KEY: &str = "token";

/// `<member>-snapshot-token`: the Secret of a restoring member's one-use
/// snapshot token ([`super::snapshots`]).
pub fn restore_token_secret_name(member: &str) -> String {
    format!("{member}-snapshot-token")
}

/// The Secret a restoring member's init container reads its token from.
/// A Secret, not a Pod field: the members' Pod specs are readable by
/// anyone allowed to `view` the namespace; its Secrets are not. It carries
/// the cluster's labels and owner, so it goes with the cluster at the latest;
/// the operator deletes it once the token is used or expired.
pub fn restore_token_secret(cluster: &EtcdCluster, member: &str, token: &str) -> Secret {
    Secret {
        metadata: meta(cluster, &restore_token_secret_name(member)),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            k8s_openapi::ByteString(token.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Make `pod` a restored member: after the DNS wait, its init containers
/// fetch, restore and remove the snapshot ([`restore_init_containers`]),
/// and the token Secret is a volume of the Pod.
pub fn add_restore(pod: &mut Pod, cluster: &EtcdCluster, plan: &MemberPlan, offer_url: &str) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .extend(restore_init_containers(cluster, plan, offer_url));
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: TOKEN_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(restore_token_secret_name(&plan.name)),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// The init containers of a member restored from a snapshot: fetch it from
/// the operator (busybox `wget` with the offer's bearer token, read from the
/// token Secret's volume), restore it into the data directory with this
/// member's identity (`etcdutl`, or `etcdctl` on 3.4), and delete the
/// fetched file.
pub fn restore_init_containers(
    cluster: &EtcdCluster,
    plan: &MemberPlan,
    offer_url: &str,
) -> Vec<Container> {
    let busybox = busybox(cluster);
    let urls = member_urls(cluster, &plan.name);
    let initial: Vec<String> = plan
        .initial_cluster
        .iter()
        .map(|(n, p)| format!("{n}={p}"))
        .collect();
    let etcd34 =
        crate::controller::Version::parse(&plan.version).is_ok_and(|v| v.minor_line() < (3, 5));
    let restore = vec![
        if etcd34 {
            "/usr/local/bin/etcdctl"
        } else {
            "/usr/local/bin/etcdutl"
        }
        .to_string(),
        "snapshot".into(),
        "restore".into(),
        SNAPSHOT_FILE.into(),
        format!("--name={}", plan.name),
        format!("--initial-cluster={}", initial.join(",")),
        format!("--initial-cluster-token={}", plan.cluster_token),
        format!("--initial-advertise-peer-urls={}", urls.peer),
        format!("--data-dir={DATA_DIR}"),
    ];
    vec![
        Container {
            name: "fetch-snapshot".into(),
            image: Some(busybox.clone()),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "wget -q -O {SNAPSHOT_FILE} --header \"Authorization: Bearer $(cat {TOKEN_DIR}/{TOKEN_KEY})\" \"$SNAPSHOT_URL\""
                ),
            ]),
            env: Some(vec![env("SNAPSHOT_URL", offer_url)]),
            volume_mounts: Some(vec![
                data_mount(),
                VolumeMount {
                    name: TOKEN_VOLUME.into(),
                    mount_path: TOKEN_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            security_context: Some(container_security()),
            ..Default::default()
        },
        Container {
            name: "restore-datadir".into(),
            image: Some(image(cluster, &plan.version)),
            command: Some(restore),
            env: etcd34.then(|| vec![env("ETCDCTL_API", "3")]),
            volume_mounts: Some(vec![data_mount()]),
            security_context: Some(container_security()),
            ..Default::default()
        },
        Container {
            name: "remove-snapshot".into(),
            image: Some(busybox),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("rm -f {SNAPSHOT_FILE}"),
            ]),
            volume_mounts: Some(vec![data_mount()]),
            security_context: Some(container_security()),
            ..Default::default()
        },
    ]
}

/// The Pod of one member.
pub fn member_pod(cluster: &EtcdCluster, plan: &MemberPlan) -> Pod {
    let cluster_name = name(cluster);
    let policy = cluster.spec.pod.clone().unwrap_or_default();
    let (peer_tls, server_tls) = static_tls(cluster);

    // The operator's labels win over the policy's.
    let mut labels = policy.labels.clone().unwrap_or_default();
    labels.extend(cluster_labels(&cluster_name));
    labels.insert(LABEL_NODE.into(), plan.name.clone());
    let mut annotations = policy.annotations.clone().unwrap_or_default();
    annotations.insert(ANNOTATION_VERSION.into(), plan.version.clone());
    annotations.insert(ANNOTATION_TOKEN.into(), plan.cluster_token.clone());
    if !plan.flags.is_empty() {
        annotations.insert(
            ANNOTATION_FLAGS.into(),
            serde_json::to_string(&plan.flags).expect("a list of strings serialises"),
        );
    }

    let mut volumes = vec![if uses_pvc(cluster) {
        Volume {
            name: DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: plan.name.clone(),
                read_only: None,
            }),
            ..Default::default()
        }
    } else {
        Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }
    }];
    let mut mounts = vec![data_mount()];
    if let Some(secret) = &peer_tls {
        volumes.push(secret_volume("member-peer-tls", secret));
        mounts.push(VolumeMount {
            name: "member-peer-tls".into(),
            mount_path: PEER_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if let Some(secret) = &server_tls {
        volumes.push(secret_volume("member-server-tls", secret));
        mounts.push(VolumeMount {
            name: "member-server-tls".into(),
            mount_path: SERVER_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let mut env: Vec<EnvVar> = policy.etcd_env.clone().unwrap_or_default();
    env.retain(|e| !e.name.is_empty());
    let etcd = Container {
        name: "etcd".into(),
        image: Some(image(cluster, &plan.version)),
        command: Some(etcd_command(cluster, plan)),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: CLIENT_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..Default::default()
            },
        ]),
        // Ready once it serves reads with a leader; a learner is not ready
        // until promoted, so the client Service only routes to voters. The
        // metrics listener serves /health without client certificates.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::Int(METRICS_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(1),
            period_seconds: Some(5),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        env: (!env.is_empty()).then_some(env),
        resources: Some(policy.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Default::default()
    };

    let mut affinity = policy.affinity.clone();
    if policy.anti_affinity == Some(true) && affinity.is_none() {
        // CoreOS `antiAffinity: true`: at most one member per node.
        affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            LABEL_CLUSTER.to_string(),
                            cluster_name.clone(),
                        )])),
                        ..Default::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..meta(cluster, &plan.name)
        },
        spec: Some(PodSpec {
            // hostname + subdomain (the headless Service) give the member
            // its DNS name `<member>.<cluster>.<namespace>.svc`.
            hostname: Some(plan.name.clone()),
            subdomain: Some(cluster_name),
            init_containers: Some(vec![dns_wait_container(cluster, &plan.name)]),
            containers: vec![etcd],
            volumes: Some(volumes),
            restart_policy: Some("Never".into()),
            node_selector: policy.node_selector.clone(),
            affinity,
            tolerations: policy.tolerations.clone(),
            security_context: Some(pod_security(&policy)),
            // A member never needs the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// The label that marks a restore's reachability probe (not a member: it
/// carries none of the cluster's member labels).
pub const LABEL_PROBE: &str = "etcd.database.coreos.com/restore-probe";

/// A short-lived Pod that proves, before a restore deletes anything, that
/// a Pod scheduled like the restored members can pull the init image and
/// fetch from the operator's snapshot endpoint: the same `wget` with a
/// bearer token as the members' `fetch-snapshot`, of a tiny probe offer.
pub fn restore_probe_pod(
    cluster: &EtcdCluster,
    plan: &MemberPlan,
    offer: &super::snapshots::Offer,
    probe: &str,
) -> Pod {
    let member = member_pod(cluster, plan);
    let spec = member.spec.unwrap_or_default();
    let mut metadata = meta(cluster, probe);
    metadata.labels = Some(BTreeMap::from([(LABEL_PROBE.to_string(), name(cluster))]));
    Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "fetch-probe".into(),
                image: Some(busybox(cluster)),
                command: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "wget -q -O /dev/null --header \"Authorization: Bearer $SNAPSHOT_TOKEN\" \"$SNAPSHOT_URL\"".into(),
                ]),
                env: Some(vec![
                    env("SNAPSHOT_URL", &offer.url),
                    env("SNAPSHOT_TOKEN", &offer.token),
                ]),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(container_security()),
                ..Default::default()
            }],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(120),
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            tolerations: spec.tolerations,
            security_context: spec.security_context,
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// The PVC holding one member's data (named after the member, like CoreOS).
pub fn member_pvc(
    cluster: &EtcdCluster,
    member: &str,
    version: &str,
) -> Option<PersistentVolumeClaim> {
    let spec = cluster
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.persistent_volume_claim_spec.clone())?;
    let mut labels = cluster_labels(&name(cluster));
    labels.insert(LABEL_NODE.into(), member.to_string());
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_VERSION.to_string(),
                version.to_string(),
            )])),
            ..meta(cluster, member)
        },
        spec: Some(spec),
        status: None,
    })
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The headless Service `<cluster>` that gives members their DNS names.
/// Not-ready members are published too: a new learner must be resolvable
/// by its peers before it is ready.
pub fn peer_service(cluster: &EtcdCluster) -> Service {
    let n = name(cluster);
    Service {
        metadata: meta(cluster, &n),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster_labels(&n)),
            ports: Some(vec![port("client", CLIENT_PORT), port("peer", PEER_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The client Service `<cluster>-client`: ready members only.
pub fn client_service(cluster: &EtcdCluster) -> Service {
    let n = name(cluster);
    Service {
        metadata: meta(cluster, &format!("{n}-client")),
        spec: Some(ServiceSpec {
            selector: Some(cluster_labels(&n)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// At most one member voluntarily disrupted (drained, evicted) at a time:
/// never enough to cost quorum, whatever the size, and unchanged by scaling.
pub fn disruption_budget(cluster: &EtcdCluster) -> PodDisruptionBudget {
    let n = name(cluster);
    PodDisruptionBudget {
        metadata: meta(cluster, &n),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster_labels(&n)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{MemberSecret, StaticTls};
    use crate::api::{EtcdClusterSpec, PodPolicy, TlsPolicy};

    fn cluster(spec: EtcdClusterSpec) -> EtcdCluster {
        let mut c = EtcdCluster::new("example", spec);
        c.metadata.namespace = Some("prod".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn plan(mode: StartMode) -> MemberPlan {
        MemberPlan {
            name: "example-abc".into(),
            version: "3.5.17".into(),
            initial_cluster: vec![(
                "example-abc".into(),
                "http://example-abc.example.prod.svc:2380".into(),
            )],
            mode,
            cluster_token: "prod-example-xyz".into(),
            snapshot: None,
            flags: Vec::new(),
        }
    }

    #[test]
    fn a_restore_probe_is_scheduled_like_a_member_but_is_not_one() {
        let c = cluster(EtcdClusterSpec {
            size: 3,
            pod: Some(PodPolicy {
                node_selector: Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())])),
                busybox_image: Some("registry.local/busybox:1".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let offer = super::super::snapshots::Offer {
            url: "http://10.0.0.1:8080/snapshots/p".into(),
            token: "t0k".into(),
        };
        let pod = restore_probe_pod(
            &c,
            &plan(StartMode::Restore),
            &offer,
            "example-restore-probe-x",
        );
        let labels = pod.metadata.labels.clone().unwrap();
        assert!(!labels.contains_key(LABEL_CLUSTER) && !labels.contains_key(LABEL_APP));
        assert_eq!(labels.get(LABEL_PROBE).map(String::as_str), Some("example"));
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].name,
            "example"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert!(spec.volumes.is_none() && spec.init_containers.is_none());
        let probe = &spec.containers[0];
        assert_eq!(probe.image.as_deref(), Some("registry.local/busybox:1"));
        let env = probe.env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "SNAPSHOT_URL" && e.value.as_deref() == Some(offer.url.as_str())));
        assert!(
            probe.command.as_ref().unwrap()[2].contains("Authorization: Bearer $SNAPSHOT_TOKEN")
        );
    }

    fn etcd_requests(spec: &PodSpec) -> BTreeMap<String, Quantity> {
        spec.containers[0]
            .resources
            .clone()
            .and_then(|r| r.requests)
            .unwrap_or_default()
    }

    /// What the Pod Security `restricted` level checks of one container.
    fn assert_restricted(c: &Container) {
        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{}", c.name));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
        assert!(
            sc.capabilities.as_ref().unwrap().add.is_none(),
            "{}",
            c.name
        );
    }

    #[test]
    fn member_pods_are_hardened_and_requested_unless_the_policy_says_otherwise() {
        let c = cluster(EtcdClusterSpec {
            size: 3,
            ..Default::default()
        });
        let offer = super::super::snapshots::Offer {
            url: "http://10.0.0.1:8080/snapshots/p".into(),
            token: "t0k".into(),
        };
        let mut pod = member_pod(&c, &plan(StartMode::Restore));
        add_restore(&mut pod, &c, &plan(StartMode::Restore), &offer.url);
        let spec = pod.spec.unwrap();
        let sc = spec.security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(MEMBER_UID));
        assert_eq!(sc.fs_group, Some(MEMBER_UID), "the data volume is writable");
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let all: Vec<&Container> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .collect();
        assert_eq!(all.len(), 5, "etcd, check-dns and three restore steps");
        all.iter().for_each(|c| assert_restricted(c));
        let requests = etcd_requests(&spec);
        assert_eq!(requests["cpu"].0, "50m");
        assert_eq!(requests["memory"].0, "64Mi");
        let probe = restore_probe_pod(&c, &plan(StartMode::Restore), &offer, "p");
        let probe = probe.spec.unwrap();
        assert_eq!(
            probe.security_context.unwrap().run_as_user,
            Some(MEMBER_UID)
        );
        assert_restricted(&probe.containers[0]);

        // A CoreOS policy's own securityContext and resources are kept as
        // given; only an unset seccomp profile is filled in.
        let own: PodPolicy = serde_json::from_value(serde_json::json!({
            "securityContext": {"runAsUser": 0},
            "resources": {"requests": {"cpu": "2"}},
        }))
        .unwrap();
        let c = cluster(EtcdClusterSpec {
            size: 3,
            pod: Some(own),
            ..Default::default()
        });
        let spec = member_pod(&c, &plan(StartMode::Seed)).spec.unwrap();
        let sc = spec.security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.run_as_non_root, None);
        assert_eq!(sc.fs_group, None);
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let requests = etcd_requests(&spec);
        assert_eq!(requests["cpu"].0, "2");
        assert!(!requests.contains_key("memory"));
    }

    #[test]
    fn member_pods_follow_the_coreos_layout() {
        let c = cluster(EtcdClusterSpec {
            size: 3,
            ..Default::default()
        });
        let pod = member_pod(&c, &plan(StartMode::Seed));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "etcd");
        assert_eq!(labels["etcd_cluster"], "example");
        assert_eq!(labels["etcd_node"], "example-abc");
        assert_eq!(
            pod.metadata.annotations.clone().unwrap()["etcd.version"],
            "3.5.17"
        );
        let owner = &pod.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("EtcdCluster", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("example-abc"));
        assert_eq!(spec.subdomain.as_deref(), Some("example"));
        let etcd = &spec.containers[0];
        assert_eq!(etcd.image.as_deref(), Some("quay.io/coreos/etcd:v3.5.17"));
        let cmd = etcd.command.clone().unwrap();
        assert!(cmd.contains(&"--initial-cluster-state=new".to_string()));
        assert!(cmd.contains(
            &"--initial-advertise-peer-urls=http://example-abc.example.prod.svc:2380".to_string()
        ));
        assert!(cmd.contains(
            &"--initial-cluster=example-abc=http://example-abc.example.prod.svc:2380".to_string()
        ));
        assert!(cmd.contains(&"--initial-cluster-token=prod-example-xyz".to_string()));
        assert!(spec.volumes.unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn join_and_force_new_cluster_flags() {
        let c = cluster(EtcdClusterSpec::default());
        let cmd = etcd_command(&c, &plan(StartMode::Join));
        assert!(cmd.contains(&"--initial-cluster-state=existing".to_string()));
        assert!(!cmd.contains(&"--force-new-cluster".to_string()));
        let cmd = etcd_command(&c, &plan(StartMode::ForceNewCluster));
        assert!(cmd.contains(&"--force-new-cluster".to_string()));
    }

    #[test]
    fn the_specs_etcd_flags_end_the_command_and_are_remembered_on_the_pod() {
        let c = cluster(EtcdClusterSpec::default());
        let flags = vec![
            "--quota-backend-bytes=8589934592".to_string(),
            "--snapshot-count=5000".to_string(),
        ];
        let with = MemberPlan {
            flags: flags.clone(),
            ..plan(StartMode::Join)
        };
        let cmd = etcd_command(&c, &with);
        assert_eq!(cmd[cmd.len() - 2..], flags[..], "{cmd:?}");
        let pod = member_pod(&c, &with);
        let remembered = &pod.metadata.annotations.clone().unwrap()[ANNOTATION_FLAGS];
        assert_eq!(
            serde_json::from_str::<Vec<String>>(remembered).unwrap(),
            flags
        );
        // None: no annotation, so Pods made before flags existed compare equal.
        let pod = member_pod(&c, &plan(StartMode::Join));
        assert!(
            !pod.metadata
                .annotations
                .unwrap()
                .contains_key(ANNOTATION_FLAGS)
        );
    }

    #[test]
    fn pod_policy_is_honoured_and_operator_labels_win() {
        let c = cluster(EtcdClusterSpec {
            repository: Some("registry.example/etcd".into()),
            pod: Some(PodPolicy {
                labels: Some(BTreeMap::from([
                    ("team".to_string(), "db".to_string()),
                    ("app".to_string(), "mine".to_string()),
                ])),
                node_selector: Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())])),
                anti_affinity: Some(true),
                etcd_env: Some(vec![EnvVar {
                    name: "ETCD_QUOTA_BACKEND_BYTES".into(),
                    value: Some("8589934592".into()),
                    ..Default::default()
                }]),
                persistent_volume_claim_spec: Some(Default::default()),
                cluster_domain: Some(".cluster.local".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let pod = member_pod(&c, &plan(StartMode::Seed));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "db");
        assert_eq!(labels["app"], "etcd");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        let term = &anti
            .required_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let etcd = &spec.containers[0];
        assert_eq!(etcd.image.as_deref(), Some("registry.example/etcd:v3.5.17"));
        assert_eq!(
            etcd.env.clone().unwrap()[0].name,
            "ETCD_QUOTA_BACKEND_BYTES"
        );
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "example-abc");
        assert_eq!(
            member_urls(&c, "example-abc").peer,
            "http://example-abc.example.prod.svc.cluster.local:2380"
        );
        let pvc = member_pvc(&c, "example-abc", "3.5.17").unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("example-abc"));
        assert!(member_pvc(&cluster(EtcdClusterSpec::default()), "x", "3.5.17").is_none());
    }

    #[test]
    fn static_tls_secrets_become_etcd_flags_and_mounts() {
        let c = cluster(EtcdClusterSpec {
            tls: Some(TlsPolicy {
                static_tls: Some(StaticTls {
                    member: Some(MemberSecret {
                        peer_secret: Some("etcd-peer-tls".into()),
                        server_secret: Some("etcd-server-tls".into()),
                    }),
                    operator_secret: Some("etcd-client-tls".into()),
                }),
            }),
            ..Default::default()
        });
        let urls = member_urls(&c, "example-abc");
        assert!(urls.peer.starts_with("https://") && urls.client.starts_with("https://"));
        let pod = member_pod(&c, &plan(StartMode::Seed));
        let spec = pod.spec.unwrap();
        let cmd = spec.containers[0].command.clone().unwrap();
        for flag in [
            "--peer-client-cert-auth=true",
            "--peer-trusted-ca-file=/etc/etcdtls/member/peer-tls/peer-ca.crt",
            "--peer-cert-file=/etc/etcdtls/member/peer-tls/peer.crt",
            "--peer-key-file=/etc/etcdtls/member/peer-tls/peer.key",
            "--client-cert-auth=true",
            "--trusted-ca-file=/etc/etcdtls/member/server-tls/server-ca.crt",
            "--cert-file=/etc/etcdtls/member/server-tls/server.crt",
            "--key-file=/etc/etcdtls/member/server-tls/server.key",
            "--listen-client-urls=https://0.0.0.0:2379",
        ] {
            assert!(cmd.contains(&flag.to_string()), "missing {flag}");
        }
        let secrets: Vec<String> = spec
            .volumes
            .unwrap()
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert_eq!(secrets, ["etcd-peer-tls", "etcd-server-tls"]);
    }

    #[test]
    fn every_member_waits_for_its_dns_name_as_long_as_the_policy_says() {
        // Unset: the member waits however long cluster DNS takes.
        let c = cluster(EtcdClusterSpec::default());
        let pod = member_pod(&c, &plan(StartMode::Join));
        let init = pod.spec.unwrap().init_containers.unwrap();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].name, "check-dns");
        assert_eq!(init[0].image.as_deref(), Some(DEFAULT_BUSYBOX));
        let script = init[0].command.clone().unwrap()[2].clone();
        assert!(script.starts_with("timeout=0;"), "{script}");
        assert!(
            script.contains(r#"nslookup "$MEMBER_HOST${domain:+.$domain}""#),
            "{script}"
        );
        assert_eq!(
            init[0].env.clone().unwrap()[0].value,
            Some(member_host(&c, "example-abc"))
        );

        // CoreOS fields: the timeout, the domain in the name, the image.
        let c = cluster(EtcdClusterSpec {
            pod: Some(PodPolicy {
                dns_timeout_in_second: Some(45),
                cluster_domain: Some("cluster.local".into()),
                busybox_image: Some("registry.example/busybox:1".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let wait = dns_wait_container(&c, "example-abc");
        assert!(wait.command.clone().unwrap()[2].starts_with("timeout=45;"));
        assert_eq!(
            wait.env.unwrap()[0].value.as_deref(),
            Some("example-abc.example.prod.svc.cluster.local")
        );
        assert_eq!(wait.image.as_deref(), Some("registry.example/busybox:1"));
    }

    #[test]
    fn restored_members_fetch_and_restore_the_snapshot_before_etcd_starts() {
        let c = cluster(EtcdClusterSpec::default());
        let url = "http://10.0.0.9:8080/snapshots/abc";
        let mut pod = member_pod(&c, &plan(StartMode::Restore));
        add_restore(&mut pod, &c, &plan(StartMode::Restore), url);
        let spec = pod.spec.clone().unwrap();
        let init = &spec.init_containers.clone().unwrap()[1..];
        let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["fetch-snapshot", "restore-datadir", "remove-snapshot"]
        );
        assert_eq!(init[0].image.as_deref(), Some(DEFAULT_BUSYBOX));
        let env = init[0].env.clone().unwrap();
        assert_eq!(env.len(), 1, "the URL only: {env:?}");
        assert_eq!(env[0].value.as_deref(), Some(url));
        // The token comes from its Secret, mounted into this one container.
        assert!(
            init[0].command.as_ref().unwrap()[2]
                .contains("$(cat /var/run/etcd-operator/snapshot/token)")
        );
        let mounting: Vec<&str> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == TOKEN_VOLUME)
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(mounting, ["fetch-snapshot"]);
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == TOKEN_VOLUME)
            .unwrap();
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("example-abc-snapshot-token")
        );
        let secret = restore_token_secret(&c, "example-abc", "t0k");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("example-abc-snapshot-token")
        );
        assert_eq!(secret.data.unwrap()["token"].0, b"t0k");
        assert_eq!(secret.metadata.owner_references.unwrap()[0].name, "example");
        assert!(
            !serde_json::to_string(&pod).unwrap().contains("t0k"),
            "no token in the Pod"
        );
        let restore = init[1].command.clone().unwrap();
        assert_eq!(restore[0], "/usr/local/bin/etcdutl");
        assert!(restore.contains(&"--data-dir=/var/etcd/data".to_string()));
        assert!(restore.contains(&"--initial-cluster-token=prod-example-xyz".to_string()));
        let old = MemberPlan {
            version: "3.4.30".into(),
            ..plan(StartMode::Restore)
        };
        let init = restore_init_containers(&c, &old, url);
        assert_eq!(
            init[1].command.clone().unwrap()[0],
            "/usr/local/bin/etcdctl"
        );
        assert_eq!(init[1].env.clone().unwrap()[0].name, "ETCDCTL_API");
        let cmd = etcd_command(&c, &plan(StartMode::Restore));
        assert!(cmd.contains(&"--initial-cluster-state=new".to_string()));
    }

    #[test]
    fn services_and_budget() {
        let c = cluster(EtcdClusterSpec::default());
        let peer = peer_service(&c);
        assert_eq!(peer.metadata.name.as_deref(), Some("example"));
        let spec = peer.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [2379, 2380]);
        let client = client_service(&c);
        assert_eq!(client.metadata.name.as_deref(), Some("example-client"));
        assert_eq!(
            client.spec.unwrap().selector.unwrap()["etcd_cluster"],
            "example"
        );
        let pdb = disruption_budget(&c);
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }
}
