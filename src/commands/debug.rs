//! `strata debug ...`: hidden commands that expose library internals to conformance tests.

use std::process::ExitCode;

use clap::Subcommand;

mod run_bundle;
mod runtime_spec;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Run an OCI bundle (config.json + rootfs) in the sandbox, like `runc run`.
    RunBundle(run_bundle::Args),
    /// Print the OCI runtime spec (Docker's defaults) for a rootfs and command.
    RuntimeSpec(runtime_spec::Args),
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::RunBundle(args) => run_bundle::run(args),
        DebugCommand::RuntimeSpec(args) => runtime_spec::run(args),
    }
}
