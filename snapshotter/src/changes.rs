//! What changed between a snapshot and its parent, in the order BuildKit reports it.
//!
//! Two sources, one output: an overlay upper directory read against the merged view of its
//! parents (BuildKit's overlay differ), or two full trees walked side by side (containerd's double
//! walk). Both visit paths depth first with names sorted bytewise and report each addition,
//! modification and deletion once; unchanged entries are skipped (their parent directories are
//! added back by the layer writer when a child changed).

use std::cmp::Ordering;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Add,
    Modify,
    Delete,
}

/// Receives changes. `rel` is relative to the roots (no leading slash); `meta` is the lstat of the
/// new entry (absent for deletions); `source` is where its content is.
pub(crate) trait ChangeSink {
    fn change(
        &mut self,
        kind: ChangeKind,
        rel: &Path,
        source: &Path,
        meta: Option<&Metadata>,
    ) -> io::Result<()>;
}

fn lstat_opt(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        // A missing path, or a path through a non-directory: absent either way.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// BuildKit's `sameDirent` (after continuity): same type and mode, owner, device number and
/// xattrs; for non-directories also size and mtime, comparing content only when both mtimes
/// have no sub-second part (as after extraction from a tar), where equal times prove nothing.
fn same_entry(
    lower: &Metadata,
    upper: &Metadata,
    lower_path: &Path,
    upper_path: &Path,
) -> io::Result<bool> {
    if lower.dev() == upper.dev() && lower.ino() == upper.ino() {
        return Ok(true);
    }
    if lower.mode() != upper.mode()
        || lower.uid() != upper.uid()
        || lower.gid() != upper.gid()
        || lower.rdev() != upper.rdev()
    {
        return Ok(false);
    }
    if fsutil::xattrs(lower_path)? != fsutil::xattrs(upper_path)? {
        return Ok(false);
    }
    if lower.is_dir() {
        return Ok(true);
    }
    if lower.size() != upper.size() || lower.mtime() != upper.mtime() {
        return Ok(false);
    }
    if lower.mtime_nsec() == 0 && upper.mtime_nsec() == 0 {
        if lower.file_type().is_symlink() {
            return Ok(fs::read_link(lower_path)? == fs::read_link(upper_path)?);
        }
        if lower.size() == 0 || !lower.is_file() {
            return Ok(true);
        }
        return fsutil::same_content(lower_path, upper_path);
    }
    Ok(lower.mtime_nsec() == upper.mtime_nsec())
}

/// Walks an overlay upper directory. `lower` is the merged view of the parent snapshots; without
/// one every entry is an addition and every whiteout a deletion.
pub(crate) fn overlay_changes(
    upper: &Path,
    lower: Option<&Path>,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    overlay_dir(upper, lower, Path::new(""), sink)
}

fn overlay_dir(
    upper: &Path,
    lower: Option<&Path>,
    rel_dir: &Path,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    for name in fsutil::sorted_names(&upper.join(rel_dir))? {
        let rel = rel_dir.join(&name);
        let upper_path = upper.join(&rel);
        let meta = fs::symlink_metadata(&upper_path)?;
        let lower_path = lower.map(|l| l.join(&rel));
        let lower_meta = match &lower_path {
            Some(p) => lstat_opt(p)?,
            None => None,
        };
        if fsutil::is_whiteout(&meta) {
            // A whiteout over nothing (created and deleted in this step) needs no record.
            if lower.is_none() || lower_meta.is_some() {
                sink.change(ChangeKind::Delete, &rel, &upper_path, None)?;
            }
            continue;
        }
        let kind = match (&lower_meta, &lower_path) {
            (Some(lm), Some(lp)) => {
                if same_entry(lm, &meta, lp, &upper_path)? {
                    None
                } else {
                    Some(ChangeKind::Modify)
                }
            }
            _ => Some(ChangeKind::Add),
        };
        if let Some(kind) = kind {
            sink.change(kind, &rel, &upper_path, Some(&meta))?;
        }
        if !meta.is_dir() {
            continue;
        }
        match (&lower_meta, &lower_path) {
            // An opaque directory hides the lower one: what changed is what differs between
            // the lower directory and the upper one (whose own whiteouts hide nothing below).
            (Some(lm), Some(lp)) if lm.is_dir() && fsutil::is_opaque_dir(&upper_path)? => {
                compare_dir(Some(lp), &upper_path, &rel, true, sink)?;
            }
            // No directory here in the lower layers, so nothing below it there (no lookups):
            // all of it is added, and a whiteout only hides what this step made and removed.
            _ if lower.is_some() && !lower_meta.as_ref().is_some_and(|m| m.is_dir()) => {
                overlay_dir(upper, None, &rel, &mut SkipWhiteouts(sink))?
            }
            _ => overlay_dir(upper, lower, &rel, sink)?,
        }
    }
    Ok(())
}

/// Drops deletions: below a directory the lower layers do not have there is nothing to delete.
struct SkipWhiteouts<'a>(&'a mut dyn ChangeSink);

impl ChangeSink for SkipWhiteouts<'_> {
    fn change(
        &mut self,
        kind: ChangeKind,
        rel: &Path,
        source: &Path,
        meta: Option<&Metadata>,
    ) -> io::Result<()> {
        if kind == ChangeKind::Delete {
            return Ok(());
        }
        self.0.change(kind, rel, source, meta)
    }
}

/// Walks two full trees side by side: the changes that turn `lower` (absent: empty) into `upper`.
pub(crate) fn tree_changes(
    lower: Option<&Path>,
    upper: &Path,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    compare_dir(lower, upper, Path::new(""), false, sink)
}

/// Compares directory `lower` with directory `upper_dir` (the entry `rel_base` in the diff).
/// In an overlay upper directory (`in_overlay`) whiteouts are bookkeeping, not entries.
fn compare_dir(
    lower: Option<&Path>,
    upper_dir: &Path,
    rel_base: &Path,
    in_overlay: bool,
    sink: &mut dyn ChangeSink,
) -> io::Result<()> {
    let mut upper_names = fsutil::sorted_names(upper_dir)?;
    if in_overlay {
        let mut kept = Vec::with_capacity(upper_names.len());
        for name in upper_names {
            if !fsutil::is_whiteout(&fs::symlink_metadata(upper_dir.join(&name))?) {
                kept.push(name);
            }
        }
        upper_names = kept;
    }
    let lower_names = match lower {
        Some(l) => fsutil::sorted_names(l)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < lower_names.len() || j < upper_names.len() {
        let order = match (lower_names.get(i), upper_names.get(j)) {
            (Some(l), Some(u)) => l.as_bytes().cmp(u.as_bytes()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let rel = rel_base.join(&lower_names[i]);
                sink.change(
                    ChangeKind::Delete,
                    &rel,
                    &upper_dir.join(&lower_names[i]),
                    None,
                )?;
                i += 1;
            }
            Ordering::Greater => {
                let name = &upper_names[j];
                let upper_path = upper_dir.join(name);
                let meta = fs::symlink_metadata(&upper_path)?;
                let rel = rel_base.join(name);
                sink.change(ChangeKind::Add, &rel, &upper_path, Some(&meta))?;
                if meta.is_dir() {
                    compare_dir(None, &upper_path, &rel, in_overlay, sink)?;
                }
                j += 1;
            }
            Ordering::Equal => {
                let name = &upper_names[j];
                let (lower_path, upper_path) = (lower.map(|l| l.join(name)), upper_dir.join(name));
                let lower_path = lower_path.unwrap_or_else(PathBuf::new);
                let lm = fs::symlink_metadata(&lower_path)?;
                let um = fs::symlink_metadata(&upper_path)?;
                let rel = rel_base.join(name);
                if !same_entry(&lm, &um, &lower_path, &upper_path)? {
                    sink.change(ChangeKind::Modify, &rel, &upper_path, Some(&um))?;
                }
                if um.is_dir() {
                    let below = lm.is_dir().then_some(lower_path.as_path());
                    compare_dir(below, &upper_path, &rel, in_overlay, sink)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
