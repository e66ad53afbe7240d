//! opendal's HTTP transport over `wasi:http`, the only network a plugin has.
//!
//! Requests are sent with the raw `wasip2` bindings: the request body is
//! written and finished before the request is handed to the host (streaming
//! a body into an in-flight request intermittently reset connections), and
//! response bodies are streamed back in pieces, so a multi-GiB download
//! never sits in guest memory. Every call blocks the guest until the host
//! answers, which is how a plugin's synchronous exports run opendal's async
//! code: see [`block_on`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use opendal::{Buffer, Error, ErrorKind, HttpBody, HttpTransport, Result};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasip2::io::streams::{InputStream, StreamError};

/// Bodies up to this size are written before the request is sent.
const SMALL_BODY: usize = 4096;
/// Largest single write into a request body (the host accepts up to 1 MiB).
const MAX_WRITE: usize = 1 << 20;
/// Bytes asked for per read of a response body.
const READ_PIECE: u64 = 64 << 10;

/// Run a future to completion. The transport never returns `Pending` (it
/// blocks in the host), so this is all the executor a plugin needs.
pub fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
    futures::executor::block_on(f.into_future())
}

/// The `wasi:http` transport. Install it on an operator with
/// `op.with_context(OperationContext::new().with_http_transport(HttpTransporter::new(WasiHttp::default())))`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasiHttp {
    /// Send the query in the encoding SigV4 signs it in ([`QUERY_ENCODE`]),
    /// for services signed that way (S3).
    pub signed_query: bool,
}

fn unexpected(what: &str, detail: impl std::fmt::Debug) -> Error {
    Error::new(ErrorKind::Unexpected, format!("{what}: {detail:?}"))
}

/// Map a `wasi:http` error: refusals by the host's egress policy are
/// permanent, network trouble is worth retrying.
fn error_code(e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::new(
            ErrorKind::PermissionDenied,
            "the operator refused this request: the endpoint is not allowed for this backup location",
        ),
        ErrorCode::DnsError(_)
        | ErrorCode::DnsTimeout
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable => unexpected("network error", e).set_temporary(),
        other => unexpected("HTTP request failed", other),
    }
}

impl HttpTransport for WasiHttp {
    async fn fetch(&self, req: http::Request<Buffer>) -> Result<http::Response<HttpBody>> {
        send(req, self.signed_query)
    }
}

/// Send a request opendal has no call for (S3's ListMultipartUploads, for
/// one) and read its whole response body, refusing one announced as larger
/// than `limit` bytes (the sandbox's memory limit bounds the rest).
pub fn exchange(
    req: http::Request<Buffer>,
    signed_query: bool,
    limit: u64,
) -> Result<(http::StatusCode, Bytes)> {
    let response = send(req, signed_query)?;
    let status = response.status();
    let announced = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(unexpected(
            "response too large",
            format!("{announced:?} bytes, at most {limit} expected"),
        ));
    }
    let body = block_on(response.into_body().to_buffer())?;
    Ok((status, body.to_bytes()))
}

fn send(req: http::Request<Buffer>, signed_query: bool) -> Result<http::Response<HttpBody>> {
    let (parts, body) = req.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        // `host` is forbidden in wasi:http; the host derives it from the authority.
        .filter(|(name, _)| *name != http::header::HOST)
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&headers).map_err(|e| unexpected("bad request header", e))?;
    let request = OutgoingRequest::new(fields);
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let uri = &parts.uri;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") | None => Scheme::Https,
        Some(other) => Scheme::Other(other.to_string()),
    };
    request
        .set_method(&method)
        .and_then(|_| request.set_scheme(Some(&scheme)))
        .and_then(|_| request.set_authority(uri.authority().map(|a| a.as_str())))
        .and_then(|_| {
            let path = uri.path_and_query().map(|p| match signed_query {
                true => canonical_query(p.as_str()),
                false => p.as_str().to_string(),
            });
            request.set_path_with_query(path.as_deref())
        })
        .map_err(|_| unexpected("cannot build the request for", uri))?;

    let outgoing = request
        .body()
        .map_err(|_| unexpected("request body", "unavailable"))?;
    let future = if body.len() <= SMALL_BODY {
        // Small (mostly empty) bodies: written and finished before the
        // request goes out, which is what keeps empty bodies reliable.
        write_body(&outgoing, body)?;
        OutgoingBody::finish(outgoing, None).map_err(error_code)?;
        outgoing_handler::handle(request, None).map_err(error_code)?
    } else {
        // Large bodies: the host buffers only a couple of writes, so the
        // request must be on its way before the body is streamed into it.
        // If the server answers before taking the whole body (an error),
        // finishing fails; its response is then the better explanation.
        let future = outgoing_handler::handle(request, None).map_err(error_code)?;
        write_body(&outgoing, body)?;
        if let Err(e) = OutgoingBody::finish(outgoing, None) {
            future.subscribe().block();
            return match future.get() {
                Some(Ok(Ok(r))) => respond(&parts.method, r),
                _ => Err(error_code(e)),
            };
        }
        future
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(error_code(e)),
        Some(Err(())) | None => return Err(unexpected("HTTP response", "lost")),
    };
    respond(&parts.method, response)
}

/// Every byte of a query name or value except `A-Za-z0-9-._~` is sent
/// percent-encoded: the form in which SigV4 signs the query (decoded once,
/// encoded with exactly this set). opendal leaves `/` and `:` raw in query
/// values (`prefix=dir/`); servers that check the signature against the
/// query as received (not decoded and re-encoded, as AWS does) would then
/// refuse the signature. Decoding is the same, so a server that decodes
/// reads the same value; only S3 opts in (a GCS emulator compares resumable
/// upload ids undecoded).
pub(crate) const QUERY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `path?query` with the query in [`QUERY_ENCODE`] form; the path as is.
fn canonical_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let encode = |part: &str| {
        let decoded = percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
        percent_encoding::percent_encode(&decoded, QUERY_ENCODE).to_string()
    };
    let pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => format!("{}={}", encode(k), encode(v)),
            None => encode(pair),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// Turn a `wasi:http` response into opendal's, streaming its body.
fn respond(method: &http::Method, response: IncomingResponse) -> Result<http::Response<HttpBody>> {
    let mut builder = http::Response::builder().status(response.status());
    let mut size = None;
    for (name, value) in response.headers().entries() {
        if name.eq_ignore_ascii_case("content-length") {
            size = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
        builder = builder.header(name, value);
    }
    // HEAD responses announce a length but carry no body.
    if *method == http::Method::HEAD {
        size = Some(0);
    }
    let body = BodyStream::new(response)?;
    builder
        .body(HttpBody::new(body, size))
        .map_err(|e| unexpected("bad response", e))
}

/// Stream `body` into the request body, as fast as the host accepts it.
///
/// The host closes the stream once it has sent `content-length` bytes, or
/// when the server answered early (an error before the body was read); in
/// both cases writing stops and the response says what happened.
fn write_body(outgoing: &OutgoingBody, body: Buffer) -> Result<()> {
    let stream = outgoing
        .write()
        .map_err(|_| unexpected("request body stream", "unavailable"))?;
    let failed = |e: StreamError| unexpected("writing the request body", e).set_temporary();
    for bytes in body {
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let room = match stream.check_write() {
                Ok(n) => n as usize,
                Err(StreamError::Closed) => return Ok(()),
                Err(e) => return Err(failed(e)),
            };
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = room.min(rest.len()).min(MAX_WRITE);
            match stream.write(&rest[..n]) {
                Ok(()) => rest = &rest[n..],
                Err(StreamError::Closed) => return Ok(()),
                Err(e) => return Err(failed(e)),
            }
        }
    }
    // Wait until the host has taken everything before the stream goes.
    match stream.blocking_flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(()),
        Err(e) => Err(failed(e)),
    }
}

/// A response body read piece by piece. Field order is drop order: the
/// stream before its body, the body before its response.
struct BodyStream {
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
}

impl BodyStream {
    fn new(response: IncomingResponse) -> Result<Self> {
        let body = response
            .consume()
            .map_err(|_| unexpected("response body", "already consumed"))?;
        let stream = body
            .stream()
            .map_err(|_| unexpected("response body stream", "unavailable"))?;
        Ok(BodyStream {
            stream: Some(stream),
            body: Some(body),
            _response: response,
        })
    }

    fn finish(&mut self) {
        self.stream = None;
        if let Some(body) = self.body.take() {
            drop(IncomingBody::finish(body));
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Buffer>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(stream) = self.stream.as_ref() else {
            return Poll::Ready(None);
        };
        match stream.blocking_read(READ_PIECE) {
            Ok(bytes) => Poll::Ready(Some(Ok(Buffer::from(Bytes::from(bytes))))),
            Err(StreamError::Closed) => {
                self.finish();
                Poll::Ready(None)
            }
            Err(StreamError::LastOperationFailed(e)) => {
                self.finish();
                Poll::Ready(Some(Err(unexpected(
                    "reading the response body",
                    e.to_debug_string(),
                )
                .set_temporary())))
            }
        }
    }
}
