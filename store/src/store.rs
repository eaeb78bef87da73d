//! The store handle: paths, locks, blobs and metadata transactions.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_codec::Digest;

use crate::content::{
    self, BlobInfo, BlobReader, BlobWriter, MAX_JSON_SIZE, canonical_json, parse_json,
};
use crate::error::{IoContext, Result, StoreError};
use crate::layout::{IndexEntry, entries_from_index, index_from_entries};
use crate::lock::{self, Lease};
use crate::meta::{self, LayerRecord, MetaRead, MetaWrite};

/// The store's root when `$STRATA_ROOT` is not set: `/var/lib/strata` for root,
/// `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`) for everyone else.
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os("STRATA_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(data).join("strata");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/strata")
}

/// The local image store at one root directory.
///
/// Layout under the root:
/// - `oci/`: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) that skopeo
///   (`oci:ROOT/oci:NAME`) and umoci read as is;
/// - `metadata.redb`: what the layout cannot hold (see [`crate::meta`]);
/// - `ingest/`: temporary files of writes in progress, renamed into place when complete;
/// - `store.lock`, `gc.lock`: see [`crate::lock`].
///
/// A `Store` is cheap and holds nothing open: every operation takes the locks it needs for as
/// long as it needs them, so any number of strata processes may use one root at once.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A critical section under `store.lock`, with the database opened on first use.
pub(crate) struct Locked<'a> {
    store: &'a Store,
    // Declared before the lock so it is closed before the lock is released.
    db: Option<redb::Database>,
    _lock: fs::File,
}

impl Locked<'_> {
    pub(crate) fn db(&mut self) -> Result<&redb::Database> {
        if self.db.is_none() {
            self.db = Some(meta::open_database(&self.store.db_path())?);
        }
        match &self.db {
            Some(db) => Ok(db),
            None => unreachable!("database opened just above"),
        }
    }

    /// Reads open the file read-only (tens of microseconds, where a writable open and close
    /// costs tens of milliseconds of fsyncs); only a file that needs repair is opened writable.
    pub(crate) fn read_meta<T>(&mut self, f: impl FnOnce(&MetaRead<'_>) -> Result<T>) -> Result<T> {
        if let Some(db) = &self.db {
            return meta::read(db, f);
        }
        match redb::Database::builder().open_read_only(self.store.db_path()) {
            Ok(db) => meta::read(&db, f),
            Err(redb::DatabaseError::RepairAborted) => meta::read(self.db()?, f),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn write_meta<T>(
        &mut self,
        f: impl FnOnce(&MetaWrite<'_>) -> Result<T>,
    ) -> Result<T> {
        meta::write(self.db()?, f)
    }

    /// Replaces `index.json` atomically (temp file, fsync, rename).
    pub(crate) fn write_entries(&self, entries: &[IndexEntry]) -> Result<()> {
        let index = index_from_entries(entries, true)?;
        self.store
            .write_file_atomic(&self.store.index_path(), &canonical_json(&index)?)
    }

    pub(crate) fn store(&self) -> &Store {
        self.store
    }
}

impl Store {
    /// Opens (creating when needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        for dir in [store.blobs_dir().join("sha256"), store.ingest_dir()] {
            fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let layout_file = store.layout_dir().join("oci-layout");
        let index = store.index_path();
        let fresh_db = !store.db_path().exists();
        if !layout_file.exists() || !index.exists() || fresh_db {
            let mut locked = store.lock()?;
            if !layout_file.exists() {
                store.write_file_atomic(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            }
            if !index.exists() {
                locked.write_entries(&[])?;
            }
            if fresh_db {
                locked.write_meta(|m| m.create_tables())?;
            }
        }
        Ok(store)
    }

    /// Opens the store at [`default_root`].
    pub fn open_default() -> Result<Store> {
        Store::open(default_root())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (`ROOT/oci`).
    pub fn layout_dir(&self) -> PathBuf {
        self.root.join("oci")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.layout_dir().join("blobs")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.layout_dir().join("index.json")
    }

    fn db_path(&self) -> PathBuf {
        self.root.join("metadata.redb")
    }

    pub(crate) fn gc_lock_path(&self) -> PathBuf {
        self.root.join("gc.lock")
    }

    /// Takes `store.lock` for one critical section.
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        let lock = lock::lock_exclusive(&self.root.join("store.lock"))?;
        Ok(Locked {
            store: self,
            db: None,
            _lock: lock,
        })
    }

    /// Starts a lease: garbage collection waits until it (and every clone) is dropped.
    pub fn lease(&self) -> Result<Lease> {
        Lease::acquire(&self.gc_lock_path())
    }

    pub(crate) fn write_file_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix("file-")
            .tempfile_in(self.ingest_dir())
            .ctx(|| format!("creating a temporary file for {}", dest.display()))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_all())
            .ctx(|| format!("writing {}", dest.display()))?;
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .ctx(|| format!("writing {}", dest.display()))?;
        temp.persist(dest)
            .map_err(|e| e.error)
            .ctx(|| format!("replacing {}", dest.display()))?;
        content::sync_dir(dest.parent().unwrap_or(&self.root))
    }

    // ---- blobs ----

    /// A writer for a new blob whose digest is computed as it is written.
    pub fn blob_writer(&self, lease: &Lease) -> Result<BlobWriter> {
        BlobWriter::new(&self.ingest_dir(), self.blobs_dir(), lease, None, None)
    }

    /// A writer for a blob that must turn out to have `digest` (and `size`, when given): commit
    /// fails otherwise, and writing past `size` fails at once.
    pub fn blob_writer_expecting(
        &self,
        lease: &Lease,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<BlobWriter> {
        BlobWriter::new(
            &self.ingest_dir(),
            self.blobs_dir(),
            lease,
            Some(digest.clone()),
            size,
        )
    }

    /// Stores `bytes` as a blob.
    pub fn put_blob(&self, lease: &Lease, bytes: &[u8]) -> Result<BlobInfo> {
        let mut w = self.blob_writer(lease)?;
        w.write_all(bytes).ctx(|| "writing a blob".into())?;
        w.commit()
    }

    /// Stores `value` as canonical JSON (sorted keys, no whitespace) and returns its descriptor.
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        lease: &Lease,
        media_type: MediaType,
        value: &T,
    ) -> Result<Descriptor> {
        let bytes = canonical_json(value)?;
        Ok(self.put_blob(lease, &bytes)?.descriptor(media_type))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where a blob lives, for readers that need a file (e.g. to hand to another process).
    /// Reading it this way is not verified; prefer [`Store::open_blob`].
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        content::blob_path_in(&self.blobs_dir(), digest)
    }

    /// A blob's size, `None` when it is not in the store.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("reading the size of blob {digest}")),
        }
    }

    /// Opens a blob for reading, verified against its digest as it streams.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        content::open_blob_at(&self.blob_path(digest), digest, None)
    }

    /// Reads a whole (small) blob, verified; at most [`MAX_JSON_SIZE`] bytes.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        content::read_verified(self.open_blob(digest)?, digest, MAX_JSON_SIZE)
    }

    /// Reads and parses a JSON blob (manifest, index, config), verified.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        parse_json(&self.read_blob(digest)?, &format!("blob {digest}"))
    }

    // ---- metadata ----

    /// Runs `f` in one read transaction of the metadata database.
    pub fn read_meta<T>(&self, f: impl FnOnce(&MetaRead<'_>) -> Result<T>) -> Result<T> {
        self.lock()?.read_meta(f)
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`.
    pub fn write_meta<T>(&self, f: impl FnOnce(&MetaWrite<'_>) -> Result<T>) -> Result<T> {
        self.lock()?.write_meta(f)
    }

    /// Records a layer blob (diffID, media type, sizes); see [`MetaWrite::record_layer`].
    pub fn record_layer(&self, layer: &LayerRecord) -> Result<()> {
        self.write_meta(|m| m.record_layer(layer))
    }

    /// The stored blobs whose uncompressed content is `diff_id` and that are present.
    pub fn layers_for_diff_id(&self, diff_id: &Digest) -> Result<Vec<LayerRecord>> {
        let mut records = self.read_meta(|m| m.layers_for_diff_id(diff_id))?;
        records.retain(|r| self.has_blob(&r.digest));
        Ok(records)
    }

    // ---- the index ----

    /// The images of the store as `index.json` lists them (aliases left out).
    pub fn entries(&self) -> Result<Vec<IndexEntry>> {
        let path = self.index_path();
        let bytes = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        let index: ImageIndex = parse_json(&bytes, "index.json")?;
        Ok(entries_from_index(&index))
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}
