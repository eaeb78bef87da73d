//! OCI layer -> directory: streaming, safe extraction.
//!
//! Bytes are decompressed, hashed (the diffID) and extracted as they arrive. Every path is
//! resolved with `openat2(RESOLVE_IN_ROOT)` from a descriptor of the target, so symlinks in the
//! target (including ones the archive itself just made) resolve inside it, as if the target were
//! `/`; every entry is then created with `*at` calls relative to its parent's descriptor, never
//! following a final symlink. Names that climb above the root with `..` are refused; absolute
//! names are taken relative to the root (as GNU tar and containerd do). Hard links must point at
//! an entry already inside the root.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use strata_codec::{Compression, Decoder, Digest, HashingReader};

use crate::Error;

/// What to do with whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Store them as overlayfs does (a char 0/0 device for a deleted path,
    /// `trusted.overlay.opaque=y` on an opaque directory), so the result stacks as a lowerdir.
    /// Extract into an empty directory.
    Overlay,
    /// Apply them: delete the named path, or empty the opaque directory of everything this
    /// layer did not create. For a flat directory that already holds the lower layers.
    Apply,
}

/// How to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    pub whiteouts: WhiteoutMode,
    /// Refuse layers whose uncompressed tar is larger (decompression bombs). `None`: no limit.
    pub max_uncompressed_size: Option<u64>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            whiteouts: WhiteoutMode::Overlay,
            max_uncompressed_size: None,
        }
    }
}

/// What [`extract_layer`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The compression found by its magic bytes.
    pub compression: Compression,
    /// Bytes read from the reader.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Counts bytes read; the compressed size of the layer.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Fails a read that would go past the size limit.
struct Limited<R> {
    inner: HashingReader<R>,
    limit: Option<u64>,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(limit) = self.limit
            && self.inner.len() > limit
        {
            self.exceeded = true;
            return Err(io::Error::other("layer size limit exceeded"));
        }
        Ok(n)
    }
}

/// Extracts a layer (any compression strata knows, detected from its first bytes) into
/// `target`, an existing directory, while it streams in. On error the target may hold part of
/// the layer: extract into a fresh directory and move it in place on success (the snapshotter
/// does) when that matters.
pub fn extract_layer<R: Read>(
    reader: R,
    target: &Path,
    options: &ExtractOptions,
) -> Result<ExtractedLayer, Error> {
    let counting = Counting {
        inner: reader,
        count: 0,
    };
    let (compression, decoder) =
        Decoder::detect(BufReader::with_capacity(256 * 1024, counting)).map_err(Error::Read)?;
    let mut limited = Limited {
        inner: HashingReader::new(decoder),
        limit: options.max_uncompressed_size,
        exceeded: false,
    };
    let root = open_root(target)?;
    let result = {
        let mut archive = tar::Archive::new(&mut limited);
        let mut extractor = Extractor {
            root: root.as_fd(),
            options,
            created: HashSet::new(),
            dir_times: Vec::new(),
            root_mtime: None,
            parent_cache: None,
            buf: vec![0u8; 256 * 1024],
            is_root: rustix::process::geteuid().is_root(),
        };
        extractor.run(&mut archive)
    };
    let limit_error = |limited: &Limited<_>| Error::TooLarge {
        limit: limited.limit.unwrap_or(u64::MAX),
    };
    if limited.exceeded {
        return Err(limit_error(&limited));
    }
    result?;
    // The diffID covers the whole stream, end-of-archive blocks and any padding included.
    if let Err(e) = io::copy(&mut limited, &mut io::sink()) {
        return Err(if limited.exceeded {
            limit_error(&limited)
        } else {
            Error::Read(e)
        });
    }
    let (decoder, diff_id, uncompressed_size) = limited.inner.finish();
    let compressed_size = match decoder {
        Decoder::None(r) => r.get_ref().count,
        Decoder::Gzip(d) => d.get_ref().get_ref().count,
        Decoder::Zstd(d) => d.get_ref().get_ref().count,
        Decoder::Xz(d) => d.get_ref().get_ref().count,
        Decoder::Bzip2(d) => d.get_ref().get_ref().count,
    };
    Ok(ExtractedLayer {
        diff_id,
        compression,
        compressed_size,
        uncompressed_size,
    })
}

fn open_root(target: &Path) -> Result<OwnedFd, Error> {
    rustix::fs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        context: "opening extraction target",
        path: target.to_path_buf(),
        source: e.into(),
    })
}

/// A cleaned entry name: normal components only, relative to the root.
fn clean_name(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("path climbs out of the root with '..'".into());
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadEntry {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn io_at(path: &Path, e: impl Into<io::Error>) -> Error {
    Error::Extract {
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// The metadata of one entry after PAX overrides.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    options: &'a ExtractOptions,
    /// Paths this layer created (apply mode: whiteouts must not remove them).
    created: HashSet<PathBuf>,
    /// Directory mtimes, set last so later entries do not change them.
    dir_times: Vec<(PathBuf, i64)>,
    /// The mtime of a `./` entry, set last too.
    root_mtime: Option<i64>,
    /// The last parent directory opened; dropped whenever anything is removed or a symlink made.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    buf: Vec<u8>,
    is_root: bool,
}

impl Extractor<'_> {
    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), Error> {
        for entry in archive.entries().map_err(Error::Read)? {
            let mut entry = entry.map_err(Error::Read)?;
            self.entry(&mut entry)?;
        }
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let (parent, name) = self.parent_of(&path)?;
            set_times(parent.as_fd(), &name, mtime).map_err(|e| io_at(&path, e))?;
        }
        if let Some(mtime) = self.root_mtime {
            let root = reopen_dir(self.root, Path::new("/"))?;
            rustix::fs::futimens(root.as_fd(), &timestamps(mtime))
                .map_err(|e| io_at(Path::new("/"), e))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let raw_path = entry.path().map_err(Error::Read)?.into_owned();
        let path = clean_name(&raw_path).map_err(|r| bad(&raw_path, r))?;
        let entry_type = entry.header().entry_type();
        if matches!(
            entry_type,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let meta = self.meta(entry, &raw_path)?;
        let Some(file_name) = path.file_name().map(OsStr::to_os_string) else {
            // The root itself ("./"): only a directory's metadata can apply to it.
            if entry_type != tar::EntryType::Directory {
                return Err(bad(&raw_path, "the root can only be a directory"));
            }
            let root = reopen_dir(self.root, &path)?;
            self.apply_meta(root.as_fd(), None, &path, &meta, false)?;
            self.root_mtime = Some(meta.mtime);
            return Ok(());
        };
        let name_bytes = file_name.as_bytes();
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            return self.whiteout(&path, target);
        }
        let (parent, name) = self.parent_of(&path)?;
        let parent = parent.as_fd();
        match entry_type {
            tar::EntryType::Directory => {
                let existing = rustix::fs::statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW);
                let is_dir = matches!(&existing, Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if !is_dir {
                    if existing.is_ok() {
                        self.remove(parent, &name, &path)?;
                    }
                    rustix::fs::mkdirat(parent, &name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_at(&path, e))?;
                }
                let dir = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_at(&path, e))?;
                self.apply_meta(dir.as_fd(), None, &path, &meta, false)?;
                self.dir_times.push((path.clone(), meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.replace(parent, &name, &path)?;
                let fd = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_at(&path, e))?;
                let mut file = File::from(fd);
                self.copy_content(entry, &mut file, &path)?;
                self.apply_meta(file.as_fd(), None, &path, &meta, true)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(Error::Read)?
                    .ok_or_else(|| bad(&raw_path, "hard link without a target"))?
                    .into_owned();
                let target = clean_name(&link).map_err(|r| {
                    bad(
                        &raw_path,
                        format!("hard link target {}: {r}", link.display()),
                    )
                })?;
                if target.as_os_str().is_empty() {
                    return Err(bad(&raw_path, "hard link to the root"));
                }
                let not_found = || {
                    bad(
                        &raw_path,
                        format!("hard link target {} is not inside the root", link.display()),
                    )
                };
                let target_parent =
                    open_in_root(self.root, target.parent().unwrap_or(Path::new("")))
                        .map_err(|_| not_found())?;
                let target_name = target.file_name().ok_or_else(not_found)?;
                self.replace(parent, &name, &path)?;
                rustix::fs::linkat(
                    target_parent.as_fd(),
                    target_name,
                    parent,
                    &name,
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    bad(
                        &raw_path,
                        format!("hard link to {}: {}", link.display(), io::Error::from(e)),
                    )
                })?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(&raw_path, "symlink without a target"))?
                    .into_owned();
                self.replace(parent, &name, &path)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&link), parent, &name)
                    .map_err(|e| io_at(&path, e))?;
                self.parent_cache = None;
                self.apply_meta(parent, Some(&name), &path, &meta, true)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match entry_type {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.replace(parent, &name, &path)?;
                rustix::fs::mknodat(
                    parent,
                    &name,
                    file_type,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| {
                    if e == Errno::PERM {
                        bad(
                            &raw_path,
                            "creating a device node is not permitted (not root)",
                        )
                    } else {
                        io_at(&path, e)
                    }
                })?;
                self.apply_meta(parent, Some(&name), &path, &meta, true)?;
            }
            other => {
                return Err(bad(&raw_path, format!("unsupported entry type {other:?}")));
            }
        }
        self.created.insert(path);
        Ok(())
    }

    /// Mode, owner, mtime and xattrs from the header, with PAX records taking precedence.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, raw_path: &Path) -> Result<Meta, Error> {
        let header = entry.header();
        let bad_field = |what: &str| bad(raw_path, format!("unreadable {what} field"));
        let old = header.as_old();
        let mode =
            lenient(&old.mode, header.mode().map(u64::from)).ok_or_else(|| bad_field("mode"))?;
        let uid = lenient(&old.uid, header.uid()).and_then(|n| u32::try_from(n).ok());
        let gid = lenient(&old.gid, header.gid()).and_then(|n| u32::try_from(n).ok());
        let mtime = lenient(&old.mtime, header.mtime()).and_then(|n| i64::try_from(n).ok());
        let mut meta = Meta {
            mode: (mode & 0o7777) as u32,
            uid: uid.ok_or_else(|| bad_field("uid"))?,
            gid: gid.ok_or_else(|| bad_field("gid"))?,
            mtime: mtime.ok_or_else(|| bad_field("mtime"))?,
            xattrs: Vec::new(),
        };
        if let Some(extensions) = entry.pax_extensions().map_err(Error::Read)? {
            for ext in extensions {
                let ext = ext.map_err(Error::Read)?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let number = || -> Option<i64> {
                    let text = std::str::from_utf8(value).ok()?;
                    // PAX times may have a fraction; whole seconds are what we keep.
                    text.split('.').next()?.parse().ok()
                };
                match key {
                    b"uid" => {
                        meta.uid = number()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| bad_field("PAX uid"))?
                    }
                    b"gid" => {
                        meta.gid = number()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| bad_field("PAX gid"))?
                    }
                    b"mtime" => meta.mtime = number().ok_or_else(|| bad_field("PAX mtime"))?,
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            meta.xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn copy_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        path: &Path,
    ) -> Result<(), Error> {
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Read(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| io_at(path, e))?;
        }
    }

    /// Sets owner, mode, xattrs and (with `set_time`) mtime; chown first because it clears
    /// setuid bits and file capabilities. `name` is `Some` when `fd` is the parent directory
    /// (symlinks, devices, FIFOs: nodes that cannot be opened safely).
    fn apply_meta(
        &self,
        fd: BorrowedFd<'_>,
        name: Option<&OsStr>,
        path: &Path,
        meta: &Meta,
        set_time: bool,
    ) -> Result<(), Error> {
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(meta.uid),
            rustix::fs::Gid::from_raw(meta.gid),
        );
        let owned = match name {
            Some(n) => rustix::fs::chownat(fd, n, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW),
            None => rustix::fs::fchown(fd, Some(uid), Some(gid)),
        };
        match owned {
            Ok(()) => {}
            // Without root, files belong to whoever extracts them.
            Err(Errno::PERM) if !self.is_root => {}
            Err(e) => return Err(io_at(path, e)),
        }
        let is_symlink = name.is_some_and(|n| {
            rustix::fs::statat(fd, n, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        });
        let mode = Mode::from_raw_mode(meta.mode);
        if !is_symlink {
            match name {
                Some(n) => rustix::fs::chmodat(fd, n, mode, AtFlags::empty()),
                None => rustix::fs::fchmod(fd, mode),
            }
            .map_err(|e| io_at(path, e))?;
        }
        for (key, value) in &meta.xattrs {
            let key_c = CString::new(key.clone()).map_err(|_| bad(path, "xattr name with NUL"))?;
            let set = match name {
                Some(n) => {
                    let via = proc_path(fd, n);
                    rustix::fs::lsetxattr(&via, &key_c, value, rustix::fs::XattrFlags::empty())
                }
                None => rustix::fs::fsetxattr(fd, &key_c, value, rustix::fs::XattrFlags::empty()),
            };
            match set {
                Ok(()) => {}
                // Unprivileged extraction cannot set trusted.* or security.*; the file system
                // may not support xattrs at all. Like containerd, go on without them.
                Err(Errno::PERM | Errno::NOTSUP) => {}
                Err(e) => {
                    return Err(io_at(
                        path,
                        io::Error::new(
                            io::Error::from(e).kind(),
                            format!("setting xattr {}: {e}", String::from_utf8_lossy(key)),
                        ),
                    ));
                }
            }
        }
        if set_time {
            match name {
                Some(n) => set_times(fd, n, meta.mtime),
                None => rustix::fs::futimens(fd, &timestamps(meta.mtime)),
            }
            .map_err(|e| io_at(path, e))?;
        }
        Ok(())
    }

    /// The parent directory of `path` (resolved inside the root, created when missing) and the
    /// final name.
    fn parent_of(&mut self, path: &Path) -> Result<(OwnedFd, std::ffi::OsString), Error> {
        let name = path
            .file_name()
            .ok_or_else(|| bad(path, "empty name"))?
            .to_os_string();
        let parent = path.parent().unwrap_or(Path::new(""));
        if let Some((cached, fd)) = &self.parent_cache
            && cached == parent
        {
            return Ok((fd.try_clone().map_err(|e| io_at(path, e))?, name));
        }
        let fd = self.open_dir_creating(parent)?;
        self.parent_cache = Some((
            parent.to_path_buf(),
            fd.try_clone().map_err(|e| io_at(path, e))?,
        ));
        Ok((fd, name))
    }

    /// Opens `dir` inside the root, making missing directories (0755) on the way.
    fn open_dir_creating(&mut self, dir: &Path) -> Result<OwnedFd, Error> {
        match open_in_root(self.root, dir) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => return Err(bad(dir, "a parent is not a directory")),
            Err(e) => return Err(io_at(dir, e)),
        }
        let mut current = open_in_root(self.root, Path::new("")).map_err(|e| io_at(dir, e))?;
        let mut prefix = PathBuf::new();
        for component in dir.components() {
            prefix.push(component);
            current = match open_in_root(self.root, &prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(
                        current.as_fd(),
                        component.as_os_str(),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_at(&prefix, e)),
                    }
                    self.created.insert(prefix.clone());
                    open_in_root(self.root, &prefix).map_err(|e| io_at(&prefix, e))?
                }
                Err(Errno::NOTDIR) => return Err(bad(dir, "a parent is not a directory")),
                Err(e) => return Err(io_at(&prefix, e)),
            };
        }
        Ok(current)
    }

    /// Makes room for a new non-directory entry at `name`.
    fn replace(&mut self, parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), Error> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => self.remove(parent, name, path),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_at(path, e)),
        }
    }

    fn remove(&mut self, parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), Error> {
        self.parent_cache = None;
        remove_at(parent, name).map_err(|e| io_at(path, e))
    }

    fn whiteout(&mut self, path: &Path, target: &[u8]) -> Result<(), Error> {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = match self.options.whiteouts {
            // The whiteout is a node of its own: its directory must exist.
            WhiteoutMode::Overlay => self.parent_of(path)?.0,
            // Nothing to delete in a directory that is not there; do not make it.
            WhiteoutMode::Apply => match open_in_root(self.root, &dir) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                Err(e) => return Err(io_at(&dir, e)),
            },
        };
        if target == b".wh..opq" {
            match self.options.whiteouts {
                WhiteoutMode::Overlay => {
                    rustix::fs::fsetxattr(
                        reopen_dir(parent.as_fd(), &dir)?.as_fd(),
                        "trusted.overlay.opaque",
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )
                    .map_err(|e| io_at(&dir, e))?;
                }
                WhiteoutMode::Apply => {
                    self.parent_cache = None;
                    let dir_fd = reopen_dir(parent.as_fd(), &dir)?;
                    prune(dir_fd.as_fd(), &dir, &self.created).map_err(|e| io_at(&dir, e))?;
                }
            }
            return Ok(());
        }
        if target.starts_with(b".wh.") || target.is_empty() || target == b"." || target == b".." {
            // Other AUFS metadata (.wh..wh.plnk and friends) carries nothing for us.
            return Ok(());
        }
        let target = OsStr::from_bytes(target);
        let deleted = dir.join(target);
        match self.options.whiteouts {
            WhiteoutMode::Overlay => {
                self.replace(parent.as_fd(), target, &deleted)?;
                rustix::fs::mknodat(
                    parent.as_fd(),
                    target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| io_at(&deleted, e))?;
            }
            WhiteoutMode::Apply => {
                if !self.created.contains(&deleted) {
                    self.remove(parent.as_fd(), target, &deleted)?;
                }
            }
        }
        Ok(())
    }
}

/// A numeric header field; an empty one (all NULs or spaces) reads as 0, as in Go and GNU tar.
fn lenient(field: &[u8], parsed: io::Result<u64>) -> Option<u64> {
    match parsed {
        Ok(n) => Some(n),
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// A readable descriptor of a directory from its `O_PATH` descriptor.
fn reopen_dir(fd: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Error> {
    rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(path, e))
}

/// `openat2(root, dir, O_PATH|O_DIRECTORY, RESOLVE_IN_ROOT)`: symlinks and `..` stay inside.
fn open_in_root(root: BorrowedFd<'_>, dir: &Path) -> Result<OwnedFd, Errno> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    loop {
        match rustix::fs::openat2(
            root,
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path to a node that must not be opened (a symlink, a device)
/// which reaches it through an already resolved directory.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_times(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> rustix::io::Result<()> {
    rustix::fs::utimensat(dir, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
}

/// Removes `name` in `dir`, recursively, never following symlinks. Missing is fine.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let child = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for entry_name in list_dir(child.as_fd())? {
        remove_at(child.as_fd(), &entry_name)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Empties `dir` (path `rel`) of everything this layer did not create, recursively.
fn prune(dir: BorrowedFd<'_>, rel: &Path, created: &HashSet<PathBuf>) -> io::Result<()> {
    for name in list_dir(dir)? {
        let child = rel.join(&name);
        if !created.contains(&child) {
            remove_at(dir, &name)?;
            continue;
        }
        let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            prune(sub.as_fd(), &child, created)?;
        }
    }
    Ok(())
}
