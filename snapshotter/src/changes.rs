//! What changed between a snapshot and its parent, in the order BuildKit reports it.
//!
//! Two sources, one output: an overlay upper directory read against the merged view of its
//! parents (BuildKit's overlay differ), or two full trees walked side by side (containerd's double
//! walk). Both visit paths depth first with names sorted bytewise and report each addition,
//! modification and deletion once; unchanged entries are skipped (their parent directories are
//! added back by the layer writer when a child changed).

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;

use crate::fsutil::{self, EntryStat};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Add,
    Modify,
    Delete,
}

impl ChangeKind {
    /// `docker diff`'s letter: `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Add => 'A',
            ChangeKind::Modify => 'C',
            ChangeKind::Delete => 'D',
        }
    }
}

/// Receives changes. `rel` is relative to the roots (no leading slash): the entry is `rel` below
/// the upper root. `stat` is the lstat of the new entry (absent for deletions).
pub(crate) trait ChangeSink {
    fn change(&mut self, kind: ChangeKind, rel: &Path, stat: Option<&EntryStat>) -> io::Result<()>;
}

/// The roots of a diff. The walk looks entries up through open directories, one component at a
/// time; the few checks of an entry present on both sides (xattrs, link targets, content) go by
/// path below these.
struct Roots<'a> {
    upper: &'a Path,
    lower: Option<&'a Path>,
}

impl Roots<'_> {
    fn lower_path(&self, rel: &Path) -> io::Result<std::path::PathBuf> {
        self.lower
            .map(|l| l.join(rel))
            .ok_or_else(|| io::Error::other("a lower entry without a lower tree"))
    }
}

/// `lstat` of `name` in `dir`; `None` when there is no such entry. (One name in an open
/// directory: no component on the way can be a non-directory.)
fn lstat_opt(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<EntryStat>> {
    match EntryStat::at(dir, name) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// BuildKit's `sameDirent` (after continuity): same type and mode, owner, device number and
/// xattrs; for non-directories also size and mtime, comparing content only when both mtimes
/// have no sub-second part (as after extraction from a tar), where equal times prove nothing.
fn same_entry(
    lower: &EntryStat,
    upper: &EntryStat,
    roots: &Roots<'_>,
    rel: &Path,
) -> io::Result<bool> {
    if lower.dev == upper.dev && lower.ino == upper.ino {
        return Ok(true);
    }
    if lower.file_type != upper.file_type
        || lower.mode != upper.mode
        || lower.uid != upper.uid
        || lower.gid != upper.gid
        || lower.rdev != upper.rdev
    {
        return Ok(false);
    }
    let (lower_path, upper_path) = (roots.lower_path(rel)?, roots.upper.join(rel));
    if fsutil::xattrs(&lower_path)? != fsutil::xattrs(&upper_path)? {
        return Ok(false);
    }
    if lower.is_dir() {
        return Ok(true);
    }
    if lower.size != upper.size || lower.mtime != upper.mtime {
        return Ok(false);
    }
    if lower.mtime_nsec == 0 && upper.mtime_nsec == 0 {
        if lower.file_type == FileType::Symlink {
            return Ok(fs::read_link(&lower_path)? == fs::read_link(&upper_path)?);
        }
        if lower.size == 0 || lower.file_type != FileType::RegularFile {
            return Ok(true);
        }
        return fsutil::same_content(&lower_path, &upper_path);
    }
    Ok(lower.mtime_nsec == upper.mtime_nsec)
}

/// Walks an overlay upper directory. `lower` is the merged view of the parent snapshots; without
/// one every entry is an addition and every whiteout a deletion.
pub(crate) fn overlay_changes(
    upper: &Path,
    lower: Option<&Path>,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    let upper_dir = fsutil::open_dir(upper)?;
    let lower_dir = lower.map(fsutil::open_dir).transpose()?;
    let roots = Roots { upper, lower };
    overlay_dir(
        &roots,
        upper_dir.as_fd(),
        lower_dir.as_ref().map(|d| d.as_fd()),
        Path::new(""),
        sink,
    )
}

/// One directory of the upper tree (`rel_dir`, open as `upper`), with the same directory of the
/// lower view open as `lower` when there is one to compare with.
fn overlay_dir(
    roots: &Roots<'_>,
    upper: BorrowedFd<'_>,
    lower: Option<BorrowedFd<'_>>,
    rel_dir: &Path,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    for name in fsutil::sorted_names_in(upper)? {
        let rel = rel_dir.join(&name);
        let stat = EntryStat::at(upper, &name)?;
        let lower_stat = match lower {
            Some(dir) => lstat_opt(dir, &name)?,
            None => None,
        };
        if fsutil::is_whiteout(&stat) {
            // A whiteout over nothing (created and deleted in this step) needs no record.
            if lower.is_none() || lower_stat.is_some() {
                sink.change(ChangeKind::Delete, &rel, None)?;
            }
            continue;
        }
        let kind = match &lower_stat {
            Some(ls) if same_entry(ls, &stat, roots, &rel)? => None,
            Some(_) => Some(ChangeKind::Modify),
            None => Some(ChangeKind::Add),
        };
        if let Some(kind) = kind {
            sink.change(kind, &rel, Some(&stat))?;
        }
        if !stat.is_dir() {
            continue;
        }
        let upper_sub = fsutil::open_dir_at(upper, &name)?;
        let lower_sub = match (lower, &lower_stat) {
            (Some(dir), Some(ls)) if ls.is_dir() => Some(fsutil::open_dir_at(dir, &name)?),
            _ => None,
        };
        match lower_sub {
            // An opaque directory hides the lower one: what changed is what differs between
            // the lower directory and the upper one (whose own whiteouts hide nothing below).
            Some(lower_sub) if fsutil::is_opaque_dir_fd(upper_sub.as_fd())? => {
                compare_dir(roots, Some(lower_sub), upper_sub, &rel, true, sink)?;
            }
            Some(lower_sub) => overlay_dir(
                roots,
                upper_sub.as_fd(),
                Some(lower_sub.as_fd()),
                &rel,
                sink,
            )?,
            // No directory here in the lower layers, so nothing below it there (no lookups):
            // all of it is added, and a whiteout only hides what this step made and removed.
            None if lower.is_some() => overlay_dir(
                roots,
                upper_sub.as_fd(),
                None,
                &rel,
                &mut SkipWhiteouts(sink),
            )?,
            None => overlay_dir(roots, upper_sub.as_fd(), None, &rel, sink)?,
        }
    }
    Ok(())
}

/// Drops deletions: below a directory the lower layers do not have there is nothing to delete.
struct SkipWhiteouts<'a>(&'a mut dyn ChangeSink);

impl ChangeSink for SkipWhiteouts<'_> {
    fn change(&mut self, kind: ChangeKind, rel: &Path, stat: Option<&EntryStat>) -> io::Result<()> {
        if kind == ChangeKind::Delete {
            return Ok(());
        }
        self.0.change(kind, rel, stat)
    }
}

/// Walks two full trees side by side: the changes that turn `lower` (absent: empty) into `upper`.
pub(crate) fn tree_changes(
    lower: Option<&Path>,
    upper: &Path,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    let upper_dir = fsutil::open_dir(upper)?;
    let lower_dir = lower.map(fsutil::open_dir).transpose()?;
    let roots = Roots { upper, lower };
    compare_dir(&roots, lower_dir, upper_dir, Path::new(""), false, sink)
}

/// Compares directory `lower` with directory `upper` (both open; the entry `rel_base` in the
/// diff). In an overlay upper directory (`in_overlay`) whiteouts are bookkeeping, not entries.
fn compare_dir(
    roots: &Roots<'_>,
    lower: Option<OwnedFd>,
    upper: OwnedFd,
    rel_base: &Path,
    in_overlay: bool,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    let upper = upper.as_fd();
    let mut upper_names = fsutil::sorted_names_in(upper)?;
    if in_overlay {
        let mut kept = Vec::with_capacity(upper_names.len());
        for name in upper_names {
            if !fsutil::is_whiteout(&EntryStat::at(upper, &name)?) {
                kept.push(name);
            }
        }
        upper_names = kept;
    }
    let lower_names = match &lower {
        Some(l) => fsutil::sorted_names_in(l.as_fd())?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < lower_names.len() || j < upper_names.len() {
        let order = match (lower_names.get(i), upper_names.get(j)) {
            (Some(l), Some(u)) => l.as_bytes().cmp(u.as_bytes()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match (order, &lower) {
            (Ordering::Less, _) => {
                sink.change(ChangeKind::Delete, &rel_base.join(&lower_names[i]), None)?;
                i += 1;
            }
            (Ordering::Greater, _) | (Ordering::Equal, None) => {
                let name = &upper_names[j];
                let stat = EntryStat::at(upper, name)?;
                let rel = rel_base.join(name);
                sink.change(ChangeKind::Add, &rel, Some(&stat))?;
                if stat.is_dir() {
                    let sub = fsutil::open_dir_at(upper, name)?;
                    compare_dir(roots, None, sub, &rel, in_overlay, sink)?;
                }
                j += 1;
            }
            (Ordering::Equal, Some(lower)) => {
                let name = &upper_names[j];
                let ls = EntryStat::at(lower.as_fd(), name)?;
                let us = EntryStat::at(upper, name)?;
                let rel = rel_base.join(name);
                if !same_entry(&ls, &us, roots, &rel)? {
                    sink.change(ChangeKind::Modify, &rel, Some(&us))?;
                }
                if us.is_dir() {
                    let below = if ls.is_dir() {
                        Some(fsutil::open_dir_at(lower.as_fd(), name)?)
                    } else {
                        None
                    };
                    let sub = fsutil::open_dir_at(upper, name)?;
                    compare_dir(roots, below, sub, &rel, in_overlay, sink)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
