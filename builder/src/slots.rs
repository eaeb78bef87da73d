//! Directories of the store that builds hold while they use them and `strata builder prune`
//! removes when nobody does: RUN cache mounts (`cache-mounts/<sha256 of the id>`) and ADD's
//! downloads (`builder-downloads/<sha256 of the URL>`).
//!
//! Each slot has a `lock` file. A build holds a flock on it while it uses the slot; prune takes
//! it exclusively without waiting, skips the slots it cannot lock, and removes the others whole.
//! A build that locked a slot just as prune removed it holds a lock on a deleted file, which
//! protects nothing: [`was_pruned`] tells, and the build opens the slot again.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

/// Opens (making the slot on first use) the `lock` file of slot `dir`, not locked yet.
pub(crate) fn open_lock(dir: &Path) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
}

/// Whether prune removed the slot whose `lock` this is (after it was opened).
pub(crate) fn was_pruned(lock: &File) -> bool {
    lock.metadata().is_ok_and(|m| m.nlink() == 0)
}

/// Opens slot `dir` and locks it as `op` says (waiting for it), on a slot prune has not
/// removed; the lock lasts until the returned file is dropped.
pub(crate) fn hold(dir: &Path, op: FlockOperation) -> io::Result<File> {
    loop {
        let lock = open_lock(dir)?;
        flock(&lock, op)?;
        if !was_pruned(&lock) {
            return Ok(lock);
        }
    }
}

/// What [`prune`] did to the slots of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotPrune {
    /// What each removed slot held (a cache mount's id, a download's URL).
    pub removed: Vec<String>,
    /// Bytes their files took.
    pub reclaimed: u64,
    /// Slots kept because a build holds them.
    pub in_use: usize,
}

/// Removes every slot under `base` that no build holds; `label` names a slot for the report.
pub(crate) fn prune(base: &Path, label: impl Fn(&Path) -> String) -> io::Result<SlotPrune> {
    let mut report = SlotPrune::default();
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        let lock = open_lock(&dir)?;
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            report.in_use += 1;
            continue;
        }
        let name = label(&dir);
        report.reclaimed += disk_usage(&dir);
        fs::remove_dir_all(&dir)?;
        report.removed.push(name);
    }
    Ok(report)
}

/// Bytes of disk the files under `path` take (allocated blocks, as BuildKit sizes its cache;
/// Docker sizes volumes and containers by file sizes: `strata_containers::volumes::data_size`).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = fs::read_dir(path)
    {
        total += entries
            .flatten()
            .map(|e| disk_usage(&e.path()))
            .sum::<u64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_is_kept_a_free_one_removed_and_a_pruned_lock_is_noticed() {
        let base = tempfile::tempdir().unwrap();
        let (held, free) = (base.path().join("held"), base.path().join("free"));
        let held_lock = hold(&held, FlockOperation::LockShared).unwrap();
        fs::write(held.join("data"), b"kept").unwrap();
        let stale = open_lock(&free).unwrap();
        fs::write(free.join("data"), vec![7u8; 10_000]).unwrap();

        let report = prune(base.path(), |d| {
            d.file_name().unwrap().to_string_lossy().into()
        })
        .unwrap();
        assert_eq!(report.removed, ["free"]);
        assert_eq!(report.in_use, 1);
        assert!(report.reclaimed >= 10_000, "{report:?}");
        assert!(held.join("data").exists() && !free.exists());
        assert!(!was_pruned(&held_lock));
        assert!(
            was_pruned(&stale),
            "a lock opened before prune removed its slot"
        );

        // A holder that comes after prune gets a new slot.
        drop(stale);
        let again = hold(&free, FlockOperation::LockShared).unwrap();
        assert!(!was_pruned(&again) && free.join("lock").exists());
    }
}
