//! Operations on one repository: manifests, blob downloads, blob uploads and mounts.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::ImageManifest;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Body, Response};
use strata_codec::{Digest, DigestMismatch, HashingWriter};
use strata_store::{Lease, Platform, Store};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use url::Url;

use crate::auth::Scope;
use crate::blob::{BlobStream, BlobUpload, BufferSink, ChannelSink, ChunkSink, WriterSink};
use crate::config::report;
use crate::connection::{Call, Connection, ReadError, read_limited, status_error};
use crate::error::{Error, Result, retryable_status};
use crate::manifest::{
    MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, Manifest, ManifestDocument, available_platforms,
    media_type_of, select_platform,
};
use crate::names::{Reference, Repository};
use crate::progress::{BlobOutcome, Direction, ProgressEvent};
use crate::pull::blocking;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCTET_STREAM: &str = "application/octet-stream";
/// Configs and other small blobs read into memory are refused past this size.
const MAX_BUFFERED_BLOB: u64 = 64 << 20;

/// What a manifest reference resolves to (from a HEAD request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image manifest for one platform, and the index it was picked from when there was one.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub index: Option<Manifest>,
    pub manifest: Manifest,
    pub image: ImageManifest,
}

/// A client for one repository. Cheap to clone; clones share connections, credentials and
/// tokens, so one per image and task is fine.
#[derive(Clone)]
pub struct RepositoryClient {
    pub(crate) conn: Arc<Connection>,
    pub(crate) repo: Repository,
}

impl std::fmt::Debug for RepositoryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RepositoryClient").field(&self.repo).finish()
    }
}

enum UploadStart {
    Mounted,
    Session(Url),
}

impl RepositoryClient {
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn image(&self, reference: &Reference) -> String {
        format!("{}{}", self.repo, reference)
    }

    fn url(&self, base: &Url, tail: &str) -> Result<Url> {
        base.join(&format!("v2/{}/{tail}", self.repo.path()))
            .map_err(|e| Error::Protocol {
                what: format!("URL for {}", self.repo),
                why: e.to_string(),
            })
    }

    fn call<'a>(
        &'a self,
        what: &'a str,
        image: &'a str,
        scopes: &'a [Scope],
        digest: Option<&'a Digest>,
    ) -> Call<'a> {
        Call {
            what,
            image,
            repository: Some(self.repo.path()),
            scopes,
            digest,
        }
    }

    /// The digest, media type and size of a manifest, by HEAD (no body is transferred). Falls
    /// back to a GET when the registry does not say the digest.
    pub async fn resolve(&self, reference: &Reference) -> Result<ManifestHead> {
        let image = self.image(reference);
        let what = format!("HEAD manifest {image}");
        let scopes = [Scope::pull(self.repo.path())];
        let tail = format!("manifests/{}", reference.as_path_segment());
        let response = self
            .conn
            .send(&self.call(&what, &image, &scopes, None), |http, base| {
                Ok(http
                    .head(self.url(base, &tail)?)
                    .header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&what, response).await);
        }
        let headers = response.headers();
        let digest = headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        match digest {
            Some(digest) => Ok(ManifestHead {
                digest,
                media_type: content_type(&response),
                size: header_length(&response).unwrap_or(0),
            }),
            None => {
                let manifest = self.fetch_manifest(reference).await?;
                Ok(ManifestHead {
                    digest: manifest.digest,
                    media_type: manifest.media_type,
                    size: manifest.bytes.len() as u64,
                })
            }
        }
    }

    /// A manifest or index by tag or digest, checked against the digest asked for (or the
    /// registry's `Docker-Content-Digest` for a tag). Retried as a whole on dropped connections
    /// and on content that does not match.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<Manifest> {
        let image = self.image(reference);
        let what = format!("GET manifest {image}");
        let scopes = [Scope::pull(self.repo.path())];
        let tail = format!("manifests/{}", reference.as_path_segment());
        let call = self.call(&what, &image, &scopes, None);
        let mut retrier = self.conn.retrier(None);
        loop {
            let response = self
                .conn
                .send(&call, |http, base| {
                    Ok(http
                        .get(self.url(base, &tail)?)
                        .header(ACCEPT, MANIFEST_ACCEPT))
                })
                .await?;
            if !response.status().is_success() {
                return Err(status_error(&what, response).await);
            }
            let media_type = content_type(&response);
            let announced = response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            let body = match read_limited(response, MAX_MANIFEST_BYTES).await {
                Ok(body) => body,
                Err(ReadError::TooLarge) => {
                    return Err(Error::Protocol {
                        what,
                        why: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
                    });
                }
                Err(ReadError::Transport(source)) => {
                    let err = Error::Transport {
                        what: what.clone(),
                        source,
                    };
                    retrier.pause(err, None).await?;
                    continue;
                }
            };
            let digest = strata_codec::sha256_digest(&body);
            let expected = match reference {
                Reference::Digest(d) => Some(d.clone()),
                // Only a sha256 announcement can be compared with what was computed.
                Reference::Tag(_) => announced.filter(is_sha256),
            };
            if let Some(expected) = expected.filter(|e| *e != digest) {
                ensure_sha256(&expected)?;
                let err = Error::Corrupt {
                    what: what.clone(),
                    source: DigestMismatch::Digest {
                        expected,
                        actual: digest,
                    },
                };
                retrier.pause_always(err, None).await?;
                continue;
            }
            return Ok(Manifest {
                digest,
                media_type,
                bytes: body,
            });
        }
    }

    /// The image manifest for `platform`: the manifest itself when the reference names one,
    /// else the index's entry for the platform, fetched by digest.
    pub async fn fetch_image_manifest(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let first = self.fetch_manifest(reference).await?;
        let index = match first.parse()? {
            ManifestDocument::Image(image) => {
                return Ok(ResolvedImage {
                    index: None,
                    manifest: first,
                    image: *image,
                });
            }
            ManifestDocument::Index(index) => index,
        };
        let chosen =
            select_platform(&index, platform).ok_or_else(|| Error::NoMatchingPlatform {
                image: self.image(reference),
                wanted: platform.to_string(),
                available: available_platforms(&index),
            })?;
        let manifest = self
            .fetch_manifest(&Reference::Digest(chosen.digest().clone()))
            .await?;
        match manifest.parse()? {
            ManifestDocument::Image(image) => Ok(ResolvedImage {
                index: Some(first),
                manifest,
                image: *image,
            }),
            ManifestDocument::Index(_) => Err(Error::Protocol {
                what: self.image(reference),
                why: format!("the entry for {platform} is an index, not an image"),
            }),
        }
    }

    /// The blob's size when the repository has it (HEAD), `None` when it does not.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>> {
        self.head_blob(digest, &[Scope::pull(self.repo.path())])
            .await
    }

    async fn head_blob(&self, digest: &Digest, scopes: &[Scope]) -> Result<Option<u64>> {
        let image = format!("{}@{digest}", self.repo);
        let what = format!("HEAD blob {image}");
        let tail = format!("blobs/{digest}");
        let response = self
            .conn
            .send(
                &self.call(&what, &image, scopes, Some(digest)),
                |http, base| Ok(http.head(self.url(base, &tail)?)),
            )
            .await?;
        match response.status().as_u16() {
            200..=299 => Ok(Some(header_length(&response).unwrap_or(0))),
            404 => Ok(None),
            _ => Err(status_error(&what, response).await),
        }
    }

    /// Downloads a blob as a stream of verified chunks (see [`BlobStream`]). `size` (from the
    /// descriptor) is enforced as the bytes arrive.
    pub fn fetch_blob(&self, digest: &Digest, size: Option<u64>) -> Result<BlobStream> {
        ensure_sha256(digest)?;
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        let digest = digest.clone();
        let task = tokio::spawn(async move {
            let mut sink = ChannelSink(tx.clone(), Ok);
            if let Err(e) = this.download(&digest, size, &mut sink, Check::Here).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(BlobStream {
            chunks: rx,
            task: task.abort_handle(),
        })
    }

    /// Downloads a blob into an async writer (flushed at the end), verifying digest and size on
    /// the fly. On error the writer may hold part of the blob (never all of a corrupt one):
    /// discard it.
    pub async fn fetch_blob_into<W>(
        &self,
        digest: &Digest,
        size: Option<u64>,
        writer: &mut W,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send,
    {
        use tokio::io::AsyncWriteExt;
        self.download(digest, size, &mut WriterSink(writer), Check::Here)
            .await?;
        writer.flush().await.map_err(|source| Error::Io {
            what: format!("writing blob {digest}"),
            source,
        })
    }

    /// Downloads a blob into a blocking writer (an extractor, a file) that runs on a blocking
    /// thread while the download goes on, and hands the writer back. Same verification and
    /// error contract as [`RepositoryClient::fetch_blob_into`]; an error of the writer ends the
    /// download and is returned.
    pub async fn fetch_blob_into_blocking<W>(
        &self,
        digest: &Digest,
        size: Option<u64>,
        writer: W,
    ) -> Result<W>
    where
        W: Write + Send + 'static,
    {
        self.download_into_blocking(digest, size, writer, Check::Here)
            .await
    }

    /// Downloads a blob straight into `store`. The store's writer hashes the bytes as it writes
    /// them and publishes the blob only when digest and size match
    /// ([`Store::blob_writer_expecting`]), so the download does not hash them a second time. A
    /// blob that does not match fails with [`Error::Store`] and leaves nothing in the store.
    pub async fn fetch_blob_into_store(
        &self,
        store: &Store,
        lease: &Lease,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let what = format!("GET blob {}@{digest}", self.repo);
        let writer = blocking(what.clone(), {
            let (store, lease, digest) = (store.clone(), lease.clone(), digest.clone());
            move || store.blob_writer_expecting(&lease, &digest, Some(size))
        })
        .await?;
        let writer = self
            .download_into_blocking(digest, Some(size), writer, Check::InSink)
            .await?;
        blocking(what, move || writer.commit()).await?;
        Ok(())
    }

    async fn download_into_blocking<W>(
        &self,
        digest: &Digest,
        size: Option<u64>,
        writer: W,
        check: Check,
    ) -> Result<W>
    where
        W: Write + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let writing = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(chunk) = rx.blocking_recv() {
                writer.write_all(&chunk)?;
            }
            writer.flush()?;
            Ok::<W, io::Error>(writer)
        });
        let downloaded = {
            let mut sink = ChannelSink(tx, |b| b);
            self.download(digest, size, &mut sink, check).await
        };
        let written = writing.await.map_err(|e| Error::Io {
            what: format!("writing blob {digest}"),
            source: io::Error::other(e),
        })?;
        match (downloaded, written) {
            (Ok(()), Ok(writer)) => Ok(writer),
            (Err(_), Err(source)) | (Ok(()), Err(source)) => Err(Error::Io {
                what: format!("writing blob {digest}"),
                source,
            }),
            (Err(e), Ok(_)) => Err(e),
        }
    }

    /// A small blob (an image config) in memory, verified.
    pub async fn fetch_blob_bytes(&self, digest: &Digest, size: u64) -> Result<Bytes> {
        if size > MAX_BUFFERED_BLOB {
            return Err(Error::Protocol {
                what: format!("blob {digest}"),
                why: format!("{size} bytes is too large to read into memory"),
            });
        }
        let mut sink = BufferSink(BytesMut::new());
        self.download(digest, Some(size), &mut sink, Check::Here)
            .await?;
        Ok(sink.0.freeze())
    }

    /// The download loop: resumes with `Range` after a dropped connection (skipping what it
    /// already has if the registry ignores the range) and enforces the size. With
    /// [`Check::Here`] it hashes everything and holds the last chunk back until the digest is
    /// checked; with [`Check::InSink`] chunks go straight on and the sink checks the digest.
    async fn download(
        &self,
        digest: &Digest,
        size: Option<u64>,
        sink: &mut impl ChunkSink,
        check: Check,
    ) -> Result<()> {
        ensure_sha256(digest)?;
        let image = format!("{}@{digest}", self.repo);
        let what = format!("GET blob {image}");
        let scopes = [Scope::pull(self.repo.path())];
        let call = self.call(&what, &image, &scopes, Some(digest));
        let progress = self.conn.progress();
        report(
            progress,
            ProgressEvent::Started {
                digest: digest.clone(),
                size: size.unwrap_or(0),
                direction: Direction::Download,
            },
        );
        let mut state = DownloadState {
            received: 0,
            hasher: (check == Check::Here).then(|| HashingWriter::new(io::sink())),
            pending: None,
        };
        let mut retrier = self.conn.retrier(Some(digest));
        loop {
            let before = state.received;
            match self
                .download_attempt(&call, digest, size, &mut state, sink)
                .await
            {
                Ok(()) => break,
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Retry(e)) => {
                    // A long download on a flaky link may break often; only breaks without
                    // progress in between use up tries.
                    if state.received > before {
                        retrier.reset();
                    }
                    retrier.pause(e, None).await?
                }
            }
        }
        if let Some(expected_len) = size.filter(|s| *s != state.received) {
            return Err(Error::Corrupt {
                what,
                source: DigestMismatch::Size {
                    expected: digest.clone(),
                    expected_len,
                    actual_len: state.received,
                },
            });
        }
        let actual = state.hasher.take().map(|h| h.finish().1);
        if let Some(actual) = actual.filter(|a| a != digest) {
            return Err(Error::Corrupt {
                what,
                source: DigestMismatch::Digest {
                    expected: digest.clone(),
                    actual,
                },
            });
        }
        if let Some(last) = state.pending.take() {
            sink.accept(last).await.map_err(|source| Error::Io {
                what: what.clone(),
                source,
            })?;
        }
        report(
            progress,
            ProgressEvent::Finished {
                digest: digest.clone(),
                outcome: BlobOutcome::Downloaded,
            },
        );
        Ok(())
    }

    async fn download_attempt(
        &self,
        call: &Call<'_>,
        digest: &Digest,
        size: Option<u64>,
        state: &mut DownloadState,
        sink: &mut impl ChunkSink,
    ) -> std::result::Result<(), AttemptError> {
        let offset = state.received;
        let tail = format!("blobs/{digest}");
        let response = self
            .conn
            .send(call, |http, base| {
                let request = http.get(self.url(base, &tail)?);
                Ok(if offset > 0 {
                    request.header(RANGE, format!("bytes={offset}-"))
                } else {
                    request
                })
            })
            .await
            .map_err(AttemptError::Final)?;
        let mut skip = match response.status().as_u16() {
            200 => offset,
            206 if content_range_start(&response) == Some(offset) => 0,
            206 => {
                return Err(AttemptError::Final(Error::Protocol {
                    what: call.what.to_string(),
                    why: format!("asked for bytes from {offset}, got another range"),
                }));
            }
            _ => return Err(AttemptError::Final(status_error(call.what, response).await)),
        };
        let mut response = response;
        let progress = self.conn.progress();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(source) => {
                    return Err(AttemptError::Retry(Error::Transport {
                        what: call.what.to_string(),
                        source,
                    }));
                }
            };
            let chunk = if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                chunk.slice(n as usize..)
            } else {
                chunk
            };
            if chunk.is_empty() {
                continue;
            }
            let len = state.received + chunk.len() as u64;
            if let Some(expected_len) = size.filter(|s| len > *s) {
                return Err(AttemptError::Final(Error::Corrupt {
                    what: call.what.to_string(),
                    source: DigestMismatch::Size {
                        expected: digest.clone(),
                        expected_len,
                        actual_len: len,
                    },
                }));
            }
            state.received = len;
            let ready = match &mut state.hasher {
                Some(hasher) => {
                    // Writing to a sink cannot fail.
                    let _ = hasher.write_all(&chunk);
                    state.pending.replace(chunk)
                }
                None => Some(chunk),
            };
            if let Some(ready) = ready {
                sink.accept(ready).await.map_err(|source| {
                    AttemptError::Final(Error::Io {
                        what: call.what.to_string(),
                        source,
                    })
                })?;
            }
            report(
                progress,
                ProgressEvent::Transferred {
                    digest: digest.clone(),
                    bytes: len,
                },
            );
        }
    }

    /// Pushes one blob: nothing when the repository has it, a mount when `mount_from` has it,
    /// else an upload (monolithic, or in chunks when the registry's options say so). Failed
    /// chunks resume from the offset the registry reports; other failures start a new upload.
    pub async fn push_blob(&self, upload: &BlobUpload) -> Result<BlobOutcome> {
        ensure_sha256(&upload.digest)?;
        let digest = &upload.digest;
        let progress = self.conn.progress();
        report(
            progress,
            ProgressEvent::Started {
                digest: digest.clone(),
                size: upload.size,
                direction: Direction::Upload,
            },
        );
        let push_scope = [Scope::push(self.repo.path())];
        let outcome = if self.head_blob(digest, &push_scope).await?.is_some() {
            BlobOutcome::AlreadyPresent
        } else {
            self.upload_blob(upload).await?
        };
        report(
            progress,
            ProgressEvent::Finished {
                digest: digest.clone(),
                outcome: outcome.clone(),
            },
        );
        Ok(outcome)
    }

    async fn upload_blob(&self, upload: &BlobUpload) -> Result<BlobOutcome> {
        let mut mount = upload
            .mount_from
            .as_deref()
            .filter(|from| *from != self.repo.path());
        let mut retrier = self.conn.retrier(Some(&upload.digest));
        loop {
            let location = match self.start_upload(&upload.digest, mount).await {
                Ok(UploadStart::Mounted) => {
                    return Ok(BlobOutcome::Mounted {
                        from: mount.unwrap_or_default().to_string(),
                    });
                }
                Ok(UploadStart::Session(location)) => location,
                // Token registries refuse the whole request when we may not pull the source.
                Err(Error::Unauthorized { .. }) if mount.is_some() => {
                    mount = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // The registry declined the mount; it will not change its mind on a retry.
            mount = None;
            match self.upload_in_session(location, upload).await {
                Ok(()) => return Ok(BlobOutcome::Uploaded),
                Err(e) if restartable(&e) => retrier.pause_always(e, None).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /blobs/uploads/`, with `?mount=&from=` (and a token that may also pull `from`)
    /// when a mount is wanted. 201 means mounted, 202 gives an upload session.
    async fn start_upload(&self, digest: &Digest, mount: Option<&str>) -> Result<UploadStart> {
        let image = format!("{}@{digest}", self.repo);
        let what = match mount {
            Some(from) => format!("mount blob {digest} from {from} into {}", self.repo),
            None => format!("start upload of {image}"),
        };
        let mut scopes = vec![Scope::push(self.repo.path())];
        if let Some(from) = mount {
            scopes.push(Scope::pull(from));
        }
        let response = self
            .conn
            .send(
                &self.call(&what, &image, &scopes, Some(digest)),
                |http, base| {
                    let mut url = self.url(base, "blobs/uploads/")?;
                    if let Some(from) = mount {
                        url.query_pairs_mut()
                            .append_pair("mount", digest.as_ref())
                            .append_pair("from", from);
                    }
                    Ok(http.post(url).header(CONTENT_LENGTH, 0))
                },
            )
            .await?;
        match response.status().as_u16() {
            201 if mount.is_some() => Ok(UploadStart::Mounted),
            202 => Ok(UploadStart::Session(location_of(&response, &what)?)),
            _ => Err(status_error(&what, response).await),
        }
    }

    async fn upload_in_session(&self, location: Url, upload: &BlobUpload) -> Result<()> {
        match self.conn.options.chunk_size {
            Some(chunk) if chunk > 0 && upload.size > 0 => {
                self.upload_chunks(location, upload, chunk).await
            }
            _ => self.upload_whole(location, upload).await,
        }
    }

    /// One `PUT ?digest=` with the whole blob.
    async fn upload_whole(&self, location: Url, upload: &BlobUpload) -> Result<()> {
        let digest = &upload.digest;
        let image = format!("{}@{digest}", self.repo);
        let what = format!("upload {image}");
        let scopes = [Scope::push(self.repo.path())];
        let call = self.call(&what, &image, &scopes, Some(digest));
        let body = self.body(upload, 0, upload.size).await?;
        let body = std::sync::Mutex::new(Some(body));
        let url = with_digest(location, digest);
        let response = self
            .conn
            .exchange(
                &call,
                &|http, _| {
                    let body = take_body(&body, &what)?;
                    Ok(http
                        .put(url.clone())
                        .header(CONTENT_TYPE, OCTET_STREAM)
                        .header(CONTENT_LENGTH, upload.size)
                        .body(body))
                },
                false,
            )
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&what, response).await);
        }
        Ok(())
    }

    /// `PATCH` chunks with `Content-Range`, then an empty `PUT ?digest=`.
    async fn upload_chunks(&self, location: Url, upload: &BlobUpload, chunk: u64) -> Result<()> {
        let digest = &upload.digest;
        let image = format!("{}@{digest}", self.repo);
        let what = format!("upload {image}");
        let scopes = [Scope::push(self.repo.path())];
        let call = self.call(&what, &image, &scopes, Some(digest));
        let progress = self.conn.progress();
        let mut location = location;
        let mut offset = 0;
        let mut retrier = self.conn.retrier(Some(digest));
        while offset < upload.size {
            let len = chunk.min(upload.size - offset);
            let body = std::sync::Mutex::new(Some(self.body(upload, offset, len).await?));
            let range = format!("{offset}-{}", offset + len - 1);
            let sent = self
                .conn
                .exchange(
                    &call,
                    &|http, _| {
                        Ok(http
                            .patch(location.clone())
                            .header(CONTENT_TYPE, OCTET_STREAM)
                            .header(CONTENT_RANGE, &range)
                            .header(CONTENT_LENGTH, len)
                            .body(take_body(&body, &what)?))
                    },
                    false,
                )
                .await;
            let failure = match sent {
                Ok(response) if response.status().as_u16() == 202 => {
                    let next = location_of(&response, &what)?;
                    offset = range_end(&response).unwrap_or(offset + len);
                    location = next;
                    retrier.reset();
                    report(
                        progress,
                        ProgressEvent::Transferred {
                            digest: digest.clone(),
                            bytes: offset,
                        },
                    );
                    continue;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let err = status_error(&what, response).await;
                    // 416: the registry has a different offset than we thought; ask it.
                    if !(retryable_status(status) || status == 416) {
                        return Err(err);
                    }
                    err
                }
                Err(e) if e.is_retryable() || matches!(e, Error::Unauthorized { .. }) => e,
                Err(e) => return Err(e),
            };
            retrier.pause_always(failure, None).await?;
            (location, offset) = self.upload_status(&call, &location).await?;
            report(
                progress,
                ProgressEvent::Transferred {
                    digest: digest.clone(),
                    bytes: offset,
                },
            );
        }
        let url = with_digest(location, digest);
        let response = self
            .conn
            .send(&call, |http, _| {
                Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&what, response).await);
        }
        Ok(())
    }

    /// `GET` on an upload session: where to continue and from which offset.
    async fn upload_status(&self, call: &Call<'_>, location: &Url) -> Result<(Url, u64)> {
        let response = self
            .conn
            .send(call, |http, _| Ok(http.get(location.clone())))
            .await?;
        if response.status().as_u16() != 204 {
            return Err(status_error(call.what, response).await);
        }
        let next = match response.headers().get(LOCATION) {
            Some(_) => location_of(&response, call.what)?,
            None => location.clone(),
        };
        Ok((next, range_end(&response).unwrap_or(0)))
    }

    /// A body streaming `len` bytes of the blob from `offset`, reporting progress as it goes.
    async fn body(&self, upload: &BlobUpload, offset: u64, len: u64) -> Result<Body> {
        use tokio::io::AsyncReadExt;
        let reader = upload
            .source
            .open(offset)
            .await
            .map_err(|source| Error::Io {
                what: format!("reading blob {} to upload", upload.digest),
                source,
            })?;
        let stream = tokio_util::io::ReaderStream::with_capacity(reader.take(len), 256 << 10);
        let progress = self.conn.progress().clone();
        let digest = upload.digest.clone();
        let mut sent = offset;
        let stream = stream.inspect_ok(move |chunk| {
            sent += chunk.len() as u64;
            report(
                &progress,
                ProgressEvent::Transferred {
                    digest: digest.clone(),
                    bytes: sent,
                },
            );
        });
        Ok(Body::wrap_stream(stream))
    }

    /// Uploads a blob whose digest is known only once all of it has been produced (a layer
    /// being recompressed): the bytes go up as they come, in one streamed `PATCH` (or in
    /// `chunk_size` pieces when the registry's options say so), hashed on the way, and the final
    /// `PUT ?digest=` names what was sent. Nothing is checked or mounted first, and nothing is
    /// retried, since a stream cannot be replayed: after a failure, push the finished blob with
    /// [`RepositoryClient::push_blob`]. An error item in `chunks` aborts the upload. Returns the
    /// digest and size of what was uploaded.
    pub async fn push_blob_stream<S>(&self, chunks: S) -> Result<(Digest, u64)>
    where
        S: futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let image = self.repo.to_string();
        let what = format!("streamed upload to {image}");
        let scopes = [Scope::push(self.repo.path())];
        let call = self.call(&what, &image, &scopes, None);
        let response = self
            .conn
            .send(&call, |http, base| {
                Ok(http
                    .post(self.url(base, "blobs/uploads/")?)
                    .header(CONTENT_LENGTH, 0))
            })
            .await?;
        if response.status().as_u16() != 202 {
            return Err(status_error(&what, response).await);
        }
        let mut location = location_of(&response, &what)?;
        let hasher = Arc::new(std::sync::Mutex::new(HashingWriter::new(io::sink())));
        let hash = |hasher: &std::sync::Mutex<HashingWriter<io::Sink>>, chunk: &[u8]| {
            // Writing to a sink cannot fail.
            let _ = hasher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(chunk);
        };
        match self.conn.options.chunk_size.filter(|c| *c > 0) {
            None => {
                let streamed = {
                    let hasher = hasher.clone();
                    chunks.inspect_ok(move |chunk| hash(&hasher, chunk))
                };
                location = self
                    .patch_piece(&call, &location, Body::wrap_stream(streamed), None)
                    .await?;
            }
            Some(chunk_size) => {
                let mut chunks = chunks;
                let mut offset = 0u64;
                let mut buffer = BytesMut::new();
                let mut ended = false;
                while !ended {
                    while (buffer.len() as u64) < chunk_size {
                        match chunks.next().await {
                            Some(chunk) => {
                                buffer.extend_from_slice(&chunk.map_err(|source| Error::Io {
                                    what: what.clone(),
                                    source,
                                })?)
                            }
                            None => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    let take = buffer.len().min(chunk_size as usize);
                    if take == 0 {
                        break;
                    }
                    let piece = buffer.split_to(take).freeze();
                    hash(&hasher, &piece);
                    let len = piece.len() as u64;
                    location = self
                        .patch_piece(&call, &location, Body::from(piece), Some((offset, len)))
                        .await?;
                    offset += len;
                }
            }
        }
        // The registry accepted every byte, so the hasher saw them all (the body's clone of it
        // may be dropped a moment later by the connection's task).
        let (_, digest, size) = std::mem::replace(
            &mut *hasher.lock().unwrap_or_else(|p| p.into_inner()),
            HashingWriter::new(io::sink()),
        )
        .finish();
        let url = with_digest(location, &digest);
        let response = self
            .conn
            .send(&call, |http, _| {
                Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&what, response).await);
        }
        Ok((digest, size))
    }

    /// One `PATCH` of a streamed upload: the bytes from `range.0` (`range.1` of them) when the
    /// range is given, else the whole stream. Returns where the upload continues.
    async fn patch_piece(
        &self,
        call: &Call<'_>,
        location: &Url,
        body: Body,
        range: Option<(u64, u64)>,
    ) -> Result<Url> {
        let body = std::sync::Mutex::new(Some(body));
        let response = self
            .conn
            .exchange(
                call,
                &|http, _| {
                    let mut request = http
                        .patch(location.clone())
                        .header(CONTENT_TYPE, OCTET_STREAM);
                    if let Some((start, len)) = range {
                        request = request
                            .header(CONTENT_RANGE, format!("{start}-{}", start + len - 1))
                            .header(CONTENT_LENGTH, len);
                    }
                    Ok(request.body(take_body(&body, call.what)?))
                },
                false,
            )
            .await?;
        if response.status().as_u16() != 202 {
            return Err(status_error(call.what, response).await);
        }
        location_of(&response, call.what)
    }

    /// Pushes several blobs, at most `max_concurrent_uploads` at a time, and returns their
    /// outcomes in order. The first failure stops the rest.
    pub async fn push_blobs(&self, uploads: &[BlobUpload]) -> Result<Vec<BlobOutcome>> {
        let limit = self.conn.config.max_concurrent_uploads.max(1);
        futures::stream::iter(uploads)
            .map(|upload| self.push_blob(upload))
            .buffered(limit)
            .try_collect()
            .await
    }

    /// Pushes a manifest or index under a tag (or its digest); the content type is `media_type`
    /// or the document's own `mediaType`. Returns the document's digest. Push blobs first:
    /// registries refuse manifests whose blobs they lack.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        document: Bytes,
        media_type: Option<&str>,
    ) -> Result<Digest> {
        let media_type = match media_type {
            Some(t) => t.to_string(),
            None => media_type_of(&document)?,
        };
        let digest = strata_codec::sha256_digest(&document);
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(Error::Corrupt {
                what: format!("manifest for {}", self.image(reference)),
                source: DigestMismatch::Digest {
                    expected: d.clone(),
                    actual: digest,
                },
            });
        }
        let image = self.image(reference);
        let what = format!("PUT manifest {image}");
        let scopes = [Scope::push(self.repo.path())];
        let tail = format!("manifests/{}", reference.as_path_segment());
        let response = self
            .conn
            .send(&self.call(&what, &image, &scopes, None), |http, base| {
                Ok(http
                    .put(self.url(base, &tail)?)
                    .header(CONTENT_TYPE, &media_type)
                    .body(document.clone()))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&what, response).await);
        }
        Ok(digest)
    }
}

/// Where a download's digest is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// By the download: chunks are hashed, the last one held back until the digest matched.
    Here,
    /// By the sink (a store blob writer that publishes nothing that does not match).
    InSink,
}

struct DownloadState {
    /// Bytes of the blob received so far (where a resumed request starts).
    received: u64,
    hasher: Option<HashingWriter<io::Sink>>,
    /// The newest chunk, held back until the digest matched ([`Check::Here`]).
    pending: Option<Bytes>,
}

enum AttemptError {
    /// Already retried (or not worth retrying).
    Final(Error),
    /// The body broke off: worth resuming.
    Retry(Error),
}

/// Upload failures after which a new upload session may succeed.
fn restartable(e: &Error) -> bool {
    e.is_retryable()
        || matches!(e, Error::NotFound { .. } | Error::Unauthorized { .. })
        || matches!(e, Error::Status { status: 416, .. })
}

fn take_body(body: &std::sync::Mutex<Option<Body>>, what: &str) -> Result<Body> {
    body.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| Error::Protocol {
            what: what.to_string(),
            why: "a streamed upload body cannot be sent twice".to_string(),
        })
}

fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// `Content-Length` as sent (HEAD answers have no body to measure).
fn header_length(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_sha256(d: &Digest) -> bool {
    d.to_string().starts_with("sha256:")
}

fn ensure_sha256(d: &Digest) -> Result<()> {
    if is_sha256(d) {
        Ok(())
    } else {
        Err(Error::UnsupportedDigest {
            digest: d.to_string(),
        })
    }
}

/// The upload session URL a response points to (relative URLs resolve against the request's).
fn location_of(response: &Response, what: &str) -> Result<Url> {
    let value = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol {
            what: what.to_string(),
            why: "no Location in the answer".to_string(),
        })?;
    response.url().join(value).map_err(|e| Error::Protocol {
        what: what.to_string(),
        why: format!("bad Location {value:?}: {e}"),
    })
}

/// The next offset from a `Range: 0-N` header (N+1).
fn range_end(response: &Response) -> Option<u64> {
    let value = response.headers().get(RANGE)?.to_str().ok()?;
    let (_, end) = value.trim().trim_start_matches("bytes=").split_once('-')?;
    end.trim().parse::<u64>().ok().map(|n| n + 1)
}

/// The first byte of a 206's `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(response: &Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut().append_pair("digest", digest.as_ref());
    url
}
