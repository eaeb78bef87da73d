//! The helper's join mode (`strata exec`): runs one more process inside a running container.
//!
//! The caller hands over a pidfd of the container's init. The helper (single-threaded) opens the
//! `cgroup.procs` files of the container's own cgroups while it still sees the host's mounts,
//! joins every namespace of init that differs from its own with one `setns(pidfd, flags)` (the
//! kernel switches them atomically; the pid namespace applies to children), creates the terminal
//! in the container's devpts if asked, and forks. The child moves itself into the cgroups and
//! becomes the command exactly as a container's command does ([`init::workload_main`]:
//! rlimits, user, capabilities, seccomp, exec). The helper reports the child as started, waits
//! for it and reports its status; the container's init adopts whatever the child leaves behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, fork};

use crate::channel::{self, Report};
use crate::helper::{Envelope, pidfd_open, wait_for_init};
use crate::init::{self, Prepared};
use crate::seccomp::DefaultProfile;

/// Namespaces a process can join, as `/proc/<pid>/ns` names them (user first: the others may
/// belong to it).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

pub(crate) fn run(
    control: &OwnedFd,
    envelope: &Envelope,
    mut fds: Vec<OwnedFd>,
) -> Result<(), String> {
    let target = fds.pop().ok_or("no pidfd of the container's init")?;
    let stdio = fds;
    if !envelope.terminal && stdio.len() != 3 {
        return Err("expected three stdio descriptors".into());
    }
    let spec = &envelope.spec;
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let pid = pid_of(&target)?;
    let cgroups = container_cgroups(pid)?;
    let flags = differing_namespaces(pid)?;
    nix::sched::setns(target.as_fd(), flags)
        .map_err(|e| format!("joining the container's namespaces: {e}"))?;
    drop(target);
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(_) => {
            Some(DefaultProfile::new(&init::effective_caps(process)).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let terminal = if envelope.terminal {
        Some(init::open_pty(control, Some(process))?.0)
    } else {
        None
    };
    // SAFETY: the helper is single-threaded.
    let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            for mut procs in cgroups {
                // "0" is the writer itself, whatever its pid namespace calls it.
                if let Err(e) = procs.write_all(b"0") {
                    let message = format!("joining the container's cgroup: {e}");
                    let _ = channel::report(control.as_fd(), &Report::SetupFailed(message), &[]);
                    // SAFETY: _exit(2) skips atexit handlers, which belong to the helper.
                    unsafe { libc::_exit(1) }
                }
            }
            init::workload_main(spec, control, stdio, Prepared { terminal, seccomp })
        }
        ForkResult::Parent { child } => child,
    };
    drop(stdio);
    drop(cgroups);
    let pidfd = pidfd_open(child.as_raw()).map_err(|e| format!("pidfd_open: {e}"))?;
    let _ = channel::report(
        control.as_fd(),
        &Report::Started {
            pid: child.as_raw(),
        },
        &[pidfd.as_raw_fd()],
    );
    let status = wait_for_init(control, &pidfd, child.as_raw());
    let _ = channel::report(
        control.as_fd(),
        &Report::Exited {
            status,
            oom_killed: false,
        },
        &[],
    );
    Ok(())
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo`.
fn pid_of(pidfd: &OwnedFd) -> Result<i32, String> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    match info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        Some(pid) if pid > 0 => Ok(pid),
        _ => Err("the container is not running".into()),
    }
}

/// The namespaces of `pid` that are not ours.
fn differing_namespaces(pid: i32) -> Result<CloneFlags, String> {
    let mut flags = CloneFlags::empty();
    for (name, flag) in NAMESPACES {
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
        match (ours, theirs) {
            (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => {}
            (Ok(_), Ok(_)) => flags |= flag,
            // A kernel without this namespace type.
            (Err(_), Err(_)) => {}
            (_, Err(e)) | (Err(e), _) => {
                return Err(format!("reading the container's {name} namespace: {e}"));
            }
        }
    }
    Ok(flags)
}

/// `cgroup.procs` of every hierarchy in which `pid` has a cgroup other than ours (the container's
/// own cgroup, made for its limits), opened for writing.
fn container_cgroups(pid: i32) -> Result<Vec<File>, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let theirs = read(&format!("/proc/{pid}/cgroup"))?;
    let ours = read("/proc/self/cgroup")?;
    let mounts = cgroup_mounts(&read("/proc/self/mountinfo")?);
    let mut files = Vec::new();
    for line in theirs.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = ours.lines().any(|l| {
            let mut p = l.splitn(3, ':');
            p.nth(1) == Some(controllers) && p.next() == Some(path)
        });
        if same {
            continue;
        }
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let Some((mount, _)) = mounts.iter().find(|(_, options)| {
            if wanted.is_empty() {
                options.is_none()
            } else {
                options
                    .as_ref()
                    .is_some_and(|o| wanted.iter().all(|c| o.iter().any(|x| x == c)))
            }
        }) else {
            continue;
        };
        let procs = std::path::Path::new(mount)
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        let file = File::options()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("opening {}: {e}", procs.display()))?;
        files.push(file);
    }
    Ok(files)
}

/// Cgroup mounts from mountinfo: (mount point, `Some(super options)` for v1, `None` for v2).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, Option<Vec<String>>)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let options = post.nth(1)?;
            let mount_point = pre.split(' ').nth(4)?.to_string();
            match fstype {
                "cgroup2" => Some((mount_point, None)),
                "cgroup" => Some((
                    mount_point,
                    Some(options.split(',').map(str::to_string).collect()),
                )),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_are_read_from_mountinfo() {
        let info = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
                    31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
                    33 25 0:29 / /tmp rw - tmpfs tmpfs rw\n";
        let mounts = cgroup_mounts(info);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].0, "/sys/fs/cgroup/memory");
        assert!(
            mounts[1]
                .1
                .as_ref()
                .unwrap()
                .contains(&"cpuacct".to_string())
        );
        assert_eq!(mounts[2], ("/sys/fs/cgroup/unified".to_string(), None));
    }
}
