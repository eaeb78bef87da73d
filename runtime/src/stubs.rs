//! Mount points the rootfs lacks: created before the run and removed after it, so that a RUN
//! step's diff holds none of them (BuildKit's MountStubsCleaner does the same).
//!
//! The helper creates them itself, before the container starts, so it can record their parent
//! directory's timestamps before and after. After the run, an empty stub is removed and, if the
//! command did not touch the parent meanwhile, the parent gets its original timestamps back, so
//! a copied-up directory is identical to the lower one; if the command changed the parent, its
//! post-run timestamps are kept (BuildKit's behaviour).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::rootpath::resolve_in_root;

/// Mounts every container has: runc leaves their mount points in the rootfs, and so do we.
const SYSTEM_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// Whether `path` (absolute, in the container) is one the runtime mounts over in every
/// container, or lies below one: what is there in the rootfs is the runtime's mount point, not
/// the container's (Docker keeps the same in a layer of its own, which its `diff` never shows).
pub fn is_runtime_mount_point(path: &Path) -> bool {
    SYSTEM_MOUNTS.iter().any(|m| path.starts_with(m))
        || crate::etc::MOUNTED_FILES
            .iter()
            .any(|f| path == Path::new(f))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Times {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Times {
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }

    fn apply(&self, path: &Path) {
        let ts = |(sec, nsec): (i64, i64)| libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        let times = [ts(self.atime), ts(self.mtime)];
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: utimensat(2) with a valid path and two timespecs; no symlink is followed.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
    }
}

#[derive(Debug)]
struct Stub {
    path: PathBuf,
    dir: bool,
    parent_before: Option<Times>,
    parent_after: Option<Times>,
}

/// The stubs created for one run.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    created: Vec<Stub>,
}

impl Stubs {
    /// Creates the missing mount points of the spec's bind and tmpfs mounts in `rootfs`.
    pub fn create(rootfs: &Path, spec: &Spec) -> Self {
        let mut stubs = Stubs::default();
        for m in spec.mounts().iter().flatten() {
            if SYSTEM_MOUNTS
                .iter()
                .any(|s| Path::new(s) == m.destination())
            {
                continue;
            }
            let Ok(target) = resolve_in_root(rootfs, m.destination()) else {
                continue;
            };
            let target_is_dir = m
                .source()
                .as_ref()
                .is_none_or(|s| std::fs::metadata(s).is_ok_and(|m| m.is_dir()))
                || m.typ().as_deref() == Some("tmpfs");
            let mut missing = Vec::new();
            let mut p = target.as_path();
            while p != rootfs && std::fs::symlink_metadata(p).is_err() {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
            for path in missing.into_iter().rev() {
                let dir = path != target || target_is_dir;
                let parent_before = path.parent().and_then(Times::of);
                let made = if dir {
                    std::fs::create_dir(&path)
                } else {
                    std::fs::File::create(&path).map(drop)
                };
                if made.is_err() {
                    break; // the container setup reports the problem when it mounts there
                }
                let parent_after = path.parent().and_then(Times::of);
                stubs.created.push(Stub {
                    path,
                    dir,
                    parent_before,
                    parent_after,
                });
            }
        }
        stubs
    }

    /// Removes the stubs that are still empty, deepest first, and restores their parents' times.
    pub fn remove(self) {
        for stub in self.created.into_iter().rev() {
            let Ok(meta) = std::fs::symlink_metadata(&stub.path) else {
                continue;
            };
            let empty = if stub.dir {
                meta.is_dir() && std::fs::read_dir(&stub.path).is_ok_and(|mut d| d.next().is_none())
            } else {
                meta.is_file() && meta.len() == 0
            };
            if !empty {
                continue;
            }
            let Some(parent) = stub.path.parent().map(Path::to_path_buf) else {
                continue;
            };
            let parent_now = Times::of(&parent);
            let removed = if stub.dir {
                std::fs::remove_dir(&stub.path)
            } else {
                std::fs::remove_file(&stub.path)
            };
            if removed.is_err() {
                continue;
            }
            let restore = if parent_now.map(|t| t.mtime) == stub.parent_after.map(|t| t.mtime) {
                stub.parent_before
            } else {
                parent_now
            };
            if let Some(times) = restore {
                times.apply(&parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_go_away_and_untouched_parents_get_their_times_back() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let old = libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        };
        let etc =
            std::ffi::CString::new(root.path().join("etc").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: utimensat(2) on a path we made.
        unsafe { libc::utimensat(libc::AT_FDCWD, etc.as_ptr(), [old, old].as_ptr(), 0) };
        let host_file = root.path().join("hosts-source");
        std::fs::write(&host_file, "x").unwrap();
        let mut spec = crate::spec::default_spec(root.path(), vec!["true".into()]);
        crate::spec::add_bind(&mut spec, &host_file, Path::new("/etc/hosts"), true);
        crate::spec::add_tmpfs(&mut spec, Path::new("/cache/deep"), &[]);
        let stubs = Stubs::create(root.path(), &spec);
        assert!(root.path().join("etc/hosts").is_file());
        assert!(root.path().join("cache/deep").is_dir());
        stubs.remove();
        assert!(!root.path().join("etc/hosts").exists());
        assert!(!root.path().join("cache").exists());
        assert_eq!(
            std::fs::metadata(root.path().join("etc")).unwrap().mtime(),
            1_000_000
        );
    }
}
