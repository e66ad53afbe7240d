//! Fakes of a member runtime and of etcd for the reconciler's unit tests
//! (`conversations`): each records every call it receives, in order, in
//! one shared log, so a test states the conversation it expects, the way
//! controller-rs' fixtures state the one with the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::runtime::{ClusterKey, MemberPlan, MemberUrls, Runtime, RuntimeError, RuntimeMember};
use crate::etcd::{ClientTls, EtcdApi, EtcdError, Member, Status};

/// The calls both fakes received, e.g. `runtime delete c`, `etcd remove 3`.
pub type Log = Arc<Mutex<Vec<String>>>;

fn record(log: &Log, call: String) {
    log.lock().unwrap().push(call);
}

pub fn urls(name: &str) -> MemberUrls {
    MemberUrls {
        peer: format!("http://{name}:2380"),
        client: format!("http://{name}:2379"),
    }
}

/// Members held in memory.
pub struct FakeRuntime {
    pub members: Mutex<Vec<RuntimeMember>>,
    pub log: Log,
    /// What `check_restore` answers.
    pub restore_check: Mutex<Result<(), String>>,
}

impl FakeRuntime {
    pub fn new(log: Log, members: Vec<RuntimeMember>) -> Self {
        FakeRuntime {
            members: Mutex::new(members),
            log,
            restore_check: Mutex::new(Ok(())),
        }
    }
}

/// A member the runtime runs, with data.
pub fn running(name: &str) -> RuntimeMember {
    RuntimeMember {
        name: name.into(),
        urls: urls(name),
        running: true,
        has_data: true,
        ever_started: true,
        version: "3.5.1".into(),
        flags: Vec::new(),
    }
}

/// A member whose process is gone, and its data with it.
pub fn gone(name: &str) -> RuntimeMember {
    RuntimeMember {
        running: false,
        has_data: false,
        ..running(name)
    }
}

impl Runtime for FakeRuntime {
    async fn reserve(&self, _c: &ClusterKey, name: &str) -> Result<MemberUrls, RuntimeError> {
        record(&self.log, format!("runtime reserve {name}"));
        let mut members = self.members.lock().unwrap();
        if !members.iter().any(|m| m.name == name) {
            members.push(RuntimeMember {
                running: false,
                has_data: false,
                ever_started: false,
                ..running(name)
            });
        }
        Ok(urls(name))
    }

    async fn list(&self, _c: &ClusterKey) -> Result<Vec<RuntimeMember>, RuntimeError> {
        Ok(self.members.lock().unwrap().clone())
    }

    async fn start(&self, _c: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        record(
            &self.log,
            format!("runtime start {} {:?}", plan.name, plan.mode),
        );
        if let Some(m) = self
            .members
            .lock()
            .unwrap()
            .iter_mut()
            .find(|m| m.name == plan.name)
        {
            m.running = true;
            m.ever_started = true;
            m.flags = plan.flags.clone();
        }
        Ok(())
    }

    async fn stop(&self, _c: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        record(&self.log, format!("runtime stop {name}"));
        if let Some(m) = self
            .members
            .lock()
            .unwrap()
            .iter_mut()
            .find(|m| m.name == name)
        {
            m.running = false;
        }
        Ok(())
    }

    async fn delete(&self, _c: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        record(&self.log, format!("runtime delete {name}"));
        self.members.lock().unwrap().retain(|m| m.name != name);
        Ok(())
    }

    async fn check_restore(&self, _c: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        record(&self.log, format!("runtime check_restore {}", plan.name));
        self.restore_check
            .lock()
            .unwrap()
            .clone()
            .map_err(|message| RuntimeError::Member {
                member: plan.name.clone(),
                message,
            })
    }

    async fn resolve_version(&self, requested: &str) -> Result<String, RuntimeError> {
        Ok(requested.into())
    }
}

/// What one fake member answers to a status call.
#[derive(Clone)]
pub enum Answer {
    Status(Status),
    /// The operator's call times out (the operator is cut off, or the
    /// member does not serve).
    TimedOut,
}

/// etcd as the operator sees it: an answer per client URL and a membership.
pub struct FakeEtcd {
    pub answers: Mutex<HashMap<String, Answer>>,
    pub membership: Mutex<Vec<Member>>,
    pub log: Log,
}

impl FakeEtcd {
    pub fn new(log: Log) -> Self {
        FakeEtcd {
            answers: Mutex::default(),
            membership: Mutex::default(),
            log,
        }
    }

    /// Member `name` (id `id`) answers with `leader` and `raft_index`.
    pub fn answers(&self, name: &str, id: u64, leader: u64, raft_index: u64) {
        self.answers.lock().unwrap().insert(
            urls(name).client,
            Answer::Status(Status {
                member_id: id,
                leader,
                raft_index,
                raft_term: 2,
                revision: 10,
                version: "3.5.1".into(),
                db_size: 1 << 20,
                db_size_in_use: 1 << 20,
                is_learner: false,
                errors: Vec::new(),
                alarms: Vec::new(),
            }),
        );
    }

    /// Member `name`'s database file is `db_size` bytes, `in_use` of them data.
    pub fn db(&self, name: &str, db_size: i64, in_use: i64) {
        if let Some(Answer::Status(s)) = self.answers.lock().unwrap().get_mut(&urls(name).client) {
            s.db_size = db_size;
            s.db_size_in_use = in_use;
        }
    }

    /// Every member reports a NOSPACE alarm raised by member `raised_by`.
    pub fn no_space(&self, raised_by: u64) {
        for answer in self.answers.lock().unwrap().values_mut() {
            if let Answer::Status(s) = answer {
                s.alarms.push(crate::etcd::Alarm {
                    member_id: raised_by,
                    kind: "NOSPACE".into(),
                });
            }
        }
    }

    pub fn times_out(&self, name: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(urls(name).client, Answer::TimedOut);
    }

    /// `(name, id)` voting members.
    pub fn set_membership(&self, members: &[(&str, u64)]) {
        *self.membership.lock().unwrap() = members
            .iter()
            .map(|(name, id)| Member {
                id: *id,
                name: name.to_string(),
                peer_urls: vec![urls(name).peer],
                client_urls: vec![urls(name).client],
                is_learner: false,
            })
            .collect();
    }

    fn reachable(&self, endpoints: &[String]) -> Result<(), EtcdError> {
        let answers = self.answers.lock().unwrap();
        if endpoints
            .iter()
            .any(|e| matches!(answers.get(e), Some(Answer::Status(_))))
        {
            Ok(())
        } else {
            Err(EtcdError::Unreachable {
                endpoints: endpoints.join(","),
                message: "connection timed out".into(),
            })
        }
    }
}

impl EtcdApi for FakeEtcd {
    async fn status(&self, endpoint: &str, _tls: Option<&ClientTls>) -> Result<Status, EtcdError> {
        match self.answers.lock().unwrap().get(endpoint) {
            Some(Answer::Status(s)) => Ok(s.clone()),
            _ => Err(EtcdError::Unreachable {
                endpoints: endpoint.into(),
                message: "connection timed out".into(),
            }),
        }
    }

    async fn members(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
    ) -> Result<Vec<Member>, EtcdError> {
        self.reachable(endpoints)?;
        Ok(self.membership.lock().unwrap().clone())
    }

    async fn add_learner(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
        peer_url: &str,
    ) -> Result<u64, EtcdError> {
        record(&self.log, format!("etcd add_learner {peer_url}"));
        self.reachable(endpoints)?;
        Ok(99)
    }

    async fn promote(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
        id: u64,
    ) -> Result<(), EtcdError> {
        record(&self.log, format!("etcd promote {id}"));
        self.reachable(endpoints)
    }

    async fn remove(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
        id: u64,
    ) -> Result<(), EtcdError> {
        record(
            &self.log,
            format!("etcd remove {id} via {}", endpoints.join(",")),
        );
        self.reachable(endpoints)?;
        self.membership.lock().unwrap().retain(|m| m.id != id);
        Ok(())
    }

    /// A defragmented member's file shrinks to what is in use.
    async fn defragment(&self, endpoint: &str, _tls: Option<&ClientTls>) -> Result<(), EtcdError> {
        record(&self.log, format!("etcd defragment {endpoint}"));
        match self.answers.lock().unwrap().get_mut(endpoint) {
            Some(Answer::Status(s)) => {
                s.db_size = s.db_size_in_use;
                Ok(())
            }
            _ => Err(EtcdError::Unreachable {
                endpoints: endpoint.into(),
                message: "connection timed out".into(),
            }),
        }
    }

    /// Compaction frees the pages of old revisions: a quarter of each file
    /// stays in use.
    async fn compact(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
        revision: i64,
    ) -> Result<(), EtcdError> {
        record(&self.log, format!("etcd compact {revision}"));
        self.reachable(endpoints)?;
        for answer in self.answers.lock().unwrap().values_mut() {
            if let Answer::Status(s) = answer {
                s.db_size_in_use = s.db_size / 4;
            }
        }
        Ok(())
    }

    /// The alarm goes from every member's answers.
    async fn disarm_no_space(
        &self,
        endpoints: &[String],
        _tls: Option<&ClientTls>,
        member_id: u64,
    ) -> Result<(), EtcdError> {
        record(&self.log, format!("etcd disarm NOSPACE {member_id}"));
        self.reachable(endpoints)?;
        for answer in self.answers.lock().unwrap().values_mut() {
            if let Answer::Status(s) = answer {
                s.alarms
                    .retain(|a| !(a.member_id == member_id && a.kind == "NOSPACE"));
            }
        }
        Ok(())
    }
}
