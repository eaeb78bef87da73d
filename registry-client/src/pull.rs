//! Pulling an image from a registry into the local store.

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageConfiguration};
use strata_codec::Digest;
use strata_store::{Image, LayerRecord, Lease, Platform, Store, media};

use crate::client::Client;
use crate::config::report;
use crate::error::{Error, Result};
use crate::manifest::media_type_of;
use crate::names::{Reference, Repository};
use crate::progress::{BlobOutcome, Direction, ProgressEvent};
use crate::repository::RepositoryClient;
use crate::sources;

/// What [`pull_image`] did.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The image as the store now has it, named after the reference.
    pub image: Image,
    /// What the reference resolved to on the registry: the index's digest when it named one
    /// (Docker's `Digest:` line), else the manifest's.
    pub digest: Digest,
    /// Whether the name points at another image than before the pull (Docker's "Downloaded
    /// newer image" against "Image is up to date").
    pub updated: bool,
}

/// Pulls `reference` (normalised: `docker.io/library/busybox:latest`) for `platform` into
/// `store` and names it there; returns the stored image.
///
/// The manifest (chosen from an index for `platform`), its config and its layers are
/// stored as the registry serves them (compressed layers stay compressed; media types, OCI or
/// Docker, and digests are kept). Layers the store has are skipped; the others download
/// several at a time ([`crate::ClientConfig::max_concurrent_downloads`]) straight into the store,
/// verified as they stream: a blob that does not match its digest never enters the store, and
/// the image is named only once everything it references is stored. An index is not stored:
/// the name points at the platform's manifest, so every other command sees a complete image.
///
/// Each layer is recorded by its diffID (from the config) so builds find it
/// ([`Store::layers_for_diff_id`]), and every blob's repository is remembered so a later push
/// to another repository of the same registry can mount it.
///
/// Progress goes to [`crate::ClientConfig::progress`]: a `Queued` event per layer in image
/// order, then the blobs' events (a layer the store had is `Finished` as
/// [`BlobOutcome::AlreadyPresent`]).
pub async fn pull_image(
    store: &Store,
    client: &Client,
    reference: &strata_store::Reference,
    platform: &Platform,
) -> Result<PulledImage> {
    let repository = Repository::of(reference)?;
    let wanted = Reference::of(reference)?;
    let name = reference.tag_name_only();
    let repo = client.repository(repository.clone());
    let resolved = repo.fetch_image_manifest(&wanted, platform).await?;
    let top_digest = resolved
        .index
        .as_ref()
        .unwrap_or(&resolved.manifest)
        .digest
        .clone();
    let image = &resolved.image;
    if !media::is_image_config(image.config().media_type()) {
        return Err(Error::Protocol {
            what: format!("{reference}"),
            why: format!(
                "not a container image (its config has media type {})",
                image.config().media_type()
            ),
        });
    }
    let progress = &client.config().progress;
    for layer in image.layers() {
        report(
            progress,
            ProgressEvent::Queued {
                digest: layer.digest().clone(),
                size: layer.size(),
                direction: Direction::Download,
            },
        );
    }

    let lease = blocking("starting a lease on the store", {
        let store = store.clone();
        move || store.lease()
    })
    .await?;
    let config = store_config(store, &repo, &lease, image.config()).await?;
    let diff_ids = diff_ids(&config, image.layers().len(), reference)?;

    let limit = client.config().max_concurrent_downloads.max(1);
    // A blob listed twice (empty layers, say) is downloaded once.
    let mut seen = std::collections::HashSet::new();
    let unique = image.layers().iter().filter(|l| seen.insert(l.digest()));
    futures::stream::iter(unique)
        .map(|layer| download_layer(store, &repo, &lease, layer))
        .buffer_unordered(limit)
        .try_collect::<Vec<()>>()
        .await?;

    let manifest = &resolved.manifest;
    let manifest_descriptor = Descriptor::new(
        media_type_of(&manifest.bytes)?.as_str().into(),
        manifest.bytes.len() as u64,
        manifest.digest.clone(),
    );
    let records: Vec<LayerRecord> = image
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| LayerRecord {
            digest: layer.digest().clone(),
            diff_id,
            media_type: layer.media_type().to_string(),
            size: layer.size(),
            uncompressed_size: None,
        })
        .collect();
    let config_digest = image.config().digest().clone();
    let store = store.clone();
    let manifest_bytes = manifest.bytes.clone();
    let (image, updated) = blocking(format!("storing {reference}"), move || {
        put_verified(
            &store,
            &lease,
            manifest_descriptor.digest(),
            &manifest_bytes,
        )?;
        store.write_meta(|meta| {
            for record in &records {
                // A blob recorded before (by an import, with its uncompressed size) keeps its record.
                if meta.layer(&record.digest)?.is_none() {
                    meta.record_layer(record)?;
                }
            }
            let blobs: Vec<&Digest> = std::iter::once(&config_digest)
                .chain(records.iter().map(|r| &r.digest))
                .collect();
            sources::record(meta, &repository, &blobs)
        })?;
        let previous = store
            .entries()?
            .into_iter()
            .find(|e| e.name.as_ref() == Some(&name))
            .map(|e| e.target.digest().clone());
        store.add_image(&manifest_descriptor, std::slice::from_ref(&name))?;
        let updated = previous.as_ref() != Some(manifest_descriptor.digest());
        drop(lease);
        Ok((store.resolve(&name.to_string())?, updated))
    })
    .await?;
    Ok(PulledImage {
        image,
        digest: top_digest,
        updated,
    })
}

/// The image config, from the store when it has it, else downloaded into it.
async fn store_config(
    store: &Store,
    repo: &RepositoryClient,
    lease: &Lease,
    descriptor: &Descriptor,
) -> Result<ImageConfiguration> {
    let digest = descriptor.digest().clone();
    let bytes = if store.has_blob(&digest) {
        let store = store.clone();
        let digest = digest.clone();
        blocking(format!("reading config {digest}"), move || {
            store.read_blob(&digest)
        })
        .await?
    } else {
        let bytes = repo.fetch_blob_bytes(&digest, descriptor.size()).await?;
        let (store, lease, digest) = (store.clone(), lease.clone(), digest.clone());
        let copy = bytes.clone();
        blocking(format!("storing config {digest}"), move || {
            put_verified(&store, &lease, &digest, &copy)
        })
        .await?;
        bytes.to_vec()
    };
    serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
        what: format!("config {digest}"),
        why: e.to_string(),
    })
}

/// The config's diffIDs, one per layer.
fn diff_ids(
    config: &ImageConfiguration,
    layers: usize,
    reference: &strata_store::Reference,
) -> Result<Vec<Digest>> {
    let listed = config.rootfs().diff_ids();
    let bad = |why: String| Error::Protocol {
        what: reference.to_string(),
        why,
    };
    if listed.len() != layers {
        return Err(bad(format!(
            "the config lists {} diffIDs for {layers} layers",
            listed.len()
        )));
    }
    listed
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| bad(format!("bad diffID {d:?} in the config: {e}")))
        })
        .collect()
}

/// One layer into the store: skipped when present, else streamed into a blob writer that
/// only publishes it once its digest and size matched.
async fn download_layer(
    store: &Store,
    repo: &RepositoryClient,
    lease: &Lease,
    layer: &Descriptor,
) -> Result<()> {
    let digest = layer.digest().clone();
    if store.has_blob(&digest) {
        report(
            repo.conn.progress(),
            ProgressEvent::Finished {
                digest,
                outcome: BlobOutcome::AlreadyPresent,
            },
        );
        return Ok(());
    }
    repo.fetch_blob_into_store(store, lease, &digest, layer.size())
        .await
}

/// Stores a small blob that must have `digest` (verified again as it is written).
pub(crate) fn put_verified(
    store: &Store,
    lease: &Lease,
    digest: &Digest,
    bytes: &[u8],
) -> strata_store::Result<()> {
    let mut writer = store.blob_writer_expecting(lease, digest, Some(bytes.len() as u64))?;
    std::io::Write::write_all(&mut writer, bytes)
        .map_err(|e| strata_store::StoreError::Other(Box::new(e)))?;
    writer.commit()?;
    Ok(())
}

/// Runs store work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    what: impl Into<String>,
    f: impl FnOnce() -> strata_store::Result<T> + Send + 'static,
) -> Result<T> {
    let what = what.into();
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Error::store(what)),
        Err(e) => Err(Error::Io {
            what,
            source: std::io::Error::other(e),
        }),
    }
}
