//! Failpoints: named places between the steps of a multi-step action where a
//! test can have the operator killed, as etcd's own gofail points do. The
//! switch is the environment variable `ETCD_OPERATOR_FAILPOINTS` (a comma-
//! separated list of names), read once at the first point reached; it is for
//! tests only and unset in any deployment. A point that is listed sends the
//! operator SIGKILL: no destructor, no shutdown handler runs, exactly as if
//! the process were killed there. The tests then restart the operator
//! without the switch and check that the cluster converges with no
//! acknowledged write lost.
//!
//! Points (the step just done → the step not yet done):
//! `seed-after-delete-extras`, `seed-after-first-start`, `grow-after-add-learner`,
//! `promote-after-promote`, `replace-after-remove`, `shrink-after-remove`,
//! `upgrade-after-stop`, `recover-after-stop`, `recover-after-start`,
//! `restore-after-delete`, `restore-after-first-start` (an EtcdRestore),
//! `recovery-after-delete`, `recovery-after-first-start` (quorum-loss
//! recovery from a backup).

use std::collections::HashSet;
use std::sync::OnceLock;

/// The environment variable that lists the armed points.
pub const ENV: &str = "ETCD_OPERATOR_FAILPOINTS";

fn armed() -> &'static HashSet<String> {
    static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
}

/// Reach point `name`: when it is armed, the operator is killed here.
pub fn hit(name: &str) {
    if armed().contains(name) {
        tracing::error!(failpoint = name, "failpoint armed: killing the operator");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}
