//! Where a catalog plugin comes from, and the digest that pins it.
//!
//! A source is an `oci://` reference or an `https://` URL. Every source is
//! pinned to exact bytes before the operator runs them: an OCI reference by
//! its manifest digest (`oci://host/repo@sha256:…`) or, for a tag, by the
//! component's `sha256` given next to it; an https URL always by `sha256`.
//! The pin, not the tag, decides what runs: a moved tag is refused, and a
//! cached component of the pinned digest serves without asking the network.

use std::fmt;
use std::str::FromStr;

/// A sha256 digest: 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)))
    }

    /// From a finished hasher.
    pub fn from_hasher(hasher: sha2::Sha256) -> Self {
        Sha256Digest(hex::encode(<sha2::Sha256 as sha2::Digest>::finalize(
            hasher,
        )))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// `sha256:<hex>`, as OCI writes digests.
    pub fn oci(&self) -> String {
        format!("sha256:{}", self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Sha256Digest {
    type Err = String;

    /// `sha256:<hex>` or bare `<hex>` (as `sha256sum` prints it).
    fn from_str(text: &str) -> Result<Self, String> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Digest(hex.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{text}` is not a sha256 digest: write 64 hex digits, optionally after `sha256:` \
                 (`sha256sum FILE` or `etcd-operator plugin inspect FILE` prints it)"
            ))
        }
    }
}

/// Where a plugin's bytes are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI artifact in the CNCF Wasm layout.
    Oci(OciSource),
    /// A component file served over https.
    Https(reqwest::Url),
}

/// An `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    pub reference: oci_client::Reference,
}

impl OciSource {
    /// The manifest digest the reference pins, if it is `…@sha256:…`.
    pub fn manifest_digest(&self) -> Option<Sha256Digest> {
        self.reference.digest().and_then(|d| d.parse().ok())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Oci(o) => write!(f, "oci://{}", o.reference.whole()),
            Source::Https(u) => write!(f, "{u}"),
        }
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("oci://") {
            let reference: oci_client::Reference = rest.parse().map_err(|e| {
                format!(
                    "`{text}` is not an OCI reference ({e}): write oci://REGISTRY/REPOSITORY@sha256:DIGEST \
                     or oci://REGISTRY/REPOSITORY:TAG"
                )
            })?;
            if let Some(d) = reference.digest() {
                if !d.starts_with("sha256:") {
                    return Err(format!(
                        "`{text}` pins a digest that is not sha256; only sha256 digests are accepted"
                    ));
                }
                d.parse::<Sha256Digest>()?;
            }
            return Ok(Source::Oci(OciSource { reference }));
        }
        if text.starts_with("https://") {
            let url: reqwest::Url = text
                .parse()
                .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
            if url.host_str().is_none() {
                return Err(format!("`{text}` names no host"));
            }
            return Ok(Source::Https(url));
        }
        if text.starts_with("http://") {
            return Err(format!(
                "`{text}` is plain http; a plugin receives storage credentials, so its code is fetched \
                 over https only (or from an OCI registry with oci://)"
            ));
        }
        Err(format!(
            "`{text}` is not a plugin source: write oci://REGISTRY/REPOSITORY@sha256:DIGEST, \
             oci://REGISTRY/REPOSITORY:TAG with a sha256, or https://HOST/PATH with a sha256"
        ))
    }
}

/// A source with what pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedSource {
    pub source: Source,
    /// The component's own sha256 (of the `.wasm` bytes).
    pub sha256: Option<Sha256Digest>,
}

impl PinnedSource {
    /// Refuse a source that nothing pins: a tag or a URL alone may change
    /// under the operator.
    pub fn new(source: Source, sha256: Option<Sha256Digest>) -> Result<Self, String> {
        let pinned = match &source {
            Source::Oci(o) => o.manifest_digest().is_some() || sha256.is_some(),
            Source::Https(_) => sha256.is_some(),
        };
        if !pinned {
            return Err(format!(
                "{source} is not pinned: add `sha256` (the component's digest, as `etcd-operator plugin \
                 inspect` prints it){}",
                match source {
                    Source::Oci(_) => " or reference the manifest by digest (…@sha256:…)",
                    Source::Https(_) => "",
                }
            ));
        }
        Ok(PinnedSource { source, sha256 })
    }
}

impl fmt::Display for PinnedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_parse_with_or_without_the_algorithm() {
        let d: Sha256Digest = format!("sha256:{}", HEX.to_uppercase()).parse().unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(HEX.parse::<Sha256Digest>().unwrap(), d);
        assert!(
            "sha256:abc"
                .parse::<Sha256Digest>()
                .unwrap_err()
                .contains("64 hex digits")
        );
    }

    #[test]
    fn sources_are_oci_or_https_and_must_be_pinned() {
        let by_digest: Source = format!("oci://127.0.0.1:5000/plugins/js@sha256:{HEX}")
            .parse()
            .unwrap();
        let Source::Oci(o) = &by_digest else {
            panic!("{by_digest:?}")
        };
        assert_eq!(o.reference.registry(), "127.0.0.1:5000");
        assert_eq!(o.manifest_digest().unwrap().hex(), HEX);
        assert!(PinnedSource::new(by_digest, None).is_ok());

        let tag: Source = "oci://registry.example.com/p/js:1.0".parse().unwrap();
        let err = PinnedSource::new(tag.clone(), None).unwrap_err();
        assert!(
            err.contains("not pinned") && err.contains("@sha256"),
            "{err}"
        );
        assert!(PinnedSource::new(tag, Some(HEX.parse().unwrap())).is_ok());

        let url: Source = "https://example.com/p/js.wasm".parse().unwrap();
        assert!(
            PinnedSource::new(url, None)
                .unwrap_err()
                .contains("not pinned")
        );

        assert!(
            "http://example.com/js.wasm"
                .parse::<Source>()
                .unwrap_err()
                .contains("https only")
        );
        assert!(
            "s3://bucket/js.wasm"
                .parse::<Source>()
                .unwrap_err()
                .contains("not a plugin source")
        );
        assert!("oci://r.example.com/p@md5:abc".parse::<Source>().is_err());
    }
}
