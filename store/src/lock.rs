//! File locks (flock) that serialise the store's processes and threads.
//!
//! Two locks, always taken in this order:
//! - `gc.lock`: shared by every [`Lease`] (a command that writes blobs not yet named), exclusive for
//!   garbage collection, so collection never deletes a blob that a running command is about to
//!   reference. A killed process's lock goes with it.
//! - `store.lock`: exclusive around every short metadata critical section: an `index.json` rewrite
//!   and/or one redb transaction.
//!
//! flock locks belong to open file descriptions, so two threads of one process exclude each other
//! as two processes do.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use crate::error::{IoContext, Result};

pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx(|| format!("opening lock file {}", path.display()))
}

pub(crate) fn lock_exclusive(path: &Path) -> Result<File> {
    let file = open_lock_file(path)?;
    file.lock().ctx(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Takes the lock exclusively if no one holds it; `None` when someone does.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<File>> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).ctx(|| format!("locking {}", path.display()))
        }
    }
}

/// Keeps garbage collection from running while held: take one for the whole of an operation that
/// writes blobs and then references them (a build, an import, a pull, a load), and for reads that
/// must not see blobs vanish (a save). Cloning shares the same lease; it ends when the last clone
/// drops.
///
/// Never run garbage collection from a thread of a process that holds a lease: it would wait for
/// itself.
#[derive(Clone)]
pub struct Lease {
    _file: Arc<File>,
}

impl Lease {
    pub(crate) fn acquire(path: &Path) -> Result<Lease> {
        let file = open_lock_file(path)?;
        file.lock_shared()
            .ctx(|| format!("taking a shared lock on {}", path.display()))?;
        Ok(Lease {
            _file: Arc::new(file),
        })
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}
