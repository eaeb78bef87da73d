//! COPY and ADD onto a mounted root filesystem, with BuildKit's semantics (fsutil's `copy.Copy`
//! as BuildKit's file backend drives it):
//! - the destination's directory is made first (`MkdirAll` 0755, owned by `--chown` or root);
//!   symlinks on the destination path are followed inside the root;
//! - a source that is not a directory, copied onto an existing directory, goes inside it under
//!   its own name; a directory source copies its *contents*;
//! - an existing destination directory keeps its metadata, directories below it take the
//!   source's; owners come from `--chown` or the source (the context reads as 0:0), modes from
//!   `--chmod` (on directories too) or the source, mtimes and xattrs from the source; hard links
//!   inside one copy stay hard links;
//! - ADD unpacks a local tar archive (plain, gzip, bzip2, xz, zstd: recognised by content, not
//!   by name) into the destination directory.
//!
//! Where BuildKit fails (a directory onto a non-directory: "cannot copy to non-directory") this
//! replaces the non-directory, as Docker's classic builder and Buildah do.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use strata_codec::Decoder;
use strata_runtime::rootpath::resolve_in_root;
use strata_snapshotter::{ExtractOptions, WhiteoutMode};

use crate::context::Kind;
use crate::filter::{CopyFilter, Decision};
use crate::source::{SourceRoot, SrcEntry, join};

/// How a COPY writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyOptions<'a> {
    /// `--chown`, resolved.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<u32>,
    /// ADD: unpack archives, by way of this empty scratch directory.
    pub unpack_into: Option<&'a Path>,
    /// Redo only these source paths (changed, removed): the destination already holds the
    /// previous copy of everything else.
    pub only: Option<(&'a HashSet<String>, &'a HashSet<String>)>,
    /// `--exclude` and `--parents`: what is selected below each source.
    pub filter: Option<&'a CopyFilter>,
}

/// Whether `dest` names a directory by its spelling (BuildKit adds a trailing `/` for these).
pub(crate) fn dest_is_dir(raw_dest: &str) -> bool {
    raw_dest.is_empty() || raw_dest == "." || raw_dest.ends_with('/')
}

/// Copies source `path` (as matched, its symlinks still to follow) of `src` to `dest` (an
/// absolute path in the root, ending in `/` when it names a directory) under `root`.
pub(crate) fn copy_path(
    src: &SourceRoot<'_>,
    path: &str,
    root: &Path,
    dest: &str,
    options: &CopyOptions<'_>,
) -> io::Result<()> {
    let Some((rel, entry)) = src.resolve(path)? else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{path}: no such file or directory"),
        ));
    };
    if let Some(scratch) = options.unpack_into
        && entry.kind == Kind::File
        && is_archive(&src.host(&rel))?
    {
        return unpack(&src.host(&rel), root, dest, options.chown, scratch)
            .map_err(|e| io::Error::other(format!("unpacking {path}: {e}")));
    }
    // The directory the destination lives in (the destination itself when it ends in `/`).
    let ensure = match dest.rsplit_once('/') {
        _ if dest.ends_with('/') || dest.ends_with("/.") => dest.to_string(),
        Some((dir, _)) => format!("{dir}/"),
        None => "/".to_string(),
    };
    mkdir_all(
        root,
        &resolve_in_root(root, Path::new(&ensure))?,
        options.chown,
    )?;
    let mut target = resolve_in_root(root, Path::new(dest.trim_end_matches('/')))?;
    let dest_is_existing_dir = fs::metadata(&target).is_ok_and(|m| m.is_dir());
    if entry.kind != Kind::Dir && dest_is_existing_dir {
        let name = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or(path);
        target = target.join(name);
    }
    if let Some(parent) = target.parent()
        && parent.starts_with(root)
    {
        mkdir_all(root, parent, options.chown)?;
    }
    // A directory's contents go into the destination, which BuildKit makes first with
    // `MkdirAll` (0755): it never takes the source directory's own mode or owner.
    if entry.kind == Kind::Dir && fs::symlink_metadata(&target).is_err() {
        mkdir_all(root, &target, options.chown)?;
    }
    let mut copier = Copier {
        src,
        options,
        inodes: HashMap::new(),
        top: rel.clone(),
    };
    copier.copy(&rel, &entry, &target, false).map(|_| ())
}

struct Copier<'a, 'b> {
    src: &'a SourceRoot<'b>,
    options: &'a CopyOptions<'a>,
    /// First destination of each multiply-linked source inode.
    inodes: HashMap<(u64, u64), PathBuf>,
    /// The source path the copy started at: filters see paths relative to it.
    top: String,
}

impl Copier<'_, '_> {
    fn copy(
        &mut self,
        rel: &str,
        entry: &SrcEntry,
        target: &Path,
        overwrite_metadata: bool,
    ) -> io::Result<bool> {
        let mut decision = Decision::Copy;
        if let Some(filter) = self.options.filter {
            let below = rel
                .strip_prefix(self.top.as_str())
                .unwrap_or(rel)
                .trim_start_matches('/');
            if !below.is_empty() {
                decision = filter.decide(below, entry.kind == Kind::Dir);
            }
        }
        if decision == Decision::Skip {
            return Ok(false);
        }
        let unchanged = self
            .options
            .only
            .is_some_and(|(changed, _)| !changed.contains(rel));
        if unchanged && entry.kind != Kind::Dir {
            return Ok(true);
        }
        let existing = fs::symlink_metadata(target).ok();
        let mut set_info = true;
        match entry.kind {
            Kind::Dir => {
                let created = match &existing {
                    Some(m) if m.is_dir() => false,
                    Some(_) => {
                        remove_any(target)?;
                        fs::create_dir(target)?;
                        true
                    }
                    None => {
                        fs::create_dir(target)?;
                        true
                    }
                };
                let mut copied_below = false;
                for name in self.src.list(rel)? {
                    let child = join(rel, &name);
                    let Some(e) = self.src.lstat(&child)? else {
                        continue;
                    };
                    copied_below |= self.copy(&child, &e, &target.join(&name), true)?;
                }
                // A directory kept only for what is below it is made only when something is.
                if decision == Decision::Descend && !copied_below {
                    if created {
                        fs::remove_dir(target)?;
                    }
                    return Ok(false);
                }
                if let Some((_, removed)) = self.options.only {
                    for gone in removed {
                        let (dir, name) = gone.rsplit_once('/').unwrap_or(("", gone.as_str()));
                        if dir == rel {
                            remove_any(&target.join(name))?;
                        }
                    }
                }
                if !overwrite_metadata || (unchanged && !created) {
                    set_info = created;
                }
            }
            Kind::File => {
                if existing.is_some() {
                    remove_any(target)?;
                }
                match entry.hardlink_id.and_then(|id| self.inodes.get(&id)) {
                    Some(first) => fs::hard_link(first, target)?,
                    None => {
                        let mut from = File::open(self.src.host(rel))?;
                        let mut to = File::create(target)?;
                        io::copy(&mut from, &mut to)?;
                        if let Some(id) = entry.hardlink_id {
                            self.inodes.insert(id, target.to_path_buf());
                        }
                    }
                }
            }
            Kind::Symlink => {
                if existing.is_some() {
                    remove_any(target)?;
                }
                std::os::unix::fs::symlink(entry.link.as_deref().unwrap_or_default(), target)?;
            }
            Kind::Fifo | Kind::Char | Kind::Block => {
                if existing.is_some() {
                    remove_any(target)?;
                }
                let ft = match entry.kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                rustix::fs::mknodat(CWD, target, ft, Mode::from_raw_mode(entry.mode), entry.rdev)?;
            }
            Kind::Socket => return Ok(false),
        }
        if set_info {
            self.set_info(rel, entry, target)?;
        }
        Ok(true)
    }

    /// fsutil's `copyFileInfo` + `copyXAttrs`: owner, then mode (chown clears setuid bits),
    /// times, extended attributes.
    fn set_info(&self, rel: &str, entry: &SrcEntry, target: &Path) -> io::Result<()> {
        let (uid, gid) = self.options.chown.unwrap_or((entry.uid, entry.gid));
        lchown(target, uid, gid)?;
        if entry.kind != Kind::Symlink {
            let mode = match self.options.chmod {
                Some(m) => m & 0o7777,
                None => entry.mode,
            };
            fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
        }
        // BuildKit's layers carry only file capabilities (containerd's tar writer drops every
        // other extended attribute), so nothing else reaches the image.
        if let Ok(Some(value)) = xattr::get(self.src.host(rel), CAPABILITY_XATTR) {
            let _ = xattr::set(target, CAPABILITY_XATTR, &value);
        }
        let t = Timespec {
            tv_sec: entry.mtime.0,
            tv_nsec: entry.mtime.1,
        };
        rustix::fs::utimensat(
            CWD,
            target,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

/// The one extended attribute BuildKit's layers keep.
const CAPABILITY_XATTR: &str = "security.capability";

/// ADD of a local archive (BuildKit's `unpack`): the destination directory is made (owned by
/// `--chown`), the archive is extracted as it is (its own owners and modes) into `scratch`,
/// stripped of the extended attributes BuildKit's layers would not carry, and merged in: an
/// existing directory takes the archive's metadata, anything else is replaced.
fn unpack(
    archive: &Path,
    root: &Path,
    dest: &str,
    chown: Option<(u32, u32)>,
    scratch: &Path,
) -> io::Result<()> {
    let target = resolve_in_root(root, Path::new(dest))?;
    mkdir_all(root, &target, chown)?;
    let extract = ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        max_uncompressed_size: None,
    };
    strata_snapshotter::extract_layer(File::open(archive)?, scratch, &extract)
        .map_err(io::Error::other)?;
    strip_xattrs(scratch)?;
    let src = SourceRoot::Dir(scratch.to_path_buf());
    let options = CopyOptions {
        chown: None,
        chmod: None,
        unpack_into: None,
        only: None,
        filter: None,
    };
    let mut copier = Copier {
        src: &src,
        options: &options,
        inodes: HashMap::new(),
        top: String::new(),
    };
    for name in src.list("")? {
        if let Some(entry) = src.lstat(&name)? {
            copier.copy(&name, &entry, &target.join(&name), true)?;
        }
    }
    Ok(())
}

/// Removes every extended attribute but file capabilities below `dir`.
fn strip_xattrs(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Ok(names) = xattr::list(&path) {
            for name in names {
                if name != CAPABILITY_XATTR {
                    let _ = xattr::remove(&path, &name);
                }
            }
        }
        if fs::symlink_metadata(&path)?.is_dir() {
            strip_xattrs(&path)?;
        }
    }
    Ok(())
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsutil's `MkdirAll`: creates the missing directories of `host` (a resolved path under
/// `root`) with mode 0755, owned by `chown` or root.
pub(crate) fn mkdir_all(root: &Path, host: &Path, chown: Option<(u32, u32)>) -> io::Result<()> {
    let Ok(rel) = host.strip_prefix(root) else {
        return Err(io::Error::other(format!(
            "{} is outside the root",
            host.display()
        )));
    };
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{}: not a directory",
                    path.strip_prefix(root).unwrap_or(&path).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path)?;
                let (uid, gid) = chown.unwrap_or((0, 0));
                lchown(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// BuildKit's `isArchivePath`: a regular file whose (possibly compressed) content starts with a
/// valid tar header.
pub(crate) fn is_archive(path: &Path) -> io::Result<bool> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() || meta.size() == 0 {
        return Ok(false);
    }
    let file = File::open(path)?;
    let Ok((_, mut decoder)) = Decoder::detect(BufReader::new(file)) else {
        return Ok(false);
    };
    let mut header = [0u8; 512];
    let mut filled = 0;
    while filled < header.len() {
        match decoder.read(&mut header[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(_) => return Ok(false),
        }
    }
    Ok(valid_tar_header(&header))
}

fn valid_tar_header(h: &[u8; 512]) -> bool {
    if h.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &h[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(recorded) = i64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    recorded == unsigned || recorded == signed
}

/// Resolves a `--chown` value (BuildKit's `readUser`): a number is the uid (and the gid when no
/// group is given); a name is looked up in the root's `/etc/passwd`, taking its primary group;
/// a group after `:` is a gid or a name from `/etc/group`.
pub(crate) fn resolve_chown(root: Option<&Path>, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |file: &str| -> String {
        root.and_then(|r| resolve_in_root(r, Path::new(file)).ok())
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) if user.is_empty() => (0, 0),
        Err(_) => {
            let passwd = read("/etc/passwd");
            let found = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[0] == user)
                    .then(|| Some((f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?)))
                    .flatten()
            });
            found.ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?
        }
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read("/etc/group");
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == group)
                            .then(|| f[2].parse::<u32>().ok())
                            .flatten()
                    })
                    .ok_or_else(|| {
                        format!("unable to find group {group}: no matching entries in group file")
                    })?
            }
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("a.bin");
        {
            let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "x", &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        assert!(is_archive(&tar_path).unwrap());
        let fake = dir.path().join("fake.tar.gz");
        fs::write(&fake, "not an archive at all").unwrap();
        assert!(!is_archive(&fake).unwrap());
    }

    #[test]
    fn chown_resolution() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/false\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = Some(dir.path());
        assert_eq!(resolve_chown(r, "10").unwrap(), (10, 10));
        assert_eq!(resolve_chown(r, "10:20").unwrap(), (10, 20));
        assert_eq!(resolve_chown(r, "web").unwrap(), (33, 44));
        assert_eq!(resolve_chown(r, "web:staff").unwrap(), (33, 50));
        assert!(resolve_chown(r, "nobody").is_err());
        assert!(resolve_chown(None, "web").is_err());
    }
}
