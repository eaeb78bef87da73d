//! The monitor: the process that watches one container for as long as it runs.
//!
//! It holds `monitor.lock` (other processes tell a live monitor from a dead one by it), mounts
//! the container's snapshot and keeps it mounted, fills empty volumes from the image, starts the
//! container in the sandbox with its output going through pipes (or a terminal) into the log,
//! publishes its ports, records the run's start and end in `state.json`, and applies the restart
//! policy. Detached containers get a monitor process of their own ([`monitor_main`], started by
//! [`crate::Containers::start_detached`]); `strata run` without `-d` is the monitor itself and
//! also copies the container's streams to and from its own ([`Attach::Streams`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_runtime::proxy::{PortMapping, PortProxy, Protocol};
use strata_runtime::{Container, ExternalRuntime, Sandbox, Stdio, StdioSet};
use strata_snapshotter::Mount;

use crate::error::{Error, Result, io_err};
use crate::fsutil::{self, try_lock, write_json_atomic};
use crate::logs::{LineSplitter, LogWriter};
use crate::process::start_time;
use crate::record::{ContainerConfig, MountKind, NetworkMode, PortBinding, Status};
use crate::registry::Containers;
use crate::watch::Watcher;
use crate::{spec, volumes};
use strata_runtime::pidfd_signal;

/// A writer shared between runs (the caller's stdout or stderr).
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// The caller's streams, for a container run in the foreground.
pub struct Streams {
    /// Forwarded to the container when it keeps stdin open (`-i`); read until its end.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: SharedWriter,
    pub stderr: SharedWriter,
    /// The caller's terminal size (rows, columns), given to a `-t` container's terminal.
    pub tty_size: Option<(u16, u16)>,
}

/// Where the container's streams go besides the log.
pub enum Attach {
    /// Only the log (a detached monitor).
    Detached,
    /// Also the caller's streams.
    Streams(Streams),
}

/// How the (last) run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why the command could not be executed, if it could not.
    pub error: Option<String>,
}

/// Lets the caller signal the run in progress (the foreground `strata run` forwards the
/// signals it receives, as Docker's `--sig-proxy`) and resize its terminal.
#[derive(Clone, Default)]
pub struct SignalProxy {
    target: Arc<Mutex<Option<Target>>>,
}

/// The run in progress: its command's init, and its terminal when it has one.
struct Target {
    pidfd: OwnedFd,
    pty: Option<File>,
}

impl SignalProxy {
    /// Sends `signal` to the running container's command; ignored between runs.
    pub fn send(&self, signal: i32) {
        if let Ok(target) = self.target.lock()
            && let Some(target) = target.as_ref()
        {
            let _ = pidfd_signal(target.pidfd.as_fd(), signal);
        }
    }

    /// Gives the running container's terminal this size (the kernel then sends its foreground
    /// process SIGWINCH); ignored between runs and without a terminal.
    pub fn resize(&self, rows: u16, cols: u16) {
        if let Ok(target) = self.target.lock()
            && let Some(pty) = target.as_ref().and_then(|t| t.pty.as_ref())
        {
            set_window_size(pty, rows, cols);
        }
    }

    fn set(&self, target: Option<Target>) {
        if let Ok(mut current) = self.target.lock() {
            *current = target;
        }
    }
}

/// The one line a detached monitor writes to its starter.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    error: Option<String>,
}

fn write_report(report: &mut Option<File>, error: Option<String>) {
    if let Some(mut out) = report.take() {
        let line = serde_json::to_string(&Report { error }).unwrap_or_default();
        let _ = writeln!(out, "{line}");
    }
}

/// Reads what [`write_report`] wrote; nothing at all means the monitor died before reporting.
pub(crate) fn parse_report(text: &str) -> Result<()> {
    match serde_json::from_str::<Report>(text.trim()) {
        Ok(Report { error: None }) => Ok(()),
        Ok(Report { error: Some(e) }) => Err(Error::Invalid(e)),
        Err(_) => Err(Error::Invalid(
            "the container's monitor ended before starting it (see monitor.log in the container's directory)"
                .into(),
        )),
    }
}

/// Entry point of a detached monitor: `strata MONITOR_ARG <id>`, run first thing in `main`
/// (single-threaded). Stdout is a pipe to the starter, which learns from it whether the
/// container started; stderr is the container's `monitor.log`.
pub fn monitor_main() -> ! {
    let id = std::env::args().nth(2).unwrap_or_default();
    // Fork once more so the starter can reap its child at once; the monitor lives on adopted.
    // SAFETY: nothing else runs in this process yet.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            eprintln!("strata monitor: fork: {e}");
            std::process::exit(1)
        }
    }
    // Keep the report pipe aside; nothing started from here may hold it open.
    let mut report = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Some(File::from(fd)),
        Err(_) => None,
    };
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let result = (|| {
        let store = strata_store::Store::open(strata_store::default_root())?;
        let containers = Containers::open(store, "/proc/self/exe")?;
        run(
            &containers,
            &id,
            Attach::Detached,
            &SignalProxy::default(),
            &mut report,
        )
    })();
    match result {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("strata monitor {id}: {e}");
            write_report(&mut report, Some(e.to_string()));
            std::process::exit(1)
        }
    }
}

/// Runs container `id` until it ends for good (restart policy included) and returns how the
/// last run ended. Fails only when the first start fails (the reason is also recorded in the
/// state); `report`, when given, learns of the first start.
pub fn run(
    containers: &Containers,
    id: &str,
    attach: Attach,
    signals: &SignalProxy,
    report: &mut Option<File>,
) -> Result<Outcome> {
    let dir = containers.container_dir(id);
    let Some(lock) = try_lock(&containers.monitor_lock_path(id), true)? else {
        return Err(Error::AlreadyRunning(id.to_string()));
    };
    let config = containers.load(id)?.config;
    let monitor = Monitor {
        containers,
        config: &config,
        dir: &dir,
        signals,
    };
    let result = monitor.run_all(attach, report);
    match &result {
        // It never ran: the state stays as it was (created, or exited from an earlier run),
        // with the reason, as Docker records a failed start.
        Err(e) => {
            let _ = containers.update_state(id, |s| {
                s.error = e.to_string();
                s.exit_code = 128;
                Ok(())
            });
        }
        Ok(_) if config.host.auto_remove => {
            if let Err(e) = containers.destroy(&config, true) {
                eprintln!("strata: removing container {id}: {e}");
            }
        }
        Ok(_) => {}
    }
    drop(lock);
    result
}

struct Monitor<'a> {
    containers: &'a Containers,
    config: &'a ContainerConfig,
    dir: &'a Path,
    signals: &'a SignalProxy,
}

/// One run in progress.
struct Running {
    container: Container,
    proxy: Option<PortProxy>,
    pumps: Vec<JoinHandle<()>>,
    /// The container's stdin when nobody writes to it (`-d -i`): held open until the end, as
    /// Docker keeps it, so a shell waiting for input stays up.
    idle_stdin: Option<File>,
}

impl Monitor<'_> {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn run_all(&self, attach: Attach, report: &mut Option<File>) -> Result<Outcome> {
        let id = self.id();
        self.containers.update_state(id, |s| {
            s.stop_requested = false;
            s.error.clear();
            Ok(())
        })?;
        let snapshotter = self.containers.snapshotter()?;
        // A monitor killed earlier may have left this container's rootfs mounted.
        snapshotter.cleanup()?;
        let mount = self
            .containers
            .on_rootfs(self.config, |s| s.mount(&self.config.snapshot))?;
        self.fill_volumes(&mount)?;
        let log = LogWriter::open(
            &self.containers.log_path(id),
            self.config.host.log_max_size,
            self.config.host.log_max_files,
        )
        .map_err(io_err("opening the log", self.containers.log_path(id)))?;
        let log = Arc::new(Mutex::new(log));
        let (mut stdin, sinks, tty_size) = match attach {
            Attach::Detached => (None, None, None),
            Attach::Streams(s) => (s.stdin, Some((s.stdout, s.stderr)), s.tty_size),
        };
        if let Some(runtime) = &self.config.host.runtime {
            return self.run_external(runtime, &mount, report);
        }
        let sandbox = Sandbox::new(self.containers.exe());
        let mut first = true;
        let mut outcome = Outcome {
            exit_code: 0,
            oom_killed: false,
            error: None,
        };
        loop {
            let started = Instant::now();
            let running =
                match self.start(&sandbox, &mount, &log, sinks.as_ref(), &mut stdin, tty_size) {
                    Ok(r) => r,
                    Err(e) if first => return Err(e),
                    // A restart that could not start ends the container with the reason.
                    Err(e) => {
                        self.containers.update_state(id, |s| {
                            s.status = Status::Exited;
                            s.error = e.to_string();
                            s.rootfs = None;
                            s.ports.clear();
                            Ok(())
                        })?;
                        break;
                    }
                };
            if first {
                write_report(report, None);
                first = false;
            }
            let Running {
                container,
                proxy,
                pumps,
                idle_stdin,
            } = running;
            let exit = container.wait();
            self.signals.set(None);
            for p in pumps {
                let _ = p.join();
            }
            drop(proxy);
            drop(idle_stdin);
            outcome = match exit {
                Ok(exit) => Outcome {
                    exit_code: exit.status.code,
                    oom_killed: exit.oom_killed,
                    error: exit.exec_error,
                },
                Err(e) => Outcome {
                    exit_code: 255,
                    oom_killed: false,
                    error: Some(e.to_string()),
                },
            };
            let mut restart = false;
            let policy = &self.config.host.restart;
            let state = self.containers.update_state(id, |s| {
                s.status = Status::Exited;
                s.exit_code = outcome.exit_code;
                s.oom_killed = outcome.oom_killed;
                s.error = outcome.error.clone().unwrap_or_default();
                s.finished_at = fsutil::now();
                s.pid = 0;
                s.pid_start = 0;
                s.exits += 1;
                restart = !s.stop_requested && policy.restarts_after(s.exit_code, s.restart_count);
                if restart {
                    s.status = Status::Restarting;
                    s.restart_count += 1;
                } else {
                    s.rootfs = None;
                    s.ports.clear();
                }
                Ok(())
            })?;
            if !restart || !self.back_off(state.restart_count, started.elapsed())? {
                break;
            }
        }
        drop(mount);
        Ok(outcome)
    }

    /// Waits before a restart (Docker's doubling delay from 100 ms, reset after a run of 10 s or
    /// more); false when a stop came meanwhile.
    fn back_off(&self, restarts: u32, ran: Duration) -> Result<bool> {
        let delay = if ran >= Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(100 << restarts.saturating_sub(1).min(9))
        };
        let deadline = Instant::now() + delay;
        let watcher = Watcher::new(self.dir)?;
        loop {
            let stop = self.containers.load(self.id())?.state.stop_requested;
            if stop {
                self.containers.update_state(self.id(), |s| {
                    s.status = Status::Exited;
                    s.rootfs = None;
                    s.ports.clear();
                    Ok(())
                })?;
                return Ok(false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            watcher.wait(left.min(Duration::from_millis(200)));
        }
    }

    /// Docker's copy-up: each empty volume gets what the image has at its mount point.
    fn fill_volumes(&self, mount: &Mount) -> Result<()> {
        for m in &self.config.host.mounts {
            if m.kind != MountKind::Volume || m.no_copy {
                continue;
            }
            let volume = self.containers.volumes().get(&m.source)?;
            if !fsutil::is_empty_dir(&volume.mountpoint)
                .map_err(io_err("reading", &volume.mountpoint))?
            {
                continue;
            }
            let source =
                strata_runtime::rootpath::resolve_in_root(mount.path(), Path::new(&m.destination))
                    .map_err(io_err("resolving", &m.destination))?;
            volumes::copy_up(&source, &volume.mountpoint)
                .map_err(io_err("filling the volume from", &source))?;
        }
        Ok(())
    }

    fn start(
        &self,
        sandbox: &Sandbox,
        mount: &Mount,
        log: &Arc<Mutex<LogWriter>>,
        sinks: Option<&(SharedWriter, SharedWriter)>,
        stdin: &mut Option<Box<dyn Read + Send>>,
        tty_size: Option<(u16, u16)>,
    ) -> Result<Running> {
        let id = self.id();
        let mut spec = spec::build(
            self.config,
            mount.path(),
            self.dir,
            self.containers.volumes(),
        )?;
        if let Some(size) = tty_size
            && let Some(mut process) = spec.process().clone()
        {
            crate::spec::set_console_size(&mut process, size);
            spec.set_process(Some(process));
        }
        write_json_atomic(&self.containers.spec_path(id), &spec)?;
        let tty = self.config.config.tty;
        let stdio = StdioSet {
            stdin: if self.config.config.open_stdin {
                Stdio::Piped
            } else {
                Stdio::Null
            },
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
        };
        let publish =
            self.config.host.network == NetworkMode::Private && !self.config.host.ports.is_empty();
        let mappings = if publish {
            port_mappings(&self.config.host.ports)?
        } else {
            Vec::new()
        };
        let mut container = sandbox.spawn(&spec, stdio)?;
        for w in container.warnings() {
            eprintln!("WARNING: {w}");
        }
        let proxy = if publish {
            Some(
                PortProxy::for_container(sandbox, &container, &mappings)
                    .map_err(|e| port_error(&self.config.host.ports, &e))?,
            )
        } else {
            None
        };
        let ports: Vec<PortBinding> = match &proxy {
            Some(p) => self
                .config
                .host
                .ports
                .iter()
                .zip(p.local_addrs())
                .map(|(b, addr)| PortBinding {
                    host_port: addr.port(),
                    ..b.clone()
                })
                .collect(),
            None => Vec::new(),
        };
        let pid = container.pid();
        let pid_start = start_time(pid).unwrap_or(0);
        let rootfs = mount.path().to_path_buf();
        let state = self.containers.update_state(id, |s| {
            s.status = Status::Running;
            s.pid = pid;
            s.pid_start = pid_start;
            s.monitor_pid = std::process::id() as i32;
            s.started_at = fsutil::now();
            s.rootfs = Some(rootfs);
            s.ports = ports;
            s.oom_killed = false;
            s.error.clear();
            Ok(())
        })?;
        if let Some(pidfd) = container.pidfd().and_then(|p| p.try_clone_to_owned().ok()) {
            let pty = container.pty.as_ref().and_then(|p| p.try_clone().ok());
            self.signals.set(Some(Target { pidfd, pty }));
        }
        // A stop that came while we were starting (between two runs of a restart policy).
        if state.stop_requested {
            let _ = container.signal(libc::SIGKILL);
        }
        let mut pumps = Vec::new();
        let (out_sink, err_sink) = match sinks {
            Some((o, e)) => (Some(o.clone()), Some(e.clone())),
            None => (None, None),
        };
        if tty {
            if let Some(pty) = container.pty.take() {
                if let Some(input) = stdin.take()
                    && let Ok(to_pty) = pty.try_clone()
                {
                    forward_stdin(input, to_pty);
                }
                pumps.push(pump(pty, "stdout", log.clone(), out_sink));
            }
        } else {
            if let Some(out) = container.stdout.take() {
                pumps.push(pump(out, "stdout", log.clone(), out_sink));
            }
            if let Some(err) = container.stderr.take() {
                pumps.push(pump(err, "stderr", log.clone(), err_sink));
            }
            if let Some(input) = stdin.take()
                && let Some(to_container) = container.stdin.take()
            {
                forward_stdin(input, to_container);
            }
        }
        Ok(Running {
            idle_stdin: container.stdin.take(),
            container,
            proxy,
            pumps,
        })
    }

    /// `--runtime`: the spec handed to an external OCI runtime, stdio inherited (foreground
    /// only: the caller checks), no restarts.
    fn run_external(
        &self,
        runtime: &str,
        mount: &Mount,
        report: &mut Option<File>,
    ) -> Result<Outcome> {
        let id = self.id();
        let spec = spec::build(
            self.config,
            mount.path(),
            self.dir,
            self.containers.volumes(),
        )?;
        write_json_atomic(&self.containers.spec_path(id), &spec)?;
        let rootfs = mount.path().to_path_buf();
        self.containers.update_state(id, |s| {
            s.status = Status::Running;
            s.monitor_pid = std::process::id() as i32;
            s.started_at = fsutil::now();
            s.rootfs = Some(rootfs);
            Ok(())
        })?;
        write_report(report, None);
        let bundle = self.dir.join("bundle");
        let status = strata_runtime::run_external(
            &ExternalRuntime::parse(runtime),
            &spec,
            &bundle,
            &format!("strata-{}", &id[..12]),
        )
        .map_err(io_err("running", runtime));
        let outcome = match status {
            Ok(s) => Outcome {
                exit_code: s.code,
                oom_killed: false,
                error: None,
            },
            Err(e) => Outcome {
                exit_code: 127,
                oom_killed: false,
                error: Some(e.to_string()),
            },
        };
        self.containers.update_state(id, |s| {
            s.status = Status::Exited;
            s.exit_code = outcome.exit_code;
            s.error = outcome.error.clone().unwrap_or_default();
            s.finished_at = fsutil::now();
            s.rootfs = None;
            s.exits += 1;
            Ok(())
        })?;
        Ok(outcome)
    }
}

fn port_mappings(ports: &[PortBinding]) -> Result<Vec<PortMapping>> {
    ports
        .iter()
        .map(|p| {
            let ip: std::net::IpAddr = p
                .host_ip
                .parse()
                .map_err(|_| Error::Invalid(format!("invalid host IP {:?}", p.host_ip)))?;
            let protocol = match p.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(Error::Invalid(format!("unsupported protocol {other:?}"))),
            };
            Ok(PortMapping {
                host: SocketAddr::new(ip, p.host_port),
                container_port: p.container_port,
                protocol,
            })
        })
        .collect()
}

/// Names the port that could not be bound (the proxy's error does not say which).
fn port_error(ports: &[PortBinding], error: &io::Error) -> Error {
    for p in ports.iter().filter(|p| p.host_port != 0) {
        let addr = format!("{}:{}", p.host_ip, p.host_port);
        let bracketed = format!("[{}]:{}", p.host_ip, p.host_port);
        let target = if p.host_ip.contains(':') {
            &bracketed
        } else {
            &addr
        };
        let bound = if p.protocol == "udp" {
            UdpSocket::bind(target.as_str()).map(drop)
        } else {
            TcpListener::bind(target.as_str()).map(drop)
        };
        if let Err(e) = bound {
            return Error::Invalid(format!(
                "Bind for {addr} failed: port is already allocated ({e})"
            ));
        }
    }
    Error::Invalid(format!("publishing ports: {error}"))
}

/// Copies a container stream into the log (and the caller's stream) until it ends.
fn pump(
    mut from: File,
    stream: &'static str,
    log: Arc<Mutex<LogWriter>>,
    mut sink: Option<SharedWriter>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut emit = |line: &[u8]| -> io::Result<()> {
            match log.lock() {
                Ok(mut w) => w.write(stream, line),
                Err(_) => Ok(()),
            }
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A terminal's master reads EIO once its last user is gone.
                Err(_) => break,
            };
            let written = sink.as_ref().map(|s| {
                s.lock()
                    .map(|mut w| w.write_all(&buf[..n]).and_then(|()| w.flush()).is_ok())
                    .unwrap_or(false)
            });
            if written == Some(false) {
                // The caller's stream is gone: the log still gets everything.
                sink = None;
            }
            if let Err(e) = splitter.push(&buf[..n], &mut emit) {
                eprintln!("strata: writing the container's log: {e}");
            }
        }
        let _ = splitter.finish(&mut emit);
    })
}

/// Copies the caller's input to the container until it ends, then closes the container's stdin.
fn forward_stdin(mut input: Box<dyn Read + Send>, mut to: File) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut input, &mut to);
    });
}

/// Resizes a terminal through its master side (the container's process gets SIGWINCH).
pub fn set_window_size(pty: &File, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}
