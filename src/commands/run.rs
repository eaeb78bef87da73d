//! `strata run` and `strata create`: Docker's flags, a container from an image, started under a
//! detached monitor (`-d`) or watched by this process with its streams attached.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Args;
use strata_containers::monitor::{self, Attach, SignalProxy, Streams};
use strata_containers::options::{
    ConfigOverrides, parse_cpus, parse_memory, parse_mount_flag, parse_publish, parse_sysctl,
    parse_tmpfs_flag, parse_ulimit, parse_volume_flag,
};
use strata_containers::{
    Containers, CreateOptions, Created, HostConfig, NetworkMode, PortBinding, RestartPolicy,
};
use strata_store::{Image, Platform, Store, StoreError};

use super::container_output::open_containers;

/// Docker's exit status when the container could not be created or started.
const EXIT_NOT_STARTED: u8 = 125;

/// Log rotation when no `--log-opt` says otherwise: 10 MB, three files.
const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// Flags `run` and `create` share.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (`K=V`, or `K` to pass this process's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (`K=V` lines; `#` comments).
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Bind mount or volume: `SRC:DST[:ro]` (SRC an absolute host path or a volume name), or
    /// `DST` for an anonymous volume.
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// A mount: `type=bind|volume|tmpfs,source=...,target=...[,readonly]`.
    #[arg(long)]
    mount: Vec<String>,
    /// Mount a tmpfs: `DST[:OPTIONS]`.
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Publish a container port: `[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]`.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// The network: `private` (own namespace; `bridge` is accepted), `host` or `none`.
    #[arg(long, alias = "net", default_value = "private")]
    network: String,
    /// User: `name|uid[:group|gid]`.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint (`""` clears it).
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// The container's host name (default: its short ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit (`16m`, `1g`).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPUs (`1.5`).
    #[arg(long)]
    cpus: Option<String>,
    /// Most processes at once.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Run an init as PID 1 (strata always does; accepted for Docker's command lines).
    #[arg(long)]
    init: bool,
    /// Restart policy: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Run with an external OCI runtime (`runc`, `crun` or a path), attached only.
    #[arg(long)]
    runtime: Option<String>,
    /// Set a label (`K=V`).
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Add a capability to Docker's default set (`NET_ADMIN`, `ALL`).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a capability from Docker's default set (`CHOWN`, `ALL`).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Add a line to /etc/hosts: `NAME:IP`.
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// A resource limit: `NAME=SOFT[:HARD]` (`nofile=1024:2048`).
    #[arg(long)]
    ulimit: Vec<String>,
    /// A kernel parameter of the container's namespaces: `KEY=VALUE` (`net.core.somaxconn=1024`).
    #[arg(long)]
    sysctl: Vec<String>,
    /// The size of /dev/shm (`128m`; default 64m).
    #[arg(long)]
    shm_size: Option<String>,
    /// Seconds `stop` waits after the stop signal before SIGKILL (default 10).
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Another group for the process: a gid or a name of the image's /etc/group.
    #[arg(long)]
    group_add: Vec<String>,
    /// The signal `stop` sends first (default: the image's, else SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Log options: `max-size=SIZE`, `max-file=N`.
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Remove the container when it ends.
    #[arg(long)]
    rm: bool,
    /// The image (name, ID or digest), then the command and its arguments (default: the
    /// image's). Options end at the image: what follows is the command's.
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    image_and_command: Vec<String>,
}

impl CreateArgs {
    fn image(&self) -> &str {
        self.image_and_command.first().map_or("", String::as_str)
    }

    fn command(&self) -> &[String] {
        self.image_and_command.get(1..).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// The image to run: from the store, else pulled, as `docker run` does (under `--offline` the
/// pull fails naming the image).
pub fn image_for_run(store: &Store, reference: &str) -> anyhow::Result<Image> {
    match store.resolve_for(reference, &Platform::host()) {
        Ok(image) => Ok(image),
        Err(StoreError::ImageNotFound(_)) => {
            super::pull::pull_missing(store, reference, &Platform::host())
        }
        Err(e) => Err(e).with_context(|| format!("image {reference}")),
    }
}

/// Prints an error as `run` does when no container ran (Docker's 125).
fn not_started(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("strata: error: {err}");
    ExitCode::from(EXIT_NOT_STARTED)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let attach = !args.detach;
    let flags = &args.create;
    if args.detach && flags.runtime.is_some() {
        return Ok(not_started(
            "--runtime runs attached only: the external runtime's process is the container's monitor",
        ));
    }
    if attach && flags.tty && flags.interactive && !io::stdin().is_terminal() {
        return Ok(not_started("the input device is not a TTY"));
    }
    let containers = open_containers()?;
    let created = match create_container(&containers, flags, attach) {
        Ok(created) => created,
        Err(e) => return Ok(not_started(format!("{e:#}"))),
    };
    let id = created.record.config.id.clone();
    if args.detach {
        if let Err(e) = containers.start_detached(&id) {
            let _ = containers.discard(&created);
            return Ok(not_started(e));
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    run_attached(
        &containers,
        &id,
        flags.interactive,
        flags.tty,
        Some(&created),
    )
}

pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    match create_container(&containers, &args, false) {
        Ok(created) => {
            println!("{}", created.record.config.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(not_started(format!("{e:#}"))),
    }
}

/// Runs a created container with this process as its monitor, the container's streams
/// attached to ours; exits with the container's code. A container `run` just created
/// (`created`) is discarded when it cannot start, as `run` leaves nothing half-created.
pub fn run_attached(
    containers: &Containers,
    id: &str,
    interactive: bool,
    tty: bool,
    created: Option<&Created>,
) -> anyhow::Result<ExitCode> {
    let signals = SignalProxy::default();
    forward_signals(&signals, tty);
    let terminal = if tty && io::stdin().is_terminal() {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let streams = Streams {
        stdin: interactive.then(|| Box::new(io::stdin()) as Box<dyn io::Read + Send>),
        stdout: Arc::new(Mutex::new(io::stdout())),
        stderr: Arc::new(Mutex::new(io::stderr())),
        tty_size: if tty { terminal_size() } else { None },
    };
    let outcome = monitor::run(
        containers,
        id,
        Attach::Streams(streams),
        &signals,
        &mut None,
    );
    drop(terminal);
    match outcome {
        Ok(outcome) => {
            if let Some(e) = &outcome.error {
                eprintln!("strata: error: {e}");
            }
            Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
        }
        Err(e) => {
            if let Some(created) = created {
                let _ = containers.discard(created);
            }
            Ok(not_started(e))
        }
    }
}

/// Forwards the signals this process gets to the container (Docker's `--sig-proxy`); with a
/// terminal, interrupts arrive as bytes through it instead, and a resize of ours (SIGWINCH)
/// resizes the container's.
fn forward_signals(signals: &SignalProxy, tty: bool) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    if tty {
        set.add(Signal::SIGWINCH);
    } else {
        set.add(Signal::SIGINT);
        set.add(Signal::SIGQUIT);
    }
    // Blocked here before any thread exists, so every thread inherits the mask and only the
    // forwarding thread receives them (children start with a clean mask).
    if set.thread_block().is_err() {
        return;
    }
    let signals = signals.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            match sig {
                // Our terminal was resized: so is the container's.
                Signal::SIGWINCH => {
                    if let Some((rows, cols)) = terminal_size() {
                        signals.resize(rows, cols);
                    }
                }
                _ => signals.send(sig as i32),
            }
        }
    });
}

/// The terminal in raw mode until dropped.
pub struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    pub fn enter() -> anyhow::Result<Self> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("setting the terminal to raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// Our terminal's size (rows, columns), from standard output; `None` without a terminal.
pub(super) fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize struct that lives across the call.
    let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// Turns the flags into a created container.
fn create_container(
    containers: &Containers,
    flags: &CreateArgs,
    attach: bool,
) -> anyhow::Result<Created> {
    let network = NetworkMode::parse(&flags.network).with_context(|| {
        format!(
            "invalid --network {:?}: use private, host or none",
            flags.network
        )
    })?;
    let restart = RestartPolicy::parse(&flags.restart).with_context(|| {
        format!(
            "invalid restart policy {:?}: use no, always, unless-stopped or on-failure[:N]",
            flags.restart
        )
    })?;
    let image = image_for_run(containers.store(), flags.image())?;
    let mut ports: Vec<PortBinding> = flags
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<_, _>>()?;
    if flags.publish_all {
        let exposed = image
            .config_json
            .pointer("/config/ExposedPorts")
            .and_then(|v| v.as_object())
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for port in exposed {
            let (number, protocol) = port.split_once('/').unwrap_or((&port, "tcp"));
            if protocol != "tcp" && protocol != "udp" {
                eprintln!("WARNING: exposed port {port} is not published: only TCP and UDP are");
                continue;
            }
            let published = ports
                .iter()
                .any(|p| p.container_port.to_string() == number && p.protocol == protocol);
            if !published {
                ports.push(parse_publish(&port)?);
            }
        }
    }
    match network {
        NetworkMode::Host if !ports.is_empty() => {
            eprintln!("WARNING: Published ports are discarded when using host network mode");
            ports.clear();
        }
        NetworkMode::None if !ports.is_empty() => {
            bail!("published ports need a private network (--network private), not none")
        }
        _ => {}
    }
    let mut mounts = Vec::new();
    for v in &flags.volume {
        mounts.push(parse_volume_flag(v)?);
    }
    for m in &flags.mount {
        mounts.push(parse_mount_flag(m)?);
    }
    for t in &flags.tmpfs {
        mounts.push(parse_tmpfs_flag(t)?);
    }
    let (log_max_size, log_max_files) = log_options(&flags.log_opt)?;
    let host = HostConfig {
        mounts,
        ports,
        network,
        memory: flags.memory.as_deref().map(parse_memory).transpose()?,
        nano_cpus: flags.cpus.as_deref().map(parse_cpus).transpose()?,
        pids_limit: flags.pids_limit,
        read_only: flags.read_only,
        init: flags.init,
        restart,
        auto_remove: flags.rm,
        runtime: flags.runtime.clone(),
        log_max_size,
        log_max_files,
        cap_add: flags.cap_add.clone(),
        cap_drop: flags.cap_drop.clone(),
        extra_hosts: flags
            .add_host
            .iter()
            .map(|h| parse_add_host(h))
            .collect::<anyhow::Result<_>>()?,
        ulimits: flags
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        sysctls: flags
            .sysctl
            .iter()
            .map(|s| parse_sysctl(s, network == NetworkMode::Host))
            .collect::<Result<_, _>>()?,
        shm_size: flags
            .shm_size
            .as_deref()
            .map(parse_memory)
            .transpose()?
            .filter(|&size| size > 0),
        stop_timeout: flags.stop_timeout,
        group_add: flags.group_add.clone(),
    };
    // Checked now, not at the first start: a typo is the create's error.
    strata_runtime::spec::capability_set(&host.cap_add, &host.cap_drop)
        .map_err(anyhow::Error::msg)?;
    if host.memory.is_some_and(|m| m < 6 * 1024 * 1024) {
        bail!("Minimum memory limit allowed is 6MB");
    }
    if let Some(s) = &flags.stop_signal
        && strata_containers::process::parse_signal(s).is_none()
    {
        bail!("invalid signal: {s}");
    }
    let overrides = ConfigOverrides {
        cmd: flags.command().to_vec(),
        entrypoint: flags.entrypoint.clone(),
        env: env_entries(&flags.env, &flags.env_file)?,
        user: flags.user.clone(),
        workdir: flags.workdir.clone(),
        hostname: flags.hostname.clone(),
        labels: labels(&flags.label),
        stop_signal: flags.stop_signal.clone(),
        tty: flags.tty,
        open_stdin: flags.interactive,
        attach,
    };
    Ok(containers.create(CreateOptions {
        name: flags.name.clone(),
        image_ref: flags.image().to_string(),
        image,
        overrides,
        host,
    })?)
}

/// `--add-host NAME:IP` (also `NAME=IP`): the name, then the address after the first separator
/// (an IPv6 one has colons of its own). Docker's `host-gateway` needs its bridge: refused.
fn parse_add_host(value: &str) -> anyhow::Result<(String, std::net::IpAddr)> {
    let bad = || anyhow::anyhow!("invalid argument {value:?} for \"--add-host\" flag: use NAME:IP");
    let split = value.find([':', '=']).ok_or_else(bad)?;
    let (name, ip) = (&value[..split], &value[split + 1..]);
    if name.is_empty() {
        return Err(bad());
    }
    if ip == "host-gateway" {
        bail!(
            "--add-host {value}: host-gateway needs Docker's bridge network, which strata has not"
        );
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Ok((name.to_string(), ip.parse().map_err(|_| bad())?))
}

/// `-e` and `--env-file` entries in order; `K` alone takes this process's value (or is dropped).
fn env_entries(env: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |entry: &str| {
        if entry.contains('=') {
            out.push(entry.to_string());
        } else if let Ok(v) = std::env::var(entry) {
            out.push(format!("{entry}={v}"));
        }
    };
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add(line);
        }
    }
    for e in env {
        add(e);
    }
    Ok(out)
}

fn labels(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// `--log-opt max-size=SIZE` and `max-file=N`.
fn log_options(opts: &[String]) -> anyhow::Result<(Option<u64>, u32)> {
    let mut size = Some(DEFAULT_LOG_MAX_SIZE);
    let mut files = DEFAULT_LOG_MAX_FILES;
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", "-1")) => size = None,
            Some(("max-size", v)) => size = Some(parse_memory(v)?.max(1) as u64),
            Some(("max-file", v)) => {
                files = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("invalid max-file {v:?}"))?
            }
            _ => bail!("unknown log option {o:?} (max-size, max-file)"),
        }
    }
    Ok((size, files))
}
