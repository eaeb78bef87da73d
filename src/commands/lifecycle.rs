//! `strata stop`, `kill`, `start`, `restart`, `rm` and `wait`: each takes several containers,
//! prints each one as named when done (`wait`: its exit code), and reports failures one by one.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use strata_containers::process::parse_signal;
use strata_containers::{Containers, RemoveOptions};

use super::container_output::open_containers;
use super::run::run_attached;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before killing.
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// The signal to send first (default: the container's stop signal).
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal to send.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output (and wait for its end).
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too.
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait after the stop signal before killing.
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short, long)]
    force: bool,
    /// Also remove the containers' anonymous volumes.
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Runs `action` on each container; prints its output line or the error.
fn each(
    names: &[String],
    mut action: impl FnMut(&Containers, &str) -> anyhow::Result<String>,
) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    let mut failed = false;
    for name in names {
        match action(&containers, name) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("strata: error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn signal_number(s: &str) -> anyhow::Result<i32> {
    parse_signal(s).with_context(|| format!("invalid signal: {s}"))
}

pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let signal = args.signal.as_deref().map(signal_number).transpose()?;
    let timeout = args.time.map(Duration::from_secs);
    each(&args.containers, |c, name| {
        c.stop(name, timeout, signal)?;
        Ok(name.to_string())
    })
}

pub fn kill(args: KillArgs) -> anyhow::Result<ExitCode> {
    let signal = signal_number(&args.signal)?;
    each(&args.containers, |c, name| {
        c.kill(name, signal)
            .with_context(|| format!("cannot kill container {name}"))?;
        Ok(name.to_string())
    })
}

pub fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    if args.attach || args.interactive {
        let [name] = args.containers.as_slice() else {
            bail!("you cannot start and attach multiple containers at once");
        };
        let containers = open_containers()?;
        let record = containers.get(name)?;
        if record.state.status.is_active() {
            bail!("container {name} is already running");
        }
        return run_attached(
            &containers,
            &record.config.id,
            args.interactive,
            record.config.config.tty,
            None,
        );
    }
    each(&args.containers, |c, name| {
        let id = c.resolve_id(name)?;
        c.start_detached(&id)?;
        Ok(name.to_string())
    })
}

pub fn restart(args: RestartArgs) -> anyhow::Result<ExitCode> {
    let timeout = args.time.map(Duration::from_secs);
    each(&args.containers, |c, name| {
        let id = c.resolve_id(name)?;
        c.stop(&id, timeout, None)?;
        c.start_detached(&id)?;
        Ok(name.to_string())
    })
}

pub fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let options = RemoveOptions {
        force: args.force,
        volumes: args.volumes,
    };
    each(&args.containers, |c, name| {
        c.remove(name, options)?;
        Ok(name.to_string())
    })
}

pub fn wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    each(&args.containers, |c, name| Ok(c.wait(name)?.to_string()))
}
