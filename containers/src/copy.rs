//! `cp` between the host and a container, safe against symlinks in the container.
//!
//! Every path inside the container is resolved with `openat2(RESOLVE_IN_ROOT)` from a descriptor
//! of the container's root, and every entry below it is opened, created and changed with `*at`
//! calls relative to directory descriptors opened with `O_NOFOLLOW`: a symlink planted in the
//! container (even one swapped in while the copy runs) can point only inside the container, and
//! entries are never followed through links. The root is `/proc/<init>/root` while the
//! container runs (its mounts, volumes included, as it sees them), else its snapshot, mounted
//! for the copy, with its volumes and bind mounts found by path.
//!
//! Semantics are `docker cp`'s: a directory is copied into an existing directory as a
//! subdirectory (its contents with a trailing `/.`), a file into an existing directory keeps its
//! name, a missing destination is created (its parent must exist). Copied-in files belong to
//! root unless `archive` keeps the source's owners; copied-out files belong to the caller.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
};

use crate::error::{Error, Result};
use crate::process::start_time;
use crate::record::{MountKind, Status};
use crate::registry::{Containers, Record};

/// `cp` flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-L`: copy what a source symlink points to, not the link.
    pub follow_link: bool,
    /// `-a`: keep owners (copying in; otherwise files belong to root).
    pub archive: bool,
}

fn cp_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// Lexically normalised components of a container path (`..` stops at the root).
fn clean(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
}

/// The container's root to copy against, for the duration of `f`.
fn with_root<T>(
    containers: &Containers,
    record: &Record,
    container_path: &str,
    mut f: impl FnMut(&OwnedFd, &str) -> Result<T>,
) -> Result<T> {
    let id = &record.config.id;
    let open_dir = |p: &Path| -> Result<OwnedFd> {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| cp_err(p.display(), e))
    };
    // Not running: against its mounted snapshot, or the host directory of one of its mounts.
    let stopped = containers.with_stopped_rootfs(&record.config, |rootfs| {
        // A path under one of its mounts goes to that mount's host directory.
        let parts = clean(container_path);
        let mut best: Option<(usize, PathBuf)> = None;
        for m in &record.config.host.mounts {
            let dest = clean(&m.destination);
            if parts.len() >= dest.len()
                && parts[..dest.len()] == dest[..]
                && best.as_ref().is_none_or(|(n, _)| dest.len() > *n)
            {
                let host = match m.kind {
                    MountKind::Bind => PathBuf::from(&m.source),
                    MountKind::Volume => containers.volumes().get(&m.source)?.mountpoint,
                    MountKind::Tmpfs => {
                        return Err(Error::Invalid(format!(
                            "{container_path} is on a tmpfs, which exists only while the container runs"
                        )));
                    }
                };
                best = Some((dest.len(), host));
            }
        }
        // The descriptor is closed when `f` returns, before the rootfs is unmounted.
        match best {
            Some((n, host)) => f(&open_dir(&host)?, &parts[n..].join("/")),
            None => f(&open_dir(rootfs)?, &parts.join("/")),
        }
    })?;
    if let Some(result) = stopped {
        return Ok(result);
    }
    let state = containers.load(id)?.state;
    let is_init = || state.pid > 0 && start_time(state.pid) == Some(state.pid_start);
    if state.status != Status::Running || !is_init() {
        return Err(Error::Invalid(format!(
            "container {id} is starting or stopping: try again"
        )));
    }
    let root = open_dir(Path::new(&format!("/proc/{}/root", state.pid)))?;
    // Still the container's init after we opened its root: not a recycled pid.
    if !is_init() {
        return Err(Error::NotRunning(id.clone()));
    }
    f(&root, &clean(container_path).join("/"))
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Opens `rel` (relative to `root`, resolved inside it) as a directory.
fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )?)
}

fn split(rel: &str) -> (String, String) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent.to_string(), name.to_string()),
        None => (String::new(), rel.to_string()),
    }
}

// ---- out of the container ----

/// `cp CONTAINER:SRC DEST`.
pub fn copy_from_container(
    containers: &Containers,
    name_or_id: &str,
    src: &str,
    dest: &Path,
    options: CopyOptions,
) -> Result<()> {
    let record = containers.get(name_or_id)?;
    let contents_only = src.ends_with("/.") || src == ".";
    with_root(containers, &record, src, |root, rel| {
        let (parent, name) = split(rel);
        let parent_fd = open_in_root(root, &parent, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| cp_err(src, e))?;
        let name = if name.is_empty() {
            ".".to_string()
        } else {
            name
        };
        let stat = rustix::fs::statat(&parent_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| {
                cp_err(
                    format!("Could not find the file {src} in container {name_or_id}"),
                    e,
                )
            })?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind == FileType::Symlink && options.follow_link {
            let fd = open_in_root(root, rel, OFlags::RDONLY).map_err(|e| cp_err(src, e))?;
            let stat = rustix::fs::fstat(&fd).map_err(|e| cp_err(src, e))?;
            let kind = FileType::from_raw_mode(stat.st_mode);
            let target = out_target(dest, &name, kind == FileType::Directory, contents_only)?;
            return copy_out_opened(fd, kind, &stat, &target);
        }
        let is_dir = kind == FileType::Directory;
        let target = out_target(dest, &name, is_dir, contents_only)?;
        copy_out_entry(&parent_fd, &name, &target)
    })
}

/// Where a source named `name` lands on the host.
fn out_target(dest: &Path, name: &str, is_dir: bool, contents_only: bool) -> Result<PathBuf> {
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {
            if is_dir && contents_only || name == "." {
                Ok(dest.to_path_buf())
            } else {
                Ok(dest.join(name))
            }
        }
        Ok(_) if is_dir => Err(Error::Invalid(format!(
            "cannot copy a directory to a file: {}",
            dest.display()
        ))),
        Ok(_) => Ok(dest.to_path_buf()),
        Err(_) if dest.as_os_str().as_bytes().ends_with(b"/") => Err(Error::Invalid(format!(
            "destination directory {} must exist",
            dest.display()
        ))),
        Err(_) => Ok(dest.to_path_buf()),
    }
}

/// Copies entry `name` of container directory `dir` to host path `target`.
fn copy_out_entry(dir: &OwnedFd, name: &str, target: &Path) -> Result<()> {
    let stat =
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| cp_err(name, e))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    let err = |e: io::Error| cp_err(target.display(), e);
    match kind {
        FileType::Symlink => {
            let link =
                rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| cp_err(name, e))?;
            replace_host_entry(target)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(link.as_bytes()), target).map_err(err)?;
            Ok(())
        }
        FileType::Directory | FileType::RegularFile => {
            let flags = if kind == FileType::Directory {
                OFlags::RDONLY | OFlags::DIRECTORY
            } else {
                OFlags::RDONLY
            };
            let fd = rustix::fs::openat(
                dir,
                name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| cp_err(name, e))?;
            copy_out_opened(fd, kind, &stat, target)
        }
        FileType::Fifo => {
            replace_host_entry(target)?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                target,
                FileType::Fifo,
                Mode::from_raw_mode(stat.st_mode & 0o7777),
                0,
            )
            .map_err(|e| err(e.into()))
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            replace_host_entry(target)?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                target,
                kind,
                Mode::from_raw_mode(stat.st_mode & 0o7777),
                stat.st_rdev,
            )
            .map_err(|e| err(e.into()))
        }
        // Sockets and unknown types are skipped, as tar skips sockets.
        _ => Ok(()),
    }
}

/// Copies an opened container file or directory to `target`.
fn copy_out_opened(
    fd: OwnedFd,
    kind: FileType,
    stat: &rustix::fs::Stat,
    target: &Path,
) -> Result<()> {
    let err = |e: io::Error| cp_err(target.display(), e);
    let mode = stat.st_mode & 0o7777;
    if kind == FileType::Directory {
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "cannot overwrite non-directory {} with a directory",
                    target.display()
                )));
            }
            Err(_) => fs::create_dir(target).map_err(err)?,
        }
        for entry in Dir::read_from(&fd).map_err(|e| cp_err(target.display(), e))? {
            let entry = entry.map_err(|e| cp_err(target.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            copy_out_entry(&fd, &name, &target.join(&name))?;
        }
        fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(err)?;
    } else if kind == FileType::RegularFile {
        replace_host_entry(target)?;
        let mut from = File::from(fd);
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(err)?;
        io::copy(&mut from, &mut to).map_err(err)?;
        to.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
    } else {
        return Err(Error::Invalid(format!(
            "{}: not a file or directory",
            target.display()
        )));
    }
    set_host_times(target, stat).map_err(err)
}

/// Makes room for a new file, link or node at `target` (an existing directory stays an error).
fn replace_host_entry(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(Error::Invalid(format!(
            "cannot overwrite directory {} with a non-directory",
            target.display()
        ))),
        Ok(_) => fs::remove_file(target).map_err(|e| cp_err(target.display(), e)),
        Err(_) => Ok(()),
    }
}

fn set_host_times(target: &Path, stat: &rustix::fs::Stat) -> io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        target,
        &timestamps(stat),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn timestamps(stat: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: stat.st_atime as _,
            tv_nsec: stat.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: stat.st_mtime as _,
            tv_nsec: stat.st_mtime_nsec as _,
        },
    }
}

// ---- into the container ----

/// `cp SRC CONTAINER:DEST`.
pub fn copy_into_container(
    containers: &Containers,
    name_or_id: &str,
    src: &Path,
    dest: &str,
    options: CopyOptions,
) -> Result<()> {
    let record = containers.get(name_or_id)?;
    let meta = if options.follow_link {
        fs::metadata(src)
    } else {
        fs::symlink_metadata(src)
    }
    .map_err(|e| cp_err(src.display(), e))?;
    let contents_only = src.as_os_str().as_bytes().ends_with(b"/.");
    let src_name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest_is_dir_syntax = dest.ends_with('/') || dest.ends_with("/.");
    with_root(containers, &record, dest, |root, rel| {
        // An existing directory (links resolved inside the root) receives the source.
        let existing = open_in_root(root, rel, OFlags::RDONLY | OFlags::DIRECTORY);
        let (dir, name) = match existing {
            Ok(dir) => {
                if meta.is_dir() && contents_only {
                    return copy_dir_contents_in(src, &dir, options);
                }
                (dir, src_name.clone())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && !dest_is_dir_syntax => {
                if meta.is_dir() {
                    return Err(Error::Invalid(format!(
                        "cannot copy a directory to a file: {dest}"
                    )));
                }
                let (parent, name) = split(rel);
                (
                    open_in_root(root, &parent, OFlags::RDONLY | OFlags::DIRECTORY)
                        .map_err(|e| cp_err(dest, e))?,
                    name,
                )
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !dest_is_dir_syntax => {
                let (parent, name) = split(rel);
                let parent_fd = open_in_root(root, &parent, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| cp_err(format!("the parent directory of {dest} must exist"), e))?;
                if meta.is_dir() {
                    // A new directory named `name` gets the source's contents.
                    let new = make_dir_in(&parent_fd, &name, &meta)?;
                    copy_dir_contents_in(src, &new, options)?;
                    return finish_dir_in(&new, &meta, options);
                }
                (parent_fd, name)
            }
            Err(e) => return Err(cp_err(format!("destination {dest}"), e)),
        };
        copy_in_entry(src, &meta, &dir, &name, options)
    })
}

fn copy_dir_contents_in(src: &Path, dir: &OwnedFd, options: CopyOptions) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(|e| cp_err(src.display(), e))?
        .collect::<io::Result<_>>()
        .map_err(|e| cp_err(src.display(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| cp_err(path.display(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        copy_in_entry(
            &path,
            &meta,
            dir,
            &name,
            CopyOptions {
                follow_link: false,
                ..options
            },
        )?;
    }
    Ok(())
}

/// Copies host `src` to entry `name` of container directory `dir`.
fn copy_in_entry(
    src: &Path,
    meta: &fs::Metadata,
    dir: &OwnedFd,
    name: &str,
    options: CopyOptions,
) -> Result<()> {
    let err = |e: rustix::io::Errno| cp_err(name, e);
    let owner = |uid: u32, gid: u32| {
        if options.archive {
            (Uid::from_raw(uid), Gid::from_raw(gid))
        } else {
            (Uid::ROOT, Gid::ROOT)
        }
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        let new = make_dir_in(dir, name, meta)?;
        copy_dir_contents_in(src, &new, options)?;
        return finish_dir_in(&new, meta, options);
    }
    if kind.is_symlink() {
        let target = fs::read_link(src).map_err(|e| cp_err(src.display(), e))?;
        remove_non_dir(dir, name)?;
        rustix::fs::symlinkat(target.as_os_str(), dir, name).map_err(err)?;
        let (uid, gid) = owner(meta.uid(), meta.gid());
        rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(err)?;
        return Ok(());
    }
    if !kind.is_file() {
        // Devices, fifos and sockets are not copied in.
        return Ok(());
    }
    let mut from = File::open(src).map_err(|e| cp_err(src.display(), e))?;
    let open = |flags: OFlags| {
        rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | flags,
            Mode::from_raw_mode(0o600),
        )
    };
    let fd = match open(OFlags::empty()) {
        // A symlink where the file goes is replaced, never written through.
        Err(rustix::io::Errno::LOOP) => {
            remove_non_dir(dir, name)?;
            open(OFlags::EXCL).map_err(err)?
        }
        other => other.map_err(err)?,
    };
    let mut to = File::from(fd);
    io::copy(&mut from, &mut to).map_err(|e| cp_err(name, e))?;
    finish_fd(to.as_fd(), meta, options).map_err(err)
}

/// Creates (or reuses) directory `name` in `dir` and opens it without following links.
fn make_dir_in(dir: &OwnedFd, name: &str, meta: &fs::Metadata) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(meta.mode() & 0o7777)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(cp_err(name, e)),
    }
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| cp_err(format!("{name} (a directory)"), e))
}

fn finish_dir_in(dir: &OwnedFd, meta: &fs::Metadata, options: CopyOptions) -> Result<()> {
    finish_fd(dir.as_fd(), meta, options).map_err(|e| cp_err("setting attributes", e))
}

/// Owner, mode and times of a copied-in file or directory, through its descriptor.
fn finish_fd(
    fd: BorrowedFd<'_>,
    meta: &fs::Metadata,
    options: CopyOptions,
) -> rustix::io::Result<()> {
    let (uid, gid) = if options.archive {
        (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()))
    } else {
        (Uid::ROOT, Gid::ROOT)
    };
    rustix::fs::fchown(fd, Some(uid), Some(gid))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode() & 0o7777))?;
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: Timespec {
                tv_sec: meta.atime(),
                tv_nsec: meta.atime_nsec() as _,
            },
            last_modification: Timespec {
                tv_sec: meta.mtime(),
                tv_nsec: meta.mtime_nsec() as _,
            },
        },
    )
}

/// Removes entry `name` of `dir` unless it is a directory.
fn remove_non_dir(dir: &OwnedFd, name: &str) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            Err(Error::Invalid(format!(
                "cannot overwrite directory {name} with a non-directory"
            )))
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| cp_err(name, e)),
        Err(_) => Ok(()),
    }
}
