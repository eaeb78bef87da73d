//! Docker's management commands: `strata container ...` and `strata image ...` are the same
//! commands as the top-level ones, grouped by what they act on (`container ls` is `ps`,
//! `image rm` is `rmi`), plus the prunes that exist only there.

use std::process::ExitCode;

use clap::Subcommand;

use super::prune::PruneArgs;
use super::{
    build, commit, cp, diff, exec, export, history, images, import, inspect, lifecycle, logs, port,
    prune, ps, pull, push, rename, run, save_load, stats, tag, top,
};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(visible_aliases = ["list", "ps"])]
    Ls(ps::PsArgs),
    /// Create a container from an image and run a command in it.
    Run(run::RunArgs),
    /// Create a container without starting it.
    Create(run::CreateArgs),
    /// Start stopped containers.
    Start(lifecycle::StartArgs),
    /// Stop running containers (their stop signal, then SIGKILL).
    Stop(lifecycle::StopArgs),
    /// Stop and start containers.
    Restart(lifecycle::RestartArgs),
    /// Send a signal to running containers.
    Kill(lifecycle::KillArgs),
    /// Remove containers.
    #[command(visible_alias = "remove")]
    Rm(lifecycle::RmArgs),
    /// Show a container's output.
    Logs(logs::LogsArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Wait until containers stop; print their exit codes.
    Wait(lifecycle::WaitArgs),
    /// Show where a running container's ports are published on the host.
    Port(port::PortArgs),
    /// Show containers' details as JSON.
    Inspect(inspect::NamesArgs),
    /// Make an image from a container's changes.
    Commit(commit::CommitArgs),
    /// Copy files between a container and the host.
    Cp(cp::CpArgs),
    /// Show what a container changed in its filesystem.
    Diff(diff::DiffArgs),
    /// Give a container another name.
    Rename(rename::RenameArgs),
    /// Write a container's filesystem as a tar archive.
    Export(export::ExportArgs),
    /// Show a running container's processes.
    Top(top::TopArgs),
    /// Show what running containers use: CPU, memory, I/O, processes.
    Stats(stats::StatsArgs),
    /// Remove all stopped containers.
    Prune(prune::ForceArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(visible_aliases = ["list"])]
    Ls(images::ImagesArgs),
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::BuildArgs>),
    /// Create an image from a rootfs tarball.
    Import(import::ImportArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Remove images.
    #[command(visible_alias = "remove")]
    Rm(tag::RmiArgs),
    /// Show images' details as JSON.
    Inspect(inspect::NamesArgs),
    /// Show an image's history.
    History(history::HistoryArgs),
    /// Write images to a docker-archive or OCI archive.
    Save(save_load::SaveArgs),
    /// Load images from a docker-archive or OCI archive.
    Load(save_load::LoadArgs),
    /// Download an image from a registry.
    Pull(pull::PullArgs),
    /// Upload an image to a registry.
    Push(push::PushArgs),
    /// Remove unused images and the blobs only they used.
    Prune(PruneArgs),
}

pub fn run_container(cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainerCommand::Ls(args) => ps::run(args),
        ContainerCommand::Run(args) => run::run(args),
        ContainerCommand::Create(args) => run::create(args),
        ContainerCommand::Start(args) => lifecycle::start(args),
        ContainerCommand::Stop(args) => lifecycle::stop(args),
        ContainerCommand::Restart(args) => lifecycle::restart(args),
        ContainerCommand::Kill(args) => lifecycle::kill(args),
        ContainerCommand::Rm(args) => lifecycle::rm(args),
        ContainerCommand::Logs(args) => logs::run(args),
        ContainerCommand::Exec(args) => exec::run(args),
        ContainerCommand::Wait(args) => lifecycle::wait(args),
        ContainerCommand::Port(args) => port::run(args),
        ContainerCommand::Inspect(args) => inspect::run_kind("container", args),
        ContainerCommand::Commit(args) => commit::run(args),
        ContainerCommand::Cp(args) => cp::run(args),
        ContainerCommand::Diff(args) => diff::run(args),
        ContainerCommand::Rename(args) => rename::run(args),
        ContainerCommand::Export(args) => export::run(args),
        ContainerCommand::Top(args) => top::run(args),
        ContainerCommand::Stats(args) => stats::run(args),
        ContainerCommand::Prune(args) => prune::run_container_prune(&args),
    }
}

pub fn run_image(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Ls(args) => images::run(args),
        ImageCommand::Build(args) => build::run(*args),
        ImageCommand::Import(args) => import::run(args),
        ImageCommand::Tag(args) => tag::run_tag(args),
        ImageCommand::Rm(args) => tag::run_rmi(args),
        ImageCommand::Inspect(args) => inspect::run_kind("image", args),
        ImageCommand::History(args) => history::run(args),
        ImageCommand::Save(args) => save_load::run_save(args),
        ImageCommand::Load(args) => save_load::run_load(args),
        ImageCommand::Pull(args) => pull::run(args),
        ImageCommand::Push(args) => push::run(args),
        ImageCommand::Prune(args) => prune::run_image_prune(&args),
    }
}
