//! The helper process: single-threaded, in the caller's namespaces. It creates the cgroup, forks
//! the intermediate process that makes the namespaces, adopts the container's init (it is a child
//! subreaper), waits for it and cleans up.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::channel::{self, Report};
use crate::stubs::Stubs;
use crate::{ExitStatus, init, rootless};

/// What the caller sends the helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub spec: Spec,
    pub cgroup_v2_root: Option<PathBuf>,
    /// A terminal is created inside; otherwise three stdio descriptors come with the envelope.
    pub terminal: bool,
    /// Join a running container instead of creating one: a pidfd of its init comes last among
    /// the descriptors, and only the spec's `process` is used (see [`crate::exec`]).
    #[serde(default)]
    pub exec: bool,
}

pub(crate) fn main() -> ! {
    // The control socket arrives as stdin; move it out of the way of the container's stdio.
    // SAFETY: fd 0 stays open until the dup2 below replaces it.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let Ok(control) = stdin.try_clone_to_owned() else {
        std::process::exit(1)
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    if std::env::args().nth(2).as_deref() == Some(crate::proxy::CONNECTOR_ARG) {
        std::process::exit(match crate::proxy::connector_main(&control) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("strata: port proxy connector: {e}");
                1
            }
        });
    }
    std::process::exit(serve(&control))
}

/// The helper in a fork of a single-threaded caller ([`crate::launch`]): first undoes what exec
/// would have, then serves as [`main`] does. Never returns into the caller's code.
pub(crate) fn forked_main(control: OwnedFd) -> ! {
    // Exec resets caught signals to their defaults and the caller may block some.
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restoring a signal's default disposition installs no handler code.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // Exec would close the caller's close-on-exec descriptors: among them the caller's end of
    // the control socket, which must close when the caller goes for the helper to notice.
    // Keep stderr and the control socket (as fd 3); stdin and stdout read and write nothing.
    let code = (|| -> Result<i32, String> {
        let original = control.into_raw_fd();
        // SAFETY: dup2(2) and close_range(2) on descriptors of this process; what they close
        // (the original socket included) is used by nothing below.
        unsafe {
            if original != 3 && libc::dup2(original, 3) != 3 {
                return Err(format!(
                    "moving the control socket: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                return Err(format!(
                    "closing the caller's descriptors: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        // SAFETY: fd 3 is the control socket now, owned by nothing else.
        let control = unsafe { OwnedFd::from_raw_fd(3) };
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        drop(null);
        Ok(serve(&control))
    })()
    .unwrap_or_else(|message| {
        eprintln!("strata: sandbox helper: {message}");
        1
    });
    // SAFETY: _exit(2) ends this process without the caller's exit handlers and buffers, which
    // belong to the caller.
    unsafe { libc::_exit(code) }
}

/// Runs one container (or exec) for the caller at the other end of `control`; the exit code.
fn serve(control: &OwnedFd) -> i32 {
    match run(control) {
        Ok(()) => 0,
        Err(message) => {
            let _ = channel::report(control.as_fd(), &Report::SetupFailed(message), &[]);
            1
        }
    }
}

fn run(control: &OwnedFd) -> Result<(), String> {
    // Terminal signals are for the caller, which decides what reaches the container.
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }.map_err(|e| format!("signal setup: {e}"))?;
    }
    let (payload, stdio) =
        channel::recv_payload(control.as_fd()).map_err(|e| format!("reading the spec: {e}"))?;
    let envelope: Envelope =
        serde_json::from_slice(&payload).map_err(|e| format!("invalid spec: {e}"))?;
    if envelope.exec {
        return crate::exec::run(control, &envelope, stdio);
    }
    if !envelope.terminal && stdio.len() != 3 {
        return Err("expected three stdio descriptors".into());
    }
    let spec = &envelope.spec;
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or("the spec has no root")?;
    if !rootfs.is_absolute() {
        return Err(format!(
            "root.path must be absolute, not {}",
            rootfs.display()
        ));
    }
    let rootless = !nix::unistd::geteuid().is_root();
    let warn = |message: String| {
        let _ = channel::report(control.as_fd(), &Report::Warning(message), &[]);
    };

    let cgroup = make_cgroup(spec, envelope.cgroup_v2_root.as_deref(), rootless, &warn)?;
    let stubs = Stubs::create(&rootfs, spec);
    let result = run_container(control, &envelope, stdio, cgroup.as_ref(), rootless);
    let (status, oom_killed) = match &result {
        Ok(status) => (*status, cgroup.as_ref().is_some_and(|c| c.oom_killed())),
        Err(_) => (
            ExitStatus {
                code: 255,
                signal: None,
            },
            false,
        ),
    };
    if let Some(cgroup) = &cgroup {
        cgroup.destroy();
    }
    stubs.remove();
    result?;
    let _ = channel::report(control.as_fd(), &Report::Exited { status, oom_killed }, &[]);
    Ok(())
}

fn make_cgroup(
    spec: &Spec,
    v2_root: Option<&Path>,
    rootless: bool,
    warn: &dyn Fn(String),
) -> Result<Option<Cgroup>, String> {
    let linux = spec.linux().as_ref();
    let resources = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let has_limits =
        resources.memory().is_some() || resources.pids().is_some() || resources.cpu().is_some();
    let path = linux.and_then(|l| l.cgroups_path().clone());
    if path.is_none() && !has_limits {
        return Ok(None);
    }
    if rootless {
        if has_limits {
            warn(
                "resource limits are ignored: strata runs without root and cannot create cgroups"
                    .into(),
            );
        }
        return Ok(None);
    }
    let path = path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("strata/{}", std::process::id()));
    Cgroup::create(&path, &resources, v2_root)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Runs the container to its end; returns init's status.
fn run_container(
    control: &OwnedFd,
    envelope: &Envelope,
    stdio: Vec<OwnedFd>,
    cgroup: Option<&Cgroup>,
    rootless: bool,
) -> Result<ExitStatus, String> {
    let spec = &envelope.spec;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let user_ns = rootless
        || namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who adopts orphans.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (mut sync, child_sync) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    if !user_ns && namespaces.iter().all(|n| n.path().is_none()) {
        // Nothing to do between creating the namespaces and init: clone init into them at once.
        let flags = init::new_namespaces(&namespaces).bits() | libc::SIGCHLD;
        // SAFETY: clone(2) without CLONE_VM or a new stack is fork(2) with namespace flags: the
        // child runs on its copy of this single-threaded process (the helper starts no threads).
        // Unlike glibc's fork it skips atfork handlers (none here) and leaves glibc's record of
        // the thread id stale, which glibc (2.34+) does not use to signal itself.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::c_long::from(flags), 0, 0, 0, 0) };
        if pid == 0 {
            drop(sync);
            init::init_main(envelope, control, stdio, child_sync, false);
        }
        if pid < 0 {
            return Err(format!(
                "creating namespaces: {}",
                std::io::Error::last_os_error()
            ));
        }
        drop(child_sync);
        drop(stdio);
        let init_pid = pid as i32;
        if let Some(cgroup) = cgroup
            && let Err(e) = cgroup.add(init_pid)
        {
            // Init is waiting for our word and would wait forever.
            let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(init_pid), None);
            return Err(e.to_string());
        }
        return adopt_and_wait(control, sync, init_pid);
    }
    // SAFETY: this process is single-threaded (the helper starts no threads).
    let intermediate = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(sync);
            init::intermediate_main(envelope, control, stdio, child_sync, user_ns)
        }
        ForkResult::Parent { child } => child,
    };
    drop(child_sync);
    drop(stdio);

    let handshake = (|| -> Result<Option<i32>, String> {
        if user_ns && !read_byte(&mut sync) {
            return Ok(None);
        }
        if let Some(cgroup) = cgroup {
            cgroup
                .add(intermediate.as_raw())
                .map_err(|e| e.to_string())?;
        }
        if user_ns {
            rootless::write_id_maps(intermediate.as_raw())?;
        }
        sync.write_all(b"G").map_err(|e| format!("sync: {e}"))?;
        let mut pid = [0u8; 4];
        if sync.read_exact(&mut pid).is_err() {
            return Ok(None);
        }
        Ok(Some(i32::from_le_bytes(pid)))
    })();
    if handshake.is_err() {
        // The intermediate is waiting for our go-ahead and would wait forever.
        let _ = nix::sys::signal::kill(intermediate, Signal::SIGKILL);
    }
    // The intermediate exits once init is forked; init is then ours (subreaper).
    let _ = waitpid(intermediate, None);
    let init_pid = match handshake {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            return Ok(ExitStatus {
                code: 1,
                signal: None,
            });
        }
        Err(e) => return Err(e),
    };
    adopt_and_wait(control, sync, init_pid)
}

/// Tells init (waiting for it) that we adopted it, reports it started and waits for it.
fn adopt_and_wait(
    control: &OwnedFd,
    mut sync: UnixStream,
    init_pid: i32,
) -> Result<ExitStatus, String> {
    let pidfd = pidfd_open(init_pid).map_err(|e| format!("pidfd_open: {e}"))?;
    let mut ready = false;
    if sync.write_all(b"R").is_ok() {
        ready = read_byte(&mut sync);
    }
    if ready {
        let _ = channel::report(
            control.as_fd(),
            &Report::Started { pid: init_pid },
            &[pidfd.as_raw_fd()],
        );
    }
    drop(sync);
    Ok(wait_for_init(control, &pidfd, init_pid))
}

/// Waits for init, killing it if the caller goes away.
pub(crate) fn wait_for_init(control: &OwnedFd, pidfd: &OwnedFd, pid: i32) -> ExitStatus {
    let mut watch_control = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = if watch_control { 2 } else { 1 };
        // SAFETY: poll(2) on descriptors we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, -1) };
        if rc < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if fds[0].revents != 0 {
            break;
        }
        if watch_control && fds[1].revents != 0 {
            // The caller sends nothing after the spec: readable means it closed its end.
            let _ = channel::recv_raw(control.as_fd());
            let _ = crate::launch::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
            watch_control = false;
        }
    }
    match waitpid(Pid::from_raw(pid), None) {
        Ok(status) => ExitStatus::from_wait(status),
        Err(_) => ExitStatus {
            code: 255,
            signal: None,
        },
    }
}

pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn read_byte(sync: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    sync.read_exact(&mut b).is_ok()
}
