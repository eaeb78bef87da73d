//! Layers and the snapshots they are unpacked into.
//!
//! A committed snapshot holds one layer on top of its parent and is named after the layer
//! chain's OCI ChainID (`chain-<hex>`), so the same layers stacked the same way are one
//! snapshot for every build, every image and `strata run`. Snapshots are made lazily: a base
//! image is unpacked only when a step needs its files, and each snapshot is held by its layer
//! blob (`SnapshotHolder::Blob`), so garbage collection drops it with the blob.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use strata_codec::sha256_digest;
use strata_snapshotter::{LayerOptions, Snapshotter};
use strata_store::{Digest, Image, LayerRecord, Lease, SnapshotHolder, Store};

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

/// The OCI ChainID of a stack of diffIDs (`None` for no layers).
pub fn chain_id(diff_ids: &[&str]) -> Option<String> {
    let (first, rest) = diff_ids.split_first()?;
    let mut chain = first.to_string();
    for d in rest {
        chain = sha256_digest(format!("{chain} {d}").as_bytes()).to_string();
    }
    Some(chain)
}

/// The snapshot id for the top of a stack of layers (`None` for no layers).
pub fn snapshot_id(layers: &[Layer]) -> Option<String> {
    let ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let chain = chain_id(&ids)?;
    let hex = chain.split_once(':').map_or(chain.as_str(), |(_, h)| h);
    Some(format!("chain-{hex}"))
}

/// Metadata a build collects and writes in one transaction at its end.
#[derive(Default)]
pub(crate) struct Pending {
    pub holds: Vec<(String, SnapshotHolder)>,
    pub layers: Vec<LayerRecord>,
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
}

impl LayerStore<'_> {
    /// Makes sure the snapshot of `layers` (and of each prefix) exists, unpacking missing layers
    /// from their blobs; returns its id (`None` for no layers).
    pub fn ensure_snapshot(&self, layers: &[Layer]) -> Result<Option<String>> {
        let Some(top) = snapshot_id(layers) else {
            return Ok(None);
        };
        if self.snapshotter.info(&top).is_ok() {
            return Ok(Some(top));
        }
        let _guard = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
        // The highest prefix that exists already.
        let mut have = 0;
        for n in (1..=layers.len()).rev() {
            if let Some(id) = snapshot_id(&layers[..n])
                && self.snapshotter.info(&id).is_ok()
            {
                have = n;
                break;
            }
        }
        for n in have + 1..=layers.len() {
            let layer = &layers[n - 1];
            let id = snapshot_id(&layers[..n]).unwrap_or_default();
            let parent = snapshot_id(&layers[..n - 1]);
            let digest = layer.parsed_digest()?;
            let reader = self.store.open_blob(&digest)?;
            match self
                .snapshotter
                .extract_layer(&id, parent.as_deref(), reader, None)
            {
                Ok((_, extracted)) => {
                    if extracted.diff_id.to_string() != layer.diff_id {
                        let _ = self.snapshotter.remove(&id);
                        return Err(BuildError::Store(strata_store::StoreError::Invalid(
                            format!(
                                "layer {} unpacks to {}, but the image says {}",
                                layer.digest, extracted.diff_id, layer.diff_id
                            ),
                        )));
                    }
                }
                // Another build unpacked it meanwhile.
                Err(strata_snapshotter::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.hold(&id, digest);
        }
        Ok(Some(top))
    }

    fn hold(&self, snapshot: &str, blob: Digest) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.holds
            .push((snapshot.to_string(), SnapshotHolder::Blob(blob)));
    }

    /// Writes active snapshot `active` (on top of `parent_layers`) as a layer blob, then commits
    /// it as the snapshot of the new stack. Returns the new layer.
    pub fn commit_active(&self, active: &str, parent_layers: &[Layer]) -> Result<Layer> {
        let mut writer = self.store.blob_writer(self.lease)?;
        let desc = self
            .snapshotter
            .write_layer(active, &self.options, &mut writer)?;
        let info = writer.commit()?;
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

/// Makes sure an image's layers are unpacked into snapshots (for `strata run`) and returns the
/// snapshot id of its whole stack (`None` for an image without layers). The holds are recorded
/// at once.
pub fn prepare_image_snapshot(
    store: &Store,
    snapshotter: &Snapshotter,
    image: &Image,
) -> Result<Option<String>> {
    let lease = store.lease()?;
    let pending = Mutex::new(Pending::default());
    let unpacking = Mutex::new(());
    let layers = Layer::of_image(image)?;
    let ls = LayerStore {
        store,
        snapshotter,
        lease: &lease,
        options: LayerOptions::default(),
        pending: &pending,
        unpacking: &unpacking,
    };
    let id = ls.ensure_snapshot(&layers)?;
    let pending = pending.into_inner().unwrap_or_else(|e| e.into_inner());
    if !pending.holds.is_empty() {
        store.write_meta(|m| {
            for (s, h) in &pending.holds {
                m.hold_snapshot(s, h)?;
            }
            Ok(())
        })?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = "sha256:aaaa";
        let b = "sha256:bbbb";
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&[a]).unwrap(), a);
        assert_eq!(
            chain_id(&[a, b]).unwrap(),
            sha256_digest(b"sha256:aaaa sha256:bbbb").to_string()
        );
    }
}
