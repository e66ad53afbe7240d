//! Kubernetes Events for what the operator did, mirrored in the log.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};

use crate::controller::Event;

/// The reporting controller name on every Event.
pub const REPORTER: &str = "etcd-operator";

pub fn recorder(client: &kube::Client, instance: &str) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTER.into(),
            instance: Some(instance.into()),
        },
    )
}

/// Publish `e` about `object` (`kind/namespace/name` in the log). An Event
/// that cannot be written is logged, never fatal.
pub async fn publish(recorder: &Recorder, object: &ObjectReference, action: &str, e: &Event) {
    let kind = object.kind.as_deref().unwrap_or_default();
    let name = format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or_default()
    );
    if e.warning {
        tracing::warn!(kind, name, reason = %e.reason, "{}", e.message);
    } else {
        tracing::info!(kind, name, reason = %e.reason, "{}", e.message);
    }
    // The Events API caps notes at 1 kB.
    let mut note = e.message.clone();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = KubeEvent {
        type_: if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: e.reason.clone(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, object).await {
        tracing::warn!(kind, name, error = %err, "cannot write a Kubernetes Event");
    }
}
