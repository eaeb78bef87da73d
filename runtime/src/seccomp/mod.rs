//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`), translated rule by rule
//! for x86_64 and compiled to one BPF program (`bpf.rs`).
//!
//! Unknown syscalls fail with `EPERM` (the profile's `defaultErrnoRet`); rules that Docker enables
//! only for a capability (`includes.caps`) are enabled when the process keeps that capability, so
//! `--cap-add SYS_ADMIN` gets `mount` back as it does in Docker. Departures: only the native
//! architecture is allowed (Docker also lets x86_64 containers make i386/x32 syscalls; those are
//! killed here), and `fchmodat2` is allowed as moby does since Docker 25.

use std::collections::{BTreeMap, HashSet};

use bpf::{Action, ArgOp, Verdict};

mod bpf;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// System call names and numbers of one architecture.
type SyscallTable = &'static [(&'static str, u32)];

/// The base allow list: every process may make these.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // minKernel 4.8 (always true here)
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // arches amd64/x32/x86
    "arch_prctl",
    "modify_ldt",
];

/// Allowed when the process keeps the capability (`includes.caps`).
const ALLOWED_WITH_CAP: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality(2)` personas the profile allows (Linux, `UNAME26`, `PER_LINUX32`, both, query).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// `AF_VSOCK`: the only socket family the profile refuses.
const AF_VSOCK: u64 = 40;
/// The namespace flags of `clone(2)`, refused without `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// Errors building or installing the profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the default seccomp profile is not available on this architecture")]
    UnsupportedArch,
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
}

/// The default profile compiled for a process keeping `caps` (names such as `CAP_SYS_ADMIN`): one
/// BPF program.
pub struct DefaultProfile {
    program: Vec<libc::sock_filter>,
}

impl DefaultProfile {
    pub fn new(caps: &HashSet<String>) -> Result<Self, SeccompError> {
        let (table, arch) = native_table()?;
        let program = bpf::compile(arch, &verdicts(table, caps), Action::Errno(EPERM))
            .map_err(SeccompError::Compile)?;
        Ok(Self { program })
    }

    /// Installs the filter on the calling thread. Does not set `no_new_privs` (Docker leaves it
    /// off unless asked), so the caller must still hold `CAP_SYS_ADMIN` unless it set that itself.
    pub fn install(&self) -> Result<(), SeccompError> {
        let len = u16::try_from(self.program.len())
            .map_err(|_| SeccompError::Compile("program too long".into()))?;
        let prog = libc::sock_fprog {
            len,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at a valid BPF program that outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// The profile's verdict for each syscall of `table` that it names; any other gets `EPERM`.
fn verdicts(table: SyscallTable, caps: &HashSet<String>) -> BTreeMap<u32, Verdict> {
    let nr = |name: &str| table.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr);
    let sys_admin = caps.contains("CAP_SYS_ADMIN");
    let mut verdicts = BTreeMap::new();
    let with_caps = ALLOWED_WITH_CAP
        .iter()
        .filter(|(cap, _)| caps.contains(*cap))
        .flat_map(|(_, names)| names.iter());
    for n in ALLOWED.iter().chain(with_caps).filter_map(|name| nr(name)) {
        verdicts.insert(n, Verdict::Always(Action::Allow));
    }
    // Allowed on conditions, unless allowed outright above.
    let mut allow_if = |name: &str, rule: Vec<(u8, ArgOp)>| {
        if let Some(n) = nr(name)
            && let Verdict::AllowIf(rules) = verdicts
                .entry(n)
                .or_insert_with(|| Verdict::AllowIf(Vec::new()))
        {
            rules.push(rule);
        }
    };
    allow_if("socket", vec![(0, ArgOp::Ne(AF_VSOCK))]);
    for persona in PERSONALITIES {
        allow_if("personality", vec![(0, ArgOp::Eq(*persona))]);
    }
    if !sys_admin {
        let no_namespaces = ArgOp::MaskedEq {
            mask: CLONE_NAMESPACE_FLAGS,
            value: 0,
        };
        allow_if("clone", vec![(0, no_namespaces)]);
        // clone3 cannot be filtered by its flags (they are behind a pointer): Docker makes it fail
        // with ENOSYS so that libc falls back to clone, whose flags the rule above checks.
        if let Some(clone3) = nr("clone3") {
            verdicts.insert(clone3, Verdict::Always(Action::Errno(ENOSYS)));
        }
    }
    verdicts
}

#[cfg(target_arch = "x86_64")]
fn native_table() -> Result<(SyscallTable, u32), SeccompError> {
    Ok((x86_64::SYSCALLS, bpf::AUDIT_ARCH_X86_64))
}

#[cfg(not(target_arch = "x86_64"))]
fn native_table() -> Result<(SyscallTable, u32), SeccompError> {
    Err(SeccompError::UnsupportedArch)
}

/// The same profile as an OCI `linux.seccomp` section, for external runtimes (runc, crun) and for
/// the spec's record: the sandbox treats the section's presence as "Docker's default profile".
pub fn oci_profile(caps: &HashSet<String>) -> serde_json::Value {
    let mut names: Vec<&str> = ALLOWED.to_vec();
    for (cap, extra) in ALLOWED_WITH_CAP {
        if caps.contains(*cap) {
            names.extend(extra.iter());
        }
    }
    let mut syscalls = vec![serde_json::json!({"names": names, "action": "SCMP_ACT_ALLOW"})];
    syscalls.push(serde_json::json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]
    }));
    for persona in PERSONALITIES {
        syscalls.push(serde_json::json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]
        }));
    }
    if !caps.contains("CAP_SYS_ADMIN") {
        syscalls.push(serde_json::json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
        syscalls.push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    const ERR_EPERM: u32 = libc::SECCOMP_RET_ERRNO | EPERM;
    const ERR_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | ENOSYS;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn caps(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn decide(profile: &DefaultProfile, nr: i64, arg0: u64) -> u32 {
        bpf::run(
            &profile.program,
            bpf::AUDIT_ARCH_X86_64,
            nr as u32,
            [arg0, 0, 0, 0, 0, 0],
        )
    }

    /// Every syscall of `nrs` (first argument 0) gets `verdict`.
    fn assert_all(profile: &DefaultProfile, nrs: &[i64], verdict: u32) {
        for &nr in nrs {
            assert_eq!(decide(profile, nr, 0), verdict, "syscall {nr}");
        }
    }

    #[test]
    fn docker_defaults_without_sys_admin() {
        let profile = DefaultProfile::new(&caps(&["CAP_CHOWN", "CAP_NET_RAW"])).unwrap();
        assert_all(
            &profile,
            &[
                libc::SYS_read,
                libc::SYS_execve,
                libc::SYS_getpid,
                libc::SYS_fchmodat2,
            ],
            ALLOW,
        );
        assert_all(
            &profile,
            &[
                libc::SYS_keyctl,
                libc::SYS_kexec_load,
                libc::SYS_open_by_handle_at,
                libc::SYS_unshare,
                libc::SYS_mount,
                libc::SYS_kcmp,
                libc::SYS_reboot,
            ],
            ERR_EPERM,
        );
        assert_eq!(decide(&profile, libc::SYS_clone3, 0), ERR_ENOSYS);
        let (fork_flags, new_user) = (libc::SIGCHLD as u64, libc::CLONE_NEWUSER as u64);
        assert_eq!(decide(&profile, libc::SYS_clone, fork_flags), ALLOW);
        assert_eq!(
            decide(&profile, libc::SYS_clone, fork_flags | new_user),
            ERR_EPERM
        );
        assert_eq!(
            decide(&profile, libc::SYS_socket, libc::AF_INET as u64),
            ALLOW
        );
        assert_eq!(decide(&profile, libc::SYS_socket, AF_VSOCK), ERR_EPERM);
        assert_eq!(
            decide(&profile, libc::SYS_socket, AF_VSOCK | 1 << 32),
            ALLOW
        );
        assert_eq!(decide(&profile, libc::SYS_personality, 0xffff_ffff), ALLOW);
        assert_eq!(
            decide(&profile, libc::SYS_personality, 0x0040_0000),
            ERR_EPERM
        );
        // x32 calls carry the x86_64 audit arch with bit 30 set in the number: none is allowed.
        assert_eq!(decide(&profile, 0x4000_0000 | libc::SYS_read, 0), ERR_EPERM);
        // i386 calls are killed.
        let i386 = bpf::run(&profile.program, 0x4000_0003, 3, [0; 6]);
        assert_eq!(i386, libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn capabilities_bring_back_their_syscalls() {
        let profile = DefaultProfile::new(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])).unwrap();
        assert_all(
            &profile,
            &[
                libc::SYS_mount,
                libc::SYS_unshare,
                libc::SYS_ptrace,
                libc::SYS_clone3,
            ],
            ALLOW,
        );
        let new_user = libc::CLONE_NEWUSER as u64;
        assert_eq!(decide(&profile, libc::SYS_clone, new_user), ALLOW);
        assert_eq!(decide(&profile, libc::SYS_reboot, 0), ERR_EPERM);
    }

    #[test]
    fn the_program_is_a_search_not_a_chain() {
        let profile = DefaultProfile::new(&caps(&[])).unwrap();
        assert!(profile.program.len() < 400, "{}", profile.program.len());
    }
}
