//! `strata cp [-a] [-L] CONTAINER:SRC DEST` and `strata cp [-a] [-L] SRC CONTAINER:DEST`; `-` as
//! DEST writes a tar to standard output, as SRC extracts one from standard input into a
//! directory of the container, as Docker's does.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use strata_containers::{Containers, CopyOptions, copy_from_container, copy_into_container};
use strata_snapshotter::{
    Compression, Diff, ExtractOptions, LayerOptions, WhiteoutMode, extract_layer, write_layer,
};

use super::container_output::open_containers;
use super::save_load::write_output;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode: keep owners (uid/gid) of files copied in.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as the source.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// `CONTAINER:PATH`, a host path, or `-` (a tar on standard input).
    source: String,
    /// `CONTAINER:PATH`, a host path, or `-` (a tar on standard output).
    destination: String,
}

/// Docker's rule: an absolute path is local; otherwise `NAME:PATH` names a container's path.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

/// An empty directory for a tar's files, in the store's scratch area.
fn scratch_dir(containers: &Containers) -> anyhow::Result<tempfile::TempDir> {
    strata_builder::scratch_dir(containers.store().root(), "cp")
        .context("creating a directory in the store's scratch area")
}

pub fn run(args: CpArgs) -> anyhow::Result<ExitCode> {
    let options = CopyOptions {
        follow_link: args.follow_link,
        archive: args.archive,
    };
    let containers = open_containers()?;
    match (split(&args.source), split(&args.destination)) {
        (Some((container, path)), None) if args.destination == "-" => {
            let scratch = scratch_dir(&containers)?;
            copy_from_container(&containers, container, path, scratch.path(), options)?;
            write_output(None, |out| {
                let options = LayerOptions {
                    compression: Compression::None,
                    ..LayerOptions::default()
                };
                write_layer(&Diff::directory(scratch.path()), &options, out)?;
                Ok(())
            })?;
        }
        (None, Some((container, path))) if args.source == "-" => {
            let scratch = scratch_dir(&containers)?;
            let options_in = ExtractOptions {
                whiteouts: WhiteoutMode::Apply,
                max_uncompressed_size: None,
            };
            extract_layer(std::io::stdin().lock(), scratch.path(), &options_in)
                .context("reading the tar from standard input")?;
            // Docker's rule: what the tar holds goes into the destination directory.
            let into = format!("{}/", path.trim_end_matches('/'));
            for entry in std::fs::read_dir(scratch.path())? {
                let entry = entry?;
                copy_into_container(&containers, container, &entry.path(), &into, options)?;
            }
        }
        (Some((container, path)), None) => copy_from_container(
            &containers,
            container,
            path,
            Path::new(&args.destination),
            options,
        )?,
        (None, Some((container, path))) => copy_into_container(
            &containers,
            container,
            Path::new(&args.source),
            path,
            options,
        )?,
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
    }
    Ok(ExitCode::SUCCESS)
}
