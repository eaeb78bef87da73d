//! `strata export [-o FILE] CONTAINER`: the container's filesystem as a tar, as `docker export`.

use std::process::ExitCode;

use clap::Args;

use super::container_output::open_containers;
use super::save_load::write_output;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<String>,
    container: String,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    write_output(args.output.as_deref(), |out| {
        containers.export(&args.container, out)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
