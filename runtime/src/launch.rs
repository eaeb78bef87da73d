//! The caller's side: starting the helper, handing it the spec, following the container.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Command;

use oci_spec::runtime::Spec;

use crate::channel::{self, Report};
use crate::helper::Envelope;
use crate::{ExitStatus, HELPER_ARG};

/// Where one of the container's standard streams goes. Ignored when the spec asks for a terminal.
#[derive(Debug)]
pub enum Stdio {
    /// The caller's own stream.
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe whose other end is returned in [`Container`] (`stdin`, `stdout`, `stderr`).
    Piped,
    /// Any open descriptor (a file, a socket, a pipe end).
    Fd(OwnedFd),
}

/// The container's stdin, stdout and stderr.
#[derive(Debug)]
pub struct StdioSet {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl StdioSet {
    /// The caller's streams, as `docker run -i` without `-t`.
    pub fn inherit() -> Self {
        Self {
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
        }
    }

    /// No input, output and errors piped back (a RUN step whose output becomes progress lines).
    pub fn piped() -> Self {
        Self {
            stdin: Stdio::Null,
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
        }
    }
}

/// Errors starting or following a container.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the sandbox helper {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("sandbox helper: {0}")]
    Protocol(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { context, source }
}

/// Starts sandboxed processes through a helper executable.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: PathBuf,
    cgroup_v2_root: Option<PathBuf>,
}

/// How a container ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The command's status (code, or 128 + signal).
    pub status: ExitStatus,
    /// The kernel's OOM killer ended a process of the container's cgroup.
    pub oom_killed: bool,
    /// Why the command could not be executed (then `status.code` is 126 or 127, as in Docker).
    pub exec_error: Option<String>,
    /// Adjustments made on the way (clamped rlimits, ignored limits): show them to the user.
    pub warnings: Vec<String>,
}

impl Sandbox {
    /// `helper` is the executable that runs [`crate::helper_main`] when given [`HELPER_ARG`]:
    /// `/proc/self/exe` in the strata binary, `env!("CARGO_BIN_EXE_strata")` in its tests.
    pub fn new(helper: impl Into<PathBuf>) -> Self {
        Self {
            helper: helper.into(),
            cgroup_v2_root: None,
        }
    }

    /// The helper executable.
    pub fn helper(&self) -> &std::path::Path {
        &self.helper
    }

    /// Uses the cgroup v2 hierarchy mounted at `root` instead of detecting the host's layout.
    pub fn with_cgroup_v2_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.cgroup_v2_root = Some(root.into());
        self
    }

    /// Starts `spec` (its `root.path` must be absolute) and returns once the command was started
    /// (or failed to be set up). Blocking: call it from a blocking thread under tokio.
    pub fn spawn(&self, spec: &Spec, stdio: StdioSet) -> Result<Container, RunError> {
        self.start(spec, stdio, None)
    }

    /// Runs `spec.process` inside a running container (`strata exec`): `init` is a pidfd of the
    /// container's init ([`Container::pidfd`], or `pidfd_open` of the pid a monitor recorded).
    /// The process joins every namespace of init that differs from the caller's and the
    /// container's own cgroups, and is set up as a container's command is (user, capabilities,
    /// seccomp when the spec has a `linux.seccomp` section, rlimits, `process.terminal`). The rest
    /// of the spec is ignored. Returns once the process was started; [`Container::wait`] gives its
    /// status. Needs the privilege to open the namespaces of init (root).
    pub fn exec(
        &self,
        init: BorrowedFd<'_>,
        spec: &Spec,
        stdio: StdioSet,
    ) -> Result<Container, RunError> {
        let init = init
            .try_clone_to_owned()
            .map_err(io("duplicating the pidfd"))?;
        self.start(spec, stdio, Some(init))
    }

    fn start(
        &self,
        spec: &Spec,
        stdio: StdioSet,
        exec_target: Option<OwnedFd>,
    ) -> Result<Container, RunError> {
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let (caller_end, helper_end) =
            channel::socket_pair().map_err(io("creating the control socket"))?;
        let mut child_fds: Vec<OwnedFd> = Vec::new();
        let (mut stdin, mut stdout, mut stderr) = (None, None, None);
        if !terminal {
            let StdioSet {
                stdin: i,
                stdout: o,
                stderr: e,
            } = stdio;
            for (n, s, keep) in [(0, i, &mut stdin), (1, o, &mut stdout), (2, e, &mut stderr)] {
                let (theirs, ours) = open_stdio(n, s)?;
                child_fds.push(theirs);
                *keep = ours;
            }
        }
        let exec = exec_target.is_some();
        child_fds.extend(exec_target);
        let envelope = Envelope {
            spec: spec.clone(),
            cgroup_v2_root: self.cgroup_v2_root.clone(),
            terminal,
            exec,
        };
        let payload =
            serde_json::to_vec(&envelope).map_err(|e| RunError::Protocol(e.to_string()))?;
        let helper = if caller_is_single_threaded() {
            fork_helper(helper_end)?
        } else {
            Helper::Spawned(
                Command::new(&self.helper)
                    .arg(HELPER_ARG)
                    .stdin(helper_end)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .map_err(|source| RunError::Spawn {
                        path: self.helper.clone(),
                        source,
                    })?,
            )
        };
        let raw: Vec<RawFd> = child_fds.iter().map(|f| f.as_raw_fd()).collect();
        let sent = channel::send_payload(caller_end.as_fd(), &payload, &raw);
        drop(child_fds);
        let mut container = Container {
            control: caller_end,
            helper,
            pid: 0,
            pidfd: None,
            stdin,
            stdout,
            stderr,
            pty: None,
            warnings: Vec::new(),
            namespaces: Vec::new(),
            exec_error: None,
            workload: None,
            finished: None,
        };
        sent.map_err(io("sending the spec to the sandbox helper"))?;
        loop {
            match container.next()? {
                Some(Report::Started { pid }) => {
                    container.pid = pid;
                    return Ok(container);
                }
                Some(Report::SetupFailed(message)) => {
                    let _ = container.finish();
                    return Err(RunError::Setup(message));
                }
                Some(_) => {}
                None => return Err(container.vanished()),
            }
        }
    }

    /// Runs `spec` to completion.
    pub fn run(&self, spec: &Spec, stdio: StdioSet) -> Result<Exit, RunError> {
        self.spawn(spec, stdio)?.wait()
    }
}

/// Returns (the container's end, the caller's end) of one standard stream.
fn open_stdio(n: i32, stdio: Stdio) -> Result<(OwnedFd, Option<File>), RunError> {
    Ok(match stdio {
        Stdio::Inherit => {
            // SAFETY: 0, 1 and 2 are open for the life of the process; we only duplicate them.
            let fd = unsafe { BorrowedFd::borrow_raw(n) };
            (
                fd.try_clone_to_owned()
                    .map_err(io("duplicating a standard stream"))?,
                None,
            )
        }
        Stdio::Null => {
            let null = File::options()
                .read(n == 0)
                .write(n != 0)
                .open("/dev/null")
                .map_err(io("opening /dev/null"))?;
            (null.into(), None)
        }
        Stdio::Piped => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| io("creating a pipe")(e.into()))?;
            if n == 0 {
                (read, Some(File::from(write)))
            } else {
                (write, Some(File::from(read)))
            }
        }
        Stdio::Fd(fd) => (fd, None),
    })
}

/// Whether this process has no thread but the calling one (`/proc/self/stat`, field 20): then a
/// fork of it is a consistent copy that may allocate and take locks.
fn caller_is_single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Fields after the command name (which may hold spaces), starting at field 3.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17))
        .is_some_and(|threads| threads == "1")
}

/// Starts the helper as a fork of this single-threaded process: the same code as the helper
/// executable runs, without executing and loading the binary a second time (~1.5 ms of a
/// container's start). A multi-threaded caller must exec instead: a fork of it could hold locks
/// that its other threads held.
fn fork_helper(control: OwnedFd) -> Result<Helper, RunError> {
    // SAFETY: checked just before that this process has no other thread; the child runs the
    // helper and never returns here.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Helper::Forked {
            pid: child.as_raw(),
            status: None,
        }),
        Ok(nix::unistd::ForkResult::Child) => crate::helper::forked_main(control),
        Err(e) => Err(RunError::Spawn {
            path: PathBuf::from("fork"),
            source: e.into(),
        }),
    }
}

/// The helper process.
#[derive(Debug)]
enum Helper {
    /// The helper executable, run with [`HELPER_ARG`].
    Spawned(std::process::Child),
    /// A fork of this process ([`fork_helper`]); `status` once reaped.
    Forked {
        pid: i32,
        status: Option<std::process::ExitStatus>,
    },
}

impl Helper {
    /// Waits for the helper to end (once; later calls give the same status).
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Helper::Spawned(child) => child.wait(),
            Helper::Forked {
                status: Some(status),
                ..
            } => Ok(*status),
            Helper::Forked { pid, status } => loop {
                let mut raw = 0;
                // SAFETY: waitpid(2) on our own child, writing into a local.
                if unsafe { libc::waitpid(*pid, &mut raw, 0) } == *pid {
                    let done = std::process::ExitStatus::from_raw(raw);
                    *status = Some(done);
                    return Ok(done);
                }
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            },
        }
    }
}

/// A started container. Dropping it without [`Container::wait`] kills it.
#[derive(Debug)]
pub struct Container {
    control: OwnedFd,
    helper: Helper,
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// The writing end of the command's stdin, when [`Stdio::Piped`].
    pub stdin: Option<File>,
    /// The reading end of the command's stdout, when [`Stdio::Piped`].
    pub stdout: Option<File>,
    /// The reading end of the command's stderr, when [`Stdio::Piped`].
    pub stderr: Option<File>,
    /// The terminal's master side, when the spec asked for a terminal (`process.terminal`).
    pub pty: Option<File>,
    warnings: Vec<String>,
    namespaces: Vec<(String, OwnedFd)>,
    exec_error: Option<String>,
    workload: Option<ExitStatus>,
    finished: Option<(ExitStatus, bool)>,
}

impl Container {
    /// The container's init (PID 1 inside) as the caller's pid namespace sees it: its namespaces
    /// are `/proc/<pid>/ns/*` (for `strata exec` and the port proxy).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the container's init: signals through it can never reach a recycled pid, and
    /// `setns(pidfd, ...)` joins its namespaces.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// One of the container's namespaces (`user`, `mnt`, `pid`, `net`, `ipc`, `uts`, `cgroup`) as a
    /// new descriptor: for `setns(2)` (`strata exec`) and [`crate::proxy::PortProxy`]. Works without
    /// root: init sends them itself.
    pub fn namespace(&self, name: &str) -> std::io::Result<File> {
        match self.namespaces.iter().find(|(n, _)| n == name) {
            Some((_, fd)) => Ok(File::from(fd.try_clone()?)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {name} namespace"),
            )),
        }
    }

    /// Warnings reported so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Sends `signal` to the container: init forwards it to the command (SIGKILL ends everything).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        };
        pidfd_signal(pidfd.as_fd(), signal)
    }

    /// Waits until the container ended and its cgroup is gone. Blocking.
    pub fn wait(mut self) -> Result<Exit, RunError> {
        let (init, oom_killed) = match self.finish()? {
            Some(done) => done,
            None => return Err(self.vanished()),
        };
        Ok(Exit {
            status: self.workload.unwrap_or(init),
            oom_killed,
            exec_error: self.exec_error.take(),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Reads reports until the helper's last one; reaps the helper.
    fn finish(&mut self) -> Result<Option<(ExitStatus, bool)>, RunError> {
        while self.finished.is_none() {
            if self.next()?.is_none() {
                break;
            }
        }
        let _ = self.helper.wait();
        Ok(self.finished)
    }

    /// Reads and records one report.
    fn next(&mut self) -> Result<Option<Report>, RunError> {
        let Some((report, mut fds)) = channel::next_report(self.control.as_fd())
            .map_err(io("reading from the sandbox helper"))?
        else {
            return Ok(None);
        };
        match &report {
            Report::Warning(w) => self.warnings.push(w.clone()),
            Report::PtyMaster => self.pty = fds.pop().map(File::from),
            Report::Namespaces(names) => {
                self.namespaces = names.iter().cloned().zip(fds.drain(..)).collect()
            }
            Report::Started { .. } => self.pidfd = fds.pop(),
            Report::ExecFailed { message, .. } => self.exec_error = Some(message.clone()),
            Report::WorkloadExited(status) => self.workload = Some(*status),
            Report::Exited { status, oom_killed } => self.finished = Some((*status, *oom_killed)),
            Report::SetupFailed(_) => {}
        }
        Ok(Some(report))
    }

    fn vanished(&mut self) -> RunError {
        match self.helper.wait() {
            Ok(status) => RunError::Protocol(format!("the helper ended unexpectedly ({status})")),
            Err(e) => RunError::Protocol(format!("the helper ended unexpectedly ({e})")),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.finished.is_none() {
            // Closing the control socket tells the helper to kill the container and clean up.
            let _ = self.signal(libc::SIGKILL);
            let _ = nix::sys::socket::shutdown(
                self.control.as_raw_fd(),
                nix::sys::socket::Shutdown::Both,
            );
            let _ = self.helper.wait();
        }
    }
}

/// Sends `signal` to the process behind `pidfd` (no pid reuse race, unlike kill(2)).
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            0usize,
            0u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
