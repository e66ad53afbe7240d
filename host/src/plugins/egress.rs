//! Outbound HTTP control: a plugin may reach only the endpoints the
//! operator-side configuration lists (the endpoint in the resource's spec),
//! and never a private or loopback address unless that network is listed too.
//!
//! The check happens twice: on the URL before anything is sent, and on every
//! address the host name resolves to; the connection then goes to one of
//! those addresses ([`super::connect`]), so the name cannot resolve
//! elsewhere in between.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::uri::Scheme;
use ipnet::IpNet;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::PluginError;

/// One allowed `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parse `scheme://host[:port][/path]`; the path is ignored, the port
    /// defaults by scheme. Wildcards are refused: list each endpoint.
    pub fn parse(entry: &str) -> Result<Self, PluginError> {
        let bad = |why: &str| {
            PluginError::Config(format!(
                "allowed endpoint `{entry}` {why}; write it as scheme://host[:port], e.g. https://s3.eu-west-1.amazonaws.com"
            ))
        };
        if entry.contains('*') {
            return Err(bad("contains a wildcard, which is not supported"));
        }
        let uri: http::Uri = entry.trim().parse().map_err(|_| bad("is not a URL"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad("has no scheme"))?
            .to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("must use http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("has no host"))?;
        Ok(Endpoint {
            scheme,
            host: host
                .trim_matches(|c| c == '[' || c == ']')
                .to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Where a plugin may send HTTP requests.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Endpoints a plugin may reach. Empty: no outbound HTTP at all.
    pub allowed: Vec<Endpoint>,
    /// Private, loopback or link-local networks that may be reached anyway
    /// (for example 127.0.0.1/32 for a test server or an in-cluster MinIO).
    pub private_networks: Vec<IpNet>,
}

impl EgressPolicy {
    /// No outbound HTTP.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Build from textual entries, naming the bad one on error.
    pub fn from_entries(
        endpoints: &[String],
        private_networks: &[String],
    ) -> Result<Self, PluginError> {
        let allowed = endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<_, _>>()?;
        let private_networks = private_networks
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<IpNet>()
                    .or_else(|_| n.trim().parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        PluginError::Config(format!(
                            "allowed private network `{n}` is not an IP address or CIDR such as 10.0.0.0/8"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(EgressPolicy {
            allowed,
            private_networks,
        })
    }

    /// Is this URL on the allow-list? `Err` says why not.
    pub fn check_url(&self, uri: &http::Uri) -> Result<(String, u16), String> {
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let host = uri
            .host()
            .ok_or("the URL has no host")?
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTP { 80 } else { 443 });
        let wanted = Endpoint {
            scheme: scheme.as_str().to_ascii_lowercase(),
            host,
            port,
        };
        if self.allowed.contains(&wanted) {
            Ok((wanted.host, wanted.port))
        } else if self.allowed.is_empty() {
            Err(format!(
                "{wanted} is not allowed: this plugin has no allowed endpoints"
            ))
        } else {
            let list: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
            Err(format!(
                "{wanted} is not an allowed endpoint (allowed: {}); set the endpoint in the resource's spec",
                list.join(", ")
            ))
        }
    }

    /// Is it acceptable to connect to this resolved address?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if !is_private(ip) || self.private_networks.iter().any(|n| n.contains(&ip)) {
            Ok(())
        } else {
            Err(format!(
                "it resolves to {ip}, a private or loopback address; allow that network explicitly to reach it"
            ))
        }
    }
}

/// Loopback, private, link-local, unspecified, CGNAT and unique-local ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// A refused request, remembered so the host can report it as a typed error
/// even if the plugin turns it into something vaguer.
#[derive(Debug, Clone)]
pub struct Denial {
    pub url: String,
    pub reason: String,
}

/// The wasi:http hooks installed in every plugin store.
pub struct EgressHooks {
    pub(crate) policy: Arc<EgressPolicy>,
    pub(crate) plugin: Arc<str>,
    pub(crate) denials: Arc<Mutex<Vec<Denial>>>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl EgressHooks {
    fn deny(&self, url: String, reason: String) -> ResponseFuture {
        tracing::warn!(plugin = %self.plugin, %url, %reason, "plugin egress denied");
        self.denials
            .lock()
            .expect("denials lock")
            .push(Denial { url, reason });
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let _ = fut;
        let uri = request.uri().clone();
        let url = uri.to_string();
        let (host, port) = match self.policy.check_url(&uri) {
            Ok(hp) => hp,
            Err(reason) => return self.deny(url, reason),
        };
        let policy = self.policy.clone();
        let plugin = self.plugin.clone();
        let denials = self.denials.clone();
        Box::new(async move {
            // Check every address the name resolves to, then connect to one
            // of those very addresses (never resolving the name again).
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| HttpError::DestinationNotFound)?
                .collect();
            for addr in &addrs {
                if let Err(reason) = policy.check_ip(addr.ip()) {
                    tracing::warn!(plugin = %plugin, %url, %reason, "plugin egress denied");
                    denials
                        .lock()
                        .expect("denials lock")
                        .push(Denial { url, reason });
                    return Err(HttpError::HttpRequestDenied);
                }
            }
            tracing::debug!(plugin = %plugin, %url, "plugin egress");
            super::connect::send_to_vetted(request, options, &addrs, &host).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_with_default_ports() {
        let e = Endpoint::parse("https://S3.Example.com/bucket").unwrap();
        assert_eq!(e.to_string(), "https://s3.example.com:443");
        assert_eq!(Endpoint::parse("http://127.0.0.1:9000").unwrap().port, 9000);
    }

    #[test]
    fn refuses_wildcards_and_other_schemes() {
        let err = Endpoint::parse("https://*.amazonaws.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wildcard"), "{err}");
        let err = Endpoint::parse("ftp://example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http or https"), "{err}");
    }

    #[test]
    fn url_must_match_scheme_host_and_port() {
        let p = EgressPolicy::from_entries(&["http://minio.local:9000".into()], &[]).unwrap();
        assert!(
            p.check_url(&"http://minio.local:9000/b/k".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.check_url(&"https://minio.local:9000/b/k".parse().unwrap())
                .is_err()
        );
        assert!(
            p.check_url(&"http://minio.local:9001/".parse().unwrap())
                .is_err()
        );
        let err = p
            .check_url(&"http://evil.example/".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("allowed: http://minio.local:9000"), "{err}");
    }

    #[test]
    fn private_addresses_need_an_explicit_network() {
        let closed = EgressPolicy::deny_all();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                closed.check_ip(ip.parse().unwrap()).is_err(),
                "{ip} should be private"
            );
        }
        assert!(closed.check_ip("93.184.216.34".parse().unwrap()).is_ok());
        let open = EgressPolicy::from_entries(&[], &["127.0.0.1".into()]).unwrap();
        assert!(open.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(open.check_ip("127.0.0.2".parse().unwrap()).is_err());
        let err = EgressPolicy::from_entries(&[], &["not-a-net".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-a-net"), "{err}");
    }
}
