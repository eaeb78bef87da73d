//! Small file-system helpers shared by the layer writer, the extractor and the snapshotters.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

/// Overlayfs keeps its own bookkeeping in these xattrs; they never belong in a layer.
pub(crate) fn is_internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Where extended attributes are read from.
#[derive(Clone, Copy)]
enum XattrSource<'a> {
    /// A path, not following a final symlink.
    Path(&'a Path),
    /// An open file: no path to walk again.
    File(BorrowedFd<'a>),
}

impl XattrSource<'_> {
    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(p) => rustix::fs::llistxattr(p, buf),
            XattrSource::File(fd) => rustix::fs::flistxattr(fd, buf),
        }
    }

    fn list_size(self) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(p) => rustix::fs::llistxattr_query(p),
            XattrSource::File(fd) => rustix::fs::flistxattr_query(fd),
        }
    }

    fn get(self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(p) => rustix::fs::lgetxattr(p, name, buf),
            XattrSource::File(fd) => rustix::fs::fgetxattr(fd, name, buf),
        }
    }

    fn get_size(self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(p) => rustix::fs::lgetxattr_query(p, name),
            XattrSource::File(fd) => rustix::fs::fgetxattr_query(fd, name),
        }
    }
}

/// The extended attributes of `path` (not following a final symlink) that a layer records,
/// sorted by name. A file system without xattr support has none.
pub(crate) fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    layer_xattrs(XattrSource::Path(path))
}

/// [`xattrs`] of an open file (the layer writer opens a file's content anyway, and reading
/// by descriptor spares a walk of its whole path).
pub(crate) fn file_xattrs(file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    layer_xattrs(XattrSource::File(file.as_fd()))
}

fn layer_xattrs(src: XattrSource<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // On the stack: a layer asks this of every file, and most have no xattrs at all.
    let mut small = [0u8; 256];
    let mut large = Vec::new();
    let names = match src.list(&mut small) {
        Ok(n) => &small[..n],
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(Errno::RANGE) => loop {
            let needed = src.list_size()?;
            large.resize(needed.max(large.len() * 2).max(2 * small.len()), 0);
            match src.list(&mut large) {
                Ok(n) => break &large[..n],
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if is_internal_xattr(name) {
            continue;
        }
        if let Some(value) = read_xattr(src, OsStr::from_bytes(name))? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr of `path` (not following a final symlink); `None` when absent.
pub(crate) fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    read_xattr(XattrSource::Path(path), name)
}

fn read_xattr(src: XattrSource<'_>, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        match src.get(name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(Errno::RANGE) => {
                let needed = src.get_size(name)?;
                value.resize(needed.max(value.len() * 2), 0);
            }
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `path` is a directory overlayfs marks opaque (`trusted.overlay.opaque` as root,
/// `user.overlay.opaque` with the `userxattr` mount option).
pub(crate) fn is_opaque_dir(path: &Path) -> io::Result<bool> {
    is_opaque(XattrSource::Path(path))
}

/// [`is_opaque_dir`] of an open directory.
pub(crate) fn is_opaque_dir_fd(dir: BorrowedFd<'_>) -> io::Result<bool> {
    is_opaque(XattrSource::File(dir))
}

fn is_opaque(src: XattrSource<'_>) -> io::Result<bool> {
    for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if read_xattr(src, key.as_ref())?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `stat` describes an overlay whiteout: a character device 0/0.
pub(crate) fn is_whiteout(stat: &EntryStat) -> bool {
    stat.file_type == FileType::CharacterDevice && stat.rdev == 0
}

/// An entry's `lstat`: what a diff compares and a layer records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryStat {
    pub file_type: FileType,
    /// Permission bits with setuid, setgid and sticky (no type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub rdev: u64,
    pub nlink: u32,
    pub dev: u64,
    pub ino: u64,
}

impl EntryStat {
    /// `lstat` of `name` in the open directory `dir`: one path component to look up, where a
    /// full path would walk every component from the root again.
    pub(crate) fn at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<EntryStat> {
        Self::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// `stat` of `path`, following symlinks.
    pub(crate) fn follow(path: &Path) -> io::Result<EntryStat> {
        Self::statx(rustix::fs::CWD, path.as_os_str(), AtFlags::empty())
    }

    fn statx(dir: BorrowedFd<'_>, name: &OsStr, flags: AtFlags) -> io::Result<EntryStat> {
        let x = rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS)?;
        let mode = u32::from(x.stx_mode);
        Ok(EntryStat {
            file_type: FileType::from_raw_mode(mode),
            mode: mode & 0o7777,
            uid: x.stx_uid,
            gid: x.stx_gid,
            size: x.stx_size,
            mtime: x.stx_mtime.tv_sec,
            mtime_nsec: x.stx_mtime.tv_nsec,
            rdev: rustix::fs::makedev(x.stx_rdev_major, x.stx_rdev_minor),
            nlink: x.stx_nlink,
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
        })
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }
}

/// Opens directory `name` in `dir` (not following a symlink) to read it and look up its entries.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens directory `path` (a final symlink followed) to read it and look up its entries.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The names in a directory, sorted bytewise (the order Go's `filepath.Walk` visits).
pub(crate) fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    sorted_names_in(open_dir(dir)?.as_fd())
}

/// [`sorted_names`] of an open directory.
pub(crate) fn sorted_names_in(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Whether two regular files have the same content.
pub(crate) fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies a regular file's bytes, sharing extents where the file system can (reflink through
/// `copy_file_range`), falling back to reading and writing.
pub(crate) fn copy_file_data(src: &File, dst: &mut File, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, None, &*dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if left > 0 {
        // Either the kernel refused, or the source shrank: copy what remains the plain way.
        let mut src = src;
        io::copy(&mut Read::take(&mut src, left), dst)?;
    }
    dst.flush()
}

/// Removes a path of any type, recursively; a missing path is fine.
pub(crate) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        Ok(_) => fs::remove_file(path),
    }
}

/// Copies the tree `src` to `dst` (which must not exist) keeping everything a layer records:
/// types, modes, owners, xattrs, mtimes, device numbers and hard links. File data is shared
/// with the source where the file system can (reflinks through `copy_file_range`).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = std::collections::HashMap::new();
    copy_entry(src, dst, &mut links)
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    links: &mut std::collections::HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, dst);
        }
        links.insert(key, dst.to_path_buf());
    }
    if ft.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(dst)?;
        for name in sorted_names(src)? {
            copy_entry(&src.join(&name), &dst.join(&name), links)?;
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        let from = File::open(src)?;
        let mut to = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)?;
        copy_file_data(&from, &mut to, meta.len())?;
    } else {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else {
            // Sockets belong to a running process; layers skip them too.
            return Ok(());
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dst,
            kind,
            rustix::fs::Mode::from_raw_mode(0o600),
            meta.rdev(),
        )?;
    }
    copy_metadata(src, dst)
}

/// Gives `dst` the owner, mode, xattrs (overlay's opaque marker included) and times of `src`.
pub(crate) fn copy_metadata(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !ft.is_symlink() {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            dst,
            rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
            rustix::fs::AtFlags::empty(),
        )?;
    }
    let mut all = xattrs(src)?;
    for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Some(v) = get_xattr(src, key.as_ref())? {
            all.push((key.as_bytes().to_vec(), v));
        }
    }
    for (name, value) in all {
        rustix::fs::lsetxattr(
            dst,
            std::ffi::OsStr::from_bytes(&name),
            &value,
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
