//! `strata save` and `strata load`: docker-archive and OCI archives.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use strata_store::ArchiveFormat;

use super::image_output::open_store;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// docker-archive (Docker 25+ layout, also an OCI layout): `docker load`, `podman load`.
    Docker,
    /// An OCI image layout tarball.
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images: names, IDs or digests.
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<String>,
    #[arg(long, value_enum, default_value = "docker")]
    format: Format,
}

pub fn run_save(args: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let format = match args.format {
        Format::Docker => ArchiveFormat::Docker,
        Format::Oci => ArchiveFormat::Oci,
    };
    write_output(args.output.as_deref(), |out| {
        store.save(&args.images, format, out)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Where `save` and `export` write a tar: the file `path` (written beside it and renamed, so a
/// failure leaves no half file), or standard output unless that is a terminal.
pub fn write_output(
    path: Option<&str>,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match path {
        Some(path) => {
            let dest = std::path::Path::new(path);
            let dir = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut temp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let mut out = BufWriter::new(temp.as_file_mut());
            write(&mut out)?;
            out.flush().with_context(|| format!("writing {path}"))?;
            drop(out);
            temp.persist(dest)
                .with_context(|| format!("writing {path}"))?;
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = BufWriter::new(stdout);
            write(&mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    input: Option<String>,
    /// Print nothing.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run_load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let input: Box<dyn Read> = match &args.input {
        Some(path) => Box::new(File::open(path).with_context(|| format!("opening {path}"))?),
        None => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            Box::new(io::stdin().lock())
        }
    };
    let loaded = store.load(input)?;
    if !args.quiet {
        for image in loaded {
            if image.names.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for n in image.names {
                println!("Loaded image: {}", n.familiar_string());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
