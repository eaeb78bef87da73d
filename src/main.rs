//! The `strata` binary: flags, commands and output. It only wires the library crates together;
//! anything worth testing on its own belongs in one of them.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A daemonless Dockerfile build engine and OCI image toolchain.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print version information.
    Version,
    /// Internal tools for testing and debugging strata itself.
    #[command(hide = true, subcommand)]
    Debug(commands::debug::DebugCommand),
}

fn main() -> ExitCode {
    // The sandbox helper must start before anything else (clap, threads, an async runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == strata_runtime::HELPER_ARG)
    {
        strata_runtime::helper_main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => commands::version::run(),
        Command::Debug(cmd) => commands::debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("strata: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
