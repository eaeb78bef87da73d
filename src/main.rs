//! The `strata` binary: flags, commands and output. It only wires the library crates together;
//! anything worth testing on its own belongs in one of them.

mod commands;
mod progress;
mod template;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A daemonless Dockerfile build engine and OCI image toolchain.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Never contact a registry that is not on this machine's loopback (also STRATA_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print version information.
    Version,
    /// Show what this strata and this machine are.
    Info(commands::info::InfoArgs),
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
    /// Show containers' or images' details as JSON.
    Inspect(commands::inspect::InspectArgs),
    /// Show an image's history.
    History(commands::history::HistoryArgs),
    /// Write images to a docker-archive or OCI archive.
    Save(commands::save_load::SaveArgs),
    /// Load images from a docker-archive or OCI archive.
    Load(commands::save_load::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(commands::management::ImageCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(commands::management::ContainerCommand),
    /// Manage the store as a whole.
    #[command(subcommand)]
    System(commands::prune::SystemCommand),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(commands::builder::BuilderCommand),
    /// Create a container from an image and run a command in it.
    Run(commands::run::RunArgs),
    /// Create a container without starting it.
    Create(commands::run::CreateArgs),
    /// List containers.
    Ps(commands::ps::PsArgs),
    /// Show a container's output.
    Logs(commands::logs::LogsArgs),
    /// Stop running containers (their stop signal, then SIGKILL).
    Stop(commands::lifecycle::StopArgs),
    /// Send a signal to running containers.
    Kill(commands::lifecycle::KillArgs),
    /// Start stopped containers.
    Start(commands::lifecycle::StartArgs),
    /// Stop and start containers.
    Restart(commands::lifecycle::RestartArgs),
    /// Remove containers.
    Rm(commands::lifecycle::RmArgs),
    /// Run a command in a running container.
    Exec(commands::exec::ExecArgs),
    /// Wait until containers stop; print their exit codes.
    Wait(commands::lifecycle::WaitArgs),
    /// Show where a running container's ports are published on the host.
    Port(commands::port::PortArgs),
    /// Make an image from a container's changes.
    Commit(commands::commit::CommitArgs),
    /// Copy files between a container and the host.
    Cp(commands::cp::CpArgs),
    /// Show what a container changed in its filesystem.
    Diff(commands::diff::DiffArgs),
    /// Give a container another name.
    Rename(commands::rename::RenameArgs),
    /// Write a container's filesystem as a tar archive.
    Export(commands::export::ExportArgs),
    /// Show a running container's processes.
    Top(commands::top::TopArgs),
    /// Show what running containers use: CPU, memory, I/O, processes.
    Stats(commands::stats::StatsArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(commands::volume::VolumeCommand),
    /// Download an image from a registry.
    Pull(commands::pull::PullArgs),
    /// Upload an image to a registry.
    Push(commands::push::PushArgs),
    /// Log in to a registry (credentials are checked, then saved with mode 0600).
    Login(commands::login::LoginArgs),
    /// Forget the saved credentials for a registry.
    Logout(commands::login::LogoutArgs),
    /// Internal tools for testing and debugging strata itself.
    #[command(hide = true, subcommand)]
    Debug(commands::debug::DebugCommand),
}

/// Raises the soft limit on open files to the hard limit, as every Go program (dockerd, buildkitd,
/// runc) does at start. The layer writer holds a descriptor per level of a directory tree, so a
/// tree deeper than ~1,000 would fail under the common soft limit of 1,024; and RUN steps and
/// containers inherit the limit, so `ulimit -n` in them shows what it shows under BuildKit and
/// Docker (soft equal to hard). Failure changes nothing and is not an error.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> ExitCode {
    // The sandbox helper must start before anything else (clap, threads, an async runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == strata_runtime::HELPER_ARG)
    {
        strata_runtime::helper_main();
    }
    // So must a container's monitor: it forks to detach before anything else exists.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == strata_containers::MONITOR_ARG)
    {
        strata_containers::monitor::monitor_main();
    }
    quiet_on_closed_stdout();
    raise_open_file_limit();
    let cli = Cli::parse();
    commands::registry::set_offline(cli.offline);
    let result = match cli.command {
        Command::Version => commands::version::run(),
        Command::Info(args) => commands::info::run(args),
        Command::Build(args) => commands::build::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Images(args) => commands::images::run(args),
        Command::Tag(args) => commands::tag::run_tag(args),
        Command::Rmi(args) => commands::tag::run_rmi(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::History(args) => commands::history::run(args),
        Command::Save(args) => commands::save_load::run_save(args),
        Command::Load(args) => commands::save_load::run_load(args),
        Command::Image(cmd) => commands::management::run_image(cmd),
        Command::Container(cmd) => commands::management::run_container(cmd),
        Command::System(cmd) => commands::prune::run_system(cmd),
        Command::Builder(cmd) => commands::builder::run(cmd),
        Command::Run(args) => commands::run::run(args),
        Command::Create(args) => commands::run::create(args),
        Command::Ps(args) => commands::ps::run(args),
        Command::Logs(args) => commands::logs::run(args),
        Command::Stop(args) => commands::lifecycle::stop(args),
        Command::Kill(args) => commands::lifecycle::kill(args),
        Command::Start(args) => commands::lifecycle::start(args),
        Command::Restart(args) => commands::lifecycle::restart(args),
        Command::Rm(args) => commands::lifecycle::rm(args),
        Command::Exec(args) => commands::exec::run(args),
        Command::Wait(args) => commands::lifecycle::wait(args),
        Command::Port(args) => commands::port::run(args),
        Command::Commit(args) => commands::commit::run(args),
        Command::Cp(args) => commands::cp::run(args),
        Command::Diff(args) => commands::diff::run(args),
        Command::Rename(args) => commands::rename::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Top(args) => commands::top::run(args),
        Command::Stats(args) => commands::stats::run(args),
        Command::Volume(cmd) => commands::volume::run(cmd),
        Command::Pull(args) => commands::pull::run(args),
        Command::Push(args) => commands::push::run(args),
        Command::Login(args) => commands::login::login(args),
        Command::Logout(args) => commands::login::logout(args),
        Command::Debug(cmd) => commands::debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::from(CLOSED_STDOUT_EXIT),
        Err(err) => {
            eprintln!("strata: error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// `err` and its causes, joined with ": " as `{:#}` does, except that a cause is left out where
/// the message before it already ends with it (many library errors print their source too).
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// What a shell reports for a process that SIGPIPE ended: `strata images | head -1` ends the way
/// `docker images | head -1` does, without a message. (Rust ignores SIGPIPE, so a write to a
/// closed pipe fails with EPIPE instead of ending the process; restoring the signal would also
/// end strata where it writes to a container's closed stdin.)
const CLOSED_STDOUT_EXIT: u8 = 128 + 13;

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when stdout is a pipe nobody reads any more; end quietly instead.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.starts_with("failed printing to stdout")
            && message.ends_with(&std::io::Error::from_raw_os_error(libc::EPIPE).to_string())
        {
            std::process::exit(CLOSED_STDOUT_EXIT.into());
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source and also gives it as its source, as many library errors do.
    #[derive(Debug)]
    struct PrintsItsSource {
        path: &'static str,
        source: std::io::Error,
    }

    impl std::fmt::Display for PrintsItsSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "creating {}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for PrintsItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_printed_is_not_repeated() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = anyhow::Error::new(PrintsItsSource {
            path: "/x",
            source: io(),
        })
        .context("opening the store");
        let os = io().to_string();
        assert_eq!(
            format!("{err:#}"),
            format!("opening the store: creating /x: {os}: {os}")
        );
        assert_eq!(
            error_chain(&err),
            format!("opening the store: creating /x: {os}")
        );
        let plain = anyhow::Error::new(io()).context("bundle /b");
        assert_eq!(error_chain(&plain), format!("bundle /b: {os}"));
    }
}
