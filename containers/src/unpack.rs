//! An image's layers as a chain of committed snapshots (named as
//! [`strata_snapshotter::chain_snapshot_id`] says), shared by every container and build over
//! the same layers. Each layer snapshot is held in the store by `SnapshotHolder::Blob(layer
//! digest)`: garbage collection deletes it with its layer blob.

use std::path::Path;

use strata_codec::Digest;
use strata_snapshotter::{Snapshotter, chain_ids, chain_snapshot_id};
use strata_store::{Image, Lease, SnapshotHolder, Store};

use crate::error::{Error, Result};
use crate::fsutil::try_lock;

/// Makes sure every layer of `image` is unpacked and held; returns the id of the top snapshot
/// (`None` for an image without layers). Hold `lease` for as long as the result is used
/// unheld (until the caller's own snapshot on top of it is recorded), so no collection runs.
pub fn unpack_image(
    store: &Store,
    _lease: &Lease,
    snapshotter: &Snapshotter,
    image: &Image,
) -> Result<Option<String>> {
    let diff_ids = image
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| Error::Invalid(format!("image config has a bad diffID {d:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = image.manifest.layers();
    if layers.len() != diff_ids.len() {
        return Err(Error::Invalid(format!(
            "image {} has {} layers but {} diffIDs",
            image.id(),
            layers.len(),
            diff_ids.len()
        )));
    }
    let mut parent: Option<String> = None;
    let mut holds = Vec::new();
    for ((layer, diff_id), chain_id) in layers.iter().zip(&diff_ids).zip(chain_ids(&diff_ids)) {
        let id = chain_snapshot_id(&chain_id);
        let blob = layer.digest();
        snapshotter.ensure_layer(&id, parent.as_deref(), diff_id, || {
            if !store.has_blob(blob) {
                return Err(strata_snapshotter::Error::Read(std::io::Error::other(
                    format!("layer {blob} is not in the store (was the pull interrupted?)"),
                )));
            }
            store
                .open_blob(blob)
                .map_err(|e| strata_snapshotter::Error::Read(std::io::Error::other(e)))
        })?;
        holds.push((id.clone(), SnapshotHolder::Blob(layer.digest().clone())));
        parent = Some(id);
    }
    let missing: Vec<_> = store.read_meta(|m| {
        let mut missing = Vec::new();
        for (id, holder) in &holds {
            if !m.snapshot_holders(id)?.contains(holder) {
                missing.push((id.clone(), holder.clone()));
            }
        }
        Ok(missing)
    })?;
    if !missing.is_empty() {
        store.write_meta(|m| {
            for (id, holder) in &missing {
                m.hold_snapshot(id, holder)?;
            }
            Ok(())
        })?;
    }
    Ok(parent)
}

impl crate::Containers {
    /// Runs `op` (a mount, a diff) on the container's writable snapshot. Its parents are the
    /// image's layer snapshots, and one written by a build step is volatile: after a reboot it
    /// reads as absent (it may have lost files). Then the image's layers are unpacked again
    /// from their blobs under the same ids, which makes the chain whole, and `op` runs again.
    pub(crate) fn on_rootfs<T>(
        &self,
        config: &crate::ContainerConfig,
        mut op: impl FnMut(&Snapshotter) -> std::result::Result<T, strata_snapshotter::Error>,
    ) -> Result<T> {
        let snapshotter = self.snapshotter()?;
        match op(snapshotter) {
            Err(strata_snapshotter::Error::NotFound(id)) if id != config.snapshot => {
                let store = self.store();
                let image = store.resolve(&config.image_target)?;
                if image.id().to_string() != config.image_id {
                    return Err(Error::Invalid(format!(
                        "the layers of container {} need unpacking again, but its image {} \
                         resolves to {}",
                        config.id,
                        config.image_id,
                        image.id()
                    )));
                }
                let lease = store.lease()?;
                unpack_image(store, &lease, snapshotter, &image)?;
                Ok(op(snapshotter)?)
            }
            other => Ok(other?),
        }
    }

    /// Runs `f` on the mounted rootfs of a container no monitor runs, holding the monitor lock
    /// so none starts meanwhile, and unmounts it after; `None` (`f` not run) when it is running.
    pub(crate) fn with_stopped_rootfs<T>(
        &self,
        config: &crate::ContainerConfig,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(_lock) = try_lock(&self.monitor_lock_path(&config.id), true)? else {
            return Ok(None);
        };
        let mount = self.on_rootfs(config, |s| s.mount(&config.snapshot))?;
        let result = f(mount.path());
        let unmounted = mount.unmount().map_err(|e| {
            Error::Invalid(format!(
                "unmounting the rootfs of container {}: {e}",
                config.id
            ))
        });
        let value = result?;
        unmounted?;
        Ok(Some(value))
    }
}
