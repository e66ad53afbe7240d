//! Cleaning up multipart uploads the operator lost (WIT `upload-cleanup`),
//! for services with S3's multipart API (S3, and OSS, which copied it):
//! ListMultipartUploads for one key, then AbortMultipartUpload of each.
//!
//! opendal has no call for either, so the requests are built here, signed
//! by the plugin (with the reqsign signer opendal itself uses) and sent over
//! the same `wasi:http` transport. Only uploads of exactly the key are
//! aborted: the listing is by prefix and may name longer keys.

use opendal::Buffer;
use percent_encoding::utf8_percent_encode;

use crate::http::{QUERY_ENCODE, exchange};
use crate::objectstore::map_error;
use crate::types::PluginError;

/// Pages of (usually 1,000) uploads read at most: a key with more open
/// uploads than that is cleaned up over several lost uploads.
const MAX_PAGES: usize = 10;
/// Largest listing response read.
const MAX_LISTING: u64 = 4 << 20;

/// Where a bucket's requests go: `origin` is `scheme://authority`, `path`
/// the bucket's path on it (`/bucket` path-style, empty virtual-host style).
#[derive(Debug, Clone)]
pub struct BucketUrl {
    pub origin: String,
    pub path: String,
}

impl BucketUrl {
    /// From an endpoint URL (`http://127.0.0.1:9000`), path-style or
    /// virtual-host style (`bucket.host`).
    pub fn new(endpoint: &str, bucket: &str, path_style: bool) -> Result<BucketUrl, PluginError> {
        let uri: http::Uri = endpoint.parse().map_err(|e| {
            PluginError::InvalidConfig(format!("endpoint `{endpoint}` is not a URL: {e}"))
        })?;
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map(|a| a.as_str()).ok_or_else(|| {
            PluginError::InvalidConfig(format!("endpoint `{endpoint}` names no host"))
        })?;
        Ok(if path_style {
            BucketUrl {
                origin: format!("{scheme}://{authority}"),
                path: format!("/{bucket}"),
            }
        } else {
            BucketUrl {
                origin: format!("{scheme}://{bucket}.{authority}"),
                path: String::new(),
            }
        })
    }
}

/// Signs a request head in place.
pub type Sign<'a> = &'a dyn Fn(&mut http::request::Parts) -> Result<(), PluginError>;

/// SigV4's (and OSS's) encoding of a path segment or a query value.
fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_ENCODE).to_string()
}

fn encode_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// Abort every open multipart upload of exactly `key`; how many were.
/// `signed_query`: send the query in SigV4's encoding (see [`crate::http`]).
pub fn abort_open_uploads(
    bucket: &BucketUrl,
    key: &str,
    signed_query: bool,
    sign: Sign<'_>,
) -> Result<u32, PluginError> {
    let BucketUrl { origin, path } = bucket;
    let mut aborted = 0;
    let mut markers: Option<(String, String)> = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!("{origin}{path}/?uploads&prefix={}", encode(key));
        if let Some((key_marker, id_marker)) = &markers {
            url.push_str(&format!(
                "&key-marker={}&upload-id-marker={}",
                encode(key_marker),
                encode(id_marker)
            ));
        }
        let (status, body) = send(http::Method::GET, &url, signed_query, sign)?;
        if !status.is_success() {
            return Err(status_error(
                "listing the open multipart uploads",
                status,
                &body,
            ));
        }
        let listing = Listing::parse(&String::from_utf8_lossy(&body));
        for id in listing.uploads_of(key) {
            let url = format!(
                "{origin}{path}/{}?uploadId={}",
                encode_path(key),
                encode(&id)
            );
            let (status, body) = send(http::Method::DELETE, &url, signed_query, sign)?;
            match status.as_u16() {
                200..=299 => aborted += 1,
                // Completed or aborted meanwhile: nothing left to discard.
                404 => {}
                _ => {
                    return Err(status_error(
                        &format!("aborting multipart upload {id} of `{key}`"),
                        status,
                        &body,
                    ));
                }
            }
        }
        match listing.next {
            Some(next) => markers = Some(next),
            None => break,
        }
    }
    Ok(aborted)
}

/// Sign and send a request without a body.
fn send(
    method: http::Method,
    url: &str,
    signed_query: bool,
    sign: Sign<'_>,
) -> Result<(http::StatusCode, bytes::Bytes), PluginError> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .map_err(|e| {
            PluginError::InvalidConfig(format!("cannot build a request for {url}: {e}"))
        })?;
    let (mut parts, ()) = request.into_parts();
    sign(&mut parts)?;
    exchange(
        http::Request::from_parts(parts, Buffer::new()),
        signed_query,
        MAX_LISTING,
    )
    .map_err(|e| map_error(e, url))
}

fn status_error(what: &str, status: http::StatusCode, body: &[u8]) -> PluginError {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let message = format!("{what}: HTTP {status}: {text}");
    match status.as_u16() {
        401 | 403 => PluginError::Unauthorized(message),
        404 => PluginError::NotFound(message),
        429 | 500..=599 => PluginError::Transient(message),
        _ => PluginError::Other(message),
    }
}

/// The parts of a ListMultipartUploadsResult this needs.
#[derive(Debug, Default, PartialEq)]
struct Listing {
    /// Key and upload id of each open upload listed.
    uploads: Vec<(String, String)>,
    /// The markers of the next page, when the listing is truncated.
    next: Option<(String, String)>,
}

impl Listing {
    fn parse(xml: &str) -> Listing {
        let uploads = elements(xml, "Upload")
            .filter_map(|u| Some((text(u, "Key")?, text(u, "UploadId")?)))
            .collect();
        let truncated = text(xml, "IsTruncated").is_some_and(|t| t == "true");
        let next = match (text(xml, "NextKeyMarker"), text(xml, "NextUploadIdMarker")) {
            (Some(k), Some(id)) if truncated => Some((k, id)),
            _ => None,
        };
        Listing { uploads, next }
    }

    fn uploads_of(&self, key: &str) -> Vec<String> {
        self.uploads
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// The contents of each `<tag>…</tag>` in `xml`, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let inner = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(inner)
    })
}

/// The text of the first `<tag>`, with XML's predefined entities decoded.
fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).next().map(|t| {
        t.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}
