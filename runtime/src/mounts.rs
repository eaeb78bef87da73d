//! The container's filesystem: the spec's mounts over the rootfs, a minimal /dev, pivot_root,
//! masked and read-only paths.
//!
//! Device access: instead of a devices cgroup (v1 only; v2 needs eBPF), /dev is a `nodev` tmpfs
//! whose device nodes are bind mounts of the host's, and the rootfs and bind mounts are `nodev`:
//! a node made with CAP_MKNOD (which Docker grants) can be created but not opened, as under
//! Docker's device rules, the same for v1, v2 and rootless.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroup;
use crate::rootpath::resolve_in_root;

/// Devices every container gets (runc's default set), bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
    // runc adds it when the kernel has /proc/kcore (masked inside, like every /proc/kcore).
    ("/proc/kcore", "core"),
];

pub(crate) struct Context {
    /// In a user namespace not owned by the initial one: some mounts must be bind mounts.
    pub rootless: bool,
    pub new_netns: bool,
}

type Result<T> = std::result::Result<T, String>;

fn raw_mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} on {} ({}): {e}",
            src.map(|s| s.display().to_string())
                .unwrap_or_else(|| "-".into()),
            dst.display(),
            fstype.unwrap_or("bind")
        )
    })
}

/// Mount flags parsed from OCI options, plus propagation changes and filesystem data.
struct Options {
    flags: MsFlags,
    propagation: Vec<MsFlags>,
    bind: bool,
    recursive: bool,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        bind: false,
        recursive: false,
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                let base = match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                o.propagation.push(if p.starts_with('r') {
                    base | MsFlags::MS_REC
                } else {
                    base
                });
                continue;
            }
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o
}

/// The flags of the mount at `path` that a remount inside a user namespace must keep.
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

fn remount_bind(dst: &Path, flags: MsFlags, ctx: &Context) -> Result<()> {
    let keep = if ctx.rootless {
        locked_flags(dst)
    } else {
        MsFlags::empty()
    };
    raw_mount(
        None,
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep,
        None,
    )
}

fn create_mount_point(dst: &Path, dir: bool) -> Result<()> {
    let err = |e: std::io::Error| format!("creating mount point {}: {e}", dst.display());
    if dir {
        std::fs::create_dir_all(dst).map_err(err)
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        if std::fs::symlink_metadata(dst).is_err() {
            std::fs::File::create(dst).map_err(err)?;
        }
        Ok(())
    }
}

/// Mounts the rootfs onto itself and the spec's mounts into it (before pivot_root).
pub(crate) fn setup_rootfs(spec: &Spec, rootfs: &Path, ctx: &Context) -> Result<()> {
    // Nothing we mount may propagate back to the host; host unmounts still reach us.
    raw_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )?;
    raw_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_entry(rootfs, m, ctx)?;
    }
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        setup_dev(rootfs)?;
    }
    pivot(rootfs)
}

fn mount_entry(rootfs: &Path, m: &Mount, ctx: &Context) -> Result<()> {
    let dst = resolve_in_root(rootfs, m.destination())
        .map_err(|e| format!("{}: {e}", m.destination().display()))?;
    let o = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_default();
    let data = (!o.data.is_empty()).then(|| o.data.join(","));
    if o.bind || typ == "bind" {
        let src = m
            .source()
            .clone()
            .ok_or_else(|| format!("bind mount {} has no source", m.destination().display()))?;
        let meta = std::fs::metadata(&src)
            .map_err(|e| format!("bind mount source {}: {e}", src.display()))?;
        create_mount_point(&dst, meta.is_dir())?;
        let rec = if o.recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        raw_mount(Some(&src), &dst, None, MsFlags::MS_BIND | rec, None)?;
        let is_device = meta.file_type().is_char_device() || meta.file_type().is_block_device();
        let nodev = if is_device {
            MsFlags::empty()
        } else {
            MsFlags::MS_NODEV
        };
        remount_bind(&dst, o.flags | nodev, ctx)?;
    } else if typ == "sysfs" && ctx.rootless && !ctx.new_netns {
        // In a user namespace, sysfs can only be mounted in a network namespace it owns.
        create_mount_point(&dst, true)?;
        raw_mount(
            Some(Path::new("/sys")),
            &dst,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_bind(&dst, o.flags | MsFlags::MS_RDONLY, ctx)?;
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroups(&dst, o.flags, ctx)?;
    } else {
        create_mount_point(&dst, true)?;
        let mut flags = o.flags;
        if m.destination() == Path::new("/dev") {
            flags |= MsFlags::MS_NODEV;
        }
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let mounted = raw_mount(Some(&src), &dst, Some(&typ), flags, data.as_deref());
        if mounted.is_err() && typ == "devpts" && ctx.rootless {
            // gid=5 (tty) may not be mapped without subordinate gids.
            let without_gid: Vec<String> = o
                .data
                .iter()
                .filter(|d| !d.starts_with("gid="))
                .cloned()
                .collect();
            raw_mount(
                Some(&src),
                &dst,
                Some(&typ),
                flags,
                Some(&without_gid.join(",")),
            )?;
        } else if mounted.is_err() && typ == "mqueue" && ctx.rootless {
            raw_mount(
                Some(Path::new("/dev/mqueue")),
                &dst,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        } else {
            mounted?;
        }
    }
    for propagation in &o.propagation {
        raw_mount(None, &dst, None, *propagation, None)?;
    }
    Ok(())
}

/// /sys/fs/cgroup: the container's own cgroups, read-only (through the cgroup namespace).
fn mount_cgroups(dst: &Path, flags: MsFlags, ctx: &Context) -> Result<()> {
    create_mount_point(dst, true)?;
    let ro =
        flags | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if ctx.rootless {
        raw_mount(
            Some(Path::new("/sys/fs/cgroup")),
            dst,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        return remount_bind(dst, MsFlags::MS_RDONLY, ctx);
    }
    let hierarchies = cgroup::v1_hierarchies();
    if hierarchies.is_empty() {
        return raw_mount(Some(Path::new("cgroup2")), dst, Some("cgroup2"), ro, None);
    }
    raw_mount(
        Some(Path::new("tmpfs")),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    for (controllers, mount_point) in hierarchies {
        let Some(name) = mount_point.file_name() else {
            continue;
        };
        let target = dst.join(name);
        create_mount_point(&target, true)?;
        raw_mount(
            Some(Path::new("cgroup")),
            &target,
            Some("cgroup"),
            ro,
            Some(&controllers),
        )?;
    }
    raw_mount(None, dst, None, MsFlags::MS_REMOUNT | ro, Some("mode=755"))
}

fn setup_dev(rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    for name in DEVICES {
        let target = dev.join(name);
        create_mount_point(&target, false)?;
        raw_mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    for (target, name) in DEV_LINKS {
        let link = dev.join(name);
        if *name == "ptmx" && !dev.join("pts/ptmx").exists() {
            continue;
        }
        if *name == "core" && !Path::new("/proc/kcore").exists() {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)
            .map_err(|e| format!("creating {}: {e}", link.display()))?;
    }
    Ok(())
}

/// Binds the terminal `slave` (a path in the container's devpts) onto /dev/console.
pub(crate) fn bind_console(slave: &str) -> Result<()> {
    let console = Path::new("/dev/console");
    create_mount_point(console, false)?;
    raw_mount(
        Some(Path::new(slave)),
        console,
        None,
        MsFlags::MS_BIND,
        None,
    )
}

fn pivot(rootfs: &Path) -> Result<()> {
    std::env::set_current_dir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
    // the new root, without needing a directory for the old one.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// After pivot_root: masked and read-only paths, then the root itself (nodev, maybe read-only).
pub(crate) fn finish_rootfs(spec: &Spec, ctx: &Context) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for path in linux.masked_paths().iter().flatten() {
        let p = Path::new(path);
        match std::fs::metadata(p) {
            Ok(meta) if meta.is_dir() => raw_mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => raw_mount(
                Some(Path::new("/dev/null")),
                p,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    for path in linux.readonly_paths().iter().flatten() {
        let p = Path::new(path);
        if p.exists() {
            raw_mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            remount_bind(
                p,
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                ctx,
            )?;
        }
    }
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let ro = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    remount_bind(Path::new("/"), ro | MsFlags::MS_NODEV, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "rbind",
            "ro",
            "nosuid",
            "rprivate",
            "mode=755",
            "size=65536k",
            "rw",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_options(&opts);
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
    }
}
