//! Status conditions, in the CoreOS shape (which has `lastUpdateTime` in
//! addition to the usual Kubernetes fields).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. Available, Progressing, Degraded, BackupSucceeded.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// When the operator last wrote this condition (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// A CamelCase reason, e.g. Scaling, Upgrading, Recovering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for humans: what is happening and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Set `cond` in `conditions`: replace the one of the same type, keeping its
/// transition time when the status did not change. `now` is RFC 3339.
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition, now: &str) {
    cond.last_update_time = Some(now.to_string());
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            cond.last_transition_time = if existing.status == cond.status {
                existing
                    .last_transition_time
                    .clone()
                    .or_else(|| Some(now.to_string()))
            } else {
                Some(now.to_string())
            };
            *existing = cond;
        }
        None => {
            cond.last_transition_time = Some(now.to_string());
            conditions.push(cond);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: &str) -> Condition {
        Condition {
            type_: "Available".into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut cs = Vec::new();
        set_condition(&mut cs, cond("False"), "t1");
        set_condition(&mut cs, cond("False"), "t2");
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("t1"));
        assert_eq!(cs[0].last_update_time.as_deref(), Some("t2"));
        set_condition(&mut cs, cond("True"), "t3");
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("t3"));
    }
}
