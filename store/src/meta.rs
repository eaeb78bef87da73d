//! Metadata the OCI layout cannot hold, in one redb database beside it (`ROOT/metadata.redb`):
//! layer blobs by diffID, references between blobs, GC roots held by other subsystems (build
//! cache, containers), and snapshot holds.
//!
//! redb lets one process at a time open the file, so the store never keeps it open: each
//! [`crate::Store::read_meta`] / [`crate::Store::write_meta`] call takes the store lock, opens the
//! database, runs one transaction and closes it again. Other crates keep their own tables in the
//! same database through [`MetaWrite::transaction`] / [`MetaRead::transaction`] (prefix table
//! names with the crate, e.g. `builder.cache_keys`); the closures must stay short and must not
//! call back into the store.

use redb::{
    MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition,
};
use strata_codec::Digest;

use crate::error::{Result, StoreError};

type LayerValue = (&'static str, &'static str, u64, Option<u64>);

/// compressed digest -> (diffID, media type, size, uncompressed size)
const LAYERS: TableDefinition<&str, LayerValue> = TableDefinition::new("store.layers");
/// diffID -> compressed digests
const DIFF_IDS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("store.diff_ids");
/// parent blob digest -> child blob digests (manifest -> config and layers; index -> manifests)
const REFS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("store.refs");
/// holder -> blob digests it keeps alive
const ROOTS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("store.roots");
/// snapshot id -> holders
const SNAPSHOT_HOLDS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("store.snapshot_holds");
/// snapshot ids the store knows of
const SNAPSHOTS: TableDefinition<&str, ()> = TableDefinition::new("store.snapshots");

/// Holder prefix for build-cache roots; `strata system prune` drops these.
pub const CACHE_HOLDER_PREFIX: &str = "cache:";

/// One stored layer blob: its compressed digest and what it decompresses to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// The blob's digest (of the bytes as stored, compressed or not).
    pub digest: Digest,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
    /// The uncompressed tar's size, when known.
    pub uncompressed_size: Option<u64>,
}

/// What keeps a snapshot alive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SnapshotHolder {
    /// Held while this blob is in the store (e.g. the layer the snapshot was unpacked from);
    /// released automatically when garbage collection deletes the blob.
    Blob(Digest),
    /// Held until released explicitly (a container, a build-cache entry, ...).
    Named(String),
}

impl SnapshotHolder {
    fn encode(&self) -> String {
        match self {
            SnapshotHolder::Blob(d) => format!("blob:{d}"),
            SnapshotHolder::Named(n) => format!("name:{n}"),
        }
    }

    fn decode(s: &str) -> Result<SnapshotHolder> {
        if let Some(d) = s.strip_prefix("blob:") {
            return Ok(SnapshotHolder::Blob(parse_digest(d)?));
        }
        match s.strip_prefix("name:") {
            Some(n) => Ok(SnapshotHolder::Named(n.to_string())),
            None => Err(StoreError::Invalid(format!(
                "bad snapshot holder {s:?} in metadata"
            ))),
        }
    }
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e| StoreError::Invalid(format!("bad digest {s:?}: {e}")))
}

/// A read-only metadata transaction.
pub struct MetaRead<'a> {
    pub(crate) txn: &'a redb::ReadTransaction,
}

/// A read-write metadata transaction; committed when the closure returns `Ok`.
pub struct MetaWrite<'a> {
    pub(crate) txn: &'a redb::WriteTransaction,
}

impl MetaRead<'_> {
    /// The redb transaction, for tables other crates define in the same database.
    pub fn transaction(&self) -> &redb::ReadTransaction {
        self.txn
    }
}

macro_rules! impl_reads {
    ($t:ident) => {
        impl $t<'_> {
            /// What is recorded about a layer blob.
            pub fn layer(&self, digest: &Digest) -> Result<Option<LayerRecord>> {
                let table = self.txn.open_table(LAYERS)?;
                let Some(v) = table.get(digest.as_ref())? else {
                    return Ok(None);
                };
                let (diff_id, media_type, size, uncompressed_size) = v.value();
                Ok(Some(LayerRecord {
                    digest: digest.clone(),
                    diff_id: parse_digest(diff_id)?,
                    media_type: media_type.to_string(),
                    size,
                    uncompressed_size,
                }))
            }

            /// Every recorded blob whose uncompressed content is `diff_id` (one per compression).
            /// Check [`crate::Store::has_blob`] before relying on one: records outlive nothing,
            /// but a caller may race with garbage collection outside a lease.
            pub fn layers_for_diff_id(&self, diff_id: &Digest) -> Result<Vec<LayerRecord>> {
                let digests: Vec<String> = {
                    let table = self.txn.open_multimap_table(DIFF_IDS)?;
                    let mut out = Vec::new();
                    for v in table.get(diff_id.as_ref())? {
                        out.push(v?.value().to_string());
                    }
                    out
                };
                let mut records = Vec::new();
                for d in digests {
                    if let Some(r) = self.layer(&parse_digest(&d)?)? {
                        records.push(r);
                    }
                }
                Ok(records)
            }

            /// The blobs `parent` references, as recorded when it was stored.
            pub fn children(&self, parent: &Digest) -> Result<Option<Vec<Digest>>> {
                let table = self.txn.open_multimap_table(REFS)?;
                let mut out = Vec::new();
                for v in table.get(parent.as_ref())? {
                    out.push(parse_digest(v?.value())?);
                }
                // The parent itself is recorded as its own child, so "no children" and "never
                // recorded" differ.
                if out.is_empty() {
                    return Ok(None);
                }
                out.retain(|d| d != parent);
                Ok(Some(out))
            }

            /// Every (holder, blob) GC root.
            pub fn roots(&self) -> Result<Vec<(String, Digest)>> {
                let table = self.txn.open_multimap_table(ROOTS)?;
                let mut out = Vec::new();
                for entry in table.iter()? {
                    let (k, values) = entry?;
                    for v in values {
                        out.push((k.value().to_string(), parse_digest(v?.value())?));
                    }
                }
                Ok(out)
            }

            /// Who holds a snapshot; empty when nothing does (or it is unknown).
            pub fn snapshot_holders(&self, snapshot: &str) -> Result<Vec<SnapshotHolder>> {
                let table = self.txn.open_multimap_table(SNAPSHOT_HOLDS)?;
                let mut out = Vec::new();
                for v in table.get(snapshot)? {
                    out.push(SnapshotHolder::decode(v?.value())?);
                }
                Ok(out)
            }

            /// Every snapshot id recorded.
            pub fn snapshots(&self) -> Result<Vec<String>> {
                let table = self.txn.open_table(SNAPSHOTS)?;
                let mut out = Vec::new();
                for entry in table.iter()? {
                    out.push(entry?.0.value().to_string());
                }
                Ok(out)
            }
        }
    };
}

impl_reads!(MetaRead);
impl_reads!(MetaWrite);

impl MetaWrite<'_> {
    /// The redb transaction, for tables other crates define in the same database.
    pub fn transaction(&self) -> &redb::WriteTransaction {
        self.txn
    }

    /// Records a layer blob and its diffID, so "do I have a blob for this diffID?" is one lookup.
    pub fn record_layer(&self, layer: &LayerRecord) -> Result<()> {
        self.txn.open_table(LAYERS)?.insert(
            layer.digest.as_ref(),
            (
                layer.diff_id.as_ref(),
                layer.media_type.as_str(),
                layer.size,
                layer.uncompressed_size,
            ),
        )?;
        self.txn
            .open_multimap_table(DIFF_IDS)?
            .insert(layer.diff_id.as_ref(), layer.digest.as_ref())?;
        Ok(())
    }

    /// Records that `parent` references `children` (replacing what was recorded).
    pub fn set_children(&self, parent: &Digest, children: &[Digest]) -> Result<()> {
        let mut table = self.txn.open_multimap_table(REFS)?;
        table.remove_all(parent.as_ref())?;
        table.insert(parent.as_ref(), parent.as_ref())?;
        for c in children {
            table.insert(parent.as_ref(), c.as_ref())?;
        }
        Ok(())
    }

    /// Keeps `digest` (and everything it references) from garbage collection on behalf of
    /// `holder` (e.g. `cache:<key>`, `container:<id>`).
    pub fn add_root(&self, holder: &str, digest: &Digest) -> Result<()> {
        self.txn
            .open_multimap_table(ROOTS)?
            .insert(holder, digest.as_ref())?;
        Ok(())
    }

    /// Drops one root of `holder`.
    pub fn remove_root(&self, holder: &str, digest: &Digest) -> Result<()> {
        self.txn
            .open_multimap_table(ROOTS)?
            .remove(holder, digest.as_ref())?;
        Ok(())
    }

    /// Drops every root of `holder`.
    pub fn remove_roots(&self, holder: &str) -> Result<()> {
        self.txn.open_multimap_table(ROOTS)?.remove_all(holder)?;
        Ok(())
    }

    /// Records that `holder` keeps snapshot `snapshot` (a snapshotter id) alive.
    pub fn hold_snapshot(&self, snapshot: &str, holder: &SnapshotHolder) -> Result<()> {
        self.txn.open_table(SNAPSHOTS)?.insert(snapshot, ())?;
        self.txn
            .open_multimap_table(SNAPSHOT_HOLDS)?
            .insert(snapshot, holder.encode().as_str())?;
        Ok(())
    }

    /// Drops one hold; the snapshot is collected by the next garbage collection when none is left.
    pub fn release_snapshot(&self, snapshot: &str, holder: &SnapshotHolder) -> Result<()> {
        self.txn
            .open_multimap_table(SNAPSHOT_HOLDS)?
            .remove(snapshot, holder.encode().as_str())?;
        Ok(())
    }

    pub(crate) fn forget_blob(&self, digest: &Digest) -> Result<()> {
        let mut layers = self.txn.open_table(LAYERS)?;
        let removed = layers
            .remove(digest.as_ref())?
            .map(|v| v.value().0.to_string());
        if let Some(diff_id) = removed {
            self.txn
                .open_multimap_table(DIFF_IDS)?
                .remove(diff_id.as_str(), digest.as_ref())?;
        }
        self.txn
            .open_multimap_table(REFS)?
            .remove_all(digest.as_ref())?;
        let holder = SnapshotHolder::Blob(digest.clone()).encode();
        let held: Vec<String> = {
            let holds = self.txn.open_multimap_table(SNAPSHOT_HOLDS)?;
            let mut out = Vec::new();
            for entry in holds.iter()? {
                let (k, values) = entry?;
                for v in values {
                    if v?.value() == holder {
                        out.push(k.value().to_string());
                    }
                }
            }
            out
        };
        let mut holds = self.txn.open_multimap_table(SNAPSHOT_HOLDS)?;
        for s in held {
            holds.remove(s.as_str(), holder.as_str())?;
        }
        Ok(())
    }

    pub(crate) fn forget_snapshot(&self, snapshot: &str) -> Result<()> {
        self.txn.open_table(SNAPSHOTS)?.remove(snapshot)?;
        self.txn
            .open_multimap_table(SNAPSHOT_HOLDS)?
            .remove_all(snapshot)?;
        Ok(())
    }

    /// Creates every table of the store, so read transactions find them.
    pub(crate) fn create_tables(&self) -> Result<()> {
        self.txn.open_table(LAYERS)?;
        self.txn.open_table(SNAPSHOTS)?;
        for t in [DIFF_IDS, REFS, ROOTS, SNAPSHOT_HOLDS] {
            self.txn.open_multimap_table(t)?;
        }
        Ok(())
    }
}

/// Opens the database at `path` (creating it) for one critical section. The caller holds the
/// store lock, so no other process has the file open.
pub(crate) fn open_database(path: &std::path::Path) -> Result<redb::Database> {
    Ok(redb::Database::builder().create(path)?)
}

pub(crate) fn read<T>(
    db: &impl ReadableDatabase,
    f: impl FnOnce(&MetaRead<'_>) -> Result<T>,
) -> Result<T> {
    let txn = db.begin_read()?;
    f(&MetaRead { txn: &txn })
}

pub(crate) fn write<T>(
    db: &redb::Database,
    f: impl FnOnce(&MetaWrite<'_>) -> Result<T>,
) -> Result<T> {
    let mut txn = db.begin_write()?;
    // Commits record the allocator state, so the open after a killed process needs no full repair.
    txn.set_quick_repair(true);
    let value = f(&MetaWrite { txn: &txn })?;
    txn.commit()?;
    Ok(value)
}
