//! Small file helpers: atomic JSON files, flock-based locks, timestamps.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result, io_err};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Writes `value` as JSON to `path` through a temporary file in the same directory, fsynced and
/// renamed over it: readers see the old or the new file, never a part.
pub(crate) fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io_err("writing", path))
}

/// Reads a JSON file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Io {
        context: "parsing",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// An flock held until dropped (or until the process ends, whatever ends it).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("opening lock", path))
}

/// Takes an flock, waiting for it.
pub(crate) fn lock(path: &Path, exclusive: bool) -> Result<FileLock> {
    let file = open_lock_file(path)?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    loop {
        match rustix::fs::flock(file.as_fd(), op) {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("locking", path)(e.into())),
        }
    }
}

/// Takes an flock if nobody holds a conflicting one; `None` otherwise.
pub(crate) fn try_lock(path: &Path, exclusive: bool) -> Result<Option<FileLock>> {
    let file = open_lock_file(path)?;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(file.as_fd(), op) {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io_err("locking", path)(e.into())),
    }
}

/// Now, as Docker writes times: RFC 3339 in UTC with nanoseconds.
pub fn now() -> String {
    format_time(OffsetDateTime::now_utc())
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| ZERO_TIME.to_string())
}

/// Go's zero time, which Docker shows for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Parses a time written by [`now`].
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Whether a directory has no entries (a missing one counts as empty).
pub(crate) fn is_empty_dir(path: &Path) -> io::Result<bool> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}
