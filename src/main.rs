//! The `strata` binary: flags, commands and output. It only wires the library crates together;
//! anything worth testing on its own belongs in one of them.

mod commands;
mod progress;

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
    /// Build an image from a Dockerfile and a context.
    Build(commands::build::BuildArgs),
    /// Create an image from a rootfs tarball.
    Import(commands::import::ImportArgs),
    /// List images.
    Images(commands::images::ImagesArgs),
    /// Give an image another name.
    Tag(commands::tag::TagArgs),
    /// Remove images.
    Rmi(commands::tag::RmiArgs),
    /// Show images' details as JSON.
    Inspect(commands::inspect::InspectArgs),
    /// Show an image's history.
    History(commands::history::HistoryArgs),
    /// Write images to a docker-archive or OCI archive.
    Save(commands::save_load::SaveArgs),
    /// Load images from a docker-archive or OCI archive.
    Load(commands::save_load::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(commands::prune::ImageCommand),
    /// Manage the store as a whole.
    #[command(subcommand)]
    System(commands::prune::SystemCommand),
    /// Log in to a registry (credentials are checked, then saved with mode 0600).
    Login(commands::login::LoginArgs),
    /// Forget the saved credentials for a registry.
    Logout(commands::login::LogoutArgs),
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
        Command::Build(args) => commands::build::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Images(args) => commands::images::run(args),
        Command::Tag(args) => commands::tag::run_tag(args),
        Command::Rmi(args) => commands::tag::run_rmi(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::History(args) => commands::history::run(args),
        Command::Save(args) => commands::save_load::run_save(args),
        Command::Load(args) => commands::save_load::run_load(args),
        Command::Image(cmd) => commands::prune::run_image(cmd),
        Command::System(cmd) => commands::prune::run_system(cmd),
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
