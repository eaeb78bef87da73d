//! Snapshots on disk: overlayfs diffs stacked as lower directories, or full copies.
//!
//! Layout under the root the caller gives (`$STRATA_ROOT/snapshots`):
//!
//! ```text
//! s/<id>/info      state (active|committed), parent and, for a volatile snapshot, the boot
//!                  it was written in (`boot=`); one `key=value` a line
//! s/<id>/fs        overlay: the snapshot's diff (whiteouts in overlay form); copy: the full tree
//! s/<id>/work      overlay work directory (active snapshots only)
//! s/<id>/merged    where an active overlay snapshot is mounted
//! l/<short>        short symlinks to `s/<id>/fs`, for the legacy mount option string
//! m/<n>            mount points of read-only views
//! tmp/<pid>-<n>    snapshots being made; renamed into s/ when complete
//! empty/           an empty lower directory (overlay needs two lowers to mount without upper)
//! ```
//!
//! Ids are chosen by the caller (a cache key, a digest, a random name): 1-128 characters from
//! `[A-Za-z0-9_.:-]`, not starting with `.`. A snapshot appears in `s/` only complete (made in
//! `tmp/` and renamed), so a process killed at any moment leaves at worst a `tmp/` entry and a
//! stale mount, both swept by [`Snapshotter::cleanup`].
//!
//! Durability: a *volatile* snapshot ([`Snapshotter::prepare_volatile`]) is mounted with
//! overlay's `volatile` option, so nothing ever syncs its files, and its info records the boot
//! id. It is trusted only during that boot: after a reboot (a crash may have lost any of its
//! files, silently) every read treats it as absent and removes it, and callers make it again
//! from the layer blob it was written as. Extracted snapshots ([`Snapshotter::extract_layer`])
//! are volatile the same way: nothing syncs them either, and their layer is at hand. A snapshot
//! from [`Snapshotter::prepare`] is synced by its overlay unmount; one from
//! [`Snapshotter::import_directory`] is as durable as the caller made the directory. The info
//! file of every durable snapshot is synced, with its directory and that directory's entry in
//! `s/`, before anyone can see it, so an empty info file after a power loss (a volatile
//! snapshot's, never written back) reads as stale too.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_codec::sha256_digest;

use crate::docker_diff::{Change, NewTree, docker_changes};
use crate::overlay::{self, Method, Mount, OverlaySpec};
use crate::{
    Diff, Error, ExtractOptions, ExtractedLayer, LayerDescriptor, LayerOptions, WhiteoutMode,
    extract_layer, fsutil, write_layer,
};

/// How snapshots are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Each snapshot holds its diff; an active snapshot is an overlay mount of its parents.
    Overlay,
    /// Each snapshot holds a full copy of its tree; diffs come from comparing trees.
    Copy,
}

/// The file in a snapshot root that names the driver its snapshots were made with.
const DRIVER_FILE: &str = "driver";

impl Driver {
    /// The name `STRATA_SNAPSHOTTER` and the root's record use.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }

    /// The driver with this name (`overlay` or `copy`).
    pub fn parse(name: &str) -> Option<Driver> {
        match name {
            "overlay" => Some(Driver::Overlay),
            "copy" => Some(Driver::Copy),
            _ => None,
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a snapshot can still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Prepared for a step: writable, not yet a layer.
    Active,
    /// Read-only; can be a parent.
    Committed,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Committed => "committed",
        }
    }
}

/// A snapshot's identity and place in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub parent: Option<String>,
    pub state: State,
    /// For a volatile snapshot, the boot it was written in (`/proc/sys/kernel/random/boot_id`):
    /// always the current one, since snapshots of other boots read as absent. `None`: durable.
    pub boot_id: Option<String>,
}

/// What [`Snapshotter::cleanup`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub unmounted: Vec<PathBuf>,
    pub removed_temporaries: Vec<PathBuf>,
}

/// Snapshots under one root directory. Cheap to clone; safe to share between threads (every
/// operation is a few file-system calls, atomic where it matters).
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    driver: Driver,
    legacy_mounts: bool,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Taken (exclusively) to remove a stale snapshot, so its removal cannot race with a fresh
/// snapshot installed under the same id.
const STALE_LOCK: &str = "stale.lock";

/// This boot's id, read once; `None` where `/proc` does not say (volatile snapshots are then
/// never made, and marked ones never trusted).
fn current_boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .as_deref()
}

/// Whether a snapshot with this mark may have lost data: it is volatile and of another boot.
fn is_stale(boot_id: Option<&str>) -> bool {
    boot_id.is_some_and(|boot| current_boot_id() != Some(boot))
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        context,
        path,
        source,
    }
}

fn validate_id(id: &str) -> Result<(), Error> {
    let ok = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// Whether a process exists and has not exited: a zombie (killed, not yet reaped by a slow
/// parent) holds its pid but will never unmount anything again.
fn process_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

impl Snapshotter {
    /// Opens (creating) the snapshot root with the driver its snapshots were made with, which
    /// the root records: every process then agrees on it, and only the first open probes.
    /// A new root takes `STRATA_SNAPSHOTTER` (`overlay` or `copy`) when set, else overlay when an
    /// overlay mounts under `root`, else copy. Asking for another driver than the recorded one
    /// is refused while the root holds snapshots made with it.
    pub fn open(root: impl Into<PathBuf>) -> Result<Snapshotter, Error> {
        let root = root.into();
        let forced = match std::env::var("STRATA_SNAPSHOTTER").ok().as_deref() {
            None | Some("") => None,
            Some(name) => {
                Some(Driver::parse(name).ok_or_else(|| Error::UnknownDriver(name.to_string()))?)
            }
        };
        let recorded_path = root.join(DRIVER_FILE);
        let recorded = match fs::read_to_string(&recorded_path) {
            Ok(text) => Driver::parse(text.trim()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &recorded_path)(e)),
        };
        let driver = match (recorded, forced) {
            (Some(recorded), Some(requested)) if recorded != requested => {
                let snapshots = root.join("s");
                let in_use = fs::read_dir(&snapshots)
                    .map(|mut entries| entries.next().is_some())
                    .unwrap_or(false);
                if in_use {
                    return Err(Error::DriverMismatch {
                        root,
                        recorded,
                        requested,
                    });
                }
                requested
            }
            (_, Some(requested)) => requested,
            (Some(recorded), None) => recorded,
            (None, None) => {
                let probe = Snapshotter::with_driver(root.clone(), Driver::Overlay)?;
                if probe.overlay_works() {
                    Driver::Overlay
                } else {
                    Driver::Copy
                }
            }
        };
        let snapshotter = Snapshotter::with_driver(root, driver)?;
        if recorded != Some(driver) {
            // A name of its own: processes opening a new root at once each write and rename
            // theirs (the renames replace one another atomically, with the same probed driver).
            // Named like `temp_dir`'s, so `cleanup` leaves it alone while this process lives.
            let tmp = snapshotter.root.join("tmp").join(format!(
                "{}-{}-{DRIVER_FILE}",
                std::process::id(),
                UNIQUE.fetch_add(1, Ordering::Relaxed)
            ));
            fs::write(&tmp, driver.as_str()).map_err(io_err("writing", &tmp))?;
            fs::rename(&tmp, &recorded_path).map_err(io_err("renaming to", &recorded_path))?;
        }
        Ok(snapshotter)
    }

    /// Opens (creating) the snapshot root with a given driver, without probing.
    pub fn with_driver(root: impl Into<PathBuf>, driver: Driver) -> Result<Snapshotter, Error> {
        let root = root.into();
        for dir in ["s", "l", "m", "tmp", "empty"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        Ok(Snapshotter {
            root,
            driver,
            legacy_mounts: false,
        })
    }

    /// Mounts with `mount(2)` and short lower paths instead of the new mount API (what kernels
    /// before 6.8 need; chosen automatically there). For tests of that path.
    #[doc(hidden)]
    pub fn use_legacy_mounts(&mut self) {
        self.legacy_mounts = true;
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("s").join(id)
    }

    /// The directory holding a snapshot's files: its diff (overlay) or its tree (copy).
    /// Read-only for committed snapshots.
    pub fn fs_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn overlay_works(&self) -> bool {
        let probe = match self.temp_dir() {
            Ok(p) => p,
            Err(_) => return false,
        };
        let ok = (|| -> io::Result<()> {
            for d in ["lower", "upper", "work", "merged"] {
                fs::create_dir(probe.join(d))?;
            }
            let lowers = [probe.join("lower")];
            let spec = OverlaySpec {
                lowers: &lowers,
                upper: Some((&probe.join("upper"), &probe.join("work"))),
                volatile: false,
            };
            let target = probe.join("merged");
            match overlay::mount_overlay(&spec, &target, Method::NewApi) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    let names = vec![self.short_link(&lowers[0])?];
                    let method = Method::Legacy {
                        links_dir: &self.root.join("l"),
                        lower_names: &names,
                    };
                    overlay::mount_overlay(&spec, &target, method)?
                }
                other => other?,
            }
            overlay::unmount(&target)
        })()
        .is_ok();
        let _ = fsutil::remove_all(&probe);
        ok
    }

    /// A fresh directory under `tmp/`, named after this process so `cleanup` can tell live
    /// work from leftovers.
    fn temp_dir(&self) -> Result<PathBuf, Error> {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = self
            .root
            .join("tmp")
            .join(format!("{}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(io_err("creating", &path))?;
        Ok(path)
    }

    fn read_info(&self, id: &str) -> Result<SnapshotInfo, Error> {
        validate_id(id)?;
        let path = self.dir(id).join("info");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        match read_info_text(id, &text) {
            InfoText::Trusted(info) => Ok(info),
            InfoText::LostInCrash => {
                self.remove_stale(id)?;
                Err(Error::NotFound(id.to_string()))
            }
            InfoText::Malformed => Err(io_err("reading", &path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed snapshot info",
            ))),
        }
    }

    /// Removes snapshot `id` if it is (still) [`InfoText::LostInCrash`]. Under an exclusive
    /// lock: checked again, renamed into `tmp/`, deleted. Whoever comes second finds it gone;
    /// and no fresh snapshot can be installed under the id while the stale one is there, so
    /// the lock is all it takes for the check and the rename to be one step.
    fn remove_stale(&self, id: &str) -> Result<(), Error> {
        let lock_path = self.root.join(STALE_LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &lock_path)(e.into()))?;
        let dir = self.dir(id);
        let still_stale = fs::read_to_string(dir.join("info"))
            .is_ok_and(|text| matches!(read_info_text(id, &text), InfoText::LostInCrash));
        if !still_stale {
            return Ok(());
        }
        let tmp = self.temp_dir()?;
        let staged = tmp.join("stale");
        let renamed = fs::rename(&dir, &staged).map_err(io_err("renaming", &dir));
        drop(lock);
        let link = self.root.join("l").join(short_link_name(&self.fs_path(id)));
        let _ = fs::remove_file(link);
        let removed = fsutil::remove_all(&tmp).map_err(io_err("removing", &tmp));
        renamed.and(removed)
    }

    /// A snapshot's state and parent. A volatile snapshot of another boot is
    /// [`Error::NotFound`] (and removed), here and everywhere else.
    pub fn info(&self, id: &str) -> Result<SnapshotInfo, Error> {
        self.read_info(id)
    }

    /// Whether a snapshot directory is there (a stale one is removed first).
    fn exists(&self, id: &str) -> Result<bool, Error> {
        match self.read_info(id) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(self.dir(id).exists()),
            Err(e) => Err(e),
        }
    }

    /// Every snapshot, sorted by id.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, Error> {
        let s = self.root.join("s");
        let mut out = Vec::new();
        for name in fsutil::sorted_names(&s).map_err(io_err("listing", &s))? {
            let Some(id) = name.to_str() else { continue };
            match self.read_info(id) {
                Ok(info) => out.push(info),
                // Removed while we listed.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The committed chain under `parent`, nearest first.
    fn chain(&self, parent: Option<&str>) -> Result<Vec<String>, Error> {
        let mut chain = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(id) = next {
            let info = self.read_info(&id)?;
            if info.state != State::Committed {
                return Err(Error::WrongState {
                    id,
                    state: info.state.name(),
                    expected: "committed",
                });
            }
            next = info.parent;
            chain.push(id);
        }
        Ok(chain)
    }

    /// Creates an active snapshot `id` on top of `parent` (committed) for a step to write in.
    /// Mount it with [`Snapshotter::mount`]; afterwards [`Snapshotter::commit`] it.
    pub fn prepare(&self, id: &str, parent: Option<&str>) -> Result<SnapshotInfo, Error> {
        self.prepare_with(id, parent, None)
    }

    /// Like [`Snapshotter::prepare`], for a snapshot whose files need not survive a crash:
    /// its overlay is mounted `volatile` (nothing syncs it, not even the unmount), and it and
    /// the snapshot it is committed as are trusted only during this boot (see the module
    /// docs). For what can be made again from elsewhere, like a build step's layer.
    pub fn prepare_volatile(&self, id: &str, parent: Option<&str>) -> Result<SnapshotInfo, Error> {
        self.prepare_with(id, parent, current_boot_id())
    }

    fn prepare_with(
        &self,
        id: &str,
        parent: Option<&str>,
        boot_id: Option<&str>,
    ) -> Result<SnapshotInfo, Error> {
        validate_id(id)?;
        if self.exists(id)? {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        self.chain(parent)?;
        let tmp = self.temp_dir()?;
        let result = (|| {
            let fs_dir = tmp.join("fs");
            match (self.driver, parent) {
                (Driver::Copy, Some(p)) => fsutil::copy_tree(&self.fs_path(p), &fs_dir)
                    .map_err(io_err("copying", &fs_dir))?,
                _ => fs::create_dir(&fs_dir).map_err(io_err("creating", &fs_dir))?,
            }
            if self.driver == Driver::Overlay {
                for d in ["work", "merged"] {
                    let path = tmp.join(d);
                    fs::create_dir(&path).map_err(io_err("creating", &path))?;
                }
            }
            let info = SnapshotInfo {
                id: id.to_string(),
                parent: parent.map(str::to_string),
                state: State::Active,
                boot_id: boot_id.map(str::to_string),
            };
            self.install(&tmp, &info)?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        result
    }

    /// Writes `info` into the finished temporary directory and renames it into place.
    fn install(&self, tmp: &Path, info: &SnapshotInfo) -> Result<(), Error> {
        write_info(tmp, info)?;
        if info.boot_id.is_none() {
            // The info's entry in its directory, which POSIX does not sync with the file.
            sync_dir(tmp)?;
        }
        let dest = self.dir(&info.id);
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp,
            rustix::fs::CWD,
            &dest,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) if info.boot_id.is_none() => sync_dir(&self.root.join("s")),
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                Err(Error::AlreadyExists(info.id.clone()))
            }
            Err(e) => Err(io_err("renaming", &dest)(e.into())),
        }
    }

    fn lower_dirs(&self, chain: &[String]) -> Vec<PathBuf> {
        chain.iter().map(|id| self.fs_path(id)).collect()
    }

    /// A short name in `l/` for a lower directory (created on first use).
    fn short_link(&self, lower: &Path) -> io::Result<String> {
        let name = short_link_name(lower);
        let link = self.root.join("l").join(&name);
        match std::os::unix::fs::symlink(lower, &link) {
            Ok(()) => Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(name),
            Err(e) => Err(e),
        }
    }

    fn mount_spec(&self, spec: &OverlaySpec<'_>, target: &Path) -> Result<(), Error> {
        let legacy = |spec: &OverlaySpec<'_>| -> io::Result<()> {
            let names = spec
                .lowers
                .iter()
                .map(|l| self.short_link(l))
                .collect::<io::Result<Vec<_>>>()?;
            overlay::mount_overlay(
                spec,
                target,
                Method::Legacy {
                    links_dir: &self.root.join("l"),
                    lower_names: &names,
                },
            )
        };
        let result = if self.legacy_mounts {
            legacy(spec)
        } else {
            match overlay::mount_overlay(spec, target, Method::NewApi) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => legacy(spec),
                other => other,
            }
        };
        result.map_err(|source| Error::Mount {
            target: target.to_path_buf(),
            source,
        })
    }

    /// The root file system of an active snapshot, writable, to hand to the runtime. Overlay:
    /// mounted at `s/<id>/merged` until the guard drops; copy: the snapshot's own directory.
    pub fn mount(&self, id: &str) -> Result<Mount, Error> {
        let info = self.read_info(id)?;
        if info.state != State::Active {
            return Err(Error::WrongState {
                id: id.to_string(),
                state: info.state.name(),
                expected: "active",
            });
        }
        if self.driver == Driver::Copy {
            return Ok(Mount::plain(self.fs_path(id)));
        }
        let chain = self.chain(info.parent.as_deref())?;
        let mut lowers = self.lower_dirs(&chain);
        // Overlay needs a lower directory; a snapshot without parents gets an empty one.
        if lowers.is_empty() {
            lowers.push(self.root.join("empty"));
        }
        let dir = self.dir(id);
        let (upper, work, target) = (dir.join("fs"), dir.join("work"), dir.join("merged"));
        let mut spec = OverlaySpec {
            lowers: &lowers,
            upper: Some((&upper, &work)),
            volatile: info.boot_id.is_some(),
        };
        // Whose mount this is, so `cleanup` in another process leaves it alone while we live.
        let owner = dir.join("mount-pid");
        fs::write(&owner, std::process::id().to_string()).map_err(io_err("writing", &owner))?;
        if spec.volatile {
            // A volatile mount leaves `work/work/incompat/volatile` behind, and overlay refuses
            // that work directory until it is gone. Mounted before in this boot, so nothing
            // was lost: the upper directory is fine to use again.
            let incompat = work.join("work").join("incompat");
            fsutil::remove_all(&incompat).map_err(io_err("removing", &incompat))?;
        }
        match self.mount_spec(&spec, &target) {
            // A kernel before 5.10 knows no `volatile`: mount it as usual (synced at unmount),
            // and drop the mark, since the snapshot is then as durable as any other.
            Err(Error::Mount { source, .. })
                if spec.volatile && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                spec.volatile = false;
                self.mount_spec(&spec, &target)?;
                let durable = SnapshotInfo {
                    boot_id: None,
                    ..info
                };
                replace_info(&dir, &durable)?;
            }
            other => other?,
        }
        Ok(Mount::mounted(target, false))
    }

    /// A read-only view of a committed snapshot's whole tree, e.g. for `COPY --from` or an
    /// export. Overlay: a mount under `m/` until the guard drops; copy: the snapshot's directory.
    pub fn view(&self, id: &str) -> Result<Mount, Error> {
        let chain = self.chain(Some(id))?;
        self.view_chain(&chain)
    }

    fn view_chain(&self, chain: &[String]) -> Result<Mount, Error> {
        if self.driver == Driver::Copy {
            return Ok(match chain.first() {
                Some(id) => Mount::plain(self.fs_path(id)),
                None => Mount::plain(self.root.join("empty")),
            });
        }
        let mut lowers = self.lower_dirs(chain);
        // Without an upper directory overlay wants at least two lowers.
        while lowers.len() < 2 {
            lowers.push(self.root.join("empty"));
        }
        let target = self.root.join("m").join(format!(
            "{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&target).map_err(io_err("creating", &target))?;
        let spec = OverlaySpec {
            lowers: &lowers,
            upper: None,
            volatile: false,
        };
        if let Err(e) = self.mount_spec(&spec, &target) {
            let _ = fs::remove_dir(&target);
            return Err(e);
        }
        Ok(Mount::mounted(target, true))
    }

    /// What active snapshot `id` changed against its parent, as `docker diff` reports it
    /// (see [`Change`]); `skip` hides paths (relative, no leading slash) and what is below them.
    /// Works mounted or not: an overlay snapshot's upper directory is only read.
    pub fn docker_changes(
        &self,
        id: &str,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<Change>, Error> {
        let info = self.read_info(id)?;
        let view = self.view_chain(&self.chain(info.parent.as_deref())?)?;
        let tree = match self.driver {
            Driver::Overlay => NewTree::Upper,
            Driver::Copy => NewTree::Whole,
        };
        let new = self.fs_path(id);
        let changes = docker_changes(&new, view.path(), tree, skip);
        let unmounted = view.unmount();
        let changes = changes.map_err(io_err("comparing", &new))?;
        unmounted.map_err(io_err("unmounting", &new))?;
        Ok(changes)
    }

    fn is_mounted(&self, path: &Path) -> Result<bool, Error> {
        let mounts = overlay::mounts_under(path).map_err(io_err("reading mounts", path))?;
        Ok(mounts.iter().any(|m| m == path))
    }

    /// Turns active snapshot `active` into committed snapshot `id` (a rename: the upper
    /// directory becomes the diff, nothing is copied). It must not be mounted any more.
    pub fn commit(&self, active: &str, id: &str) -> Result<SnapshotInfo, Error> {
        validate_id(id)?;
        let info = self.read_info(active)?;
        if info.state != State::Active {
            return Err(Error::WrongState {
                id: active.to_string(),
                state: info.state.name(),
                expected: "active",
            });
        }
        if self.exists(id)? {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let dir = self.dir(active);
        if self.is_mounted(&dir.join("merged"))? {
            return Err(Error::WrongState {
                id: active.to_string(),
                state: "mounted",
                expected: "unmounted",
            });
        }
        // Move it out of s/ first so no one sees a half-committed snapshot.
        let tmp = self.temp_dir()?;
        let staged = tmp.join("snapshot");
        fs::rename(&dir, &staged).map_err(io_err("renaming", &dir))?;
        let result = (|| {
            for d in ["work", "merged", "mount-pid"] {
                fsutil::remove_all(&staged.join(d)).map_err(io_err("removing", &staged))?;
            }
            let committed = SnapshotInfo {
                id: id.to_string(),
                parent: info.parent.clone(),
                state: State::Committed,
                boot_id: info.boot_id.clone(),
            };
            self.install(&staged, &committed)?;
            Ok(committed)
        })();
        let _ = fsutil::remove_all(&tmp);
        result
    }

    /// Removes a snapshot (active or committed). The store decides when nothing refers to it;
    /// this refuses only while another snapshot has it as parent.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        self.read_info(id)?;
        if let Some(child) = self
            .list()?
            .into_iter()
            .find(|s| s.parent.as_deref() == Some(id))
        {
            return Err(Error::HasChildren {
                id: id.to_string(),
                child: child.id,
            });
        }
        let dir = self.dir(id);
        let merged = dir.join("merged");
        if self.is_mounted(&merged)? {
            overlay::unmount(&merged).map_err(io_err("unmounting", &merged))?;
        }
        let tmp = self.temp_dir()?;
        let staged = tmp.join("snapshot");
        fs::rename(&dir, &staged).map_err(io_err("renaming", &dir))?;
        let link = self.root.join("l").join(short_link_name(&self.fs_path(id)));
        let _ = fs::remove_file(link);
        fsutil::remove_all(&tmp).map_err(io_err("removing", &tmp))
    }

    /// Writes snapshot `id` (active or committed) as a layer: its changes against its parent.
    pub fn write_layer<W: Write + Send>(
        &self,
        id: &str,
        options: &LayerOptions,
        out: W,
    ) -> Result<LayerDescriptor, Error> {
        let info = self.read_info(id)?;
        let chain = self.chain(info.parent.as_deref())?;
        let upper = self.fs_path(id);
        match self.driver {
            Driver::Copy => {
                let lower = chain.first().map(|p| self.fs_path(p));
                write_layer(&Diff::Trees { lower, upper }, options, out)
            }
            Driver::Overlay if chain.is_empty() => {
                write_layer(&Diff::Overlay { upper, lower: None }, options, out)
            }
            Driver::Overlay => {
                let view = self.view_chain(&chain)?;
                let diff = Diff::Overlay {
                    upper,
                    lower: Some(view.path().to_path_buf()),
                };
                let result = write_layer(&diff, options, out);
                view.unmount().map_err(io_err("unmounting", &self.root))?;
                result
            }
        }
    }

    /// Makes committed snapshot `id` from a layer stream on top of `parent`, extracting while
    /// the bytes arrive. On any error nothing is left behind.
    ///
    /// Nothing syncs the extracted files (a sync per file, or of the whole file system, would
    /// cost more than the extraction), so the snapshot is volatile: trusted only in this boot,
    /// and after a reboot extracted again from the layer, which callers keep for that.
    pub fn extract_layer<R: Read>(
        &self,
        id: &str,
        parent: Option<&str>,
        reader: R,
        max_uncompressed_size: Option<u64>,
    ) -> Result<(SnapshotInfo, ExtractedLayer), Error> {
        self.make_committed(id, parent, current_boot_id(), |fs_dir| {
            let whiteouts = match self.driver {
                Driver::Overlay => WhiteoutMode::Overlay,
                Driver::Copy => WhiteoutMode::Apply,
            };
            let options = ExtractOptions {
                whiteouts,
                max_uncompressed_size,
            };
            extract_layer(reader, fs_dir, &options)
        })
    }

    /// Makes committed snapshot `id` on top of `parent` from a plain directory of additions
    /// (COPY/ADD results), which is moved in (overlay: renamed, it is the diff) or applied on a
    /// copy of the parent (copy driver; `dir` is removed afterwards). `dir` must be on the same
    /// file system as the root.
    pub fn import_directory(
        &self,
        id: &str,
        parent: Option<&str>,
        dir: &Path,
    ) -> Result<SnapshotInfo, Error> {
        let (info, ()) = self.make_committed(id, parent, None, |fs_dir| {
            match self.driver {
                Driver::Overlay => {
                    fs::remove_dir(fs_dir).map_err(io_err("replacing", fs_dir))?;
                    fs::rename(dir, fs_dir).map_err(io_err("moving", dir))?;
                }
                Driver::Copy => {
                    overlay_copy(dir, fs_dir).map_err(io_err("copying", dir))?;
                    fsutil::remove_all(dir).map_err(io_err("removing", dir))?;
                }
            }
            Ok(())
        })?;
        Ok(info)
    }

    fn make_committed<T>(
        &self,
        id: &str,
        parent: Option<&str>,
        boot_id: Option<&str>,
        fill: impl FnOnce(&Path) -> Result<T, Error>,
    ) -> Result<(SnapshotInfo, T), Error> {
        validate_id(id)?;
        if self.exists(id)? {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let chain = self.chain(parent)?;
        let tmp = self.temp_dir()?;
        let result = (|| {
            let fs_dir = tmp.join("fs");
            match (self.driver, chain.first()) {
                (Driver::Copy, Some(p)) => fsutil::copy_tree(&self.fs_path(p), &fs_dir)
                    .map_err(io_err("copying", &fs_dir))?,
                _ => fs::create_dir(&fs_dir).map_err(io_err("creating", &fs_dir))?,
            }
            let value = fill(&fs_dir)?;
            let info = SnapshotInfo {
                id: id.to_string(),
                parent: parent.map(str::to_string),
                state: State::Committed,
                boot_id: boot_id.map(str::to_string),
            };
            self.install(&tmp, &info)?;
            Ok((info, value))
        })();
        if result.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        result
    }

    /// Unmounts what processes that are gone mounted under the root and removes their
    /// temporaries: what a killed process leaves behind. Mounts and temporaries of other live
    /// processes (strata commands running at the same time) are left alone; this process's own
    /// count as leftovers, so run it at startup, before other work.
    pub fn cleanup(&self) -> Result<Cleanup, Error> {
        let mut report = Cleanup::default();
        // Another live process; this one's leftovers count as leftovers (see above).
        let alive = |name: &str| {
            name.split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && process_running(pid))
        };
        for mount in
            overlay::mounts_under(&self.root).map_err(io_err("reading mounts", &self.root))?
        {
            let live_view = mount.parent() == Some(&self.root.join("m"))
                && mount
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(alive);
            let live_step = mount.file_name() == Some("merged".as_ref())
                && mount
                    .parent()
                    .and_then(|dir| fs::read_to_string(dir.join("mount-pid")).ok())
                    .is_some_and(|pid| alive(&pid));
            if live_view || live_step {
                continue;
            }
            if overlay::unmount(&mount).is_ok() {
                report.unmounted.push(mount);
            }
        }
        for (dir, leftover_mount_points) in [("tmp", false), ("m", true)] {
            let path = self.root.join(dir);
            for name in fsutil::sorted_names(&path).map_err(io_err("listing", &path))? {
                let keep = name.to_str().is_some_and(alive);
                let entry = path.join(&name);
                if keep {
                    continue;
                }
                let removed = if leftover_mount_points {
                    fs::remove_dir(&entry)
                } else {
                    fsutil::remove_all(&entry)
                };
                if removed.is_ok() {
                    report.removed_temporaries.push(entry);
                }
            }
        }
        Ok(report)
    }
}

/// Applies a directory of additions onto a tree: like [`fsutil::copy_tree`], merging into
/// directories that exist and replacing anything else.
fn overlay_copy(src: &Path, dst: &Path) -> io::Result<()> {
    for name in fsutil::sorted_names(src)? {
        let (s, d) = (src.join(&name), dst.join(&name));
        let src_meta = fs::symlink_metadata(&s)?;
        match fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() && src_meta.is_dir() => {
                overlay_copy(&s, &d)?;
                fsutil::copy_metadata(&s, &d)?;
                continue;
            }
            Ok(_) => fsutil::remove_all(&d)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fsutil::copy_tree(&s, &d)?;
    }
    Ok(())
}

/// 12 hex digits of the directory's path digest: 13 bytes a layer in a legacy option string.
fn short_link_name(lower: &Path) -> String {
    let digest = sha256_digest(lower.as_os_str().as_encoded_bytes()).to_string();
    let hex = digest.split(':').nth(1).unwrap_or(&digest);
    hex.chars().take(12).collect()
}

fn info_text(info: &SnapshotInfo) -> String {
    let mut text = format!("state={}\n", info.state.name());
    if let Some(p) = &info.parent {
        text.push_str(&format!("parent={p}\n"));
    }
    if let Some(boot) = &info.boot_id {
        text.push_str(&format!("boot={boot}\n"));
    }
    text
}

fn write_info(dir: &Path, info: &SnapshotInfo) -> Result<(), Error> {
    write_info_file(&dir.join("info"), info)
}

/// Writes an info file. A durable snapshot's is synced before the snapshot appears, so after a
/// power loss an empty info file (what delayed allocation leaves of a file never written back)
/// can only be a volatile snapshot's, and reads as stale (see [`InfoText`]).
fn write_info_file(path: &Path, info: &SnapshotInfo) -> Result<(), Error> {
    let written = (|| {
        let mut file = fs::File::create(path)?;
        file.write_all(info_text(info).as_bytes())?;
        if info.boot_id.is_none() {
            file.sync_all()?;
        }
        Ok(())
    })();
    written.map_err(io_err("writing", path))
}

/// Syncs directory `dir`, so a durable snapshot's entry in it (a rename) survives a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Rewrites the info of a snapshot in place (write beside, rename over): readers see the old
/// or the new one, never a part.
fn replace_info(dir: &Path, info: &SnapshotInfo) -> Result<(), Error> {
    let (tmp, path) = (dir.join("info.new"), dir.join("info"));
    write_info_file(&tmp, info)?;
    fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp))?;
    if info.boot_id.is_none() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What an info file's text says of its snapshot.
enum InfoText {
    Trusted(SnapshotInfo),
    /// It may have lost files: volatile and of another boot, or its info empty (a volatile
    /// snapshot's info lost in a crash; a durable one's is synced).
    LostInCrash,
    Malformed,
}

fn read_info_text(id: &str, text: &str) -> InfoText {
    if text.is_empty() {
        return InfoText::LostInCrash;
    }
    match parse_info(id, text) {
        Some(info) if is_stale(info.boot_id.as_deref()) => InfoText::LostInCrash,
        Some(info) => InfoText::Trusted(info),
        None => InfoText::Malformed,
    }
}

fn parse_info(id: &str, text: &str) -> Option<SnapshotInfo> {
    let mut state = None;
    let mut parent = None;
    let mut boot_id = None;
    for line in text.lines() {
        match line.split_once('=')? {
            ("state", "active") => state = Some(State::Active),
            ("state", "committed") => state = Some(State::Committed),
            ("parent", p) => parent = Some(p.to_string()),
            ("boot", b) => boot_id = Some(b.to_string()),
            _ => return None,
        }
    }
    Some(SnapshotInfo {
        id: id.to_string(),
        parent,
        state: state?,
        boot_id,
    })
}

#[cfg(test)]
mod process_tests {
    use super::process_running;

    #[test]
    fn zombies_and_missing_pids_are_not_running() {
        assert!(process_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_running(child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!process_running(child.id()));
        child.wait().unwrap();
        assert!(!process_running(u32::MAX));
    }
}
