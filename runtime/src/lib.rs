//! The namespace sandbox.
//!
//! Runs one process in a root filesystem, isolated as Docker isolates it, from an OCI runtime spec
//! (`oci_spec::runtime::Spec`), so that the same spec can also be handed to runc or crun.
//!
//! # Process model
//! The caller may be multi-threaded (tokio): it never forks to set up namespaces. [`Sandbox::spawn`]
//! starts the helper executable (the `strata` binary with [`HELPER_ARG`], which calls
//! [`helper_main`] before anything else) and sends it the spec over a `SOCK_SEQPACKET` control
//! socket, with the container's stdio descriptors attached. The single-threaded helper forks an
//! intermediate process that creates the namespaces (the user namespace first when not root, so
//! the others belong to it) and forks the container's init (PID 1), which mounts the root
//! filesystem, pivots into it, forks the command and then reaps zombies and forwards signals.
//! The helper is a child subreaper: it adopts init, waits for it, reports the exit status, kills
//! what is left in the cgroup and removes it. If the caller goes away (the control socket closes)
//! the helper kills the container.
//!
//! ```text
//! caller (tokio) ──spawn──> helper (host namespaces, subreaper)
//!                              └─fork─> intermediate: unshare(user), unshare(mnt,pid,uts,ipc,net)
//!                                          └─fork─> init, PID 1: mounts, pivot_root, reaper
//!                                                     └─fork─> the command: rlimits, seccomp,
//!                                                              capabilities, user, exec
//! ```
//!
//! [`Sandbox::exec`] (`strata exec`) starts the helper in its join mode instead: given a pidfd of
//! a running container's init, it joins that container's namespaces and cgroups and forks the
//! process, which is set up exactly as a container's command.

mod bundle;
mod cgroup;
mod channel;
pub mod etc;
mod exec;
mod helper;
mod init;
mod launch;
mod mounts;
pub mod proxy;
mod rootless;
pub mod rootpath;
pub mod seccomp;
pub mod spec;
mod stubs;
pub mod user;

pub use bundle::{ExternalRuntime, run_external};
pub use cgroup::{CgroupError, CgroupUsage, cgroup_usage, cgroup_v2};
pub use launch::{Container, Exit, RunError, Sandbox, Stdio, StdioSet, pidfd_signal};
pub use oci_spec::runtime::Spec;
pub use stubs::is_runtime_mount_point;

/// The first argument that makes the `strata` binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__strata-runtime-helper";

/// The helper's entry point: call it first thing in `main` when `argv[1] == HELPER_ARG`, before any
/// thread (or async runtime) exists. Never returns.
pub fn helper_main() -> ! {
    helper::main()
}

/// How a process ended: `code` is its exit code, or `128 + n` when signal `n` ended it (as a shell
/// and Docker report it); `signal` is `Some(n)` in that case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub(crate) fn from_wait(status: nix::sys::wait::WaitStatus) -> Self {
        use nix::sys::wait::WaitStatus;
        match status {
            WaitStatus::Exited(_, code) => ExitStatus { code, signal: None },
            WaitStatus::Signaled(_, sig, _) => ExitStatus {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
            },
            _ => ExitStatus {
                code: 255,
                signal: None,
            },
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }
}
