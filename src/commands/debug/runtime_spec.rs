//! `strata debug runtime-spec --rootfs DIR [--network N] -- ARGS...`: prints the OCI runtime
//! spec strata would use (Docker's defaults) as config.json, for bundles in tests and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use strata_runtime::spec::{self, Network};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The root filesystem directory (made absolute).
    #[arg(long)]
    rootfs: PathBuf,
    /// host, none or private.
    #[arg(long, default_value = "private", value_parser = ["host", "none", "private"])]
    network: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rootfs = std::fs::canonicalize(&args.rootfs)
        .with_context(|| format!("rootfs {}", args.rootfs.display()))?;
    let mut spec = spec::default_spec(&rootfs, args.args);
    let network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        _ => Network::Private,
    };
    spec::set_network(&mut spec, network);
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(ExitCode::SUCCESS)
}
