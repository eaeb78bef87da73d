//! Layers from tar streams: decompress, hash (diffID), recompress, hash (digest), store, in one pass.

use std::io::{self, BufReader, Read, Write};

use strata_codec::{Compression, Decoder, Digest, Encoder, EncoderOptions, HashingWriter};

use crate::content::BlobWriter;

use crate::error::{IoContext, Result, StoreError};
use crate::lock::Lease;
use crate::meta::LayerRecord;
use crate::store::Store;

impl Store {
    /// Stores a layer from a tar stream that may be compressed with any format
    /// [`strata_codec::Compression`] detects. The tar is hashed (diffID) and recompressed as
    /// `compression` (hashed again: the digest) in one streaming pass, and the layer is recorded
    /// in the metadata so its diffID finds it. `compression` must be one OCI has a layer media
    /// type for (none, gzip or zstd).
    pub fn import_layer(
        &self,
        lease: &Lease,
        input: impl Read,
        compression: Compression,
        options: EncoderOptions,
    ) -> Result<LayerRecord> {
        let media_type = compression.oci_layer_media_type().ok_or_else(|| {
            StoreError::Invalid(format!("layers cannot be stored as {compression:?}"))
        })?;
        let (_, mut tar) = Decoder::detect(BufReader::with_capacity(1 << 20, input))
            .ctx(|| "reading the layer's first bytes".into())?;
        let blob = self.blob_writer(lease)?;
        let encoder = Encoder::new(blob, compression, options)
            .ctx(|| "starting the layer's compression".into())?;
        let mut hashing = HashingWriter::new(encoder);

        // The first block must be a tar header (or the end-of-archive zeros of an empty tar).
        let mut first = [0u8; 512];
        let n = read_full(&mut tar, &mut first).ctx(|| "reading the layer".into())?;
        if n < first.len() || !is_tar_header(&first) {
            return Err(StoreError::Invalid(
                "not a tar archive (plain, gzip, zstd, xz or bzip2)".into(),
            ));
        }
        hashing
            .write_all(&first)
            .ctx(|| "storing the layer".into())?;
        io::copy(&mut tar, &mut hashing).ctx(|| "reading the layer".into())?;

        let (encoder, diff_id, uncompressed_size) = hashing.finish();
        let blob = encoder
            .finish()
            .ctx(|| "finishing the layer's compression".into())?;
        let info = blob.commit()?;
        let record = LayerRecord {
            digest: info.digest,
            diff_id,
            media_type: media_type.to_string(),
            size: info.size,
            uncompressed_size: Some(uncompressed_size),
        };
        self.record_layer(&record)?;
        Ok(record)
    }

    /// Stores the stored layer blob `source` again, compressed as `compression`, and records
    /// it under `diff_id` so the next lookup of that diffID finds this variant too. The tar is
    /// checked against `diff_id` before the blob is committed. Each compressed chunk is also
    /// written to `mirror` (a push streams it to the registry while it is stored; pass
    /// [`io::sink`] otherwise); an error writing there fails the whole recompression.
    pub fn recompress_layer(
        &self,
        lease: &Lease,
        source: &Digest,
        diff_id: &Digest,
        compression: Compression,
        mirror: &mut dyn Write,
    ) -> Result<LayerRecord> {
        let media_type = compression.oci_layer_media_type().ok_or_else(|| {
            StoreError::Invalid(format!("layers cannot be stored as {compression:?}"))
        })?;
        let (_, mut decoder) =
            Decoder::detect(BufReader::with_capacity(1 << 20, self.open_blob(source)?))
                .ctx(|| format!("reading layer {source}"))?;
        let tee = MirroredBlob {
            blob: self.blob_writer(lease)?,
            mirror,
        };
        let encoder = Encoder::new(tee, compression, EncoderOptions::default())
            .ctx(|| format!("compressing layer {source}"))?;
        let mut hashing = HashingWriter::new(encoder);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match decoder.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).ctx(|| format!("decompressing layer {source}")),
            };
            hashing
                .write_all(&buffer[..n])
                .ctx(|| format!("compressing layer {source}"))?;
        }
        let (encoder, actual, uncompressed_size) = hashing.finish();
        if actual != *diff_id {
            return Err(StoreError::Invalid(format!(
                "layer {source} decompresses to {actual}, but its diffID is {diff_id}"
            )));
        }
        let tee = encoder
            .finish()
            .ctx(|| format!("compressing layer {source}"))?;
        let info = tee.blob.commit()?;
        let record = LayerRecord {
            digest: info.digest,
            diff_id: diff_id.clone(),
            media_type: media_type.to_string(),
            size: info.size,
            uncompressed_size: Some(uncompressed_size),
        };
        self.record_layer(&record)?;
        Ok(record)
    }
}

/// A blob being written that every chunk is also copied to.
struct MirroredBlob<'a> {
    blob: BlobWriter,
    mirror: &'a mut dyn Write,
}

impl Write for MirroredBlob<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.blob.write_all(buf)?;
        self.mirror.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()?;
        self.mirror.flush()
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a 512-byte block is a tar header with a valid checksum, or all zeros.
pub(crate) fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let text = String::from_utf8_lossy(&block[148..156]);
    let Ok(stored) = u32::from_str_radix(text.trim_matches([' ', '\0']), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}
