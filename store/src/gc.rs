//! Garbage collection: prune images, then delete every blob no image or root reaches, leftover
//! temporary files, and report snapshots nothing holds.
//!
//! Runs with `gc.lock` exclusive (no [`crate::Lease`] alive, so no command is between writing a
//! blob and referencing it) and `store.lock` held while marking and sweeping (no name changes).

use std::collections::HashSet;
use std::fs;
use std::io::Read;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use strata_codec::Digest;

use crate::content::MAX_JSON_SIZE;
use crate::error::{IoContext, Result};
use crate::layout::IndexEntry;
use crate::lock;
use crate::media::{self, Kind};
use crate::meta::{CACHE_HOLDER_PREFIX, SnapshotHolder, parse_digest};
use crate::store::Store;

/// Which images a collection removes before collecting blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImagePrune {
    /// None: only blobs no image references.
    #[default]
    None,
    /// Untagged images (`image prune`).
    Dangling,
    /// Every image no GC root (container, ...) holds (`image prune -a`).
    Unused,
}

/// What to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcOptions {
    pub images: ImagePrune,
    /// Drop the build cache's roots (holders starting with `cache:`) first.
    pub build_cache: bool,
}

/// What a collection removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Index entries removed (their names, if any, and targets).
    pub removed_images: Vec<IndexEntry>,
    pub deleted_blobs: Vec<Digest>,
    /// Bytes freed by deleted blobs and temporary files.
    pub reclaimed: u64,
    /// Snapshot ids deleted through the caller's callback.
    pub removed_snapshots: Vec<String>,
}

impl Store {
    /// Collects garbage, waiting for running leases to end. `delete_snapshot` is called for every
    /// recorded snapshot nothing holds any more (delete it through the snapshotter); the store
    /// forgets the ids for which it returns `Ok`.
    ///
    /// Must not be called while this process holds a [`crate::Lease`].
    pub fn gc(
        &self,
        options: &GcOptions,
        delete_snapshot: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<GcReport> {
        let _gc = lock::lock_exclusive(&self.gc_lock_path())?;
        self.gc_locked(options, delete_snapshot)
    }

    /// As [`Store::gc`], but returns `None` at once when a lease is running (the next collection
    /// will catch up). For cleaning up after `rmi` without waiting for builds.
    pub fn try_gc(
        &self,
        options: &GcOptions,
        delete_snapshot: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<Option<GcReport>> {
        match lock::try_lock_exclusive(&self.gc_lock_path())? {
            Some(_gc) => self.gc_locked(options, delete_snapshot).map(Some),
            None => Ok(None),
        }
    }

    fn gc_locked(
        &self,
        options: &GcOptions,
        delete_snapshot: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let candidates = {
            let mut locked = self.lock()?;
            if options.build_cache {
                locked.write_meta(|m| {
                    for (holder, _) in m.roots()? {
                        if holder.starts_with(CACHE_HOLDER_PREFIX) {
                            m.remove_roots(&holder)?;
                        }
                    }
                    Ok(())
                })?;
            }
            let roots = locked.read_meta(|m| m.roots())?;
            let mut entries = self.entries()?;
            let before = entries.len();
            let held: HashSet<&Digest> = roots
                .iter()
                .filter(|(h, _)| !h.starts_with(CACHE_HOLDER_PREFIX))
                .map(|(_, d)| d)
                .collect();
            let prune = |e: &IndexEntry| match options.images {
                ImagePrune::None => false,
                ImagePrune::Dangling => e.name.is_none(),
                ImagePrune::Unused => !held.contains(e.target.digest()),
            };
            let (removed, kept): (Vec<IndexEntry>, Vec<IndexEntry>) =
                entries.drain(..).partition(|e| prune(e));
            entries = kept;
            if entries.len() != before {
                locked.write_entries(&entries)?;
            }
            report.removed_images = removed;

            // Mark.
            let mut stack: Vec<(Digest, Option<MediaType>)> = entries
                .iter()
                .map(|e| {
                    (
                        e.target.digest().clone(),
                        Some(e.target.media_type().clone()),
                    )
                })
                .chain(roots.into_iter().map(|(_, d)| (d, None)))
                .collect();
            let mut live: HashSet<Digest> = HashSet::new();
            while let Some((digest, media_type)) = stack.pop() {
                if !live.insert(digest.clone()) || !self.has_blob(&digest) {
                    continue;
                }
                let recorded = locked.read_meta(|m| m.children(&digest))?;
                let children: Vec<(Digest, Option<MediaType>)> = match recorded {
                    Some(c) => c.into_iter().map(|d| (d, None)).collect(),
                    None => self
                        .children_from_blob(&digest, media_type.as_ref())
                        .into_iter()
                        .map(|d| (d.digest().clone(), Some(d.media_type().clone())))
                        .collect(),
                };
                stack.extend(children);
            }

            // Sweep blobs, then temporary files (no lease and no critical section is running).
            let blobs_dir = self.layout_dir().join("blobs").join("sha256");
            let mut doomed = Vec::new();
            for entry in
                fs::read_dir(&blobs_dir).ctx(|| format!("listing {}", blobs_dir.display()))?
            {
                let entry = entry.ctx(|| format!("listing {}", blobs_dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(digest) = parse_digest(&format!("sha256:{name}")) else {
                    continue;
                };
                if !live.contains(&digest) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(entry.path()).ctx(|| format!("deleting blob {digest}"))?;
                    report.reclaimed += size;
                    doomed.push(digest);
                }
            }
            let ingest = self.ingest_dir();
            for entry in fs::read_dir(&ingest).ctx(|| format!("listing {}", ingest.display()))? {
                let entry = entry.ctx(|| format!("listing {}", ingest.display()))?;
                report.reclaimed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .ctx(|| format!("deleting {}", entry.path().display()))?;
            }
            let unheld = locked.write_meta(|m| {
                for d in &doomed {
                    m.forget_blob(d)?;
                }
                let mut unheld = Vec::new();
                for s in m.snapshots()? {
                    let alive = m.snapshot_holders(&s)?.iter().any(|h| match h {
                        SnapshotHolder::Blob(d) => self.has_blob(d),
                        SnapshotHolder::Named(_) => true,
                    });
                    if !alive {
                        unheld.push(s);
                    }
                }
                Ok(unheld)
            })?;
            report.deleted_blobs = doomed;
            unheld
        };
        // The callback may refuse a snapshot while another one still stacks on it (the
        // snapshotter does), and the store does not know the chain order: go round again
        // while a pass removed something, so a whole unheld chain goes in one collection.
        let mut pending = candidates;
        loop {
            let before = pending.len();
            pending.retain(|s| match delete_snapshot(s) {
                Ok(()) => {
                    report.removed_snapshots.push(s.clone());
                    false
                }
                Err(_) => true,
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        if !report.removed_snapshots.is_empty() {
            self.write_meta(|m| {
                for s in &report.removed_snapshots {
                    m.forget_snapshot(s)?;
                }
                Ok(())
            })?;
        }
        Ok(report)
    }

    /// The descriptors in a manifest or index blob whose references were never recorded. A blob
    /// of unknown type is parsed only when it looks like JSON; anything unparsable has none.
    fn children_from_blob(
        &self,
        digest: &Digest,
        media_type: Option<&MediaType>,
    ) -> Vec<Descriptor> {
        let kind = media_type.map(media::kind);
        if kind == Some(Kind::Other) {
            return Vec::new();
        }
        let looks_like_json = self.open_blob(digest).is_ok_and(|mut r| {
            let mut first = [0u8; 1];
            r.read_exact(&mut first).is_ok() && first[0] == b'{'
        });
        if !looks_like_json
            || self.blob_size(digest).ok().flatten().unwrap_or(u64::MAX) > MAX_JSON_SIZE
        {
            return Vec::new();
        }
        let Ok(value) = self.read_json::<serde_json::Value>(digest) else {
            return Vec::new();
        };
        if value.get("manifests").is_some() {
            serde_json::from_value::<ImageIndex>(value)
                .map(|i| media::index_children(&i))
                .unwrap_or_default()
        } else if value.get("layers").is_some() {
            serde_json::from_value::<ImageManifest>(value)
                .map(|m| media::manifest_children(&m))
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}
