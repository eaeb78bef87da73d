//! Build cache that travels: step results exported to, and imported from, somewhere other than
//! this store (a registry, an OCI layout directory, an image's own config).
//!
//! The builder knows nothing of HTTP: the binary reads cache artifacts, hands their entries to
//! the builder as a [`CacheImport`] with a [`LayerSource`] per artifact, and writes the
//! [`CacheEntry`]s a build reports ([`crate::BuildOutcome::cache`]) wherever it was asked to.
//!
//! Importing is lazy: a step whose key an imported entry has is a hit without its layer being
//! here; the layer is fetched only when something needs its files (a later miss on top of it,
//! `COPY --from` its stage) or when the final image is stored with its layers
//! ([`CacheImport::fetch_final`]).
//!
//! The artifact's format lives here so that every transport writes the same one: an image
//! config (plain `application/vnd.oci.image.config.v1+json`, so registries that inspect configs
//! accept it) whose `rootfs.diff_ids` match the manifest's layers and whose extra field
//! [`CONFIG_FIELD`] lists the entries. The same field in a pushed image's config is the inline
//! cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_store::{LayerRecord, Lease, Store};

use crate::error::{BuildError, Result};
use crate::layers::Layer;

/// The manifest's `artifactType` of a strata cache artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.strata.build-cache.v1+json";

/// The image config field that carries the cache entries.
pub const CONFIG_FIELD: &str = "strata.build-cache.v1";

/// The image config field that maps each exported cache mount's id to its layer (readers that
/// predate it ignore it).
pub const CACHE_MOUNTS_FIELD: &str = "strata.cache-mounts.v1";

/// One step's result, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The step's cache key.
    pub key: String,
    /// The layer it made.
    pub layer: Layer,
    /// When the layer was made (the image history's `created`).
    pub created: String,
    /// Whether its layer is one of the final image's (what `mode=min` exports).
    #[serde(default, skip_serializing)]
    pub in_final_image: bool,
}

/// Fetches the blobs of imported layers into the store.
pub trait LayerSource: Send + Sync {
    /// Puts the blob of `layer` into `store` (verified against its digest and size).
    fn fetch(
        &self,
        store: &Store,
        lease: &Lease,
        layer: &Layer,
    ) -> std::result::Result<(), BuildError>;
}

/// Cache entries imported for a build, each with where its layer can be fetched from.
#[derive(Clone)]
pub struct CacheImport {
    entries: HashMap<String, (CacheEntry, usize)>,
    sources: Vec<Arc<dyn LayerSource>>,
    fetch_final: bool,
}

impl Default for CacheImport {
    fn default() -> Self {
        CacheImport {
            entries: HashMap::new(),
            sources: Vec::new(),
            fetch_final: true,
        }
    }
}

impl CacheImport {
    /// Nothing imported; the final image's layers are fetched.
    pub fn new() -> CacheImport {
        CacheImport::default()
    }

    /// Adds the entries of one artifact whose layers come from `source`. An entry for a key
    /// already known keeps the first (the earlier `--cache-from` wins, as in BuildKit).
    pub fn add(&mut self, entries: Vec<CacheEntry>, source: Arc<dyn LayerSource>) {
        let index = self.sources.len();
        self.sources.push(source);
        for e in entries {
            self.entries.entry(e.key.clone()).or_insert((e, index));
        }
    }

    /// Whether the final image's layers are fetched so that it is complete in the store
    /// (default). `false` leaves layers that only the cache has where they are: for a build
    /// that is pushed, whose layers the registry can mount.
    pub fn fetch_final(mut self, fetch: bool) -> CacheImport {
        self.fetch_final = fetch;
        self
    }

    pub fn fetches_final(&self) -> bool {
        self.fetch_final
    }

    pub(crate) fn get(&self, key: &str) -> Option<&CacheEntry> {
        self.entries.get(key).map(|(e, _)| e)
    }

    /// Makes sure `layer`'s blob is in the store, fetching it from the source of an entry that
    /// made it; returns the layer record to write when it was fetched.
    pub(crate) fn ensure_blob(
        &self,
        store: &Store,
        lease: &Lease,
        layer: &Layer,
    ) -> Result<Option<LayerRecord>> {
        let digest = layer.parsed_digest()?;
        if store.has_blob(&digest) {
            return Ok(None);
        }
        let Some(source) = self
            .entries
            .values()
            .find(|(e, _)| e.layer.digest == layer.digest)
            .and_then(|(_, i)| self.sources.get(*i))
        else {
            return Err(BuildError::Store(strata_store::StoreError::BlobNotFound(
                layer.digest.clone(),
            )));
        };
        source.fetch(store, lease, layer)?;
        Ok(Some(LayerRecord {
            digest,
            diff_id: crate::layers::parse_digest(&layer.diff_id)?,
            media_type: layer.media_type.clone(),
            size: layer.size,
            uncompressed_size: None,
        }))
    }
}

/// The config of a cache artifact: an image config of `layers` carrying `entries` and, when
/// there are any, the `cache_mounts` (id -> layer; their layers are among `layers`).
pub fn artifact_config(
    entries: &[CacheEntry],
    layers: &[Layer],
    cache_mounts: &BTreeMap<String, Layer>,
) -> serde_json::Value {
    let platform = strata_store::Platform::host();
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        CONFIG_FIELD: entries,
    });
    if !cache_mounts.is_empty() {
        config[CACHE_MOUNTS_FIELD] = serde_json::json!(cache_mounts);
    }
    config
}

/// The layers an artifact of `entries` carries: each distinct layer once, in entry order.
pub fn artifact_layers(entries: &[CacheEntry]) -> Vec<Layer> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| seen.insert(e.layer.digest.clone()))
        .map(|e| e.layer.clone())
        .collect()
}

/// The entries an image config (an artifact's, or a pushed image's inline cache) carries;
/// `None` when it has none.
pub fn entries_of_config(config: &serde_json::Value) -> Option<Vec<CacheEntry>> {
    serde_json::from_value(config.get(CONFIG_FIELD)?.clone()).ok()
}

/// The cache mounts an artifact's config carries (id -> layer); empty when it has none.
pub fn cache_mounts_of_config(config: &serde_json::Value) -> BTreeMap<String, Layer> {
    config
        .get(CACHE_MOUNTS_FIELD)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The entries `mode=min` (`all == false`: only the final image's layers) or `mode=max` exports.
pub fn select(entries: &[CacheEntry], all: bool) -> Vec<CacheEntry> {
    entries
        .iter()
        .filter(|e| all || e.in_final_image)
        .cloned()
        .collect()
}
