//! Helpers shared by the snapshotter's integration tests: building trees with every kind of
//! entry, and describing a tree completely so two trees can be compared.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Everything a layer records about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The smallest path sharing this inode, for multiply linked files.
    pub link_group: Option<String>,
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for name in xattr_names(path) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let out_value = get_xattr(path, &name).unwrap_or_default();
        out.push((name, out_value));
    }
    out.sort();
    out
}

fn xattr_names(path: &Path) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).unwrap_or(0);
    buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

pub fn get_xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Describes every path below `root` (relative names), following nothing.
pub fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk(root, Path::new(""), &mut out, &mut inodes);
    for names in inodes.values() {
        if names.len() > 1 {
            let first = names.iter().min().unwrap().clone();
            for n in names {
                out.get_mut(n).unwrap().link_group = Some(first.clone());
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_file() {
            ("file", fs::read(&path).unwrap())
        } else if ft.is_char_device() {
            ("char", Vec::new())
        } else if ft.is_block_device() {
            ("block", Vec::new())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("socket", Vec::new())
        };
        let key = rel.to_string_lossy().into_owned();
        if !ft.is_dir() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(key.clone());
        }
        out.insert(
            key,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                content,
                rdev: m.rdev(),
                xattrs: xattrs_of(&path),
                link_group: None,
            },
        );
        if ft.is_dir() {
            walk(root, &rel, out, inodes);
        }
    }
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub fn mknod(path: &Path, kind: rustix::fs::FileType, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o640),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// A tree with every kind of entry a layer must carry.
pub fn rich_tree(root: &Path) {
    use rustix::fs::FileType;
    fs::create_dir_all(root.join("etc/ssl")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/empty"), "").unwrap();
    fs::write(
        root.join("big.bin"),
        (0..3_000_000u32)
            .map(|i| (i * 7 / 3) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let deep = root
        .join("d".repeat(90))
        .join("e".repeat(90))
        .join("f".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("long-file-name-".repeat(8)), "deep").unwrap();
    fs::write(root.join("unicodé-ñame.txt"), "utf8").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("t".repeat(150), root.join("long-link")).unwrap();
    fs::write(root.join("hard-a"), "shared inode").unwrap();
    fs::hard_link(root.join("hard-a"), root.join("etc/hard-b")).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("hard-c")).unwrap();
    mknod(&root.join("null"), FileType::CharacterDevice, 1, 3);
    mknod(&root.join("sda"), FileType::BlockDevice, 8, 0);
    mknod(&root.join("fifo"), FileType::Fifo, 0, 0);
    fs::write(root.join("setuid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("ping"), "binary").unwrap();
    // A version 2 file capability: cap_net_raw permitted and effective.
    set_xattr(
        &root.join("ping"),
        "security.capability",
        &[0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    set_xattr(&root.join("etc/passwd"), "user.note", b"hello\0world");
    // More xattr names than a first 256-byte listing holds.
    for i in 0..12 {
        let name = format!("user.an-attribute-with-a-long-name-{i:02}");
        set_xattr(&root.join("etc/passwd"), &name, name.as_bytes());
    }
    fs::write(root.join("owned"), "by someone else").unwrap();
    chown(&root.join("owned"), 1000, 3_000_000);
    chown(&root.join("abs-link"), 7, 8);
    let mut paths: Vec<_> = describe(root).into_keys().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for (i, p) in paths.iter().enumerate() {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64 * 1000);
    }
}
