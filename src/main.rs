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
    /// Log in to a registry (credentials are checked, then saved with mode 0600).
    Login(commands::login::LoginArgs),
    /// Forget the saved credentials for a registry.
    Logout(commands::login::LogoutArgs),
    /// Internal tools for testing and debugging strata itself.
    #[command(hide = true, subcommand)]
    Debug(commands::debug::DebugCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => commands::version::run(),
        Command::Login(args) => commands::login::login(args),
        Command::Logout(args) => commands::login::logout(args),
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
