//! Overlay mounts: the new mount API first, the legacy option string with short paths second,
//! a guard that unmounts on drop, and a sweep for mounts a killed process left behind.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// Options that keep the upper directory an exact, self-contained diff: no copy-up of
/// metadata only (`metacopy`), no renamed directories recorded as redirects (`redirect_dir`),
/// no hard-link index tying the upper directory to this lower stack (`index`).
const DIFF_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "off"),
];

/// The directories of one overlay mount.
pub(crate) struct OverlaySpec<'a> {
    /// Lower directories, topmost first. Must not be empty.
    pub lowers: &'a [PathBuf],
    /// Upper and work directories; without them the mount is read-only.
    pub upper: Option<(&'a Path, &'a Path)>,
    /// Overlay's `volatile` option (kernel 5.10+, with an upper directory only): no sync of the
    /// upper file system, not even at unmount. Kernels without it fail with `EINVAL`.
    pub volatile: bool,
}

/// How to pass the lower directories to the kernel.
pub(crate) enum Method<'a> {
    /// The new mount API; fails with `ErrorKind::Unsupported` on kernels without it.
    NewApi,
    /// `mount(2)`, lower directories named relative to `links_dir` (short symlinks).
    Legacy {
        links_dir: &'a Path,
        lower_names: &'a [String],
    },
}

/// Mounts an overlay at `target`.
pub(crate) fn mount_overlay(
    spec: &OverlaySpec<'_>,
    target: &Path,
    method: Method<'_>,
) -> io::Result<()> {
    match method {
        Method::NewApi => mount_new_api(spec, target),
        Method::Legacy {
            links_dir,
            lower_names,
        } => mount_legacy(spec, target, links_dir, lower_names),
    }
}

/// `fsopen("overlay")`, one `lowerdir+` per layer (kernel 6.8+), so the page-sized option
/// string of `mount(2)` never limits the depth of a chain.
fn mount_new_api(spec: &OverlaySpec<'_>, target: &Path) -> io::Result<()> {
    let unsupported = |e: Errno| io::Error::new(io::ErrorKind::Unsupported, e);
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(unsupported)?;
    let fd = fs.as_fd();
    for lower in spec.lowers {
        // Kernels before 6.8 know no "lowerdir+".
        rustix::mount::fsconfig_set_string(fd, "lowerdir+", lower.as_path()).map_err(|e| {
            if e == Errno::INVAL {
                unsupported(e)
            } else {
                e.into()
            }
        })?;
    }
    if let Some((upper, work)) = spec.upper {
        rustix::mount::fsconfig_set_string(fd, "upperdir", upper)?;
        rustix::mount::fsconfig_set_string(fd, "workdir", work)?;
    }
    for (key, value) in DIFF_OPTIONS {
        rustix::mount::fsconfig_set_string(fd, key, value)?;
    }
    if spec.volatile {
        rustix::mount::fsconfig_set_flag(fd, "volatile")?;
    }
    rustix::mount::fsconfig_create(fd)?;
    let attrs = if spec.upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// `mount(2)` with lower directories named by short symlinks relative to `short_links`: a
/// helper thread with its own working directory (`unshare(CLONE_FS)`) changes into it, so the
/// option string holds a dozen bytes per layer instead of a full path.
fn mount_legacy(
    spec: &OverlaySpec<'_>,
    target: &Path,
    links_dir: &Path,
    lower_names: &[String],
) -> io::Result<()> {
    let mut data = format!("lowerdir={}", lower_names.join(":"));
    if let Some((upper, work)) = spec.upper {
        let (upper, work) = (absolute(upper)?, absolute(work)?);
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    for (key, value) in DIFF_OPTIONS {
        data.push_str(&format!(",{key}={value}"));
    }
    if spec.volatile {
        data.push_str(",volatile");
    }
    let data = CString::new(data).map_err(io::Error::other)?;
    let target = absolute(target)?;
    let dir = links_dir.to_path_buf();
    let read_only = spec.upper.is_none();
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<()> {
            // SAFETY: only CLONE_FS (cwd, root, umask) is unshared, for this thread alone,
            // and it exits right after the mount; no descriptor table is involved.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS)? };
            rustix::process::chdir(&dir)?;
            let flags = if read_only {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            };
            rustix::mount::mount("overlay", &target, "overlay", flags, data.as_c_str())?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("mount helper thread panicked")))
    })
}

fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// Unmounts `target`, lazily when it is busy.
pub(crate) fn unmount(target: &Path) -> io::Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::BUSY) => Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?),
        Err(e) => Err(e.into()),
    }
}

/// Mount points at or below `root`, deepest first, from `/proc/self/mountinfo`.
pub(crate) fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as `\\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\'
            && let Some(d) = digits
            && d.iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(v) = u8::try_from(d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mounted directory to hand to the runtime as a rootfs, unmounted when dropped.
///
/// For the copying snapshotter it is the snapshot's directory itself and dropping it does
/// nothing.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
    mounted: bool,
    /// Remove the (then empty) mount point after unmounting.
    remove_dir: bool,
}

impl Mount {
    pub(crate) fn mounted(path: PathBuf, remove_dir: bool) -> Mount {
        Mount {
            path,
            mounted: true,
            remove_dir,
        }
    }

    pub(crate) fn plain(path: PathBuf) -> Mount {
        Mount {
            path,
            mounted: false,
            remove_dir: false,
        }
    }

    /// The directory to use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now, reporting failure (dropping unmounts too, silently).
    pub fn unmount(mut self) -> io::Result<()> {
        self.release()
    }

    fn release(&mut self) -> io::Result<()> {
        if self.mounted {
            self.mounted = false;
            unmount(&self.path)?;
            if self.remove_dir {
                fs::remove_dir(&self.path)?;
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
