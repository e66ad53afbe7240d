//! Stand-in for `crc-fast` inside plugins (see `[patch.crates-io]` in
//! `plugins/Cargo.toml`).
//!
//! opendal's S3 service uses crc-fast only for the optional CRC-32C upload
//! checksum, but linking crc-fast brings its lookup tables for every CRC
//! variant it supports — more than half of the S3 plugin, which must fit a
//! ConfigMap. This crate offers the same `Digest`/`CrcAlgorithm` API for the
//! one algorithm used, computed by the `crc` crate.

use crc::{Crc, CRC_32_ISCSI};

static CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The CRC algorithms this stand-in computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrcAlgorithm {
    /// CRC-32C (Castagnoli), as S3's `x-amz-checksum-crc32c`.
    Crc32Iscsi,
}

/// An incremental CRC computation.
#[derive(Clone)]
pub struct Digest {
    inner: crc::Digest<'static, u32>,
}

impl Digest {
    pub fn new(algorithm: CrcAlgorithm) -> Self {
        match algorithm {
            CrcAlgorithm::Crc32Iscsi => Digest {
                inner: CASTAGNOLI.digest(),
            },
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The checksum so far, widened to u64 as crc-fast returns it.
    pub fn finalize(&self) -> u64 {
        u64::from(self.inner.clone().finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        let mut d = Digest::new(CrcAlgorithm::Crc32Iscsi);
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finalize(), 0xe306_9283);
    }
}
