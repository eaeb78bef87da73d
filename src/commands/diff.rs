//! `strata diff CONTAINER`: what a container changed in its filesystem, as `docker diff`
//! prints it (`A /new`, `C /etc`, `D /bin/ls`).

use std::process::ExitCode;

use clap::Args;

use super::container_output::open_containers;

#[derive(Debug, Args)]
pub struct DiffArgs {
    container: String,
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let changes = open_containers()?.changes(&args.container)?;
    for change in changes {
        println!("{} {}", change.kind.letter(), change.path.display());
    }
    Ok(ExitCode::SUCCESS)
}
