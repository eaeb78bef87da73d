//! What a container changed, as `docker diff` reports it: each path added (`A`), changed (`C`)
//! or deleted (`D`) against the image, a directory with changes below it counted as changed.
//!
//! The rules are moby's `archive.ChangesDirs` (the naive differ its overlay2 driver falls back
//! to): an entry present on both sides is changed when its type, mode, owner, device number or
//! `security.capability` differ, or, for non-directories, its size or mtime (directory times
//! change whenever a child does and say nothing). Unlike moby's, whose order follows Go map
//! iteration, the order here is fixed: depth first, names sorted bytewise, a changed directory
//! before what changed in it.
//!
//! Overlay snapshots are read from their upper directory (only what the container touched),
//! against a read-only view of the parent; copy snapshots are compared with the parent's tree
//! whole.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::changes::ChangeKind;
use crate::fsutil;

/// One change of a container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute in the container (`/etc/passwd`).
    pub path: PathBuf,
}

/// How the new tree is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewTree {
    /// An overlay upper directory: what is absent was not touched, unless its directory is
    /// opaque; deletions are char 0/0 whiteouts.
    Upper,
    /// A whole tree: what is absent was deleted.
    Whole,
}

struct Walk<'a> {
    new: &'a Path,
    old: &'a Path,
    tree: NewTree,
    skip: &'a dyn Fn(&Path) -> bool,
    out: Vec<Change>,
}

/// The changes that turn the tree at `old` into the one at `new`; `skip` hides paths (relative,
/// no leading slash) and everything below them.
pub(crate) fn docker_changes(
    new: &Path,
    old: &Path,
    tree: NewTree,
    skip: &dyn Fn(&Path) -> bool,
) -> io::Result<Vec<Change>> {
    let mut walk = Walk {
        new,
        old,
        tree,
        skip,
        out: Vec::new(),
    };
    walk.dir(Path::new(""), true)?;
    Ok(walk.out)
}

/// `lstat`; `None` when nothing is there, a parent on the way being a non-directory included
/// (an entry below a path whose type changed).
fn lstat(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// moby's `statDifferent`, with the capability comparison `addChanges` adds.
fn different(
    old: &fs::Metadata,
    new: &fs::Metadata,
    old_path: &Path,
    new_path: &Path,
) -> io::Result<bool> {
    if old.mode() != new.mode()
        || old.uid() != new.uid()
        || old.gid() != new.gid()
        || old.rdev() != new.rdev()
    {
        return Ok(true);
    }
    if !new.is_dir() {
        let same_time = old.mtime() == new.mtime()
            && (old.mtime_nsec() == new.mtime_nsec()
                || old.mtime_nsec() == 0
                || new.mtime_nsec() == 0);
        if !same_time || old.size() != new.size() {
            return Ok(true);
        }
    }
    let capability = OsStr::new("security.capability");
    Ok(fsutil::get_xattr(old_path, capability)? != fsutil::get_xattr(new_path, capability)?)
}

fn absolute(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

impl Walk<'_> {
    /// The changes below directory `rel`, present in the new tree; `old_is_dir`: the old tree
    /// has a directory there too.
    fn dir(&mut self, rel: &Path, old_is_dir: bool) -> io::Result<()> {
        let names = sorted_names(&self.new.join(rel))?;
        let complete = self.tree == NewTree::Whole
            || (!rel.as_os_str().is_empty() && fsutil::is_opaque_dir(&self.new.join(rel))?);
        if old_is_dir && complete {
            // Whatever the old directory holds that the new one lacks was deleted, in name
            // order among the rest.
            let present: BTreeSet<&OsString> = names.iter().collect();
            let mut all: BTreeSet<OsString> = names.iter().cloned().collect();
            all.extend(sorted_names(&self.old.join(rel))?);
            for name in all {
                let path = rel.join(&name);
                if (self.skip)(&path) {
                    continue;
                }
                if present.contains(&name) {
                    self.entry(&path, true)?;
                } else {
                    self.out.push(Change {
                        kind: ChangeKind::Delete,
                        path: absolute(&path),
                    });
                }
            }
            return Ok(());
        }
        for name in names {
            let path = rel.join(&name);
            if !(self.skip)(&path) {
                self.entry(&path, old_is_dir)?;
            }
        }
        Ok(())
    }

    /// Entry `rel` of the new tree. Without a directory at its parent in the old tree (a
    /// symlink there is not followed: it could point anywhere on the host) it is new.
    fn entry(&mut self, rel: &Path, old_parent_is_dir: bool) -> io::Result<()> {
        let (new_path, old_path) = (self.new.join(rel), self.old.join(rel));
        let Some(new) = lstat(&new_path)? else {
            return Ok(()); // removed while we looked
        };
        let old = if old_parent_is_dir {
            lstat(&old_path)?
        } else {
            None
        };
        if self.tree == NewTree::Upper && is_whiteout(&new) {
            if old.is_some() {
                self.out.push(Change {
                    kind: ChangeKind::Delete,
                    path: absolute(rel),
                });
            }
            return Ok(());
        }
        let mark = self.out.len();
        let reported = match &old {
            None => {
                self.out.push(Change {
                    kind: ChangeKind::Add,
                    path: absolute(rel),
                });
                true
            }
            Some(old) if different(old, &new, &old_path, &new_path)? => {
                self.out.push(Change {
                    kind: ChangeKind::Modify,
                    path: absolute(rel),
                });
                true
            }
            Some(_) => false,
        };
        if new.is_dir() {
            self.dir(rel, old.as_ref().is_some_and(fs::Metadata::is_dir))?;
            if !reported && self.out.len() > mark {
                self.out.insert(
                    mark,
                    Change {
                        kind: ChangeKind::Modify,
                        path: absolute(rel),
                    },
                );
            }
        }
        Ok(())
    }
}
