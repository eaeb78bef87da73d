//! sha256 while bytes stream through a reader or writer.

use std::io::{self, Read, Write};

use oci_spec::image::{Digest, Sha256Digest};
use sha2::{Digest as _, Sha256};

/// A finished sha256 as an OCI digest (`sha256:<hex>`).
fn to_digest(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A 64-digit lowercase hex string is always a valid sha256 digest.
    match hex.parse::<Sha256Digest>() {
        Ok(d) => d.into(),
        Err(e) => unreachable!("sha256 hex {hex} rejected: {e}"),
    }
}

/// The sha256 digest of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(bytes);
    to_digest(h)
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, the digest and the length of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, to_digest(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The inner reader, the digest and the length of everything read.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, to_digest(self.hasher), self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The error a [`VerifyingReader`] returns (inside an `io::Error` of kind `InvalidData`) when the
/// content does not match what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DigestMismatch {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error(
        "size mismatch for {expected}: expected {expected_len} bytes, got more than that or {actual_len}"
    )]
    Size {
        expected: Digest,
        expected_len: u64,
        actual_len: u64,
    },
}

/// A reader that checks content against an expected digest (and, optionally, size) as it streams.
///
/// The check happens at end of stream: the read that would return 0 returns an `InvalidData` error
/// instead when the digest differs, so a consumer that reads to the end never silently accepts bad
/// bytes. Reading past the expected size fails at once, which bounds what a hostile source can send.
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Digest,
    expected_len: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_len: Option<u64>) -> Self {
        Self {
            inner: HashingReader::new(inner),
            expected,
            expected_len,
            verified: false,
        }
    }

    fn mismatch(&self, err: DigestMismatch) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        let len = self.inner.len();
        if let Some(expected_len) = self.expected_len
            && (len > expected_len || (n == 0 && len != expected_len))
        {
            return Err(self.mismatch(DigestMismatch::Size {
                expected: self.expected.clone(),
                expected_len,
                actual_len: len,
            }));
        }
        if n == 0 {
            let actual = to_digest(self.inner.hasher.clone());
            if actual != self.expected {
                return Err(self.mismatch(DigestMismatch::Digest {
                    expected: self.expected.clone(),
                    actual,
                }));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_digest() {
        assert_eq!(sha256_digest(b"").to_string(), EMPTY);
        let (_, d, n) = HashingWriter::new(Vec::new()).finish();
        assert_eq!((d.to_string().as_str(), n), (EMPTY, 0));
    }

    #[test]
    fn writer_and_reader_agree() {
        let data = b"hello strata".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, wd, wn) = w.finish();
        assert_eq!(out, data);
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, rd, rn) = r.finish();
        assert_eq!((wd.clone(), wn), (rd, rn));
        assert_eq!(wd, sha256_digest(&data));
    }

    #[test]
    fn verifying_reader_accepts_and_rejects() {
        let data = b"content".to_vec();
        let good = sha256_digest(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], good.clone(), Some(7))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let bad = sha256_digest(b"other");
        let err = VerifyingReader::new(&data[..], bad, None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let err = VerifyingReader::new(&data[..], good.clone(), Some(3))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = VerifyingReader::new(&data[..], good, Some(9))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
