//! Layers and the snapshots they are unpacked into.
//!
//! A committed snapshot holds one layer on top of its parent and is named after the layer
//! chain's OCI ChainID ([`strata_snapshotter::chain_snapshot_id`]), so the same layers stacked
//! the same way are one snapshot for every build, every image and `strata run`. Snapshots are made lazily: a base
//! image is unpacked only when a step needs its files, and each snapshot is held by its layer
//! blob (`SnapshotHolder::Blob`), so garbage collection drops it with the blob.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use strata_snapshotter::{LayerOptions, Snapshotter, chain_ids, chain_snapshot_id};
use strata_store::{BlobWriter, Digest, Image, LayerRecord, Lease, SnapshotHolder, Store};

use crate::error::{BuildError, Result};

/// A layer of an image: what its manifest and config say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The blob digest (`sha256:...`).
    pub digest: String,
    /// The digest of the uncompressed tar.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

impl Layer {
    /// The layers of a stored image, base first.
    pub fn of_image(image: &Image) -> Result<Vec<Layer>> {
        let diff_ids = image.diff_ids();
        let layers = image.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(BuildError::Store(strata_store::StoreError::Invalid(
                format!(
                    "image {} lists {} diff_ids for {} layers",
                    image.id(),
                    diff_ids.len(),
                    layers.len()
                ),
            )));
        }
        Ok(layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| Layer {
                digest: l.digest().to_string(),
                diff_id: d.clone(),
                media_type: l.media_type().to_string(),
                size: l.size(),
            })
            .collect())
    }

    pub(crate) fn parsed_digest(&self) -> Result<Digest> {
        parse_digest(&self.digest)
    }

    pub(crate) fn descriptor(&self) -> Result<oci_spec::image::Descriptor> {
        Ok(oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::from(self.media_type.as_str()),
            self.size,
            self.parsed_digest()?,
        ))
    }
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|e| {
        BuildError::Store(strata_store::StoreError::Invalid(format!(
            "bad digest {s:?}: {e}"
        )))
    })
}

/// The snapshot id for the top of a stack of layers (`None` for no layers, or a bad diffID).
pub fn snapshot_id(layers: &[Layer]) -> Option<String> {
    let diff_ids = layers
        .iter()
        .map(|l| l.diff_id.parse::<Digest>().ok())
        .collect::<Option<Vec<_>>>()?;
    chain_ids(&diff_ids).last().map(chain_snapshot_id)
}

/// Metadata a build collects and writes in one transaction at its end.
#[derive(Default)]
pub(crate) struct Pending {
    pub holds: Vec<(String, SnapshotHolder)>,
    pub layers: Vec<LayerRecord>,
}

/// Layer blobs being committed (fsync, rename into place, fsync of the directory) on background
/// threads, so a step's layer becomes durable while the next step runs instead of before it
/// starts. Nothing needs the blob file during the build (the step's snapshot is committed at
/// once, and its digest is known from the writing), and [`BlobCommits::wait`] runs before
/// anything naming a blob (cache records, GC holds, the image) is written: the store's order,
/// blob durable before any reference to it, is kept.
#[derive(Default)]
pub(crate) struct BlobCommits {
    running: Mutex<
        Vec<(
            Digest,
            JoinHandle<strata_store::Result<strata_store::BlobInfo>>,
        )>,
    >,
}

impl BlobCommits {
    fn start(&self, writer: BlobWriter, digest: Digest) -> Result<()> {
        let handle = std::thread::Builder::new()
            .name("blob-commit".into())
            .spawn(move || writer.commit())
            .map_err(|e| {
                BuildError::Store(strata_store::StoreError::Io {
                    context: "starting a blob commit".into(),
                    source: e,
                })
            })?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.push((digest, handle));
        Ok(())
    }

    /// Waits for every commit started so far; the first that failed is the error.
    pub(crate) fn wait(&self) -> Result<()> {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first_error = None;
        for (digest, handle) in running {
            let outcome = match handle.join() {
                Ok(Ok(info)) if info.digest == digest => Ok(()),
                Ok(Ok(info)) => Err(BuildError::Store(strata_store::StoreError::Invalid(
                    format!(
                        "layer blob written as {digest} was committed as {}",
                        info.digest
                    ),
                ))),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(BuildError::Cancelled),
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

static ACTIVE: AtomicU64 = AtomicU64::new(0);

/// Prefix of the ids of snapshots a step is writing (`build-<pid>-<n>`).
pub(crate) const ACTIVE_PREFIX: &str = "build-";

/// A fresh id for an active snapshot of this process.
pub(crate) fn active_id() -> String {
    format!(
        "{ACTIVE_PREFIX}{}-{}",
        std::process::id(),
        ACTIVE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes active snapshots that processes which are gone left behind.
pub(crate) fn remove_stale_actives(snapshotter: &Snapshotter) {
    let Ok(list) = snapshotter.list() else { return };
    for s in list {
        let Some(rest) = s.id.strip_prefix(ACTIVE_PREFIX) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = snapshotter.remove(&s.id);
        }
    }
}

/// Unpacks layers into snapshots on demand and writes new layers to the store.
pub(crate) struct LayerStore<'a> {
    pub store: &'a Store,
    pub snapshotter: &'a Snapshotter,
    pub lease: &'a Lease,
    pub options: LayerOptions,
    pub pending: &'a Mutex<Pending>,
    /// One unpacking at a time in this process: stages sharing a base wait for each other
    /// instead of unpacking it twice.
    pub unpacking: &'a Mutex<()>,
    /// Where layers of imported cache hits are fetched from when their files are needed.
    pub import: &'a crate::remote_cache::CacheImport,
    /// The commits of the layer blobs this build wrote.
    pub commits: &'a BlobCommits,
}

impl LayerStore<'_> {
    /// Makes sure the snapshot of `layers` (and of each prefix) exists, unpacking missing layers
    /// from their blobs; returns its id (`None` for no layers). Every snapshot of the stack is
    /// checked, not only the top: a step's snapshot from an earlier boot reads as absent (it is
    /// volatile, see `Snapshotter::prepare_volatile`) while the snapshots on top of it remain,
    /// and it is made again from its blob under the same id, which makes them whole again.
    pub fn ensure_snapshot(&self, layers: &[Layer]) -> Result<Option<String>> {
        let Some(ids) = (1..=layers.len())
            .map(|n| snapshot_id(&layers[..n]))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let Some(top) = ids.last().cloned() else {
            return Ok(None);
        };
        let present = |id: &String| self.snapshotter.info(id).is_ok();
        if ids.iter().all(present) {
            return Ok(Some(top));
        }
        let _guard = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
        // A layer this build wrote may still be on its way into the store.
        self.commits.wait()?;
        for (n, (layer, id)) in layers.iter().zip(&ids).enumerate() {
            if present(id) {
                continue;
            }
            let parent = n.checked_sub(1).map(|below| ids[below].as_str());
            let digest = layer.parsed_digest()?;
            let diff_id = parse_digest(&layer.diff_id)?;
            self.fetch(layer)?;
            self.snapshotter.ensure_layer(id, parent, &diff_id, || {
                self.store
                    .open_blob(&digest)
                    .map_err(|e| strata_snapshotter::Error::Read(std::io::Error::other(e)))
            })?;
            self.hold(id, digest);
        }
        Ok(Some(top))
    }

    /// Makes sure the blob of `layer` is here (an imported hit's may not be yet).
    pub fn fetch(&self, layer: &Layer) -> Result<()> {
        if let Some(record) = self.import.ensure_blob(self.store, self.lease, layer)? {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.layers.push(record);
        }
        Ok(())
    }

    fn hold(&self, snapshot: &str, blob: Digest) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.holds
            .push((snapshot.to_string(), SnapshotHolder::Blob(blob)));
    }

    /// Writes active snapshot `active` (on top of `parent_layers`) as a layer blob, then, once
    /// `released` returns (the snapshot's mount is gone), commits it as the snapshot of the new
    /// stack. Returns the new layer; its blob is committed in the background ([`BlobCommits`]).
    pub fn commit_active(
        &self,
        active: &str,
        parent_layers: &[Layer],
        released: impl FnOnce() -> Result<()>,
    ) -> Result<Layer> {
        let mut writer = self.store.blob_writer(self.lease)?;
        let desc = self
            .snapshotter
            .write_layer(active, &self.options, &mut writer)?;
        let info = strata_store::BlobInfo {
            digest: desc.digest.clone(),
            size: desc.size,
        };
        self.commits.start(writer, desc.digest.clone())?;
        let media_type = desc
            .compression
            .oci_layer_media_type()
            .unwrap_or("application/vnd.oci.image.layer.v1.tar")
            .to_string();
        let layer = Layer {
            digest: info.digest.to_string(),
            diff_id: desc.diff_id.to_string(),
            media_type: media_type.clone(),
            size: info.size,
        };
        let mut stack = parent_layers.to_vec();
        stack.push(layer.clone());
        let id = snapshot_id(&stack).unwrap_or_default();
        released()?;
        match self.snapshotter.commit(active, &id) {
            Ok(_) => {}
            Err(strata_snapshotter::Error::AlreadyExists(_)) => {
                let _ = self.snapshotter.remove(active);
            }
            Err(e) => return Err(e.into()),
        }
        self.hold(&id, info.digest.clone());
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.layers.push(LayerRecord {
            digest: info.digest,
            diff_id: desc.diff_id,
            media_type,
            size: info.size,
            uncompressed_size: Some(desc.uncompressed_size),
        });
        Ok(layer)
    }
}
