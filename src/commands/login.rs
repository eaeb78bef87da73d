//! `strata login` and `strata logout`: check credentials against a registry and keep them in
//! strata's credentials file (`$REGISTRY_AUTH_FILE`, else `$XDG_CONFIG_HOME/strata/auth.json`,
//! mode 0600), which pulls and pushes read first.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use strata_registry_client::{Credential, Registry, login_file};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: host[:port] (`docker.io` for Docker Hub).
    registry: String,
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: host[:port] (`docker.io` for Docker Hub).
    registry: String,
}

/// `https://host/v1/` and `host/` as Docker accepts them, down to `host`.
fn registry_name(arg: &str) -> anyhow::Result<Registry> {
    let bare = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let host = bare.split('/').next().unwrap_or(bare);
    Ok(Registry::new(host)?)
}

pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(&args.registry)?;
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => bail!("--password-stdin needs --username"),
        None if interactive => prompt("Username: ", true)?,
        None => bail!("no user name: pass --username"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => {
            eprintln!(
                "warning: a password on the command line is visible to other users; use --password-stdin"
            );
            p
        }
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from standard input")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if interactive => prompt("Password: ", false)?,
        (None, false) => bail!("no password: pass --password-stdin (or -p)"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("the user name and the password must not be empty");
    }
    let path = login_file().context("no credentials file: set REGISTRY_AUTH_FILE or HOME")?;
    let credential = Credential::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    let client = super::registry::client(None)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client.check_login(&registry, &credential))?;
    strata_registry_client::save_login(&path, &registry, &username, &password)?;
    println!("Login Succeeded (credentials in {})", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; with `echo` off (passwords) typed characters are not shown.
fn prompt(question: &str, echo: bool) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    // Echo goes off before the question appears: whatever is typed as soon as the prompt
    // shows must already be hidden.
    let saved = if echo {
        None
    } else {
        let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
        Some(saved)
    };
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        tcsetattr(&stdin, SetArg::TCSANOW, &saved).context("restoring the terminal")?;
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(&args.registry)?;
    let path = login_file().context("no credentials file: set REGISTRY_AUTH_FILE or HOME")?;
    if strata_registry_client::remove_login(&path, &registry)? {
        println!("Removed login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}
