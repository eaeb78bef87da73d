//! `strata build --cache-to / --cache-from`: the build cache exported to and imported from a
//! registry (`type=registry`), an OCI layout directory (`type=local`) or the pushed image's own
//! config (`type=inline`).
//!
//! The artifact's format is the builder's ([`strata_builder::artifact_config`]): an OCI image
//! manifest with `artifactType` [`strata_builder::ARTIFACT_TYPE`], a plain image config that
//! lists the entries, and the result layers. This module only moves it: imports hand the
//! builder the entries and a [`LayerSource`] that fetches a layer when the build needs its
//! files; exports upload what the destination lacks (HEAD first, mounts from the registry
//! repository the layer was imported from, and streams from there when a mount is declined).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use strata_builder::{BuildError, CacheEntry, CacheImport, Layer, LayerSource};
use strata_codec::Compression;
use strata_registry_client::{
    BlobSource, BlobUpload, Client, OCI_MANIFEST, Reference as RemoteRef, Repository,
    RepositoryClient,
};
use strata_store::{Digest, Lease, Platform, Reference, Store, reference};

use super::registry;

/// Where a cache goes or comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheLocation {
    Registry(Reference),
    Local(PathBuf),
    Inline,
}

/// A parsed `--cache-to` / `--cache-from` value.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSpec {
    pub location: CacheLocation,
    /// `mode=max`: every stage's steps (default `min`: the final image's).
    pub all_stages: bool,
    /// `cache-mounts=true` (`--cache-to` only): the build's `RUN --mount=type=cache`
    /// directories go too, one layer each.
    pub cache_mounts: bool,
    /// `compression=...` (`--cache-to` only): the compression every exported layer that is
    /// here is written in (recompressed once into the store when its blob differs); `None`
    /// exports layers as the build wrote them.
    pub compression: Option<Compression>,
}

impl std::fmt::Display for CacheLocation {
    /// As BuildKit names the exporter: `registry REF`, `local DIR`, `inline`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "registry {r}"),
            CacheLocation::Local(dir) => write!(f, "local {}", dir.display()),
            CacheLocation::Inline => f.write_str("inline"),
        }
    }
}

impl CacheSpec {
    /// Parses `type=registry,ref=R[,mode=min|max][,compression=gzip|zstd|uncompressed][,cache-mounts=true]`,
    /// `type=local,dest=DIR` (`src=DIR` for imports), `type=inline`, or a bare `R` (BuildKit's shorthand for a
    /// registry reference). Unknown attributes are errors, not silently ignored.
    pub fn parse(flag: &str, value: &str) -> anyhow::Result<CacheSpec> {
        if !value.contains('=') {
            return Self::parse(flag, &format!("type=registry,ref={value}"));
        }
        let mut attrs: HashMap<&str, &str> = HashMap::new();
        for part in value.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                bail!("{flag} {value:?}: {part:?} is not KEY=VALUE");
            };
            attrs.insert(k.trim(), v.trim());
        }
        let kind = attrs.remove("type").unwrap_or("registry");
        let all_stages = match attrs.remove("mode") {
            None | Some("min") => false,
            Some("max") => true,
            Some(m) => bail!("{flag} {value:?}: mode={m}: expected min or max"),
        };
        let compression = match attrs.remove("compression") {
            None => None,
            Some("gzip") => Some(Compression::Gzip),
            Some("zstd") => Some(Compression::Zstd),
            Some("uncompressed") => Some(Compression::None),
            Some("estargz") => bail!(
                "{flag} {value:?}: compression=estargz is not supported (use gzip, zstd or \
                 uncompressed)"
            ),
            Some(c) => {
                bail!("{flag} {value:?}: compression={c}: expected gzip, zstd or uncompressed")
            }
        };
        let cache_mounts = match attrs.remove("cache-mounts") {
            None | Some("false") => false,
            Some("true") if flag == "--cache-from" => bail!(
                "{flag} {value:?}: cache-mounts is a --cache-to option (an import fills the \
                 cache mounts its artifact lists, when they do not exist here)"
            ),
            Some("true") => true,
            Some(v) => bail!("{flag} {value:?}: cache-mounts={v}: expected true or false"),
        };
        if cache_mounts && kind == "inline" {
            bail!(
                "{flag} {value:?}: type=inline cannot carry cache mounts (use registry or local)"
            );
        }
        let location = match kind {
            "registry" => {
                let r = attrs
                    .remove("ref")
                    .with_context(|| format!("{flag} {value:?}: type=registry needs ref=NAME"))?;
                let parsed = reference::parse_normalized_named(r)
                    .with_context(|| format!("{flag} {value:?}: invalid ref {r:?}"))?;
                CacheLocation::Registry(parsed)
            }
            "local" => {
                let dir = attrs
                    .remove("dest")
                    .or_else(|| attrs.remove("src"))
                    .with_context(|| {
                        format!("{flag} {value:?}: type=local needs dest=DIR (or src=DIR)")
                    })?;
                CacheLocation::Local(PathBuf::from(dir))
            }
            "inline" => CacheLocation::Inline,
            other => bail!("{flag} {value:?}: type={other}: expected registry, local or inline"),
        };
        if let Some(k) = attrs.keys().next() {
            bail!("{flag} {value:?}: unknown attribute {k:?}");
        }
        Ok(CacheSpec {
            location,
            all_stages,
            cache_mounts,
            compression,
        })
    }
}

/// Where an imported layer can be read from.
#[derive(Clone)]
enum Origin {
    Registry(RepositoryClient),
    Dir(PathBuf),
}

impl Origin {
    fn blob_path(dir: &Path, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        dir.join("blobs").join(algorithm).join(hex)
    }

    /// A source for uploading `layer` from here.
    fn upload_source(&self, layer: &Layer) -> anyhow::Result<BlobSource> {
        Ok(match self {
            Origin::Dir(dir) => BlobSource::from_file(Self::blob_path(dir, &layer.digest)),
            Origin::Registry(repo) => {
                let (repo, digest, size) = (repo.clone(), parse(&layer.digest)?, layer.size);
                BlobSource::new(move |offset| {
                    let fetched = repo.fetch_blob(&digest, Some(size));
                    async move {
                        if offset > 0 {
                            return Err(io::Error::other("a streamed copy cannot resume"));
                        }
                        Ok(fetched.map_err(io::Error::other)?.into_async_read())
                    }
                })
            }
        })
    }
}

/// Fetches imported layers into the store, blocking on the registry's runtime.
struct Fetcher {
    origin: Origin,
    runtime: tokio::runtime::Handle,
}

impl LayerSource for Fetcher {
    fn fetch(&self, store: &Store, lease: &Lease, layer: &Layer) -> Result<(), BuildError> {
        let failed = |e: &dyn std::fmt::Display| {
            BuildError::ImageNotFound(format!(
                "fetching cached layer {} failed: {e}",
                layer.digest
            ))
        };
        let digest = parse(&layer.digest).map_err(|e| failed(&e))?;
        match &self.origin {
            Origin::Registry(repo) => self
                .runtime
                .block_on(repo.fetch_blob_into_store(store, lease, &digest, layer.size))
                .map_err(|e| failed(&e.full_message())),
            Origin::Dir(dir) => {
                let path = Origin::blob_path(dir, &layer.digest);
                let copy = || -> anyhow::Result<()> {
                    let mut file = fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    let mut writer =
                        store.blob_writer_expecting(lease, &digest, Some(layer.size))?;
                    io::copy(&mut file, &mut writer)?;
                    writer.commit()?;
                    Ok(())
                };
                copy().map_err(|e| failed(&format!("{e:#}")))
            }
        }
    }
}

fn parse(digest: &str) -> anyhow::Result<Digest> {
    digest
        .parse()
        .map_err(|e| anyhow::anyhow!("bad digest {digest:?}: {e}"))
}

/// The layers of one export in the compression it asked for.
struct Recompressed {
    compression: Option<Compression>,
    done: HashMap<String, Layer>,
    /// Whether the note about layers left remote was printed.
    noted_remote: bool,
}

impl Recompressed {
    fn new(compression: Option<Compression>) -> Recompressed {
        Recompressed {
            compression,
            done: HashMap::new(),
            noted_remote: false,
        }
    }

    /// `layer` in the wanted compression: as it is when it already is (or no compression was
    /// asked for, or its blob is not here), else a stored variant with its diffID, made once.
    fn layer(&mut self, store: &Store, lease: &Lease, layer: &Layer) -> anyhow::Result<Layer> {
        let Some(wanted) = self.compression else {
            return Ok(layer.clone());
        };
        if let Some(done) = self.done.get(&layer.digest) {
            return Ok(done.clone());
        }
        let media_type = wanted
            .oci_layer_media_type()
            .context("no OCI layer media type for the requested compression")?;
        if Compression::from_media_type(&layer.media_type).ok() == Some(wanted) {
            return Ok(layer.clone());
        }
        let digest = parse(&layer.digest)?;
        if !store.has_blob(&digest) {
            if !self.noted_remote {
                eprintln!(
                    "note: layers imported from a cache and not fetched here are exported in \
                     their original compression"
                );
                self.noted_remote = true;
            }
            return Ok(layer.clone());
        }
        let diff_id = parse(&layer.diff_id)?;
        let existing = store
            .layers_for_diff_id(&diff_id)?
            .into_iter()
            .find(|r| r.media_type == media_type);
        let record = match existing {
            Some(record) => record,
            None => store
                .recompress_layer(lease, &digest, &diff_id, wanted, &mut io::sink())
                .with_context(|| format!("recompressing layer {} for the cache", layer.digest))?,
        };
        let converted = Layer {
            digest: record.digest.to_string(),
            diff_id: layer.diff_id.clone(),
            media_type: record.media_type,
            size: record.size,
        };
        self.done.insert(layer.digest.clone(), converted.clone());
        Ok(converted)
    }
}

/// Imports and exports for one build; keeps the runtime the transfers run on.
pub struct CacheTransfers {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// Where each imported layer came from (the first import that has it).
    origins: HashMap<String, Origin>,
}

impl CacheTransfers {
    pub fn new() -> anyhow::Result<CacheTransfers> {
        Ok(CacheTransfers {
            runtime: registry::runtime()?,
            client: registry::client(None)?,
            origins: HashMap::new(),
        })
    }

    /// Reads each `--cache-from` (metadata only). A cache that does not exist yet is a note,
    /// not an error (the first CI run has none), as in BuildKit.
    /// Cache mounts the artifacts list are filled here and now (before the build), for ids this
    /// machine has none of.
    pub fn import(
        &mut self,
        store: &Store,
        specs: &[CacheSpec],
        quiet: bool,
    ) -> anyhow::Result<CacheImport> {
        let mut import = CacheImport::new();
        for spec in specs {
            let read = match &spec.location {
                CacheLocation::Registry(r) => self.read_registry(r),
                CacheLocation::Local(dir) => read_layout(dir),
                CacheLocation::Inline => {
                    bail!("--cache-from type=inline: name the image with type=registry,ref=IMAGE")
                }
            };
            let (config, origin) = match read {
                Ok(found) => found,
                Err(e) => {
                    if !quiet {
                        eprintln!("note: no build cache imported from {spec:?}: {e:#}");
                    }
                    continue;
                }
            };
            let Some(entries) = strata_builder::entries_of_config(&config) else {
                if !quiet {
                    eprintln!("note: no build cache imported from {spec:?}: it carries none");
                }
                continue;
            };
            let fetcher = Fetcher {
                origin: origin.clone(),
                runtime: self.runtime.handle().clone(),
            };
            // Cache mounts are a cache too: one that cannot be filled is a note, as a missing
            // artifact is.
            if let Err(e) = self.import_cache_mounts(store, &config, &fetcher)
                && !quiet
            {
                eprintln!("note: cache mounts not imported from {spec:?}: {e:#}");
            }
            for e in &entries {
                self.origins
                    .entry(e.layer.digest.clone())
                    .or_insert_with(|| origin.clone());
            }
            import.add(entries, Arc::new(fetcher));
        }
        Ok(import)
    }

    /// Fills each cache mount that `config` lists and this machine lacks, fetching its layer
    /// into the store first (verified) and unpacking it from there.
    fn import_cache_mounts(
        &self,
        store: &Store,
        config: &Value,
        fetcher: &Fetcher,
    ) -> anyhow::Result<()> {
        let mounts = strata_builder::cache_mounts_of_config(config);
        if mounts.is_empty() {
            return Ok(());
        }
        let lease = store.lease()?;
        for (id, layer) in &mounts {
            strata_builder::import_cache_mount(store, &lease, id, layer, fetcher)?;
        }
        Ok(())
    }

    fn read_registry(&self, r: &Reference) -> anyhow::Result<(Value, Origin)> {
        let repo = self.client.repository(Repository::of(r)?);
        let entries = self.runtime.block_on(async {
            let resolved = repo
                .fetch_image_manifest(&RemoteRef::of(r)?, &Platform::host())
                .await?;
            let config = resolved.image.config();
            let bytes = repo
                .fetch_blob_bytes(config.digest(), config.size())
                .await?;
            anyhow::Ok(bytes)
        })?;
        let config: Value = serde_json::from_slice(&entries).context("reading the cache config")?;
        Ok((config, Origin::Registry(repo)))
    }

    /// Writes the cache of a build to `spec`: its step results `entries` and, with
    /// `cache-mounts=true`, those of the `cache_mounts` (ids) that exist here.
    /// Writes the cache `spec` asks for; returns how many layers it lists.
    pub fn export(
        &self,
        store: &Store,
        spec: &CacheSpec,
        entries: &[CacheEntry],
        cache_mounts: &[String],
    ) -> anyhow::Result<usize> {
        let mut entries = strata_builder::select(entries, spec.all_stages);
        // The lease keeps the cache mounts' and recompressed layer blobs until they are
        // uploaded (garbage collection waits for it).
        let lease = store.lease()?;
        let mut recompressed = Recompressed::new(spec.compression);
        for e in &mut entries {
            e.layer = recompressed.layer(store, &lease, &e.layer)?;
        }
        let mut layers = strata_builder::artifact_layers(&entries);
        let mut mounts = BTreeMap::new();
        if spec.cache_mounts {
            for id in cache_mounts {
                if let Some(layer) = strata_builder::export_cache_mount(store, &lease, id)
                    .with_context(|| format!("exporting cache mount {id}"))?
                {
                    let layer = recompressed.layer(store, &lease, &layer)?;
                    if !layers.iter().any(|l| l.digest == layer.digest) {
                        layers.push(layer.clone());
                    }
                    mounts.insert(id.clone(), layer);
                }
            }
        }
        let config = strata_builder::artifact_config(&entries, &layers, &mounts);
        match &spec.location {
            CacheLocation::Registry(r) => self.export_registry(store, r, &config, &layers)?,
            CacheLocation::Local(dir) => self.export_local(store, dir, &config, &layers)?,
            CacheLocation::Inline => bail!("type=inline is written by --push"),
        }
        Ok(layers.len())
    }

    /// An upload of `layer`: from the store, else from where it was imported, with a mount
    /// asked for when that is a repository of the same registry.
    fn layer_upload(
        &self,
        store: &Store,
        target: &Repository,
        layer: &Layer,
    ) -> anyhow::Result<BlobUpload> {
        let digest = parse(&layer.digest)?;
        let origin = self.origins.get(&layer.digest);
        let mount_from = match origin {
            Some(Origin::Registry(repo))
                if repo.repository().registry() == target.registry()
                    && repo.repository().path() != target.path() =>
            {
                Some(repo.repository().path().to_string())
            }
            _ => None,
        };
        let source = if store.has_blob(&digest) {
            BlobSource::from_file(store.blob_path(&digest))
        } else {
            origin
                .with_context(|| format!("layer {} is neither here nor imported", layer.digest))?
                .upload_source(layer)?
        };
        Ok(BlobUpload {
            digest,
            size: layer.size,
            source,
            mount_from,
        })
    }

    /// Makes sure `target` has every layer in `layers` that the store lacks (before a push of
    /// an image whose imported layers were left remote).
    pub fn push_remote_layers(
        &self,
        store: &Store,
        target: &Reference,
        layers: &[Layer],
    ) -> anyhow::Result<()> {
        let repository = Repository::of(target)?;
        let mut uploads = Vec::new();
        for l in layers {
            if !store.has_blob(&parse(&l.digest)?) {
                uploads.push(self.layer_upload(store, &repository, l)?);
            }
        }
        if uploads.is_empty() {
            return Ok(());
        }
        let repo = self.client.repository(repository);
        self.runtime
            .block_on(repo.push_blobs(&uploads))
            .with_context(|| format!("copying cached layers to {target}"))?;
        Ok(())
    }

    fn export_registry(
        &self,
        store: &Store,
        r: &Reference,
        config: &Value,
        layers: &[Layer],
    ) -> anyhow::Result<()> {
        let repository = Repository::of(r)?;
        let (config_bytes, manifest) = artifact_manifest(config, layers)?;
        let mut uploads = layers
            .iter()
            .map(|l| self.layer_upload(store, &repository, l))
            .collect::<anyhow::Result<Vec<_>>>()?;
        uploads.push(BlobUpload {
            digest: strata_codec::sha256_digest(&config_bytes),
            size: config_bytes.len() as u64,
            source: BlobSource::from_bytes(Bytes::from(config_bytes)),
            mount_from: None,
        });
        let repo = self.client.repository(repository);
        self.runtime
            .block_on(async {
                repo.push_blobs(&uploads).await?;
                repo.push_manifest(
                    &RemoteRef::of(r)?,
                    Bytes::from(manifest),
                    Some(OCI_MANIFEST),
                )
                .await
            })
            .with_context(|| format!("exporting the build cache to {r}"))?;
        Ok(())
    }

    fn export_local(
        &self,
        store: &Store,
        dir: &Path,
        config: &Value,
        layers: &[Layer],
    ) -> anyhow::Result<()> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        for l in layers {
            let dest = Origin::blob_path(dir, &l.digest);
            if dest.exists() {
                continue;
            }
            let digest = parse(&l.digest)?;
            let from = if store.has_blob(&digest) {
                store.blob_path(&digest)
            } else {
                match self.origins.get(&l.digest) {
                    Some(Origin::Dir(d)) => Origin::blob_path(d, &l.digest),
                    Some(origin @ Origin::Registry(_)) => {
                        let lease = store.lease()?;
                        Fetcher {
                            origin: origin.clone(),
                            runtime: self.runtime.handle().clone(),
                        }
                        .fetch(store, &lease, l)?;
                        store.blob_path(&digest)
                    }
                    None => bail!("layer {} is neither here nor imported", l.digest),
                }
            };
            write_atomically(&dest, |tmp| fs::copy(&from, tmp).map(|_| ()))?;
        }
        let (config_bytes, manifest) = artifact_manifest(config, layers)?;
        let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
            let digest = strata_codec::sha256_digest(bytes).to_string();
            write_atomically(&Origin::blob_path(dir, &digest), |tmp| {
                fs::write(tmp, bytes)
            })?;
            Ok((digest, bytes.len()))
        };
        put(&config_bytes)?;
        let (manifest_digest, manifest_size) = put(&manifest)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "artifactType": strata_builder::ARTIFACT_TYPE,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        write_atomically(&dir.join("oci-layout"), |tmp| {
            fs::write(tmp, br#"{"imageLayoutVersion":"1.0.0"}"#)
        })?;
        write_atomically(&dir.join("index.json"), |tmp| {
            fs::write(tmp, serde_json::to_vec(&index).unwrap_or_default())
        })?;
        Ok(())
    }
}

/// Writes `path` through a temporary file beside it, so a reader never sees half of it.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The config bytes and the manifest of a cache artifact.
fn artifact_manifest(config: &Value, layers: &[Layer]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let config_bytes = strata_store::canonical_json(config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": strata_builder::ARTIFACT_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": strata_codec::sha256_digest(&config_bytes).to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    Ok((config_bytes, strata_store::canonical_json(&manifest)?))
}

/// Reads a cache artifact from an OCI layout directory (the first manifest of index.json).
fn read_layout(dir: &Path) -> anyhow::Result<(Value, Origin)> {
    let read_json = |path: PathBuf| -> anyhow::Result<Value> {
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    };
    let index = read_json(dir.join("index.json"))?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json lists no manifest")?;
    let manifest = read_json(Origin::blob_path(dir, manifest_digest))?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("the manifest has no config")?;
    let config = read_json(Origin::blob_path(dir, config_digest))?;
    Ok((config, Origin::Dir(dir.to_path_buf())))
}

/// Rewrites the image named `tag` so that its config carries `entries` (the inline cache of
/// a pushed image, as BuildKit's `moby.buildkit.cache.v0`: the image ID changes with it).
pub fn add_inline_cache(
    store: &Store,
    tags: &[Reference],
    entries: &[CacheEntry],
) -> anyhow::Result<()> {
    let Some(first) = tags.first() else {
        return Ok(());
    };
    let image = store.resolve(&first.to_string())?;
    let layers: std::collections::HashSet<String> = image
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    let entries: Vec<CacheEntry> = entries
        .iter()
        .filter(|e| layers.contains(&e.layer.digest))
        .cloned()
        .collect();
    let mut config: Value = image.config_json.clone();
    config[strata_builder::CONFIG_FIELD] = serde_json::to_value(&entries)?;
    let lease = store.lease()?;
    let config_bytes = strata_store::canonical_json(&config)?;
    let config_info = store.put_blob(&lease, &config_bytes)?;
    let mut manifest = image.manifest.clone();
    manifest.set_config(config_info.descriptor(oci_spec::image::MediaType::ImageConfig));
    let manifest_desc =
        store.put_json(&lease, oci_spec::image::MediaType::ImageManifest, &manifest)?;
    store.add_image(&manifest_desc, tags)?;
    Ok(())
}
