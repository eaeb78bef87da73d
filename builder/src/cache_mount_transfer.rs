//! `RUN --mount=type=cache` directories that travel with the build cache (`--cache-to
//! ...,cache-mounts=true`): each cache's `data/` as one layer out, and back into a cache that
//! does not exist here yet.
//!
//! The layer is the snapshotter's deterministic tar of `data/` (gzip), so an unchanged cache is
//! the same blob and an export finds it already at the destination. Both directions take the
//! cache's lock: an export reads under a shared lock (no `locked` writer mid-run), an import
//! fills under the exclusive one, and never touches a cache that already has its `data/`.

use std::fs;

use rustix::fs::FlockOperation;
use strata_snapshotter::{Diff, ExtractOptions, LayerOptions};
use strata_store::{Lease, Store};

use crate::error::{BuildError, IoContext, Result};
use crate::layers::Layer;
use crate::mounts::{cache_mount_dir, lock_cache_mount};
use crate::remote_cache::LayerSource;

fn failed(id: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Io {
        context: format!("cache mount {id}"),
        error: std::io::Error::other(e.to_string()),
    }
}

/// Writes the `data/` of cache mount `id` as a layer blob into `store` (held by `lease`).
/// `None` when this machine has no such cache.
pub fn export_cache_mount(store: &Store, lease: &Lease, id: &str) -> Result<Option<Layer>> {
    if !cache_mount_dir(store.root(), id).join("data").is_dir() {
        return Ok(None);
    }
    let (dir, _lock) = lock_cache_mount(store.root(), id, FlockOperation::LockShared)
        .map_err(|e| failed(id, e))?;
    let data = dir.join("data");
    if !data.is_dir() {
        return Ok(None);
    }
    let options = LayerOptions::default();
    let mut writer = store.blob_writer(lease)?;
    let desc = strata_snapshotter::write_layer(&Diff::directory(&data), &options, &mut writer)?;
    let info = writer.commit()?;
    Ok(Some(Layer {
        digest: info.digest.to_string(),
        diff_id: desc.diff_id.to_string(),
        media_type: desc
            .compression
            .oci_layer_media_type()
            .unwrap_or("application/vnd.oci.image.layer.v1.tar")
            .to_string(),
        size: info.size,
    }))
}

/// Fills cache mount `id` with `layer` unless the cache already exists here (a local cache is
/// never replaced). Returns whether it was filled. Only then, under the cache's exclusive lock,
/// is the layer's blob fetched from `source` into `store` (when the store lacks it) and
/// unpacked from there.
pub fn import_cache_mount(
    store: &Store,
    lease: &Lease,
    id: &str,
    layer: &Layer,
    source: &dyn LayerSource,
) -> Result<bool> {
    let (dir, _lock) = lock_cache_mount(store.root(), id, FlockOperation::LockExclusive)
        .map_err(|e| failed(id, e))?;
    let data = dir.join("data");
    if data.is_dir() {
        return Ok(false);
    }
    let tmp = dir.join(format!("data.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| failed(id, e))?;
    let filled = open_blob(store, lease, layer, source).and_then(|reader| {
        let extracted =
            strata_snapshotter::extract_layer(reader, &tmp, &ExtractOptions::default())?;
        if extracted.diff_id.to_string() != layer.diff_id {
            return Err(failed(
                id,
                format!(
                    "layer {} unpacks to {}, not the diff ID {} the cache lists",
                    layer.digest, extracted.diff_id, layer.diff_id
                ),
            ));
        }
        fs::rename(&tmp, &data).map_err(|e| failed(id, e))
    });
    if filled.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    filled.map(|()| true)
}

/// The blob of `layer`, fetched from `source` first when the store lacks it.
fn open_blob(
    store: &Store,
    lease: &Lease,
    layer: &Layer,
    source: &dyn LayerSource,
) -> Result<fs::File> {
    let digest = layer.parsed_digest()?;
    if !store.has_blob(&digest) {
        source.fetch(store, lease, layer)?;
    }
    fs::File::open(store.blob_path(&digest)).ctx(|| format!("opening {}", layer.digest))
}
