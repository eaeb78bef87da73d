//! Pushing an image from the local store to a registry.

use std::io::{self, Write};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde_json::Value;
use strata_codec::{Compression, Digest};
use strata_store::{LayerRecord, Lease, Store, StoreError, media};
use tokio::sync::mpsc;

use crate::blob::{BlobSource, BlobUpload};
use crate::client::Client;
use crate::config::report;
use crate::error::{Error, Result};
use crate::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::names::{Reference, Repository};
use crate::progress::{BlobOutcome, Direction, ProgressEvent};
use crate::pull::blocking;
use crate::repository::RepositoryClient;
use crate::sources;

/// The media-type family of pushed manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image-spec media types.
    Oci,
    /// Docker's schema 2 media types (manifest list, manifest, container config, rootfs diff).
    Docker,
}

/// How [`push_image`] writes the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Convert manifests, configs and layers to this family of media types (the bytes of
    /// configs and layers do not change, the manifests' do, and so their digests); `None`
    /// pushes each manifest in the family it is stored in.
    pub format: Option<ManifestFormat>,
    /// Recompress layers stored otherwise (`Gzip`, `Zstd` or `None` for plain tar); `None`
    /// pushes layers as stored. Recompressed layers are kept in the store, by diffID, so a
    /// layer is never recompressed twice.
    pub compression: Option<Compression>,
}

/// What [`push_image`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// The digest of the document the tag now names (manifest, or index for an image with
    /// several platforms).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub tag: String,
}

/// Pushes the store's image `source` (a name, ID or digest, as [`Store::resolve`] takes) to
/// `destination` (normalised; a tag, or `latest` when none).
///
/// Blobs first, several at a time ([`crate::ClientConfig::max_concurrent_uploads`]): each is
/// skipped when the repository has it (HEAD), mounted when a repository of the same registry
/// is recorded as having it (pulled from or pushed to; a declined mount falls back to an
/// upload), else uploaded. The manifest goes last, under the tag; for an index, each platform's
/// manifest first by digest, then the index. Where the pushed repository is recorded for
/// later mounts.
///
/// Progress goes to [`crate::ClientConfig::progress`]: a `Queued` event per layer, then the
/// blobs' events. A layer being recompressed reports under its stored digest, since the new
/// one is known only at the end.
pub async fn push_image(
    store: &Store,
    client: &Client,
    source: &str,
    destination: &strata_store::Reference,
    options: &PushOptions,
) -> Result<PushedImage> {
    if destination.digest().is_some() {
        return Err(Error::InvalidName {
            name: destination.to_string(),
            why: "cannot push to a digest reference: name a tag".to_string(),
        });
    }
    if let Some(c) = options.compression
        && c.oci_layer_media_type().is_none()
    {
        return Err(Error::Protocol {
            what: format!("push {destination}"),
            why: format!("layers cannot be pushed compressed as {c:?}"),
        });
    }
    let repository = Repository::of(destination)?;
    let tag = Reference::of(destination)?;
    let (lease, image) = blocking(format!("reading {source} from the store"), {
        let (store, source) = (store.clone(), source.to_string());
        move || Ok((store.lease()?, store.resolve(&source)?))
    })
    .await?;
    let pusher = Pusher {
        store,
        repo: client.repository(repository.clone()),
        repository: &repository,
        lease: &lease,
        options,
    };
    let target = &image.target;
    let pushed = match media::kind(target.media_type()) {
        media::Kind::Manifest => pusher.push_manifest(target, Some(&tag)).await?,
        media::Kind::Index => pusher.push_index(target, &tag).await?,
        media::Kind::Other => {
            return Err(Error::Protocol {
                what: format!("push {source}"),
                why: format!("{} is not an image", target.media_type()),
            });
        }
    };
    drop(lease);
    Ok(PushedImage {
        digest: pushed.digest().clone(),
        size: pushed.size(),
        media_type: pushed.media_type().to_string(),
        tag: tag.as_path_segment(),
    })
}

struct Pusher<'a> {
    store: &'a Store,
    repo: RepositoryClient,
    repository: &'a Repository,
    lease: &'a Lease,
    options: &'a PushOptions,
}

/// One blob to send.
enum Outgoing {
    /// A blob of the store, as it is: the manifest's own, or (`replaces` set) a stored blob of
    /// the same diffID in the wanted compression that takes the layer's place.
    Stored {
        digest: Digest,
        size: u64,
        replaces: Option<Compression>,
    },
    /// A layer recompressed on the way (its stored digest, and the diffID it must have).
    Recompressed {
        source: Digest,
        diff_id: Digest,
        compression: Compression,
    },
}

impl Pusher<'_> {
    async fn read_document(&self, descriptor: &Descriptor) -> Result<(Vec<u8>, Value)> {
        let digest = descriptor.digest().clone();
        let store = self.store.clone();
        let bytes = blocking(format!("reading {digest}"), move || {
            if !store.has_blob(&digest) {
                return Err(StoreError::BlobNotFound(digest.to_string()));
            }
            store.read_blob(&digest)
        })
        .await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            what: format!("manifest {}", descriptor.digest()),
            why: e.to_string(),
        })?;
        Ok((bytes, value))
    }

    /// Pushes every platform's manifest of an index by digest, then the index under `tag`.
    async fn push_index(&self, descriptor: &Descriptor, tag: &Reference) -> Result<Descriptor> {
        let (bytes, mut document) = self.read_document(descriptor).await?;
        let own = if document["mediaType"] == DOCKER_MANIFEST_LIST {
            ManifestFormat::Docker
        } else {
            ManifestFormat::Oci
        };
        let format = self.options.format.unwrap_or(own);
        let children: Vec<Descriptor> = serde_json::from_value(document["manifests"].clone())
            .map_err(|e| Error::Protocol {
                what: format!("index {}", descriptor.digest()),
                why: e.to_string(),
            })?;
        let mut changed = format != own;
        for (i, child) in children.iter().enumerate() {
            if media::kind(child.media_type()) != media::Kind::Manifest {
                return Err(Error::Protocol {
                    what: format!("index {}", descriptor.digest()),
                    why: format!(
                        "entry {} is a {}, not a manifest",
                        child.digest(),
                        child.media_type()
                    ),
                });
            }
            let pushed = self.push_manifest(child, None).await?;
            if pushed.digest() != child.digest() {
                changed = true;
            }
            let entry = &mut document["manifests"][i];
            entry["mediaType"] = Value::from(pushed.media_type().to_string());
            entry["digest"] = Value::from(pushed.digest().to_string());
            entry["size"] = Value::from(pushed.size());
        }
        let (bytes, media_type) = if changed {
            let media_type = match format {
                ManifestFormat::Oci => OCI_INDEX,
                ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
            };
            document["mediaType"] = Value::from(media_type);
            if format == ManifestFormat::Docker {
                strip_oci_only_fields(&mut document);
            }
            (canonical(&document)?, media_type.to_string())
        } else {
            (bytes, descriptor.media_type().to_string())
        };
        self.send_document(Some(tag), bytes, media_type).await
    }

    /// Pushes one image manifest's blobs, then the manifest (under `tag`, else by digest).
    async fn push_manifest(
        &self,
        descriptor: &Descriptor,
        tag: Option<&Reference>,
    ) -> Result<Descriptor> {
        let (bytes, mut document) = self.read_document(descriptor).await?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                what: format!("manifest {}", descriptor.digest()),
                why: e.to_string(),
            })?;
        let own = if document["mediaType"] == DOCKER_MANIFEST {
            ManifestFormat::Docker
        } else {
            ManifestFormat::Oci
        };
        let format = self.options.format.unwrap_or(own);
        let sends = self.plan_layers(&manifest).await?;
        let progress = self.repo.conn.progress();
        for send in &sends {
            let (digest, size) = match send {
                Outgoing::Stored { digest, size, .. } => (digest.clone(), *size),
                Outgoing::Recompressed { source, .. } => (source.clone(), 0),
            };
            report(
                progress,
                ProgressEvent::Queued {
                    digest,
                    size,
                    direction: Direction::Upload,
                },
            );
        }

        let config = Outgoing::Stored {
            digest: manifest.config().digest().clone(),
            size: manifest.config().size(),
            replaces: None,
        };
        let known: Vec<Digest> = std::iter::once(&config)
            .chain(&sends)
            .filter_map(|s| match s {
                Outgoing::Stored { digest, .. } => Some(digest.clone()),
                Outgoing::Recompressed { .. } => None,
            })
            .collect();
        let mounts = blocking("reading where blobs were pulled from", {
            let (store, repository) = (self.store.clone(), self.repository.clone());
            move || sources::mount_sources(&store, &repository, &known)
        })
        .await?;
        let mut mounts = mounts.into_iter();
        let jobs: Vec<(&Outgoing, Option<String>)> = std::iter::once(&config)
            .chain(&sends)
            .map(|s| match s {
                Outgoing::Stored { .. } => (s, mounts.next().flatten()),
                Outgoing::Recompressed { .. } => (s, None),
            })
            .collect();
        let limit = self.repo.conn.config.max_concurrent_uploads.max(1);
        let sent: Vec<(Digest, u64)> = futures::stream::iter(jobs)
            .map(|(send, mount_from)| self.send_blob(send, mount_from))
            .buffered(limit)
            .try_collect()
            .await?;

        // The compression of each layer that is not the manifest's own blob.
        let compressions: Vec<Option<Compression>> = sends
            .iter()
            .map(|s| match s {
                Outgoing::Recompressed { compression, .. } => Some(*compression),
                Outgoing::Stored { replaces, .. } => *replaces,
            })
            .collect();
        let (bytes, media_type) = if compressions.iter().any(Option::is_some) || format != own {
            rewrite_manifest(&mut document, format, &sent[1..], &compressions);
            (
                canonical(&document)?,
                manifest_media_type(format).to_string(),
            )
        } else {
            (bytes, descriptor.media_type().to_string())
        };

        blocking("recording where blobs were pushed", {
            let (store, repository) = (self.store.clone(), self.repository.clone());
            let digests: Vec<Digest> = sent.iter().map(|(d, _)| d.clone()).collect();
            move || {
                store.write_meta(|meta| {
                    sources::record(meta, &repository, &digests.iter().collect::<Vec<_>>())
                })
            }
        })
        .await?;
        let mut pushed = self.send_document(tag, bytes, media_type).await?;
        pushed.set_platform(descriptor.platform().clone());
        Ok(pushed)
    }

    /// What to send for each layer: the stored blob, a stored blob of the same diffID in the
    /// wanted compression, or a recompression.
    async fn plan_layers(&self, manifest: &ImageManifest) -> Result<Vec<Outgoing>> {
        let stored = |l: &Descriptor| Outgoing::Stored {
            digest: l.digest().clone(),
            size: l.size(),
            replaces: None,
        };
        let Some(wanted) = self.options.compression else {
            return Ok(manifest.layers().iter().map(stored).collect());
        };
        let needs_work = |l: &Descriptor| {
            let media_type = l.media_type().to_string();
            !media_type.contains("nondistributable")
                && !media_type.contains("foreign")
                && Compression::from_media_type(&media_type).is_ok_and(|c| c != wanted)
        };
        if !manifest.layers().iter().any(needs_work) {
            return Ok(manifest.layers().iter().map(stored).collect());
        }
        let config_digest = manifest.config().digest().clone();
        let store = self.store.clone();
        let layers = manifest.layers().clone();
        let work: Vec<bool> = layers.iter().map(needs_work).collect();
        blocking(
            format!("planning the layers of {config_digest}"),
            move || {
                let config: ImageConfiguration = store.read_json(&config_digest)?;
                let diff_ids = config.rootfs().diff_ids();
                if diff_ids.len() != layers.len() {
                    return Err(StoreError::Invalid(format!(
                        "config {config_digest} lists {} diffIDs for {} layers",
                        diff_ids.len(),
                        layers.len()
                    )));
                }
                let mut out = Vec::with_capacity(layers.len());
                for ((layer, diff_id), work) in layers.iter().zip(diff_ids).zip(work) {
                    if !work {
                        out.push(stored(layer));
                        continue;
                    }
                    let diff_id: Digest = diff_id
                        .parse()
                        .map_err(|e| StoreError::Invalid(format!("bad diffID {diff_id:?}: {e}")))?;
                    let cached = store.layers_for_diff_id(&diff_id)?.into_iter().find(|r| {
                        Compression::from_media_type(&r.media_type).is_ok_and(|c| c == wanted)
                    });
                    out.push(match cached {
                        Some(record) => Outgoing::Stored {
                            digest: record.digest,
                            size: record.size,
                            replaces: Some(wanted),
                        },
                        None => Outgoing::Recompressed {
                            source: layer.digest().clone(),
                            diff_id,
                            compression: wanted,
                        },
                    });
                }
                Ok(out)
            },
        )
        .await
    }

    /// Sends one blob; returns the digest and size the registry now has.
    async fn send_blob(
        &self,
        send: &Outgoing,
        mount_from: Option<String>,
    ) -> Result<(Digest, u64)> {
        match send {
            Outgoing::Stored { digest, size, .. } => {
                let upload = BlobUpload {
                    digest: digest.clone(),
                    size: *size,
                    source: BlobSource::from_file(self.store.blob_path(digest)),
                    mount_from,
                };
                self.repo.push_blob(&upload).await?;
                Ok((digest.clone(), *size))
            }
            Outgoing::Recompressed {
                source,
                diff_id,
                compression,
            } => self.recompress(source, diff_id, *compression).await,
        }
    }

    /// Streams a stored layer through decompression and `compression` into the store and to
    /// the registry at once; when the streamed upload fails, the finished blob is pushed from
    /// the store instead.
    async fn recompress(
        &self,
        source: &Digest,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<(Digest, u64)> {
        let progress = self.repo.conn.progress().clone();
        report(
            &progress,
            ProgressEvent::Started {
                digest: source.clone(),
                size: 0,
                direction: Direction::Upload,
            },
        );
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(16);
        let producer = blocking(format!("recompressing layer {source}"), {
            let (store, lease) = (self.store.clone(), self.lease.clone());
            let (source, diff_id) = (source.clone(), diff_id.clone());
            move || recompress_into_store(&store, &lease, &source, &diff_id, compression, tx)
        });
        let chunks = {
            let (progress, source) = (progress.clone(), source.clone());
            let mut sent = 0u64;
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).inspect_ok(move |chunk| {
                sent += chunk.len() as u64;
                report(
                    &progress,
                    ProgressEvent::Transferred {
                        digest: source.clone(),
                        bytes: sent,
                    },
                );
            })
        };
        let (uploaded, record) = tokio::join!(self.repo.push_blob_stream(chunks), producer);
        let record = record?;
        match uploaded {
            Ok((digest, _)) if digest == record.digest => {}
            Ok((digest, _)) => {
                return Err(Error::Protocol {
                    what: format!("recompressing layer {source}"),
                    why: format!("uploaded {digest} but stored {}", record.digest),
                });
            }
            Err(e) => {
                report(
                    &progress,
                    ProgressEvent::Retrying {
                        digest: source.clone(),
                        attempt: 1,
                        reason: e.full_message(),
                    },
                );
                let upload = BlobUpload {
                    digest: record.digest.clone(),
                    size: record.size,
                    source: BlobSource::from_file(self.store.blob_path(&record.digest)),
                    mount_from: None,
                };
                self.repo.push_blob(&upload).await?;
            }
        }
        report(
            &progress,
            ProgressEvent::Finished {
                digest: source.clone(),
                outcome: BlobOutcome::Uploaded,
            },
        );
        Ok((record.digest, record.size))
    }

    /// Pushes a manifest or index (under `tag`, else by its digest) and describes it.
    async fn send_document(
        &self,
        tag: Option<&Reference>,
        bytes: Vec<u8>,
        media_type: String,
    ) -> Result<Descriptor> {
        let digest = strata_codec::sha256_digest(&bytes);
        let reference = tag
            .cloned()
            .unwrap_or_else(|| Reference::Digest(digest.clone()));
        let size = bytes.len() as u64;
        self.repo
            .push_manifest(&reference, Bytes::from(bytes), Some(&media_type))
            .await?;
        Ok(Descriptor::new(media_type.as_str().into(), size, digest))
    }
}

/// Recompresses the stored layer `source` into the store as `compression` (see
/// [`Store::recompress_layer`]), streaming the blob to `upload` while it is written.
fn recompress_into_store(
    store: &Store,
    lease: &Lease,
    source: &Digest,
    diff_id: &Digest,
    compression: Compression,
    upload: mpsc::Sender<io::Result<Bytes>>,
) -> strata_store::Result<LayerRecord> {
    let mut mirror = UploadMirror {
        upload: Some(upload),
    };
    let record = store.recompress_layer(lease, source, diff_id, compression, &mut mirror)?;
    // Ends the upload's stream successfully.
    mirror.upload = None;
    Ok(record)
}

/// Sends each chunk of a blob being stored to an upload while the upload listens. Dropped with
/// the upload still listening (the recompression failed), it sends an error so the upload fails.
struct UploadMirror {
    upload: Option<mpsc::Sender<io::Result<Bytes>>>,
}

impl Write for UploadMirror {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(upload) = &self.upload
            && upload
                .blocking_send(Ok(Bytes::copy_from_slice(buf)))
                .is_err()
        {
            // The upload failed; the blob is still stored, and pushed from the store.
            self.upload = None;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadMirror {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            let _ = upload.blocking_send(Err(io::Error::other("recompressing the layer failed")));
        }
    }
}

/// Rewrites a manifest for `format`, with each layer's blob as sent: `sent` gives digest and
/// size per layer, `compressions` the compression of those that replaced the stored blob.
fn rewrite_manifest(
    document: &mut Value,
    format: ManifestFormat,
    sent: &[(Digest, u64)],
    compressions: &[Option<Compression>],
) {
    document["mediaType"] = Value::from(manifest_media_type(format));
    if let Some(t) = document["config"]["mediaType"].as_str() {
        document["config"]["mediaType"] = Value::from(convert_media_type(t, format));
    }
    for (i, ((digest, size), compression)) in sent.iter().zip(compressions).enumerate() {
        let layer = &mut document["layers"][i];
        let new_type = match compression {
            Some(c) => layer_media_type(*c, format),
            None => convert_media_type(layer["mediaType"].as_str().unwrap_or_default(), format),
        };
        layer["mediaType"] = Value::from(new_type);
        layer["digest"] = Value::from(digest.to_string());
        layer["size"] = Value::from(*size);
    }
    if format == ManifestFormat::Docker {
        strip_oci_only_fields(document);
    }
}

fn manifest_media_type(format: ManifestFormat) -> &'static str {
    match format {
        ManifestFormat::Oci => OCI_MANIFEST,
        ManifestFormat::Docker => DOCKER_MANIFEST,
    }
}

/// OCI <-> Docker media types for the same thing.
fn media_type_pairs() -> [(&'static str, &'static str); 4] {
    [
        (OCI_MANIFEST, DOCKER_MANIFEST),
        (OCI_INDEX, DOCKER_MANIFEST_LIST),
        (media::OCI_CONFIG, media::DOCKER_CONFIG),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ),
    ]
}

/// `media_type` in `format`'s family; types without a counterpart are kept.
fn convert_media_type(media_type: &str, format: ManifestFormat) -> String {
    for (oci, docker) in media_type_pairs() {
        match format {
            ManifestFormat::Oci if media_type == docker => return oci.to_string(),
            ManifestFormat::Docker if media_type == oci => return docker.to_string(),
            _ => {}
        }
    }
    match Compression::from_media_type(media_type) {
        Ok(c) if !media_type.contains("nondistributable") && !media_type.contains("foreign") => {
            layer_media_type(c, format)
        }
        _ => media_type.to_string(),
    }
}

fn layer_media_type(compression: Compression, format: ManifestFormat) -> String {
    match format {
        ManifestFormat::Oci => compression.oci_layer_media_type(),
        ManifestFormat::Docker => compression.docker_layer_media_type(),
    }
    .unwrap_or_default()
    .to_string()
}

/// Docker's schema 2 has no annotations, subject or artifact type.
fn strip_oci_only_fields(document: &mut Value) {
    if let Some(map) = document.as_object_mut() {
        for field in ["annotations", "subject", "artifactType"] {
            map.remove(field);
        }
    }
}

fn canonical(document: &Value) -> Result<Vec<u8>> {
    strata_store::canonical_json(document).map_err(Error::store("writing a manifest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_convert_both_ways() {
        use ManifestFormat::{Docker, Oci};
        let cases = [
            (OCI_MANIFEST, DOCKER_MANIFEST),
            (OCI_INDEX, DOCKER_MANIFEST_LIST),
            (media::OCI_CONFIG, media::DOCKER_CONFIG),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
            ),
            (
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.docker.image.rootfs.diff.tar",
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            ),
        ];
        for (oci, docker) in cases {
            assert_eq!(convert_media_type(oci, Docker), docker);
            assert_eq!(convert_media_type(docker, Oci), oci);
            assert_eq!(convert_media_type(oci, Oci), oci);
            assert_eq!(convert_media_type(docker, Docker), docker);
        }
        assert_eq!(
            convert_media_type("application/vnd.in-toto+json", Docker),
            "application/vnd.in-toto+json"
        );
    }
}
