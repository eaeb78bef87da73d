//! `strata rename CONTAINER NEW_NAME`.

use std::process::ExitCode;

use clap::Args;

use super::container_output::open_containers;

#[derive(Debug, Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn run(args: RenameArgs) -> anyhow::Result<ExitCode> {
    open_containers()?.rename(&args.container, &args.new_name)?;
    Ok(ExitCode::SUCCESS)
}
