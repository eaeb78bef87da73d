//! `strata cp [-a] [-L] CONTAINER:SRC DEST` and `strata cp [-a] [-L] SRC CONTAINER:DEST`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use strata_containers::{CopyOptions, copy_from_container, copy_into_container};

use super::container_output::open_containers;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode: keep owners (uid/gid) of files copied in.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as the source.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// `CONTAINER:PATH` or a host path.
    source: String,
    /// `CONTAINER:PATH` or a host path.
    destination: String,
}

/// Docker's rule: an absolute path is local; otherwise `NAME:PATH` names a container's path.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

pub fn run(args: CpArgs) -> anyhow::Result<ExitCode> {
    let options = CopyOptions {
        follow_link: args.follow_link,
        archive: args.archive,
    };
    if args.source == "-" || args.destination == "-" {
        bail!("copying a tar stream from stdin or to stdout (-) is not supported");
    }
    let containers = open_containers()?;
    match (split(&args.source), split(&args.destination)) {
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
