//! Panics are contained. Every reconcile and worker step runs through
//! [`contained`]: a bug that panics while handling one resource becomes an
//! error reported on that resource (a condition and an Event), and every
//! other resource, and the process, keep running.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// A step panicked; the message is the panic's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error (the operator panicked: {0}); retrying")]
pub struct Panicked(pub String);

/// Run `step`, turning a panic into [`Panicked`]. The step's state is
/// dropped: callers keep nothing from a step that panicked but the
/// previous status, so no half-updated state is reused.
pub async fn contained<F: Future>(step: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(step).catch_unwind().await.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        tracing::error!(panic = %message, "a reconcile step panicked; the operator keeps running");
        Panicked(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(n: u8) -> u8 {
        if n > 0 {
            panic!("boom {n}");
        }
        n
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_a_value_passes_through() {
        assert_eq!(contained(async { fails(0) }).await, Ok(0));
        let err = contained(async { fails(1) }).await.unwrap_err();
        assert_eq!(err.0, "boom 1");
        assert!(err.to_string().contains("panicked: boom 1"), "{err}");
    }
}
