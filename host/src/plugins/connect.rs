//! Sending a plugin's HTTP request to the address the egress check vetted.
//!
//! wasmtime's default sender resolves the host name again when it connects,
//! so a name that resolved to an allowed public address for the check could
//! resolve to a private one a moment later (DNS rebinding). Here the
//! connection goes to one of the addresses that were checked, in order, and
//! the name is never looked up again. TLS still verifies the URL's host name
//! against the web PKI roots, like the default sender, so a vetted address
//! serving someone else's certificate is refused.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// The wasmtime default for each of the three timeouts a request may set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What the hook hands back: the response, and a future that ends with the
/// connection (reporting a failure after the headers, if any).
pub type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// Send `request` over a connection to the first of `addrs` that accepts
/// one. `host` is the URL's host (the TLS server name).
pub async fn send_to_vetted(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    addrs: &[SocketAddr],
    host: &str,
) -> Result<Sent, HttpError> {
    let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
    };
    let connect_timeout = timeout(|o| o.connect_timeout);
    let first_byte_timeout = timeout(|o| o.first_byte_timeout);
    let between_bytes_timeout = timeout(|o| o.between_bytes_timeout).max(Duration::from_nanos(1));
    let tls = request.uri().scheme() == Some(&Scheme::HTTPS);

    let tcp = connect_any(addrs, connect_timeout).await?;
    let (mut sender, connection) = if tls {
        let stream = tls_connect(tcp, host, connect_timeout).await?;
        handshake(stream, connect_timeout).await?
    } else {
        handshake(tcp, connect_timeout).await?
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(connection.await);
    });

    // Not addressing a proxy: the request line carries only the path (the
    // Host header, set by wasmtime from the URL, names the server).
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)?;
    let response =
        response.map(|incoming| Paced::new(incoming, between_bytes_timeout).boxed_unsync());
    let io = async move {
        match done_rx.await {
            Ok(Err(e)) if e.is_timeout() => Err(HttpError::HttpResponseTimeout),
            Ok(Err(e)) => Err(HttpError::from(e)),
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

/// A TCP connection to the first address that takes one.
async fn connect_any(addrs: &[SocketAddr], limit: Duration) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::DestinationNotFound;
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

/// TLS over `tcp`, verifying `host` against the web PKI roots.
async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    limit: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls(std::io::Error::other(e)))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(HttpError::InvalidDnsNameError)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(limit, connector.connect(name, tcp))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)
}

type Handshake = (
    hyper::client::conn::http1::SendRequest<WasiBody>,
    Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>,
);

async fn handshake<S>(stream: S, limit: Duration) -> Result<Handshake, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = tokio::time::timeout(
        limit,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    Ok((sender, Box::pin(connection)))
}

/// A response body that fails when no frame arrives for `limit`.
struct Paced {
    inner: hyper::body::Incoming,
    limit: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Paced {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> Self {
        Paced {
            inner,
            limit,
            idle: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.limit;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn request(url: &str) -> http::Request<WasiBody> {
        let authority = url
            .parse::<http::Uri>()
            .unwrap()
            .authority()
            .unwrap()
            .to_string();
        http::Request::get(url)
            .header(http::header::HOST, authority)
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap()
    }

    /// A one-connection server on loopback: it reads the request, writes
    /// `reply`, keeps the connection until the client closes it, and
    /// returns what it was asked.
    async fn server(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(reply).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (addr, task)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn connects_to_the_vetted_address_without_resolving_the_name_again() {
        let (addr, asked) = server(OK).await;
        // `.invalid` never resolves: a sender that looked the name up again
        // would fail here.
        let url = format!("http://storage.invalid:{}/bucket/key?x=1", addr.port());
        let closed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (response, io) =
            send_to_vetted(request(&url), None, &[closed, addr], "storage.invalid")
                .await
                .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        Box::into_pin(io).await.unwrap();
        let asked = asked.await.unwrap();
        assert!(
            asked.starts_with("GET /bucket/key?x=1 HTTP/1.1\r\n"),
            "{asked}"
        );
        assert!(
            asked
                .to_ascii_lowercase()
                .contains(&format!("host: storage.invalid:{}", addr.port())),
            "{asked}"
        );
    }

    #[tokio::test]
    async fn https_verifies_the_host_name_on_the_vetted_address() {
        // A plain-text server where TLS is expected: the handshake fails,
        // the request is never sent in the clear.
        let (addr, _asked) = server(OK).await;
        let url = format!("https://storage.example:{}/", addr.port());
        let err = send_to_vetted(request(&url), None, &[addr], "storage.example")
            .await
            .err()
            .expect("no TLS, no request");
        assert!(matches!(err, HttpError::Tls(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out() {
        // Two of the ten bytes promised, then nothing.
        let (addr, _asked) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab").await;
        let options = RequestOptions {
            between_bytes_timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        };
        let url = format!("http://h.invalid:{}/", addr.port());
        let (response, _io) = send_to_vetted(request(&url), Some(options), &[addr], "h.invalid")
            .await
            .unwrap();
        let err = response.into_body().collect().await.err().unwrap();
        assert!(matches!(err, HttpError::ConnectionReadTimeout), "{err:?}");
    }
}
