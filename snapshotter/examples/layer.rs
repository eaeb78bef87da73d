//! The layer engine from the command line, for benchmarks (`bench/layers.sh`) and poking:
//!
//! ```text
//! layer create DIR OUT [gzip|zstd|none] [THREADS]   DIR as a layer blob; prints the descriptor
//! layer extract BLOB DIR                            BLOB into DIR (flat, whiteouts applied)
//! ```

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use strata_snapshotter::{
    Compression, Diff, EncoderOptions, ExtractOptions, LayerOptions, WhiteoutMode, extract_layer,
    write_layer,
};

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args {
        [cmd, dir, out, rest @ ..] if cmd == "create" && rest.len() <= 2 => {
            let compression = match rest.first().map(String::as_str) {
                None | Some("gzip") => Compression::Gzip,
                Some("zstd") => Compression::Zstd,
                Some("none") => Compression::None,
                Some(other) => return Err(format!("unknown compression {other}").into()),
            };
            let mut encoder = EncoderOptions::default();
            if let Some(threads) = rest.get(1) {
                encoder.threads = threads.parse()?;
            }
            let options = LayerOptions {
                compression,
                encoder,
                source_date_epoch: None,
            };
            let desc = write_layer(&Diff::directory(dir), &options, File::create(out)?)?;
            println!(
                "diff_id {}\ndigest {}\nsize {}",
                desc.diff_id, desc.digest, desc.size
            );
            Ok(())
        }
        [cmd, blob, dir] if cmd == "extract" => {
            let options = ExtractOptions {
                whiteouts: WhiteoutMode::Apply,
                max_uncompressed_size: None,
            };
            let layer = extract_layer(File::open(blob)?, Path::new(dir), &options)?;
            println!("diff_id {}", layer.diff_id);
            Ok(())
        }
        _ => Err(
            "usage: layer create DIR OUT [gzip|zstd|none] [THREADS] | layer extract BLOB DIR"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer: {e}");
            ExitCode::FAILURE
        }
    }
}
