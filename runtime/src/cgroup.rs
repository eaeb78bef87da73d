//! Cgroups for one container: creation with limits, joining, OOM detection, kill and removal.
//!
//! cgroup v1 (this project's machines: a hybrid layout with every controller on v1) writes one
//! directory per controller hierarchy; v2 writes one directory in the unified hierarchy. A relative
//! `cgroupsPath` is taken relative to the helper's own cgroup, as runc does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

/// v1 controllers a container joins when it has a cgroup at all.
const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct"];
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The container's cgroup directories.
#[derive(Debug)]
pub enum Cgroup {
    V1 { dirs: Vec<(String, PathBuf)> },
    V2 { dir: PathBuf },
}

impl Cgroup {
    /// Creates the cgroup at `path` (absolute: from the hierarchy root; relative: under the
    /// helper's cgroup) and writes `resources`. `v2_root` forces the v2 code on that mount point.
    pub fn create(
        path: &str,
        resources: &LinuxResources,
        v2_root: Option<&Path>,
    ) -> Result<Self, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(io_err(Path::new("/proc/self/cgroup")))?;
        let v2_mount = match v2_root {
            Some(root) => Some(root.to_path_buf()),
            None if cgroup_v2() => Some(PathBuf::from("/sys/fs/cgroup")),
            None => None,
        };
        let cgroup = match v2_mount {
            Some(mount) => {
                let current = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or("/");
                let dir = join_cgroup(&mount, current, path);
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let cgroup = Cgroup::V2 { dir };
                if let Err(e) = cgroup.write_v2(&mount, resources) {
                    cgroup.destroy();
                    return Err(e);
                }
                cgroup
            }
            None => {
                let mounts = v1_mounts()?;
                let mut dirs: Vec<(String, PathBuf)> = Vec::new();
                for controller in V1_CONTROLLERS {
                    let Some(mount) = mounts
                        .iter()
                        .find(|(c, _)| c.split(',').any(|x| x == *controller))
                    else {
                        continue;
                    };
                    let current = own
                        .lines()
                        .filter_map(|l| l.split(':').nth(1).zip(l.splitn(3, ':').nth(2)))
                        .find(|(cs, _)| cs.split(',').any(|x| x == *controller))
                        .map(|(_, p)| p)
                        .unwrap_or("/");
                    let dir = join_cgroup(&mount.1, current, path);
                    if dirs.iter().any(|(_, d)| *d == dir) {
                        continue;
                    }
                    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                    dirs.push((controller.to_string(), dir));
                }
                let cgroup = Cgroup::V1 { dirs };
                if let Err(e) = cgroup.write_v1(resources) {
                    cgroup.destroy();
                    return Err(e);
                }
                cgroup
            }
        };
        Ok(cgroup)
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1 { dirs } => dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
            Cgroup::V2 { dir } => Some(dir),
        }
    }

    fn write_v1(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let set = |controller: &str, file: &str, value: String| -> Result<(), CgroupError> {
            let dir = self.dir_of(controller).ok_or_else(|| {
                CgroupError::Unsupported(format!(
                    "the {controller} cgroup controller is not mounted"
                ))
            })?;
            write(&dir.join(file), &value)
        };
        if let Some(mem) = r.memory() {
            if let Some(limit) = mem.limit() {
                set("memory", "memory.limit_in_bytes", limit.to_string())?;
            }
            if let Some(reservation) = mem.reservation() {
                set(
                    "memory",
                    "memory.soft_limit_in_bytes",
                    reservation.to_string(),
                )?;
            }
            // memory+swap; the file only exists with swap accounting.
            if let (Some(swap), Some(dir)) = (mem.swap(), self.dir_of("memory")) {
                let file = dir.join("memory.memsw.limit_in_bytes");
                if file.exists() {
                    write(&file, &swap.to_string())?;
                }
            }
        }
        if let Some(pids) = r.pids() {
            let limit = pids.limit();
            set(
                "pids",
                "pids.max",
                if limit > 0 {
                    limit.to_string()
                } else {
                    "max".into()
                },
            )?;
        }
        if let Some(cpu) = r.cpu() {
            if let Some(shares) = cpu.shares() {
                set("cpu", "cpu.shares", shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                set("cpu", "cpu.cfs_period_us", period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                set("cpu", "cpu.cfs_quota_us", quota.to_string())?;
            }
            if cpu.cpus().is_some() || cpu.mems().is_some() {
                return Err(CgroupError::Unsupported(
                    "cpuset limits are not supported yet".into(),
                ));
            }
        }
        Ok(())
    }

    fn write_v2(&self, mount: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
        let Cgroup::V2 { dir } = self else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        if r.memory()
            .as_ref()
            .is_some_and(|m| m.limit().is_some() || m.reservation().is_some() || m.swap().is_some())
        {
            wanted.push("memory");
        }
        if r.pids().is_some() {
            wanted.push("pids");
        }
        if r.cpu()
            .as_ref()
            .is_some_and(|c| c.shares().is_some() || c.quota().is_some())
        {
            wanted.push("cpu");
        }
        enable_controllers(mount, dir, &wanted)?;
        for (file, value) in v2_values(r)? {
            write(&dir.join(file), &value)?;
        }
        Ok(())
    }

    /// Moves `pid` (a process of the caller's pid namespace) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        match self {
            Cgroup::V1 { dirs } => dirs
                .iter()
                .try_for_each(|(_, d)| write(&d.join("cgroup.procs"), &pid.to_string())),
            Cgroup::V2 { dir } => write(&dir.join("cgroup.procs"), &pid.to_string()),
        }
    }

    /// Whether the kernel's OOM killer ended a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, dir) = match self {
            Cgroup::V1 { .. } => ("memory.oom_control", self.dir_of("memory")),
            Cgroup::V2 { dir } => ("memory.events", Some(dir.as_path())),
        };
        let Some(dir) = dir else { return false };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Kills every process left in the cgroup and removes its directories (best effort).
    pub fn destroy(&self) {
        let dirs: Vec<&Path> = match self {
            Cgroup::V1 { dirs } => dirs.iter().map(|(_, d)| d.as_path()).collect(),
            Cgroup::V2 { dir } => {
                // cgroup.kill (Linux 5.14) kills the whole subtree atomically.
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                vec![dir.as_path()]
            }
        };
        for _ in 0..200 {
            let mut alive = false;
            for dir in &dirs {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        alive = true;
                        // SAFETY: plain kill(2); the pid is in our cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let removed = dirs.iter().all(|d| match std::fs::remove_dir(d) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            });
            if removed {
                return;
            }
            std::thread::sleep(Duration::from_millis(if alive { 5 } else { 1 }));
        }
    }
}

/// The v2 interface files and values for `r` (memory.max, memory.swap.max, pids.max, cpu.max, ...).
pub fn v2_values(r: &LinuxResources) -> Result<Vec<(&'static str, String)>, CgroupError> {
    let mut values = Vec::new();
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(mem) = r.memory() {
        if let Some(limit) = mem.limit() {
            values.push(("memory.max", max(limit)));
            // OCI's swap is memory+swap; v2 limits swap alone.
            if let Some(swap) = mem.swap() {
                let swap_only = if swap < 0 || limit < 0 {
                    -1
                } else {
                    (swap - limit).max(0)
                };
                values.push(("memory.swap.max", max(swap_only)));
            }
        }
        if let Some(reservation) = mem.reservation() {
            values.push(("memory.low", max(reservation)));
        }
    }
    if let Some(pids) = r.pids() {
        values.push((
            "pids.max",
            if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            },
        ));
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            // runc's conversion of the v1 2..262144 range onto v2's 1..10000.
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            values.push(("cpu.weight", weight.to_string()));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = cpu
                .quota()
                .filter(|q| *q > 0)
                .map(|q| q.to_string())
                .unwrap_or_else(|| "max".into());
            values.push((
                "cpu.max",
                format!("{quota} {}", cpu.period().unwrap_or(100_000)),
            ));
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            return Err(CgroupError::Unsupported(
                "cpuset limits are not supported yet".into(),
            ));
        }
    }
    Ok(values)
}

/// Enables `controllers` in every `cgroup.subtree_control` from the mount point down to `dir`'s parent.
fn enable_controllers(mount: &Path, dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let available = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    for c in controllers {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(CgroupError::Unsupported(format!(
                "the {c} controller is not available in the cgroup v2 hierarchy at {} (it may be bound to cgroup v1)",
                mount.display()
            )));
        }
    }
    let Ok(relative) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    let mut current = mount.to_path_buf();
    for component in relative.components() {
        write(&current.join("cgroup.subtree_control"), &line.join(" "))?;
        current.push(component);
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io_err(path))
}

fn join_cgroup(mount: &Path, current: &str, path: &str) -> PathBuf {
    let base = if path.starts_with('/') {
        mount.to_path_buf()
    } else {
        mount.join(current.trim_start_matches('/'))
    };
    base.join(path.trim_start_matches('/'))
}

/// Whether `/sys/fs/cgroup` is the unified (v2) hierarchy.
pub fn cgroup_v2() -> bool {
    is_cgroup2(Path::new("/sys/fs/cgroup"))
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
}

/// (controllers, mount point) of each mounted cgroup v1 hierarchy.
fn v1_mounts() -> Result<Vec<(String, PathBuf)>, CgroupError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(io_err(info))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut post = post.split(' ');
            if post.next()? != "cgroup" {
                return None;
            }
            let options = post.nth(1)?;
            let mount_point = pre.split(' ').nth(4)?;
            let controllers: Vec<&str> = options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .collect();
            Some((controllers.join(","), PathBuf::from(mount_point)))
        })
        .collect())
}

/// What the cgroup of a process has used (`strata stats`); `None` where its controller or file
/// is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Memory in use less the inactive page cache, as the Docker CLI counts it.
    pub memory: Option<u64>,
    /// The memory limit; `None` when there is none.
    pub memory_limit: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub pids: Option<u64>,
}

/// The usage of the cgroup process `pid` is in: v1's memory, cpuacct and pids hierarchies, or
/// the v2 directory.
pub fn cgroup_usage(pid: i32) -> Result<CgroupUsage, CgroupError> {
    let list = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&list).map_err(io_err(&list))?;
    let number =
        |path: PathBuf| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let stat = |path: PathBuf, key: &str| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    let unified = Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let dir = unified.join(rel.trim_start_matches('/'));
        let current = number(dir.join("memory.current"));
        let inactive = stat(dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Ok(CgroupUsage {
            memory: current.map(|c| c.saturating_sub(inactive)),
            // "max" does not parse: no limit.
            memory_limit: number(dir.join("memory.max")),
            cpu_ns: stat(dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
            pids: number(dir.join("pids.current")),
        });
    }
    let mounts = v1_mounts()?;
    let dir = |controller: &str| -> Option<PathBuf> {
        let (_, mount) = mounts
            .iter()
            .find(|(c, _)| c.split(',').any(|x| x == controller))?;
        let rel = text.lines().find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let controllers = fields.nth(1)?;
            let path = fields.next()?;
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })?;
        Some(mount.join(rel.trim_start_matches('/')))
    };
    let memory_dir = dir("memory");
    let usage = memory_dir
        .clone()
        .and_then(|d| number(d.join("memory.usage_in_bytes")));
    let inactive = memory_dir
        .clone()
        .and_then(|d| stat(d.join("memory.stat"), "total_inactive_file"))
        .unwrap_or(0);
    Ok(CgroupUsage {
        memory: usage.map(|u| u.saturating_sub(inactive)),
        // v1 writes "no limit" as the largest page-aligned value.
        memory_limit: memory_dir
            .and_then(|d| number(d.join("memory.limit_in_bytes")))
            .filter(|&l| l < 1 << 62),
        cpu_ns: dir("cpuacct").and_then(|d| number(d.join("cpuacct.usage"))),
        pids: dir("pids").and_then(|d| number(d.join("pids.current"))),
    })
}

/// Mounted cgroup v1 hierarchies as (controllers or `name=...`, mount point), for `/sys/fs/cgroup`
/// inside containers.
pub fn v1_hierarchies() -> Vec<(String, PathBuf)> {
    v1_mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|(c, _)| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    #[test]
    fn v2_values_translate_oci_resources() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(96 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let values = v2_values(&r).unwrap();
        let get = |k: &str| {
            values
                .iter()
                .find(|(f, _)| *f == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("memory.max"), Some("67108864"));
        assert_eq!(get("memory.swap.max"), Some("33554432"));
        assert_eq!(get("pids.max"), Some("20"));
        assert_eq!(get("cpu.weight"), Some("39"));
        assert_eq!(get("cpu.max"), Some("50000 100000"));
    }
}
