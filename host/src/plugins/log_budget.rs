//! How much a plugin may write into the operator's log. Each message is
//! already cut at a few KiB; the budget bounds how many there are, per call
//! and per session (one backup run, one restore), over the `log` import and
//! the guest's stdout and stderr together. Past it, messages are dropped and
//! counted, and one line per call says how many were suppressed: a plugin
//! logging in a loop costs a few lines, not gigabytes.

use std::sync::{Arc, Mutex};

/// Log limits of one plugin session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub lines_per_call: u32,
    pub bytes_per_call: usize,
    pub lines_per_session: u32,
    pub bytes_per_session: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            lines_per_call: 100,
            bytes_per_call: 64 << 10,
            lines_per_session: 1000,
            bytes_per_session: 1 << 20,
        }
    }
}

#[derive(Debug, Default)]
struct Spent {
    call_lines: u32,
    call_bytes: usize,
    session_lines: u32,
    session_bytes: usize,
    /// Dropped in the current call.
    suppressed: u64,
    suppressed_bytes: u64,
}

/// The budget of one session, shared by its `log` host and its stdio
/// streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogBudget {
    plugin: Arc<str>,
    limits: LogLimits,
    spent: Arc<Mutex<Spent>>,
}

impl LogBudget {
    pub fn new(plugin: Arc<str>, limits: LogLimits) -> Self {
        LogBudget {
            plugin,
            limits,
            spent: Arc::default(),
        }
    }

    /// May a message of `bytes` be logged? Counts it either way.
    pub fn admit(&self, bytes: usize) -> bool {
        let mut s = self.spent.lock().expect("log budget");
        let l = &self.limits;
        let fits = s.call_lines < l.lines_per_call
            && s.session_lines < l.lines_per_session
            && s.call_bytes + bytes <= l.bytes_per_call
            && s.session_bytes + bytes <= l.bytes_per_session;
        if fits {
            s.call_lines += 1;
            s.session_lines += 1;
            s.call_bytes += bytes;
            s.session_bytes += bytes;
        } else {
            s.suppressed += 1;
            s.suppressed_bytes += bytes as u64;
        }
        fits
    }

    /// A call begins: the per-call budget is full again.
    pub fn start_call(&self) {
        let mut s = self.spent.lock().expect("log budget");
        s.call_lines = 0;
        s.call_bytes = 0;
    }

    /// A call ended: say once how much of its output was dropped.
    /// Returns how many messages that was.
    pub fn end_call(&self, operation: &str) -> u64 {
        let (n, bytes) = {
            let mut s = self.spent.lock().expect("log budget");
            (
                std::mem::take(&mut s.suppressed),
                std::mem::take(&mut s.suppressed_bytes),
            )
        };
        if n > 0 {
            let l = &self.limits;
            tracing::warn!(
                plugin = %self.plugin,
                operation,
                suppressed = n,
                "suppressed {n} log messages ({bytes} bytes) of plugin `{}` in {operation}: over its log \
                 budget ({} lines / {} KiB per call, {} lines / {} KiB per operation)",
                self.plugin,
                l.lines_per_call,
                l.bytes_per_call >> 10,
                l.lines_per_session,
                l.bytes_per_session >> 10,
            );
            crate::metrics::plugin_log_suppressed(&self.plugin, n);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_lines_and_bytes_per_call_and_session() {
        let limits = LogLimits {
            lines_per_call: 3,
            bytes_per_call: 100,
            lines_per_session: 5,
            bytes_per_session: 1000,
        };
        let b = LogBudget::new("p".into(), limits);
        b.start_call();
        let admitted = (0..10).filter(|_| b.admit(10)).count();
        assert_eq!(admitted, 3);
        assert_eq!(b.end_call("open"), 7);
        b.start_call();
        assert!(!b.admit(101), "one message over the byte budget");
        assert_eq!(
            (0..10).filter(|_| b.admit(10)).count(),
            2,
            "session: 5 lines"
        );
        assert_eq!(b.end_call("write"), 9);
        b.start_call();
        assert!(!b.admit(1));
        assert_eq!(b.end_call("write"), 1);
        assert_eq!(b.end_call("write"), 0, "said once per call");
    }
}
