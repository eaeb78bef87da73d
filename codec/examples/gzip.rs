//! Compresses stdin to stdout with strata's parallel gzip: `gzip [THREADS] [LEVEL]`.
//! For measuring the codec alone against `pigz -p THREADS -LEVEL` (see `bench/`).

use std::io::{self, BufWriter};

use strata_codec::{Compression, Encoder, EncoderOptions};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut options = EncoderOptions::default();
    if let Some(threads) = args.next() {
        options.threads = threads.parse().map_err(io::Error::other)?;
    }
    if let Some(level) = args.next() {
        options.level = Some(level.parse().map_err(io::Error::other)?);
    }
    let out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let mut encoder = Encoder::new(out, Compression::Gzip, options)?;
    io::copy(&mut io::stdin().lock(), &mut encoder)?;
    encoder.finish()?;
    Ok(())
}
