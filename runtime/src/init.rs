//! The processes inside the sandbox: the intermediate (creates the namespaces), init (PID 1:
//! mounts, pivot_root, then reaps and forwards signals) and the command itself.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, PosixRlimitType, Process, Spec};

use crate::channel::{self, Report};
use crate::helper::Envelope;
use crate::seccomp::DefaultProfile;
use crate::{ExitStatus, mounts};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reports a setup failure to the caller and exits.
fn fail(control: &OwnedFd, message: String) -> ! {
    let _ = channel::report(control.as_fd(), &Report::SetupFailed(message), &[]);
    // SAFETY: _exit(2) skips atexit handlers, which belong to the helper.
    unsafe { libc::_exit(1) }
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// The namespaces init is created in (the user namespace comes before, the cgroup namespace
/// after joining the cgroup; those given by path are joined instead).
pub(crate) fn new_namespaces(namespaces: &[LinuxNamespace]) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS;
    for ns in namespaces.iter().filter(|n| n.path().is_none()) {
        if !matches!(
            ns.typ(),
            LinuxNamespaceType::User | LinuxNamespaceType::Cgroup
        ) {
            flags |= ns_flag(ns.typ());
        }
    }
    flags
}

/// The intermediate process: unshares the namespaces, forks init, tells the helper init's pid.
pub(crate) fn intermediate_main(
    envelope: &Envelope,
    control: &OwnedFd,
    stdio: Vec<OwnedFd>,
    mut sync: UnixStream,
    user_ns: bool,
) -> ! {
    let spec = &envelope.spec;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    if user_ns {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
            fail(control, format!("creating the user namespace: {e}"));
        }
        let _ = sync.write_all(b"U");
    }
    let mut go = [0u8; 1];
    if sync.read_exact(&mut go).is_err() {
        // SAFETY: see `fail`.
        unsafe { libc::_exit(1) }
    }
    // Join the namespaces given by path (e.g. another container's network).
    for ns in namespaces.iter().filter(|n| n.path().is_some()) {
        let path = ns
            .path()
            .as_ref()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(""));
        let joined = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::sched::setns(f.as_fd(), ns_flag(ns.typ())).map_err(|e| e.to_string())
            });
        if let Err(e) = joined {
            fail(
                control,
                format!("joining namespace {}: {e}", path.display()),
            );
        }
    }
    if let Err(e) = nix::sched::unshare(new_namespaces(&namespaces)) {
        fail(control, format!("creating namespaces: {e}"));
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => init_main(envelope, control, stdio, sync, user_ns),
        Ok(ForkResult::Parent { child }) => {
            let _ = sync.write_all(&child.as_raw().to_le_bytes());
            // SAFETY: see `fail`.
            unsafe { libc::_exit(0) }
        }
        Err(e) => fail(control, format!("fork: {e}")),
    }
}

/// PID 1 of the container. It starts by waiting for the helper's word that it adopted it.
pub(crate) fn init_main(
    envelope: &Envelope,
    control: &OwnedFd,
    stdio: Vec<OwnedFd>,
    mut sync: UnixStream,
    user_ns: bool,
) -> ! {
    // Blocked signals queue up for sigwaitinfo below; as PID 1 we would otherwise drop them.
    let _ = SigSet::all().thread_block();
    let mut adopted = [0u8; 1];
    if sync.read_exact(&mut adopted).is_err() {
        // SAFETY: see `fail`.
        unsafe { libc::_exit(1) }
    }
    // The helper adopted us: die with it. Not dumpable: the container's processes must never open
    // /proc/1/exe (the host's strata binary) or /proc/1/fd (the control socket), whatever their
    // capabilities (runc's CVE-2019-5736).
    // SAFETY: prctl(PR_SET_PDEATHSIG) and prctl(PR_SET_DUMPABLE) only set process attributes.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let spec = &envelope.spec;
    let prepared = match prepare(envelope, control, user_ns) {
        Ok(p) => p,
        Err(e) => fail(control, e),
    };
    // SAFETY: single-threaded.
    let workload = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(sync);
            workload_main(spec, control, stdio, prepared)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail(control, format!("fork: {e}")),
    };
    drop(stdio);
    drop(prepared);
    let _ = sync.write_all(b"S");
    drop(sync);
    let status = reap(workload);
    let _ = channel::report(control.as_fd(), &Report::WorkloadExited(status), &[]);
    // SAFETY: see `fail`.
    unsafe { libc::_exit(status.code) }
}

/// What init prepares for the command before forking it.
pub(crate) struct Prepared {
    pub terminal: Option<OwnedFd>,
    pub seccomp: Option<DefaultProfile>,
}

fn prepare(envelope: &Envelope, control: &OwnedFd, user_ns: bool) -> Result<Prepared, String> {
    let spec = &envelope.spec;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let new_ns = |t| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    if new_ns(LinuxNamespaceType::Cgroup) {
        // After the helper moved us into the container's cgroup, so that it is our root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    }
    if new_ns(LinuxNamespaceType::Uts)
        && let Some(hostname) = spec.hostname()
    {
        nix::unistd::sethostname(hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    if new_ns(LinuxNamespaceType::Network) {
        loopback_up().map_err(|e| format!("bringing up the loopback interface: {e}"))?;
    }
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let ctx = mounts::Context {
        rootless: user_ns,
        new_netns: new_ns(LinuxNamespaceType::Network),
    };
    mounts::setup_rootfs(spec, &rootfs, &ctx)?;
    // In the container's /proc, before /proc/sys becomes read-only.
    let sysctls = spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default();
    for (key, mut value) in sysctls {
        if user_ns && key == "net.ipv4.ping_group_range" {
            value = clamp_to_mapped_gids(&value);
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, &value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    send_namespaces(control)?;
    let terminal = if envelope.terminal {
        Some(open_terminal(control, spec.process().as_ref())?)
    } else {
        None
    };
    mounts::finish_rootfs(spec, &ctx)?;
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    // Like runc: a missing working directory is created (as root, mode 0755).
    let cwd = process.cwd();
    if !cwd.as_os_str().is_empty() {
        let _ = std::fs::DirBuilder::new().recursive(true).create(cwd);
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        // The OCI seccomp section is not interpreted: its presence selects Docker's profile.
        Some(_) => Some(DefaultProfile::new(&effective_caps(process)).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Prepared { terminal, seccomp })
}

/// In a user namespace a gid range may only name mapped gids: `0 2147483647` becomes `0 <highest>`.
fn clamp_to_mapped_gids(range: &str) -> String {
    let highest = std::fs::read_to_string("/proc/self/gid_map")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (f.len() == 3 && f[2] > 0).then(|| f[0] + f[2] - 1)
        })
        .max()
        .unwrap_or(0);
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) => format!("{} {}", low.min(highest), high.min(highest)),
        _ => range.to_string(),
    }
}

/// Namespaces a container can have, as /proc/<pid>/ns names them.
const NAMESPACES: [&str; 7] = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];

fn send_namespaces(control: &OwnedFd) -> Result<(), String> {
    let files: Vec<std::fs::File> = NAMESPACES
        .iter()
        .map(|n| std::fs::File::open(format!("/proc/self/ns/{n}")))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("opening our namespaces: {e}"))?;
    let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let names = NAMESPACES.iter().map(|n| n.to_string()).collect();
    channel::report(control.as_fd(), &Report::Namespaces(names), &fds)
        .map_err(|e| format!("sending namespaces: {e}"))
}

/// Names of the capabilities the command keeps (its bounding set).
pub(crate) fn effective_caps(process: &Process) -> HashSet<String> {
    process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect()
}

/// Creates the terminal in the container's devpts, hands the master to the caller and puts the
/// slave at /dev/console; returns the slave.
fn open_terminal(control: &OwnedFd, process: Option<&Process>) -> Result<OwnedFd, String> {
    let (slave, name) = open_pty(control, process)?;
    mounts::bind_console(&name)?;
    Ok(slave)
}

/// Creates a terminal in the devpts of the current mount namespace, of the process's
/// `consoleSize` when it has one (so the command starts at its caller's size), and hands the
/// master to the caller; returns the slave and its path.
pub(crate) fn open_pty(
    control: &OwnedFd,
    process: Option<&Process>,
) -> Result<(OwnedFd, String), String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening a terminal: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave: OwnedFd = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| format!("opening {name}: {e}"))?
        .into();
    if let Some(size) = process.and_then(|p| p.console_size()) {
        let size = libc::winsize {
            ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
            ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(format!(
                "setting the terminal's size: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    channel::report(control.as_fd(), &Report::PtyMaster, &[master.as_raw_fd()])
        .map_err(|e| format!("sending the terminal: {e}"))?;
    Ok((slave, name))
}

use std::os::unix::fs::OpenOptionsExt;

/// Waits for the command, reaping every other process that ends meanwhile and forwarding signals.
fn reap(workload: Pid) -> ExitStatus {
    let all = SigSet::all();
    loop {
        let sig = match all.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(workload, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) if status.pid() == Some(workload) => {
                    return ExitStatus::from_wait(status);
                }
                Ok(_) => {}
            }
        }
    }
}

/// The command: stdio, rlimits, identity, capabilities, seccomp, exec.
pub(crate) fn workload_main(
    spec: &Spec,
    control: &OwnedFd,
    stdio: Vec<OwnedFd>,
    prepared: Prepared,
) -> ! {
    let code = match exec_workload(spec, control, stdio, prepared) {
        Ok(never) => match never {},
        Err((message, code)) => {
            let _ = channel::report(control.as_fd(), &Report::ExecFailed { message, code }, &[]);
            code
        }
    };
    // SAFETY: see `fail`.
    unsafe { libc::_exit(code) }
}

enum Never {}

fn exec_workload(
    spec: &Spec,
    control: &OwnedFd,
    stdio: Vec<OwnedFd>,
    prepared: Prepared,
) -> Result<Never, (String, i32)> {
    let setup = |e: String| (e, 127);
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| setup("the spec has no process".into()))?;
    nix::unistd::setsid().map_err(|e| setup(format!("setsid: {e}")))?;
    let fds: Vec<RawFd> = match &prepared.terminal {
        Some(slave) => {
            // SAFETY: TIOCSCTTY on our terminal makes it the session's controlling terminal.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
                return Err(setup(format!(
                    "TIOCSCTTY: {}",
                    std::io::Error::last_os_error()
                )));
            }
            vec![slave.as_raw_fd(); 3]
        }
        None => stdio.iter().map(|f| f.as_raw_fd()).collect(),
    };
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2(2) onto 0..2; the sources stay open until exec.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return Err(setup(format!("dup2: {}", std::io::Error::last_os_error())));
        }
    }
    reset_signals();
    // Descriptors the caller leaked to the helper without close-on-exec stop at the exec.
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| setup(format!("oom_score_adj: {e}")))?;
    }
    apply_rlimits(process, control);
    let umask = process.user().umask().unwrap_or(0o022);
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(umask as libc::mode_t) };
    let cwd = if process.cwd().as_os_str().is_empty() {
        Path::new("/")
    } else {
        process.cwd().as_path()
    };
    std::env::set_current_dir(cwd)
        .map_err(|e| setup(format!("chdir to cwd ({}): {e}", cwd.display())))?;

    let user = process.user();
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(user.uid())));
    }
    let args = process.args().clone().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(setup("no command specified".into()));
    };
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let executable = find_executable(program, &path_var)?;

    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS).
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(setup(format!(
                "no_new_privs: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    let caps = process.capabilities().clone().unwrap_or_default();
    let to_set = |set: &Option<oci_spec::runtime::Capabilities>| -> caps::CapsHashSet {
        set.iter()
            .flatten()
            .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
            .collect()
    };
    let bounding = to_set(caps.bounding());
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            // Dropping a capability this kernel does not know fails; it is not there anyway.
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    // Docker's order when no_new_privs is off: the filter goes in while we still hold
    // CAP_SYS_ADMIN; it lets through the calls made after it (setgroups, setuid, capset, execve).
    if let Some(profile) = &prepared.seccomp {
        profile.install().map_err(|e| setup(e.to_string()))?;
    }
    // SAFETY: prctl(PR_SET_KEEPCAPS) keeps permitted capabilities across setuid.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        // A user namespace without subordinate gids denies setgroups; only that case is tolerated.
        if !gids.is_empty() || e != nix::errno::Errno::EPERM {
            return Err(setup(format!("setgroups: {e}")));
        }
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| setup(format!("setting gid {}: {e}", user.gid())))?;
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| setup(format!("setting uid {}: {e}", user.uid())))?;
    let set = |set: caps::CapSet, value: &caps::CapsHashSet| {
        caps::set(None, set, value).map_err(|e| setup(format!("setting capabilities: {e}")))
    };
    // Inheritable first (it may only grow while we still hold CAP_SETPCAP), then effective
    // (which must stay within permitted), then permitted.
    set(caps::CapSet::Inheritable, &to_set(caps.inheritable()))?;
    set(caps::CapSet::Effective, &to_set(caps.effective()))?;
    set(caps::CapSet::Permitted, &to_set(caps.permitted()))?;
    // As runc: an ambient capability that is not also inheritable and permitted cannot be
    // raised; that is worth a warning, not a failure.
    for cap in to_set(caps.ambient()) {
        if let Err(e) = caps::raise(None, caps::CapSet::Ambient, cap) {
            let warning = Report::Warning(format!("ambient capability {cap} not raised: {e}"));
            let _ = channel::report(control.as_fd(), &warning, &[]);
        }
    }

    let c = |s: &str| CString::new(s).map_err(|_| setup(format!("{s:?} contains a NUL byte")));
    let argv: Vec<CString> = args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| c(e)).collect::<Result<_, _>>()?;
    let path =
        CString::new(executable.as_os_str().as_bytes()).map_err(|_| setup("bad path".into()))?;
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(exec_error(program, err))
}

/// Docker's messages and codes for a command that cannot be executed.
fn exec_error(program: &str, err: nix::errno::Errno) -> (String, i32) {
    use nix::errno::Errno;
    let code = match err {
        Errno::ENOENT => 127,
        _ => 126,
    };
    (
        format!("exec: \"{program}\": {}", err.desc().to_lowercase()),
        code,
    )
}

/// Looks `program` up in `path` as Go's exec.LookPath does for runc.
fn find_executable(program: &str, path: &str) -> Result<PathBuf, (String, i32)> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return match std::fs::metadata(program) {
            Ok(_) => Ok(PathBuf::from(program)),
            Err(e) => Err((
                format!("exec: \"{program}\": stat {program}: {}", lower_io(&e)),
                127,
            )),
        };
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err((
        format!("exec: \"{program}\": executable file not found in $PATH"),
        127,
    ))
}

fn lower_io(e: &std::io::Error) -> String {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
        .desc()
        .to_lowercase()
}

fn home_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(5).map(|h| h.to_string()))?
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

fn reset_signals() {
    for n in 1..=64 {
        if n == libc::SIGKILL || n == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition installs no handler.
        unsafe { libc::signal(n, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Applies the spec's rlimits; a value above what this process may set is clamped to the
/// current hard limit, with a warning.
fn apply_rlimits(process: &Process, control: &OwnedFd) {
    for limit in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(limit.typ());
        let (mut soft, mut hard) = (limit.soft(), limit.hard());
        let set = |soft: u64, hard: u64| {
            let value = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit(2) with a valid struct.
            unsafe { libc::setrlimit(resource, &value) == 0 }
        };
        if set(soft, hard) {
            continue;
        }
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) into a valid struct.
        unsafe { libc::getrlimit(resource, &mut current) };
        let mut max = current.rlim_max;
        if resource == libc::RLIMIT_NOFILE as libc::__rlimit_resource_t
            && let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
        {
            max = max.max(nr_open);
        }
        hard = hard.min(max);
        soft = soft.min(hard);
        let clamped = set(soft, hard) || {
            hard = hard.min(current.rlim_max);
            soft = soft.min(hard);
            set(soft, hard)
        };
        let message = if clamped {
            format!(
                "{}: requested soft={} hard={} exceeds what is allowed; clamped to soft={soft} hard={hard}",
                limit.typ(),
                limit.soft(),
                limit.hard()
            )
        } else {
            format!(
                "{}: could not set soft={} hard={}",
                limit.typ(),
                limit.soft(),
                limit.hard()
            )
        };
        let _ = channel::report(control.as_fd(), &Report::Warning(message), &[]);
    }
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

/// Brings `lo` up in the current network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket used only for the interface ioctls.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new descriptor.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives across the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
