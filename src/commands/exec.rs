//! `strata exec [-i] [-t] [-u USER] [-w DIR] [-e K=V] CONTAINER CMD...`: a process in a running
//! container's namespaces; exits with its code.

use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use strata_containers::ExecOptions;
use strata_containers::monitor::set_window_size;
use strata_runtime::{Stdio, StdioSet};

use super::container_output::open_containers;
use super::run::{RawTerminal, terminal_size};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// User: `name|uid[:group|gid]` (default: the container's).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory (default: the container's).
    #[arg(short, long)]
    workdir: Option<String>,
    /// Set an environment variable (`K=V`).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// The container, then the command and its arguments. Options end at the container.
    #[arg(
        value_name = "CONTAINER COMMAND [ARG...]",
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    container_and_command: Vec<String>,
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    if args.tty && args.interactive && !io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    // Blocked before any thread starts, so that only the resizing thread receives it (the
    // exec'd process starts with a clean mask).
    let window_changes = args
        .tty
        .then(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGWINCH);
            set.thread_block().is_ok().then_some(set)
        })
        .flatten();
    let [container, command @ ..] = args.container_and_command.as_slice() else {
        bail!("exec needs a container and a command");
    };
    let containers = open_containers()?;
    let options = ExecOptions {
        cmd: command.to_vec(),
        env: args.env.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        tty: args.tty,
        tty_size: args.tty.then(terminal_size).flatten(),
    };
    let stdio = StdioSet {
        stdin: if args.interactive {
            Stdio::Inherit
        } else {
            Stdio::Null
        },
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
    };
    let mut process = containers.exec(container, &options, stdio)?;
    let raw = if args.tty && io::stdin().is_terminal() {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let mut output = None;
    if let Some(pty) = process.pty.take() {
        // Our terminal was resized (SIGWINCH): so is the exec'd one, as with `docker exec -t`.
        if let (Some(set), Ok(resized)) = (window_changes, pty.try_clone()) {
            std::thread::spawn(move || {
                while set.wait().is_ok() {
                    if let Some((rows, cols)) = terminal_size() {
                        set_window_size(&resized, rows, cols);
                    }
                }
            });
        }
        // The terminal's two directions: our stdin to it, its output to our stdout.
        if args.interactive
            && let Ok(mut input) = pty.try_clone()
        {
            std::thread::spawn(move || io::copy(&mut io::stdin().lock(), &mut input));
        }
        output = Some(std::thread::spawn(move || {
            let mut pty = pty;
            let mut buf = [0u8; 8192];
            let mut out = io::stdout();
            // Ends with EIO once the terminal's last user is gone.
            while let Ok(n) = pty.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }));
    }
    let exit = process.wait()?;
    if let Some(output) = output {
        let _ = output.join();
    }
    drop(raw);
    if let Some(e) = &exit.exec_error {
        eprintln!("strata: error: {e}");
    }
    Ok(ExitCode::from(exit.status.code.clamp(0, 255) as u8))
}
