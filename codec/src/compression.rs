//! Compression formats: detection by magic bytes, streaming decoders and encoders.

use std::io::{self, BufRead, Read, Write};

use crate::gzip::GzipEncoder;

/// A compression format of a layer or archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain bytes (an uncompressed tar).
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

/// A media type whose compression strata does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown layer media type {0}")]
pub struct UnknownCompression(pub String);

impl Compression {
    /// The format whose magic number starts `prefix`; `None` when none does (plain data).
    ///
    /// Needs the first 6 bytes to tell every format apart; fewer bytes can only match shorter magics.
    pub fn detect(prefix: &[u8]) -> Compression {
        const MAGICS: [(&[u8], Compression); 4] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (b"BZh", Compression::Bzip2),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| prefix.starts_with(magic))
            .map_or(Compression::None, |&(_, c)| c)
    }

    /// The compression of an OCI or Docker layer media type.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnknownCompression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_string())),
        }
    }

    /// The OCI layer media type for this compression, where OCI defines one.
    pub fn oci_layer_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => Some("application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Zstd => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Xz | Compression::Bzip2 => None,
        }
    }

    /// The Docker schema 2 layer media type for this compression, where Docker defines one.
    pub fn docker_layer_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Zstd => Some("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Compression::Xz | Compression::Bzip2 => None,
        }
    }
}

/// A streaming decoder for any [`Compression`].
pub enum Decoder<R: BufRead> {
    None(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Bzip2(bzip2::bufread::MultiBzDecoder<R>),
}

impl<R: BufRead> Decoder<R> {
    /// Decodes `reader` as `compression`. Concatenated streams (pigz, pbzip2) are read to the end.
    pub fn new(reader: R, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::None(reader),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(reader)?),
            Compression::Xz => Decoder::Xz(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::bufread::MultiBzDecoder::new(reader)),
        })
    }

    /// Detects the compression from the first bytes of `reader` (without consuming them) and
    /// decodes accordingly.
    pub fn detect(mut reader: R) -> io::Result<(Compression, Self)> {
        let compression = Compression::detect(peek(&mut reader, 6)?);
        Ok((compression, Self::new(reader, compression)?))
    }

    pub fn compression(&self) -> Compression {
        match self {
            Decoder::None(_) => Compression::None,
            Decoder::Gzip(_) => Compression::Gzip,
            Decoder::Zstd(_) => Compression::Zstd,
            Decoder::Xz(_) => Compression::Xz,
            Decoder::Bzip2(_) => Compression::Bzip2,
        }
    }
}

/// Up to `n` leading bytes of a buffered reader, not consumed. Fewer only at end of stream.
fn peek<R: BufRead>(reader: &mut R, n: usize) -> io::Result<&[u8]> {
    // `fill_buf` may return fewer bytes than buffered data allows only when the buffer is empty
    // or at EOF; a fresh BufReader of default capacity returns a full first read, so one call
    // suffices for magic numbers in practice. Short reads only make `detect` see plain data.
    let buf = reader.fill_buf()?;
    Ok(&buf[..buf.len().min(n)])
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
            Decoder::Xz(r) => r.read(buf),
            Decoder::Bzip2(r) => r.read(buf),
        }
    }
}

/// How to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderOptions {
    /// The format's own level scale (gzip 0-9, zstd 1-19, xz 0-9, bzip2 1-9); `None` is the
    /// format's usual default (gzip 6, as Go's `compress/gzip` and BuildKit use; zstd 3).
    pub level: Option<u32>,
    /// Worker threads for formats that compress in parallel. The output never depends on it.
    pub threads: usize,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            level: None,
            threads,
        }
    }
}

/// A streaming encoder for any [`Compression`]. Call [`Encoder::finish`] to write the trailer.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(GzipEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(writer: W, compression: Compression, options: EncoderOptions) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(writer),
            // Parallel over `threads`, the same bytes for any thread count (see `gzip.rs`).
            Compression::Gzip => Encoder::Gzip(GzipEncoder::new(
                writer,
                options.level.unwrap_or(6),
                options.threads,
            )?),
            Compression::Zstd => {
                let level = options.level.map_or(3, |l| l.clamp(1, 19) as i32);
                let mut enc = zstd::stream::write::Encoder::new(writer, level)?;
                // Multi-threaded mode with at least one worker always: zstd's output then depends on
                // the level and the data, not on the number of workers.
                enc.multithread(options.threads.max(1) as u32)?;
                Encoder::Zstd(enc)
            }
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(
                writer,
                options.level.unwrap_or(6).min(9),
            )),
            Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
                writer,
                bzip2::Compression::new(options.level.unwrap_or(9).clamp(1, 9)),
            )),
        })
    }

    /// Writes the format's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
            Encoder::Xz(w) => w.write(buf),
            Encoder::Bzip2(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
            Encoder::Xz(w) => w.flush(),
            Encoder::Bzip2(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::Bzip2,
    ];

    fn encode(data: &[u8], c: Compression, threads: usize) -> Vec<u8> {
        let opts = EncoderOptions {
            level: None,
            threads,
        };
        let mut e = Encoder::new(Vec::new(), c, opts).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_format_round_trips_and_is_detected() {
        let data = b"ustar-ish payload ".repeat(5000);
        for c in ALL {
            let encoded = encode(&data, c, 2);
            let (detected, mut d) = Decoder::detect(&encoded[..]).unwrap();
            assert_eq!(detected, c, "{c:?}");
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(encode(&data, c, 1), encode(&data, c, 4), "{c:?}");
        }
    }

    #[test]
    fn gzip_header_matches_go() {
        let out = encode(b"x", Compression::Gzip, 1);
        // magic, CM=8, FLG=0, MTIME=0, XFL, OS=255
        assert_eq!(&out[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&out[4..8], &[0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }

    #[test]
    fn media_types() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let oci = c.oci_layer_media_type().unwrap();
            let docker = c.docker_layer_media_type().unwrap();
            assert_eq!(Compression::from_media_type(oci).unwrap(), c);
            assert_eq!(Compression::from_media_type(docker).unwrap(), c);
        }
        assert!(Compression::from_media_type("application/json").is_err());
    }

    proptest! {
        #[test]
        fn corrupt_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), c in 0usize..5) {
            let mut input = encode(&bytes, ALL[c], 1);
            // An empty plain stream has no byte to corrupt.
            let mid = input.len() / 2;
            if let Some(byte) = input.get_mut(mid) {
                *byte ^= 0x5a;
            }
            if let Ok(mut d) = Decoder::new(&input[..], ALL[c]) {
                let _ = d.read_to_end(&mut Vec::new());
            }
        }
    }
}
