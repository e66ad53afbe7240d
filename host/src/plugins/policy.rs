//! Calling backup-policy plugins. Each hook runs in its own fresh sandbox:
//! policies are pure functions of their arguments.

use std::sync::Arc;

use wasmtime::component::Component;

use super::PluginError;
use super::bindings::WitObjectInfo;
use super::bindings::policy::exports::etcd_operator::plugin::policy as wit;
use super::bindings::policy::{BackupPolicy, BackupPolicyPre};
use super::egress::EgressPolicy;
use super::engine::{PluginEngine, Pool};
use super::inspect::PluginInfo;
use super::limits::Limits;
use super::sandbox::{Sandbox, guest_call};
use super::state::HostState;
use super::storage::ObjectInfo;

/// What the operator knows just before a backup (see `backup-context` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupContext {
    pub namespace: String,
    pub name: String,
    pub path_prefix: String,
    pub revision: i64,
    pub etcd_version: String,
    pub last_backup_revision: Option<i64>,
    pub last_backup_ms: Option<u64>,
    pub now_ms: u64,
}

impl From<&BackupContext> for wit::BackupContext {
    fn from(c: &BackupContext) -> Self {
        wit::BackupContext {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            path_prefix: c.path_prefix.clone(),
            revision: c.revision,
            etcd_version: c.etcd_version.clone(),
            last_backup_revision: c.last_backup_revision,
            last_backup_ms: c.last_backup_ms,
            now_ms: c.now_ms,
        }
    }
}

/// Whether to take a backup now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreBackupDecision {
    Proceed,
    Skip(String),
}

/// A loaded backup-policy plugin. Cheap to clone.
#[derive(Clone)]
pub struct PolicyPlugin {
    name: Arc<str>,
    engine: PluginEngine,
    pre: BackupPolicyPre<HostState>,
    info: Arc<PluginInfo>,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for PolicyPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyPlugin")
            .field("name", &self.name)
            .field("sha256", &self.info.sha256)
            .finish()
    }
}

impl PolicyPlugin {
    pub fn new(
        engine: &PluginEngine,
        component: &Component,
        info: PluginInfo,
    ) -> Result<Self, PluginError> {
        let pre = engine.link(component, &info, BackupPolicyPre::new)?;
        Ok(PolicyPlugin {
            name: info.name.as_str().into(),
            engine: engine.clone(),
            pre,
            info: Arc::new(info),
            limits: Arc::new(engine.limits().clone()),
        })
    }

    /// The same plugin under its own limits instead of the engine's.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    async fn instantiate(&self) -> Result<(Sandbox, BackupPolicy), PluginError> {
        let mut sandbox = Sandbox::new(
            &self.engine,
            Pool::Policy,
            self.name.clone(),
            self.limits.clone(),
            Arc::new(EgressPolicy::deny_all()),
            None,
        )
        .await?;
        let pre = &self.pre;
        let bindings = guest_call!(&mut sandbox, "instantiate", |store| async {
            pre.instantiate_async(store).await.map(Ok)
        })?;
        Ok((sandbox, bindings))
    }

    /// Instantiate the component in a fresh sandbox and drop it: what every
    /// hook pays before its call (reported by `plugin test`, benchmarked).
    pub async fn instantiate_only(&self) -> Result<(), PluginError> {
        self.instantiate().await.map(drop)
    }

    pub async fn pre_backup(
        &self,
        config: &[(String, String)],
        ctx: &BackupContext,
    ) -> Result<PreBackupDecision, PluginError> {
        let (mut sandbox, b) = self.instantiate().await?;
        let ctx = wit::BackupContext::from(ctx);
        let decision = guest_call!(&mut sandbox, "pre-backup", |store| b
            .etcd_operator_plugin_policy()
            .call_pre_backup(store, &config.to_vec(), &ctx))?;
        Ok(match decision {
            wit::PreBackupDecision::Proceed => PreBackupDecision::Proceed,
            wit::PreBackupDecision::Skip(reason) => PreBackupDecision::Skip(reason),
        })
    }

    pub async fn backup_name(
        &self,
        config: &[(String, String)],
        ctx: &BackupContext,
    ) -> Result<Option<String>, PluginError> {
        let (mut sandbox, b) = self.instantiate().await?;
        let ctx = wit::BackupContext::from(ctx);
        guest_call!(&mut sandbox, "backup-name", |store| b
            .etcd_operator_plugin_policy()
            .call_backup_name(store, &config.to_vec(), &ctx))
    }

    /// Keys the policy wants deleted. Keys not among `backups` are dropped
    /// with a warning: a policy may only delete what it was shown.
    pub async fn retention(
        &self,
        config: &[(String, String)],
        backups: &[ObjectInfo],
        now_ms: u64,
    ) -> Result<Vec<String>, PluginError> {
        let (mut sandbox, b) = self.instantiate().await?;
        let items: Vec<WitObjectInfo> = backups
            .iter()
            .map(|o| WitObjectInfo {
                key: o.key.clone(),
                size: o.size,
                last_modified_ms: o.last_modified_ms,
            })
            .collect();
        let keys = guest_call!(&mut sandbox, "retention", |store| b
            .etcd_operator_plugin_policy()
            .call_retention(store, &config.to_vec(), &items, now_ms))?;
        Ok(keys
            .into_iter()
            .filter(|k| {
                let known = backups.iter().any(|o| &o.key == k);
                if !known {
                    tracing::warn!(plugin = %self.name, key = %k, "retention policy returned a key it was not shown; ignoring it");
                }
                known
            })
            .collect())
    }
}
