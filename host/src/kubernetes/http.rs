//! `/metrics` (Prometheus text format), `/healthz` (the process serves),
//! `/readyz` (it reached the API server; a standby replica waiting for the
//! leader Lease is ready too, so a rollout of two replicas proceeds) and
//! `/snapshots/<id>` (verified snapshots for restoring Pods, bearer token
//! required; see [`super::snapshots`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::snapshots::SnapshotServer;

#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub leader: AtomicBool,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// Stream a snapshot file in 64 KiB chunks (memory does not grow with its size).
async fn snapshot(
    snapshots: Option<&SnapshotServer>,
    id: &str,
    authorization: Option<&str>,
) -> Response<Body> {
    let Some(path) = snapshots.and_then(|s| s.authorize(id, authorization)) else {
        return text(
            StatusCode::FORBIDDEN,
            "unknown or expired snapshot, or wrong token\n".into(),
        );
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let len = file.metadata().await.map(|m| m.len()).ok();
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 64 << 10).map_ok(Frame::data);
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            if let Some(len) = len {
                r.headers_mut().insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(len),
                );
            }
            r
        }
        Err(e) => text(StatusCode::GONE, format!("snapshot unavailable: {e}\n")),
    }
}

fn respond(health: &Health, path: &str) -> Response<Body> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, crate::metrics::encode()),
        "/healthz" | "/livez" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            let role = if health.leader.load(Ordering::Relaxed) {
                "leader"
            } else {
                "standby"
            };
            (StatusCode::OK, format!("ok ({role})\n"))
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting\n".to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut r = text(status, body);
    if path == "/metrics" {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    r
}

/// Bind `addr` and serve until the task is dropped. Returns the bound
/// address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    snapshots: Option<Arc<SnapshotServer>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (health, snapshots) = (health.clone(), snapshots.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (health, snapshots) = (health.clone(), snapshots.clone());
                        async move {
                            let path = req.uri().path();
                            let r = match path.strip_prefix("/snapshots/") {
                                Some(id) => {
                                    let auth = req
                                        .headers()
                                        .get(hyper::header::AUTHORIZATION)
                                        .and_then(|v| v.to_str().ok());
                                    snapshot(snapshots.as_deref(), id, auth).await
                                }
                                None => respond(&health, path),
                            };
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}
