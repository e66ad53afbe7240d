//! A small Alibaba Cloud OSS server for tests. No OSS emulator exists in any
//! registry reachable here, so this stands in for one: it implements the
//! REST calls the `oss` plugin makes (Put/Get/Head/DeleteObject,
//! ListObjectsV2, the multipart upload calls, ListMultipartUploads) over an in-memory store, and
//! checks every request's signature with the header-signature algorithm
//! (HMAC-SHA1 over VERB, Content-MD5, Content-Type, Date, the `x-oss-`
//! headers and the canonical resource) as Alibaba's documentation describes
//! it — written here independently of the signer the plugin uses (reqsign).
//! Requests whose signature does not match get 403 SignatureDoesNotMatch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// Query parameters that are part of the signed resource (the
/// "sub-resources" of the OSS signature documentation).
const SUB_RESOURCES: &[&str] = &[
    "acl",
    "uploads",
    "location",
    "cors",
    "logging",
    "website",
    "referer",
    "lifecycle",
    "delete",
    "append",
    "tagging",
    "objectMeta",
    "uploadId",
    "partNumber",
    "security-token",
    "position",
    "img",
    "style",
    "styleName",
    "replication",
    "replicationProgress",
    "replicationLocation",
    "cname",
    "bucketInfo",
    "comp",
    "qos",
    "live",
    "status",
    "vod",
    "startTime",
    "endTime",
    "symlink",
    "x-oss-process",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "udf",
    "udfName",
    "udfImage",
    "udfId",
    "udfImageDesc",
    "udfApplication",
    "udfApplicationLog",
    "restore",
    "callback",
    "callback-var",
    "continuation-token",
    "versionId",
    "versioning",
    "versions",
    "sequential",
];

/// An object's bytes and modification time.
type Object = (Vec<u8>, chrono::DateTime<chrono::Utc>);

/// A multipart upload: bucket, key, parts by number.
type Multipart = (String, String, BTreeMap<u32, Vec<u8>>);

#[derive(Default)]
struct Store {
    buckets: HashMap<String, BTreeMap<String, Object>>,
    uploads: HashMap<String, Multipart>,
    next_upload: u64,
}

/// What the server saw, for assertions.
#[derive(Default)]
pub struct Counters {
    pub verified: AtomicUsize,
    pub rejected: AtomicUsize,
}

/// The server; stopped on drop.
pub struct OssServer {
    pub endpoint: String,
    pub counters: Arc<Counters>,
    store: Arc<Mutex<Store>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OssServer {
    /// Serve on a random loopback port, accepting `access_key_id`/`secret`.
    pub fn start(access_key_id: &str, secret: &str) -> OssServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counters = Arc::new(Counters::default());
        let store = Arc::new(Mutex::new(Store::default()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let keys = Arc::new((access_key_id.to_string(), secret.to_string()));
        let (c, s) = (counters.clone(), store.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => accepted.unwrap(),
                        _ = &mut rx => return,
                    };
                    let (c, s, keys) = (c.clone(), s.clone(), keys.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (c, s, keys) = (c.clone(), s.clone(), keys.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(handle(req, &c, &s, &keys).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        OssServer {
            endpoint,
            counters,
            store,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn create_bucket(&self, name: &str) {
        self.store
            .lock()
            .unwrap()
            .buckets
            .entry(name.to_string())
            .or_default();
    }

    /// Keys in a bucket, and uploads still open anywhere.
    pub fn keys(&self, bucket: &str) -> (Vec<String>, usize) {
        let store = self.store.lock().unwrap();
        let keys = store
            .buckets
            .get(bucket)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default();
        (keys, store.uploads.len())
    }
}

impl Drop for OssServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
             <RequestId>test</RequestId></Error>"
        ))))
        .unwrap()
}

fn header<'a>(req: &'a hyper::http::request::Parts, name: &str) -> &'a str {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Percent-decode a query component.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The header signature of the OSS documentation, for `/bucket/key`.
fn expected_signature(
    parts: &hyper::http::request::Parts,
    bucket: &str,
    key: &str,
    query: &[(String, Option<String>)],
    secret: &str,
) -> String {
    expected_signature_with_resource(parts, &format!("/{bucket}/{key}"), query, secret)
}

/// The header signature of the OSS documentation: HMAC-SHA1 (base64) over
/// VERB, Content-MD5, Content-Type, Date, the sorted `x-oss-` headers and the
/// resource with its sub-resources.
fn expected_signature_with_resource(
    parts: &hyper::http::request::Parts,
    base_resource: &str,
    query: &[(String, Option<String>)],
    secret: &str,
) -> String {
    let mut oss_headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-oss-"))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or("").trim().to_string(),
            )
        })
        .collect();
    oss_headers.sort();
    let mut resource = base_resource.to_string();
    let mut subs: Vec<&(String, Option<String>)> = query
        .iter()
        .filter(|(k, _)| SUB_RESOURCES.contains(&k.as_str()))
        .collect();
    subs.sort();
    if !subs.is_empty() {
        let joined: Vec<String> = subs
            .iter()
            .map(|(k, v)| match v.as_deref() {
                Some(v) if !v.is_empty() => format!("{k}={v}"),
                _ => k.clone(),
            })
            .collect();
        resource = format!("{resource}?{}", joined.join("&"));
    }
    let mut to_sign = format!(
        "{}\n{}\n{}\n{}\n",
        parts.method.as_str(),
        header(parts, "content-md5"),
        header(parts, "content-type"),
        header(parts, "date"),
    );
    for (n, v) in oss_headers {
        to_sign.push_str(&format!("{n}:{v}\n"));
    }
    to_sign.push_str(&resource);
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The signature over `/bucket` (no trailing slash) for a path-style bucket request.
fn signature_bucket_path(
    parts: &hyper::http::request::Parts,
    bucket: &str,
    query: &[(String, Option<String>)],
    keys: &(String, String),
) -> String {
    format!(
        "OSS {}:{}",
        keys.0,
        expected_signature_with_resource(parts, &format!("/{bucket}"), query, &keys.1)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn handle(
    req: Request<Incoming>,
    counters: &Counters,
    store: &Mutex<Store>,
    keys: &(String, String),
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Path style: /bucket/key (the test configures `addressing-style=path`).
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket, raw_key) = path.split_once('/').unwrap_or((path, ""));
    let (bucket, key) = (decode(bucket), decode(raw_key));
    let query: Vec<(String, Option<String>)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(p), None),
        })
        .collect();
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };

    let auth = header(&parts, "authorization");
    let signature = |resource_key: &str| {
        format!(
            "OSS {}:{}",
            keys.0,
            expected_signature(&parts, &bucket, resource_key, &query, &keys.1)
        )
    };
    // The documented resource of a bucket-level request is `/bucket/`. A
    // path-style request for the bucket (`GET /bucket?list-type=2`) is also
    // accepted when signed over the path as sent (`/bucket`), which is what
    // reqsign does for path-style addressing; real OSS buckets are reached in
    // virtual-host style, where the two agree.
    let path_style_bucket = key.is_empty() && !parts.uri.path().ends_with('/');
    let signed = auth == signature(&key)
        || (path_style_bucket && auth == signature_bucket_path(&parts, &bucket, &query, keys));
    if !signed {
        eprintln!(
            "oss test server: signature mismatch for {} {}",
            parts.method, parts.uri
        );
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        return xml_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    counters.verified.fetch_add(1, Ordering::Relaxed);

    let mut store = store.lock().unwrap();
    if !store.buckets.contains_key(&bucket) {
        return xml_error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    }
    let ok = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .header("etag", "\"etag\"")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let method = parts.method.as_str();
    match (method, key.is_empty()) {
        ("GET", true) if q("uploads").is_some() => {
            // ListMultipartUploads, in one page.
            let prefix = q("prefix").unwrap_or_default();
            let mut open: Vec<(&String, &String)> = store
                .uploads
                .iter()
                .filter(|(_, (b, k, _))| *b == bucket && k.starts_with(&prefix))
                .map(|(id, (_, k, _))| (k, id))
                .collect();
            open.sort();
            let uploads: String = open
                .iter()
                .map(|(k, id)| {
                    format!(
                        "<Upload><Key>{}</Key><UploadId>{id}</UploadId></Upload>",
                        xml_escape(k)
                    )
                })
                .collect();
            ok(
                StatusCode::OK,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult>\
                     <Bucket>{bucket}</Bucket><Prefix>{}</Prefix><IsTruncated>false</IsTruncated>\
                     {uploads}</ListMultipartUploadsResult>",
                    xml_escape(&prefix)
                ),
            )
        }
        ("GET", true) => {
            let prefix = q("prefix").unwrap_or_default();
            let delimiter = q("delimiter").unwrap_or_default();
            let objects = &store.buckets[&bucket];
            let mut contents = String::new();
            let mut prefixes = std::collections::BTreeSet::new();
            for (k, (data, modified)) in objects.range(prefix.clone()..) {
                if !k.starts_with(&prefix) {
                    break;
                }
                let rest = &k[prefix.len()..];
                if !delimiter.is_empty()
                    && let Some(i) = rest.find(&delimiter)
                {
                    prefixes.insert(format!("{prefix}{}", &rest[..i + delimiter.len()]));
                    continue;
                }
                contents.push_str(&format!(
                    "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>\"etag\"</ETag>\
                     <Type>Normal</Type><Size>{}</Size><StorageClass>Standard</StorageClass></Contents>",
                    xml_escape(k),
                    modified.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    data.len()
                ));
            }
            let common: String = prefixes
                .iter()
                .map(|p| {
                    format!(
                        "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                        xml_escape(p)
                    )
                })
                .collect();
            ok(
                StatusCode::OK,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult><Name>{bucket}</Name>\
                     <Prefix>{}</Prefix><MaxKeys>1000</MaxKeys><Delimiter>{}</Delimiter>\
                     <IsTruncated>false</IsTruncated>{contents}{common}</ListBucketResult>",
                    xml_escape(&prefix),
                    xml_escape(&delimiter)
                ),
            )
        }
        ("POST", false) if q("uploads").is_some() => {
            store.next_upload += 1;
            let id = format!("upload-{}", store.next_upload);
            store
                .uploads
                .insert(id.clone(), (bucket.clone(), key.clone(), BTreeMap::new()));
            ok(
                StatusCode::OK,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>\
                     <Bucket>{bucket}</Bucket><Key>{}</Key><UploadId>{id}</UploadId>\
                     </InitiateMultipartUploadResult>",
                    xml_escape(&key)
                ),
            )
        }
        ("PUT", false) if q("uploadId").is_some() => {
            let id = q("uploadId").unwrap();
            let part: u32 = q("partNumber").and_then(|p| p.parse().ok()).unwrap_or(0);
            match store.uploads.get_mut(&id) {
                Some((_, _, parts)) => {
                    parts.insert(part, body.to_vec());
                    ok(StatusCode::OK, String::new())
                }
                None => xml_error(StatusCode::NOT_FOUND, "NoSuchUpload", "no such upload"),
            }
        }
        ("POST", false) if q("uploadId").is_some() => {
            let id = q("uploadId").unwrap();
            match store.uploads.remove(&id) {
                Some((b, k, parts)) => {
                    let data: Vec<u8> = parts.into_values().flatten().collect();
                    store
                        .buckets
                        .get_mut(&b)
                        .unwrap()
                        .insert(k.clone(), (data, chrono::Utc::now()));
                    ok(
                        StatusCode::OK,
                        format!(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult>\
                             <Bucket>{b}</Bucket><Key>{}</Key><ETag>\"etag\"</ETag></CompleteMultipartUploadResult>",
                            xml_escape(&k)
                        ),
                    )
                }
                None => xml_error(StatusCode::NOT_FOUND, "NoSuchUpload", "no such upload"),
            }
        }
        ("DELETE", false) if q("uploadId").is_some() => {
            store.uploads.remove(&q("uploadId").unwrap());
            ok(StatusCode::NO_CONTENT, String::new())
        }
        ("PUT", false) => {
            store
                .buckets
                .get_mut(&bucket)
                .unwrap()
                .insert(key, (body.to_vec(), chrono::Utc::now()));
            ok(StatusCode::OK, String::new())
        }
        ("DELETE", false) => {
            store.buckets.get_mut(&bucket).unwrap().remove(&key);
            ok(StatusCode::NO_CONTENT, String::new())
        }
        ("GET" | "HEAD", false) => {
            let Some((data, modified)) = store.buckets[&bucket].get(&key) else {
                if method == "HEAD" {
                    return Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                }
                return xml_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
            };
            let len = data.len();
            let range = header(&parts, "range")
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    let a: usize = a.parse().ok()?;
                    let b: usize = if b.is_empty() {
                        len.checked_sub(1)?
                    } else {
                        b.parse().ok()?
                    };
                    (a <= b && a < len).then_some((a, b.min(len - 1)))
                });
            let mut r = Response::builder().header("etag", "\"etag\"").header(
                "last-modified",
                modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            );
            let slice = match range {
                Some((a, b)) if method == "GET" => {
                    r = r
                        .status(StatusCode::PARTIAL_CONTENT)
                        .header("content-range", format!("bytes {a}-{b}/{len}"));
                    data[a..=b].to_vec()
                }
                _ => {
                    r = r.status(StatusCode::OK);
                    if method == "HEAD" {
                        r = r.header("content-length", len);
                        Vec::new()
                    } else {
                        data.clone()
                    }
                }
            };
            r.body(Full::new(Bytes::from(slice))).unwrap()
        }
        _ => xml_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "this test server does not implement that call",
        ),
    }
}
