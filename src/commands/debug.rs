//! `strata debug ...`: hidden commands that expose library internals to conformance tests.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse and normalise an image reference; print it as JSON.
    ParseRef {
        #[arg(allow_hyphen_values = true)]
        reference: String,
    },
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::ParseRef { reference } => super::parse_ref::run(&reference),
    }
}
