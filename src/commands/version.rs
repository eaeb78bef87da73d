//! `strata version`.

use std::process::ExitCode;

use strata_store::Platform;

pub fn run() -> anyhow::Result<ExitCode> {
    println!("strata {}", env!("CARGO_PKG_VERSION"));
    println!("platform: {}", Platform::host());
    Ok(ExitCode::SUCCESS)
}
