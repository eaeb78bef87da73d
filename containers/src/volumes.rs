//! Volumes: directories under `$STRATA_ROOT/volumes/<name>/_data` that outlive containers, as
//! Docker's `local` driver keeps them. Which containers use a volume is read from their configs
//! ([`crate::Containers`] checks it before removing one).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};
use crate::fsutil::{self, read_json, write_json_atomic};

/// What `volume.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeMeta {
    created: String,
    labels: BTreeMap<String, String>,
    /// Made for one container (image `VOLUME`, `-v /path`), named by a random ID.
    anonymous: bool,
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The directory containers see (`.../_data`).
    pub mountpoint: PathBuf,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
}

/// The volumes under one root.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

/// Docker's volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let ok = name.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidVolumeName(name.to_string()))
    }
}

impl Volumes {
    /// The volumes in `dir` (`$STRATA_ROOT/volumes`), created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates volume `name` (a random anonymous one when `None`); an existing volume of that
    /// name is returned as it is, as `docker volume create` does. The flag says whether it is new.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Volume, bool)> {
        let anonymous = name.is_none();
        let name = match name {
            Some(n) => {
                validate_volume_name(n)?;
                n.to_string()
            }
            None => crate::names::new_id(),
        };
        if let Ok(v) = self.get(&name) {
            return Ok((v, false));
        }
        // Built beside its final place and renamed in: a volume is there whole or not at all.
        let tmp = self.dir.join(format!(".tmp-{}", crate::names::new_id()));
        let meta = VolumeMeta {
            created: fsutil::now(),
            labels,
            anonymous,
        };
        let made = (|| {
            let data = tmp.join("_data");
            fs::create_dir_all(&data).map_err(io_err("creating", &data))?;
            // Docker's local volumes start as root-owned 0755 directories.
            fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting the mode of", &data))?;
            write_json_atomic(&tmp.join("volume.json"), &meta)?;
            let dest = self.path(&name);
            match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                    Ok(false)
                }
                Err(e) => Err(io_err("creating", &dest)(e)),
            }
        })();
        if !matches!(made, Ok(true)) {
            let _ = fs::remove_dir_all(&tmp);
        }
        let created = made?;
        Ok((self.get(&name)?, created))
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if validate_volume_name(name).is_err() {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let dir = self.path(name);
        let meta_path = dir.join("volume.json");
        if !meta_path.is_file() {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let meta: VolumeMeta = read_json(&meta_path)?;
        Ok(Volume {
            name: name.to_string(),
            mountpoint: dir.join("_data"),
            created: meta.created,
            labels: meta.labels,
            anonymous: meta.anonymous,
        })
    }

    /// Every volume, sorted by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            match self.get(&name) {
                Ok(v) => out.push(v),
                // Removed while we listed, or not a volume.
                Err(Error::NoSuchVolume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a volume and its data (the caller checked that no container uses it). Returns
    /// the bytes freed.
    pub(crate) fn delete(&self, name: &str) -> Result<u64> {
        let volume = self.get(name)?;
        let size = data_size(&volume.mountpoint);
        let dir = self.path(name);
        // Renamed away first, so a half-deleted volume never looks like a volume.
        let doomed = self.dir.join(format!(".rm-{}", crate::names::new_id()));
        fs::rename(&dir, &doomed).map_err(io_err("removing", &dir))?;
        fs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))?;
        Ok(size)
    }
}

/// The size of what is under `path` as Docker reports a volume's or a container's (moby's
/// `directory.Size`): the apparent sizes of everything but directories, symlinks not followed,
/// a file with several hard links once. An empty volume is 0 B.
pub fn data_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    data_size_below(path, &mut seen)
}

fn data_size_below(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        let counted = meta.size() > 0 && seen.insert((meta.dev(), meta.ino()));
        return if counted { meta.size() } else { 0 };
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| data_size_below(&e.path(), seen))
        .sum()
}

/// Fills an empty volume with what the image has at the mount point (Docker's copy-up on first
/// use): files, directories, symlinks, owners, modes and times. `source` is inside the
/// container's rootfs, already resolved within it; its own symlinks are copied as links.
pub(crate) fn copy_up(source: &Path, volume_data: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(source) {
        Ok(m) if m.is_dir() => m,
        // Nothing there (the runtime creates the mount point), or not a directory.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    copy_dir_contents(source, volume_data)?;
    copy_attributes(&meta, volume_data)
}

fn copy_dir_contents(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_dir_contents(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            // Devices, fifos and sockets have no place in a volume's seed.
            continue;
        }
        copy_attributes(&meta, &dst)?;
    }
    Ok(())
}

fn copy_attributes(meta: &fs::Metadata, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        rustix::fs::Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    ];
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &rustix::fs::Timestamps {
            last_access: times[0],
            last_modification: times[1],
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_size_counts_as_docker_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        assert_eq!(data_size(&root), 0, "missing");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        assert_eq!(data_size(&root), 0, "directories alone");
        fs::write(root.join("sub/file"), "12345").unwrap();
        fs::hard_link(root.join("sub/file"), root.join("link")).unwrap();
        fs::write(root.join("sub/deeper/empty"), "").unwrap();
        // A symlink counts its own length, not its target's.
        std::os::unix::fs::symlink("sub/file", root.join("sym")).unwrap();
        assert_eq!(data_size(&root), 5 + "sub/file".len() as u64);
    }

    #[test]
    fn volumes_are_created_once_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path().join("volumes")).unwrap();
        let (v, created) = volumes.create(Some("data"), BTreeMap::new()).unwrap();
        assert!(created);
        assert!(v.mountpoint.is_dir());
        fs::write(v.mountpoint.join("f"), "x").unwrap();
        let (again, created) = volumes.create(Some("data"), BTreeMap::new()).unwrap();
        assert!(!created);
        assert_eq!(again, v);
        let (anon, _) = volumes.create(None, BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        let names: Vec<String> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));
        assert!(volumes.delete("data").unwrap() > 0);
        assert!(matches!(volumes.get("data"), Err(Error::NoSuchVolume(_))));
        assert!(volumes.create(Some("bad/name"), BTreeMap::new()).is_err());
    }

    #[test]
    fn copy_up_keeps_links_modes_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/file"), "content").unwrap();
        fs::set_permissions(src.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        std::os::unix::fs::lchown(src.join("sub"), Some(1000), Some(1000)).unwrap();
        fs::create_dir(&dst).unwrap();
        copy_up(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("sub/file")).unwrap(), "content");
        let mode = fs::metadata(dst.join("sub/file")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::metadata(dst.join("sub")).unwrap().uid(), 1000);
    }
}
