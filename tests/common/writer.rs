//! A writer that records every write etcd acknowledged while members are
//! disturbed, for tests that then check each one reads back. Where it finds
//! the cluster is the caller's: a URL source asked again each round (a local
//! operator's status file, a Kubernetes cluster's member Pods).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client URLs to write to, asked again before each round of writes.
pub type UrlSource = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<String>> + Send>> + Send>;

pub struct Writer {
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Write `<prefix>/<n>` keys in rounds of 20 to the URLs `urls` gives,
    /// until [`Writer::finish`]; a failed write ends its round (the next
    /// round connects again).
    pub fn spawn(prefix: &str, urls: UrlSource) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let record = acked.clone();
        let prefix = prefix.to_string();
        let handle = tokio::spawn(async move {
            let mut i = 0u64;
            while !*stopped.borrow_and_update() {
                let urls = urls().await;
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(2));
                if let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    etcd_client::Client::connect(&urls, Some(opts)),
                )
                .await
                {
                    for _ in 0..20 {
                        let (k, v) = (format!("{prefix}/{i:08}"), format!("v{i}"));
                        i += 1;
                        match c.put(k.as_str(), v.as_str(), None).await {
                            Ok(_) => record.lock().unwrap().push((k, v)),
                            Err(_) => break,
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Writer {
            acked,
            stop,
            handle,
        }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stop writing; every acknowledged write, sorted.
    pub async fn finish(self) -> Vec<(String, String)> {
        self.stop.send(true).unwrap();
        self.handle.await.unwrap();
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort();
        acked
    }
}

/// How long a read that checks a cluster retries: a member may still be
/// restarting when a test looks (the last one of a rolling change), and the
/// client's balancer can pick it; the others answer.
const READ_PATIENCE: Duration = Duration::from_secs(60);

/// `op` on `client`, tried again (a new endpoint may be picked) until it
/// succeeds or [`READ_PATIENCE`] is up; then the last error panics.
async fn retried<T, F>(client: &mut etcd_client::Client, what: &str, mut op: F) -> T
where
    F: for<'c> FnMut(
        &'c mut etcd_client::Client,
    )
        -> Pin<Box<dyn Future<Output = Result<T, etcd_client::Error>> + Send + 'c>>,
{
    let deadline = tokio::time::Instant::now() + READ_PATIENCE;
    loop {
        match op(client).await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} failed for {READ_PATIENCE:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Every key under `prefix` of the cluster at `client`, with its value.
pub async fn read_prefix(
    client: &mut etcd_client::Client,
    prefix: &str,
) -> std::collections::BTreeMap<String, String> {
    let resp = retried(client, "reading the written keys", |c| {
        let prefix = prefix.to_string();
        Box::pin(async move {
            c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
        })
    })
    .await;
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The member IDs the cluster at `client` reports, sorted.
pub async fn member_ids(client: &mut etcd_client::Client) -> Vec<u64> {
    let resp = retried(client, "listing members", |c| Box::pin(c.member_list())).await;
    let mut ids: Vec<u64> = resp.members().iter().map(|m| m.id()).collect();
    ids.sort();
    ids
}

/// Every acknowledged write must be in `stored` (key → value); extra keys,
/// from writes whose acknowledgement was lost in a failure, are allowed.
pub fn assert_all_stored(
    acked: &[(String, String)],
    stored: &std::collections::BTreeMap<String, String>,
) {
    let missing: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
