//! `/metrics` (Prometheus text format), `/healthz` (the process serves) and
//! `/readyz` (it reached the API server and loaded its plugins; a standby
//! replica waiting for the leader Lease is ready too, so a rollout of two
//! replicas proceeds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub leader: AtomicBool,
}

fn respond(health: &Health, path: &str) -> Response<Full<Bytes>> {
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
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
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
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let r = respond(&health, req.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}
