//! `strata version`.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    println!("strata {}", env!("CARGO_PKG_VERSION"));
    println!("platform: {}/{}", std::env::consts::OS, go_arch());
    Ok(ExitCode::SUCCESS)
}

/// The architecture as OCI platforms name it (Go's GOARCH), not as Rust does.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}
