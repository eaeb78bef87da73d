//! Streaming sha256 digests and compression codecs.
//!
//! Every byte strata stores, extracts or sends passes through here: a layer is tarred, hashed (its
//! diffID), compressed and hashed again (its digest) in one pass; a blob read back or downloaded is
//! hashed as it streams and rejected at its end when the digest is wrong. Three crates need this
//! (snapshotter, store, registry-client) and none of them may depend on another, so it is a leaf crate.

mod compression;
mod digest;
mod gzip;

pub use compression::{Compression, Decoder, Encoder, EncoderOptions, UnknownCompression};
pub use digest::{DigestMismatch, HashingReader, HashingWriter, VerifyingReader, sha256_digest};
pub use gzip::GzipEncoder;
pub use oci_spec::image::Digest;
