//! Talking to etcd: membership changes and member status, over the client
//! API (etcd-client). Nothing here knows where members run.

use std::time::Duration;

pub mod flags;

use etcd_client::{Client, ConnectOptions, MemberAddOptions};

/// Timeout of one etcd request from the operator.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Timeout of a membership change (add, promote, remove). etcd itself
/// waits up to its own request timeout for the change to commit (5 s plus
/// two election timeouts: 7 s by default), and a client that gives up
/// sooner reports as failed a change that may still happen, which the next
/// step then has to sort out.
pub const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The etcd layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints}: {message}")]
    Unreachable { endpoints: String, message: String },
    #[error("etcd {operation} failed: {message}")]
    Request {
        operation: &'static str,
        message: String,
    },
    /// A learner cannot be promoted until it has caught up with the leader.
    #[error("learner {id:x} has not caught up with the leader yet")]
    LearnerNotReady { id: u64 },
}

impl EtcdError {
    /// What kept the operator from a member, in a few words for conditions
    /// and Events: DNS, connection refused, TLS, timeout, or the error.
    pub fn reach_failure(&self) -> String {
        let message = match self {
            EtcdError::Unreachable { message, .. } | EtcdError::Request { message, .. } => {
                message.as_str()
            }
            EtcdError::LearnerNotReady { .. } => return "learner not ready".into(),
        };
        let lower = message.to_ascii_lowercase();
        let what = if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve")
        {
            "DNS lookup failed"
        } else if lower.contains("refused") {
            "connection refused"
        } else if lower.contains("tls")
            || lower.contains("certificate")
            || lower.contains("handshake")
        {
            "TLS failed"
        } else if lower.contains("timed out")
            || lower.contains("timeout")
            || lower.contains("deadline")
        {
            "timed out"
        } else if lower.contains("unreachable") || lower.contains("no route") {
            "network unreachable"
        } else if lower.contains("connect") {
            // tonic's "tcp connect error": the connection was not established
            // within the connect timeout (packets dropped on the way).
            "cannot connect"
        } else {
            return message.chars().take(120).collect();
        };
        what.into()
    }
}

/// One entry of the cluster membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Member {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// What one member says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    /// Revision of the key space (the response header's revision).
    pub revision: i64,
    pub version: String,
    /// Size of the database file.
    pub db_size: i64,
    /// How much of the file holds data; the rest is free pages that only a
    /// defragmentation gives back.
    pub db_size_in_use: i64,
    pub is_learner: bool,
    /// Errors the member reports about itself (e.g. no leader); alarms are
    /// apart, in [`Status::alarms`].
    pub errors: Vec<String>,
    /// The cluster's alarms, which every member reports alike.
    pub alarms: Vec<Alarm>,
}

/// An alarm etcd raised (`etcdctl alarm list`), e.g. NOSPACE when a
/// member's database reached its quota. Alarms are raft state: every member
/// reports all of them, and only a disarm clears one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// `NOSPACE` or `CORRUPT`.
    pub kind: String,
}

/// Split a status's `errors` into the member's own errors and the alarms
/// (`memberID:<id> alarm:<KIND> `, as etcd formats them).
pub fn split_errors(errors: &[String]) -> (Vec<String>, Vec<Alarm>) {
    let mut own = Vec::new();
    let mut alarms = Vec::new();
    for e in errors {
        let parsed = e.trim().split_once(' ').and_then(|(id, kind)| {
            let member_id = id.strip_prefix("memberID:")?.parse().ok()?;
            let kind = kind.trim().strip_prefix("alarm:")?;
            (!kind.is_empty() && kind != "NONE").then(|| Alarm {
                member_id,
                kind: kind.to_string(),
            })
        });
        match parsed {
            Some(a) => alarms.push(a),
            None => own.push(e.clone()),
        }
    }
    alarms.sort();
    alarms.dedup();
    (own, alarms)
}

/// Client certificates for a cluster that requires TLS (the CoreOS
/// `clientTLSSecret` keys `etcd-client.crt`, `etcd-client.key`,
/// `etcd-client-ca.crt`), all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

impl ClientTls {
    /// Connection options with this identity and CA added.
    pub fn apply(&self, opts: ConnectOptions) -> ConnectOptions {
        opts.with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&self.ca))
                .identity(etcd_client::Identity::from_pem(&self.cert, &self.key)),
        )
    }
}

fn options(tls: Option<&ClientTls>, timeout: Duration) -> ConnectOptions {
    let opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(timeout);
    match tls {
        Some(t) => t.apply(opts),
        None => opts,
    }
}

async fn connect_with(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Client, EtcdError> {
    connect_with_timeout(endpoints, tls, REQUEST_TIMEOUT).await
}

/// A client whose requests time out after `timeout`.
async fn connect_with_timeout(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Client, EtcdError> {
    let unreachable = |message: String| EtcdError::Unreachable {
        endpoints: endpoints.join(","),
        message,
    };
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect(endpoints, Some(options(tls, timeout))),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("connection timed out".into())),
    }
}

fn request(operation: &'static str) -> impl Fn(etcd_client::Error) -> EtcdError {
    move |e| EtcdError::Request {
        operation,
        message: e.to_string(),
    }
}

/// Bound a request in time, whatever the client does.
async fn bounded<T>(
    operation: &'static str,
    f: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, EtcdError> {
    bounded_by(operation, REQUEST_TIMEOUT * 2, f).await
}

/// [`bounded`] to `limit`.
async fn bounded_by<T>(
    operation: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(EtcdError::Request {
            operation,
            message: "timed out".into(),
        })
    })
}

/// The status of the single member at `endpoint`.
pub async fn status(endpoint: &str) -> Result<Status, EtcdError> {
    status_with(endpoint, None).await
}

/// [`status`] over TLS when `tls` is given.
pub async fn status_with(endpoint: &str, tls: Option<&ClientTls>) -> Result<Status, EtcdError> {
    bounded("status", async {
        let mut client = connect_with(&[endpoint.to_string()], tls).await?;
        let s = client.status().await.map_err(request("status"))?;
        let header = s.header();
        let (errors, alarms) = split_errors(s.errors());
        Ok(Status {
            member_id: header.map(|h| h.member_id()).unwrap_or_default(),
            leader: s.leader(),
            raft_index: s.raft_index(),
            raft_term: s.raft_term(),
            revision: header.map(|h| h.revision()).unwrap_or_default(),
            version: s.version().to_string(),
            db_size: s.db_size(),
            db_size_in_use: s.raft_used_db_size(),
            is_learner: s.is_learner(),
            errors,
            alarms,
        })
    })
    .await
}

/// How long one member's defragmentation may take: it rewrites the whole
/// database file (about a second per few hundred MiB on a busy disk).
pub const DEFRAG_TIMEOUT: Duration = Duration::from_secs(300);

/// Defragment the single member at `endpoint` (it stops serving meanwhile).
pub async fn defragment_with(endpoint: &str, tls: Option<&ClientTls>) -> Result<(), EtcdError> {
    long_request(
        "defragment",
        &[endpoint.to_string()],
        tls,
        |mut client| async move {
            client.defragment().await.map_err(request("defragment"))?;
            Ok(())
        },
    )
    .await
}

/// Compact the history up to `revision` through any of `endpoints`, and
/// wait until the member that serves the request has freed the space
/// (`physical`: its defragmentation can then give it back). A history
/// already compacted that far is no error.
pub async fn compact_with(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    revision: i64,
) -> Result<(), EtcdError> {
    long_request("compact", endpoints, tls, |mut client| async move {
        let options = etcd_client::CompactionOptions::new().with_physical();
        match client.compact(revision, Some(options)).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(e) => Err(request("compact")(e)),
        }
    })
    .await
}

/// Disarm the NOSPACE alarm member `member_id` raised, through any of
/// `endpoints` (`etcdctl alarm disarm` does the same for each alarm).
pub async fn disarm_no_space_with(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    member_id: u64,
) -> Result<(), EtcdError> {
    bounded("alarm disarm", async {
        let mut client = connect_with(endpoints, tls).await?;
        let mut options = etcd_client::AlarmOptions::new();
        options.with_member(member_id);
        client
            .alarm(
                etcd_client::AlarmAction::Deactivate,
                etcd_client::AlarmType::Nospace,
                Some(options),
            )
            .await
            .map_err(request("alarm disarm"))?;
        Ok(())
    })
    .await
}

/// A request that may take as long as rewriting a database file
/// ([`DEFRAG_TIMEOUT`]): its own connection, with that timeout.
async fn long_request<F, Fut>(
    operation: &'static str,
    endpoints: &[String],
    tls: Option<&ClientTls>,
    work: F,
) -> Result<(), EtcdError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<(), EtcdError>>,
{
    let opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(DEFRAG_TIMEOUT);
    let opts = match tls {
        Some(t) => t.apply(opts),
        None => opts,
    };
    let all = async {
        let client =
            Client::connect(endpoints, Some(opts))
                .await
                .map_err(|e| EtcdError::Unreachable {
                    endpoints: endpoints.join(","),
                    message: e.to_string(),
                })?;
        work(client).await
    };
    tokio::time::timeout(DEFRAG_TIMEOUT + REQUEST_TIMEOUT, all)
        .await
        .unwrap_or_else(|_| {
            Err(EtcdError::Request {
                operation,
                message: "timed out".into(),
            })
        })
}

/// The etcd calls the reconcile core makes, behind a trait so that its
/// decisions on partial, stale and contradictory observations are tested
/// over fakes (`controller::fakes`). [`Grpc`] is the real one.
pub trait EtcdApi: Send + Sync + 'static {
    /// What the single member at `endpoint` says about itself.
    fn status(
        &self,
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> impl Future<Output = Result<Status, EtcdError>> + Send;
    /// The membership, through any of `endpoints`.
    fn members(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
    ) -> impl Future<Output = Result<Vec<Member>, EtcdError>> + Send;
    /// Add a learner with `peer_url`; its id.
    fn add_learner(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        peer_url: &str,
    ) -> impl Future<Output = Result<u64, EtcdError>> + Send;
    fn promote(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        id: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    fn remove(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        id: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Defragment the single member at `endpoint`.
    fn defragment(
        &self,
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Compact the history up to `revision`, waiting for the space to be
    /// freed.
    fn compact(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        revision: i64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Disarm the NOSPACE alarm raised by member `member_id`.
    fn disarm_no_space(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        member_id: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
}

/// [`EtcdApi`] over etcd's gRPC client API: a connection per call, each
/// bounded by [`REQUEST_TIMEOUT`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Grpc;

impl EtcdApi for Grpc {
    async fn status(&self, endpoint: &str, tls: Option<&ClientTls>) -> Result<Status, EtcdError> {
        status_with(endpoint, tls).await
    }

    async fn members(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
    ) -> Result<Vec<Member>, EtcdError> {
        Cluster::connect_with(endpoints, tls).await?.members().await
    }

    async fn add_learner(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        peer_url: &str,
    ) -> Result<u64, EtcdError> {
        Cluster::connect_for_changes(endpoints, tls)
            .await?
            .add_learner(peer_url)
            .await
    }

    async fn promote(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        id: u64,
    ) -> Result<(), EtcdError> {
        Cluster::connect_for_changes(endpoints, tls)
            .await?
            .promote(id)
            .await
    }

    async fn remove(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        id: u64,
    ) -> Result<(), EtcdError> {
        Cluster::connect_for_changes(endpoints, tls)
            .await?
            .remove(id)
            .await
    }

    async fn defragment(&self, endpoint: &str, tls: Option<&ClientTls>) -> Result<(), EtcdError> {
        defragment_with(endpoint, tls).await
    }

    async fn compact(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        revision: i64,
    ) -> Result<(), EtcdError> {
        compact_with(endpoints, tls, revision).await
    }

    async fn disarm_no_space(
        &self,
        endpoints: &[String],
        tls: Option<&ClientTls>,
        member_id: u64,
    ) -> Result<(), EtcdError> {
        disarm_no_space_with(endpoints, tls, member_id).await
    }
}

/// Membership operations against a cluster, through any of its endpoints.
pub struct Cluster {
    client: Client,
    /// How long one request may take.
    timeout: Duration,
}

impl Cluster {
    pub async fn connect(endpoints: &[String]) -> Result<Self, EtcdError> {
        Self::connect_with(endpoints, None).await
    }

    /// [`Cluster::connect`] over TLS when `tls` is given.
    pub async fn connect_with(
        endpoints: &[String],
        tls: Option<&ClientTls>,
    ) -> Result<Self, EtcdError> {
        Ok(Cluster {
            client: connect_with(endpoints, tls).await?,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// [`Cluster::connect_with`] for membership changes: their requests may
    /// take [`MEMBERSHIP_CHANGE_TIMEOUT`].
    pub async fn connect_for_changes(
        endpoints: &[String],
        tls: Option<&ClientTls>,
    ) -> Result<Self, EtcdError> {
        Ok(Cluster {
            client: connect_with_timeout(endpoints, tls, MEMBERSHIP_CHANGE_TIMEOUT).await?,
            timeout: MEMBERSHIP_CHANGE_TIMEOUT,
        })
    }

    pub async fn members(&mut self) -> Result<Vec<Member>, EtcdError> {
        bounded("member list", async {
            let r = self
                .client
                .member_list()
                .await
                .map_err(request("member list"))?;
            Ok(r.members().iter().map(Member::from).collect())
        })
        .await
    }

    /// Add a learner with `peer_url`; returns its id.
    pub async fn add_learner(&mut self, peer_url: &str) -> Result<u64, EtcdError> {
        bounded_by("member add", self.timeout + REQUEST_TIMEOUT, async {
            let r = self
                .client
                .member_add(
                    vec![peer_url.to_string()],
                    Some(MemberAddOptions::new().with_is_learner()),
                )
                .await
                .map_err(request("member add"))?;
            r.member().map(|m| m.id()).ok_or(EtcdError::Request {
                operation: "member add",
                message: "no member in the response".into(),
            })
        })
        .await
    }

    pub async fn promote(&mut self, id: u64) -> Result<(), EtcdError> {
        bounded_by("member promote", self.timeout + REQUEST_TIMEOUT, async {
            match self.client.member_promote(id).await {
                Ok(_) => Ok(()),
                Err(e)
                    if e.to_string().contains("in sync") || e.to_string().contains("not ready") =>
                {
                    Err(EtcdError::LearnerNotReady { id })
                }
                Err(e) => Err(request("member promote")(e)),
            }
        })
        .await
    }

    pub async fn remove(&mut self, id: u64) -> Result<(), EtcdError> {
        bounded_by("member remove", self.timeout + REQUEST_TIMEOUT, async {
            self.client
                .member_remove(id)
                .await
                .map_err(request("member remove"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_are_told_apart_from_a_members_own_errors() {
        let (own, alarms) = split_errors(&[
            "memberID:10276657743932975437 alarm:NOSPACE ".to_string(),
            "etcdserver: no leader".to_string(),
            "memberID:7 alarm:CORRUPT".to_string(),
            "memberID:10276657743932975437 alarm:NOSPACE ".to_string(),
        ]);
        assert_eq!(own, ["etcdserver: no leader"]);
        assert_eq!(
            alarms,
            [
                Alarm {
                    member_id: 7,
                    kind: "CORRUPT".into()
                },
                Alarm {
                    member_id: 10276657743932975437,
                    kind: "NOSPACE".into()
                },
            ]
        );
    }
}
