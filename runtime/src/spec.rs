//! Building OCI runtime specs with Docker's defaults, so that callers (the builder's RUN, `strata
//! run`) only state what differs: command, env, user, mounts, network, limits.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::user::ResolvedUser;

/// The OCI runtime-spec types, for callers that adjust a spec beyond these helpers.
pub use oci_spec::runtime as oci;

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from containers (moby `oci/defaults.go`, as `docker inspect` shows them today).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containers see read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's `PATH` for images that set none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker (20.10+) sets these in every container with its own network namespace: any user may bind
/// ports below 1024 and send pings.
pub const NETWORK_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace.
    Host,
    /// Its own namespace with only `lo` (Docker's `--network none`).
    None,
    /// Its own namespace with `lo`; published ports reach it through [`crate::proxy`].
    Private,
}

/// Resource limits in Docker's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `--memory`, bytes.
    pub memory: Option<i64>,
    /// `--memory-swap`: memory plus swap, bytes (-1 unlimited). Docker's default is twice `memory`.
    pub memory_swap: Option<i64>,
    /// `--pids-limit`.
    pub pids: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpu-quota` and `--cpu-period`, microseconds (`--cpus 1.5` = 150000/100000).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// A spec with Docker's defaults: namespaces (pid, ipc, uts, mount, cgroup, a private network), the
/// standard mounts, default capabilities and seccomp profile, masked and read-only paths, root
/// user, `/` as working directory, Docker's `PATH`, no terminal, no_new_privs off.
/// `rootfs` must be absolute.
pub fn default_spec(rootfs: &Path, args: Vec<String>) -> Spec {
    let caps: HashSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let value = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": false},
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [DEFAULT_PATH_ENV],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "noNewPrivileges": false,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": crate::seccomp::oci_profile(&caps),
        },
    });
    // The value above is fixed and matches the spec's schema.
    let mut spec = serde_json::from_value(value).unwrap_or_default();
    set_network(&mut spec, Network::Private);
    spec
}

/// Sets the network: a new namespace for `None`/`Private`, the host's for `Host`.
pub fn set_network(spec: &mut Spec, network: Network) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    let mut sysctl = linux.sysctl().clone().unwrap_or_default();
    if network == Network::Host {
        for (key, _) in NETWORK_SYSCTLS {
            sysctl.remove(key);
        }
    } else {
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Network);
        namespaces.push(ns);
        for (key, value) in NETWORK_SYSCTLS {
            sysctl.insert(key.to_string(), value.to_string());
        }
    }
    linux.set_sysctl((!sysctl.is_empty()).then_some(sysctl));
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

/// The capabilities Docker's `--cap-add`/`--cap-drop` make of the default set (moby
/// `caps.TweakCapabilities`): names in any case, with or without `CAP_`; `ALL` in `add` starts
/// from every capability (less `drop`), `ALL` in `drop` keeps only `add`. An unknown name is
/// an error.
pub fn capability_set(add: &[String], drop: &[String]) -> Result<Vec<String>, String> {
    let normalize = |names: &[String]| -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let upper = name.to_ascii_uppercase();
            let cap = if upper == "ALL" || upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            if cap != "ALL" && cap.parse::<caps::Capability>().is_err() {
                return Err(format!("unknown capability: {cap:?}"));
            }
            if !out.contains(&cap) {
                out.push(cap);
            }
        }
        Ok(out)
    };
    let (add, drop) = (normalize(add)?, normalize(drop)?);
    let all_word = "ALL".to_string();
    Ok(if add.contains(&all_word) {
        let mut all: Vec<String> = caps::all().iter().map(ToString::to_string).collect();
        all.sort();
        all.retain(|c| !drop.contains(c));
        all
    } else if drop.contains(&all_word) {
        add
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .chain(
                add.into_iter()
                    .filter(|c| !DEFAULT_CAPABILITIES.contains(&c.as_str())),
            )
            .collect()
    })
}

/// Gives the process [`capability_set`]'s capabilities. The spec's seccomp profile follows the
/// new set, as moby's default profile allows some system calls only with a capability: external
/// runtimes (runc, crun) read it, strata's sandbox derives the same filter from the bounding
/// set. Call before [`set_user`].
pub fn tweak_capabilities(spec: &mut Spec, add: &[String], drop: &[String]) -> Result<(), String> {
    if add.is_empty() && drop.is_empty() {
        return Ok(());
    }
    let set = capability_set(add, drop)?;
    let capabilities = serde_json::from_value(serde_json::json!({
        "bounding": set,
        "effective": set,
        "permitted": set,
    }))
    .map_err(|e| format!("capabilities {set:?}: {e}"))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_capabilities(Some(capabilities));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap_or_default();
    let profile = crate::seccomp::oci_profile(&set.iter().cloned().collect::<HashSet<_>>());
    let seccomp = serde_json::from_value(profile).map_err(|e| format!("seccomp profile: {e}"))?;
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    Ok(())
}

/// Runs the process as `user`. As moby does, a non-root user starts with empty effective and
/// permitted capability sets (the bounding set stays); `HOME` comes from `/etc/passwd` if unset.
pub fn set_user(spec: &mut Spec, user: &ResolvedUser) {
    let Some(mut process) = spec.process().clone() else {
        return;
    };
    let mut u = process.user().clone();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids((!user.additional_gids.is_empty()).then(|| user.additional_gids.clone()));
    process.set_user(u);
    if user.uid != 0
        && let Some(mut caps) = process.capabilities().clone()
    {
        caps.set_effective(Some(Default::default()));
        caps.set_permitted(Some(Default::default()));
        process.set_capabilities(Some(caps));
    }
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
        process.set_env(Some(env));
    }
    spec.set_process(Some(process));
}

/// Adds a bind mount of host `source` at `destination`.
pub fn add_bind(spec: &mut Spec, source: &Path, destination: &Path, readonly: bool) {
    let mut options = vec![
        "rbind".to_string(),
        if readonly { "ro" } else { "rw" }.to_string(),
    ];
    options.push("rprivate".into());
    push_mount(spec, destination, "bind", source, options);
}

/// Adds a tmpfs at `destination` with extra options (`size=...`, `mode=...`).
pub fn add_tmpfs(spec: &mut Spec, destination: &Path, options: &[&str]) {
    let mut all = vec!["nosuid".to_string(), "nodev".to_string()];
    all.extend(options.iter().map(|o| o.to_string()));
    push_mount(spec, destination, "tmpfs", Path::new("tmpfs"), all);
}

fn push_mount(spec: &mut Spec, destination: &Path, typ: &str, source: &Path, options: Vec<String>) {
    let mut m = oci_spec::runtime::Mount::default();
    m.set_destination(destination.to_path_buf());
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(m);
    spec.set_mounts(Some(mounts));
}

/// Applies Docker-style limits (memory, swap, pids, CPU) as `linux.resources`.
pub fn set_limits(spec: &mut Spec, limits: &Limits) {
    use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids};
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut r = linux.resources().clone().unwrap_or_default();
    if limits.memory.is_some() || limits.memory_swap.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(limits.memory);
        // Docker: without --memory-swap, swap may add as much again as the memory limit.
        m.set_swap(limits.memory_swap.or(limits.memory.map(|l| l * 2)));
        r.set_memory(Some(m));
    }
    if let Some(pids) = limits.pids {
        let mut p = LinuxPids::default();
        p.set_limit(pids);
        r.set_pids(Some(p));
    }
    if limits.cpu_shares.is_some() || limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
        let mut c = LinuxCpu::default();
        c.set_shares(limits.cpu_shares);
        c.set_quota(limits.cpu_quota);
        c.set_period(limits.cpu_period);
        r.set_cpu(Some(c));
    }
    linux.set_resources(Some(r));
    spec.set_linux(Some(linux));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_has_dockers_defaults() {
        let spec = default_spec(Path::new("/rootfs"), vec!["/bin/true".into()]);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process
                .capabilities()
                .as_ref()
                .unwrap()
                .bounding()
                .as_ref()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .masked_paths()
                .as_ref()
                .unwrap()
                .len(),
            12
        );
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        assert_eq!(spec.mounts().as_ref().unwrap().len(), 7);
    }
}
