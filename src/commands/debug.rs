//! `strata debug ...`: hidden commands that expose library internals to conformance tests.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
