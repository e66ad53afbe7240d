//! A misbehaving plugin gets a typed error and the host keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_operator::plugins::{
    EgressPolicy, Grants, GuestErrorKind, Limits, LoadedPlugin, PluginError, StoragePlugin,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, config};

fn faults(engine: &etcd_operator::plugins::PluginEngine) -> StoragePlugin {
    match common::load(engine, "faults") {
        LoadedPlugin::Storage(p) => p,
        _ => panic!("faults is a storage plugin"),
    }
}

/// The plugin still works after a fault: open, list, upload.
async fn still_serves(plugin: &StoragePlugin) {
    let mut s = plugin
        .open(&[], &Grants::default())
        .await
        .expect("a well-behaved call after a fault");
    assert!(s.list("").await.unwrap().is_empty());
    let up = s.start_upload("k").await.unwrap();
    s.write(&up, b"data").await.unwrap();
    s.complete(up).await.unwrap();
}

async fn open_err(plugin: &StoragePlugin, pairs: &[(&str, &str)], grants: &Grants) -> PluginError {
    match plugin.open(&config(pairs), grants).await {
        Ok(_) => panic!("open with {pairs:?} should fail"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn infinite_loop_hits_the_cpu_deadline() {
    let engine = common::engine_with(Limits {
        call_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let plugin = faults(&engine);
    let err = open_err(&plugin, &[("fault", "loop")], &Grants::default()).await;
    assert!(
        matches!(
            err,
            PluginError::Timeout {
                operation: "open",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(err.is_retryable());
    still_serves(&plugin).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let engine = common::engine_with(Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    });
    let plugin = faults(&engine);
    let err = open_err(&plugin, &[("fault", "memory")], &Grants::default()).await;
    match &err {
        PluginError::OutOfMemory { limit_mib, .. } => assert_eq!(*limit_mib, 16),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert!(!err.is_retryable());
    still_serves(&plugin).await;
}

#[tokio::test]
async fn panic_is_a_trap() {
    let engine = common::engine();
    let plugin = faults(&engine);
    let err = open_err(&plugin, &[("fault", "panic")], &Grants::default()).await;
    assert!(
        matches!(
            err,
            PluginError::Trap {
                operation: "open",
                ..
            }
        ),
        "{err:?}"
    );
    still_serves(&plugin).await;
}

#[tokio::test]
async fn filesystem_and_environment_are_invisible() {
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("ETCD_OPERATOR_TEST_SECRET", "hunter2") };
    let engine = common::engine();
    let plugin = faults(&engine);
    for path in ["/etc/passwd", "/proc/self/environ", "/", "."] {
        let err = open_err(
            &plugin,
            &[("fault", "read-file"), ("path", path)],
            &Grants::default(),
        )
        .await;
        assert_eq!(
            err.guest_kind(),
            Some(GuestErrorKind::NotFound),
            "{path}: {err}"
        );
    }
    let err = open_err(&plugin, &[("fault", "env")], &Grants::default()).await;
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::NotFound), "{err}");
    // A granted directory is visible, and only at /data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("granted.txt"), b"ok").unwrap();
    let grants = Grants {
        dir: Some(dir.path().to_path_buf()),
        ..Grants::default()
    };
    let err = open_err(
        &plugin,
        &[("fault", "read-file"), ("path", "/data/granted.txt")],
        &grants,
    )
    .await;
    assert!(
        err.to_string().contains("leaked 2 bytes"),
        "the granted dir should be readable: {err}"
    );
    let err = open_err(
        &plugin,
        &[("fault", "read-file"), ("path", "/etc/passwd")],
        &grants,
    )
    .await;
    assert_eq!(err.guest_kind(), Some(GuestErrorKind::NotFound), "{err}");
    still_serves(&plugin).await;
}

/// A loopback HTTP responder that counts connections, so a test can prove a
/// denied request never left the host. (Test scaffolding: one fixed reply.)
async fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn egress_is_limited_to_allowed_endpoints() {
    let engine = common::engine();
    let plugin = faults(&engine);
    let (url, hits) = counting_server().await;
    let egress = |endpoints: &[String], nets: &[String]| Grants {
        egress: Arc::new(EgressPolicy::from_entries(endpoints, nets).unwrap()),
        dir: None,
    };
    let target = format!("{url}/bucket/key");

    // Not on the allow-list.
    let err = open_err(
        &plugin,
        &[("fault", "egress"), ("url", &target)],
        &egress(&["https://s3.example.com".into()], &[]),
    )
    .await;
    match &err {
        PluginError::EgressDenied {
            url: denied,
            reason,
            ..
        } => {
            assert!(denied.contains("127.0.0.1"), "{denied}");
            assert!(reason.contains("not an allowed endpoint"), "{reason}");
        }
        other => panic!("expected EgressDenied, got {other:?}"),
    }

    // On the allow-list, but loopback without an explicit network.
    let err = open_err(
        &plugin,
        &[("fault", "egress"), ("url", &target)],
        &egress(std::slice::from_ref(&url), &[]),
    )
    .await;
    match &err {
        PluginError::EgressDenied { reason, .. } => {
            assert!(reason.contains("private or loopback"), "{reason}")
        }
        other => panic!("expected EgressDenied, got {other:?}"),
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied request must not reach the server"
    );

    // Allowed endpoint and network: the request goes through.
    let err = open_err(
        &plugin,
        &[("fault", "egress"), ("url", &target)],
        &egress(std::slice::from_ref(&url), &["127.0.0.1/32".into()]),
    )
    .await;
    assert!(
        err.to_string().contains("egress succeeded with status 200"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_are_isolated() {
    // Two worker threads: a host that ran sessions one at a time would make
    // every call below wait for the spinning one to time out.
    let engine = common::engine_with(Limits {
        call_timeout: Duration::from_secs(3),
        ..Limits::default()
    });
    let plugin = faults(&engine);
    let bad = plugin.clone();
    let spinning = tokio::spawn(async move {
        bad.open(&config(&[("fault", "loop")]), &Grants::default())
            .await
            .err()
    });
    // Whichever call the spinning one started before, the ones after it
    // complete while it still spins.
    for round in 0..5 {
        still_serves(&plugin).await;
        assert!(
            !spinning.is_finished(),
            "round {round}: a well-behaved session waited for the spinning one"
        );
    }
    let err = spinning.await.unwrap().expect("the spinning session fails");
    assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_capped_and_a_slot_frees_when_a_session_ends() {
    let engine = common::engine_with(Limits {
        call_timeout: Duration::from_millis(500),
        max_sandboxes: 2,
        ..Limits::default()
    });
    let plugin = faults(&engine);
    let first = plugin.open(&[], &Grants::default()).await.unwrap();
    let second = plugin.open(&[], &Grants::default()).await.unwrap();
    // Both slots taken: a third waits one call timeout, then is Busy (retried
    // by the backup controller), naming the limit.
    let err = open_err(&plugin, &[], &Grants::default()).await;
    assert!(matches!(err, PluginError::Busy { slots: 2, .. }), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("--max-plugin-sandboxes"), "{err}");
    // One that waits gets the slot as soon as a session ends.
    let mut waiting = {
        let plugin = plugin.clone();
        tokio::spawn(async move { plugin.open(&[], &Grants::default()).await.map(drop) })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut waiting)
            .await
            .is_err(),
        "the third session waits for a slot"
    );
    drop(first);
    waiting
        .await
        .unwrap()
        .expect("the slot went to the waiting session");
    drop(second);
    still_serves(&plugin).await;
}

/// What a plugin hands back is bounded: a `read` longer than asked is refused,
/// and no call may move more than `host_copy_bytes` into the host.
#[tokio::test]
async fn oversized_answers_are_refused() {
    let engine = common::engine_with(Limits {
        host_copy_bytes: 8 << 20,
        ..Limits::default()
    });
    let plugin = faults(&engine);
    for (factor, expect) in [
        ("2", "returned 2097152 bytes for a read of at most 1048576"),
        ("12", "tried to pass the host more than 8 MiB in one call"),
    ] {
        let mut s = plugin
            .open(
                &config(&[("fault", "long-read"), ("read-factor", factor)]),
                &Grants::default(),
            )
            .await
            .unwrap();
        let d = s.open_download("k").await.unwrap();
        let e = s.read(&d, 1 << 20).await.unwrap_err();
        assert!(matches!(e, PluginError::Contract { .. }), "{e:?}");
        assert!(e.to_string().contains(expect), "{e}");
    }
    still_serves(&plugin).await;
}
