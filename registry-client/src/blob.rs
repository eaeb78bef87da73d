//! What blobs are uploaded from and downloaded into.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::future::BoxFuture;
use strata_codec::Digest;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::Error;

/// A reader of a blob's bytes from some offset on.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

type OpenFn = dyn Fn(u64) -> BoxFuture<'static, io::Result<BlobReader>> + Send + Sync;

/// Where an upload reads a blob from. Uploads are streamed, so a retry cannot reuse the reader
/// of the failed try: the source is asked for a fresh reader starting at a byte offset (0 for a
/// new upload, the registry's offset when a chunked upload resumes).
#[derive(Clone)]
pub struct BlobSource(Arc<OpenFn>);

impl BlobSource {
    /// A source from a function that opens a reader positioned at the given offset.
    pub fn new<F, Fut, R>(open: F) -> Self
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<R>> + Send + 'static,
        R: AsyncRead + Send + Unpin + 'static,
    {
        BlobSource(Arc::new(move |offset| {
            let opening = open(offset);
            Box::pin(async move { Ok(Box::new(opening.await?) as BlobReader) })
        }))
    }

    /// Bytes already in memory.
    pub fn from_bytes(bytes: Bytes) -> Self {
        BlobSource::new(move |offset| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let rest = bytes.slice(start..);
            async move { Ok(io::Cursor::new(rest)) }
        })
    }

    /// A file (a blob in the store), reopened and seeked for each try.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        BlobSource::new(move |offset| {
            let path = path.clone();
            async move {
                let mut file = tokio::fs::File::open(&path).await?;
                if offset > 0 {
                    file.seek(io::SeekFrom::Start(offset)).await?;
                }
                Ok(tokio::io::BufReader::with_capacity(256 << 10, file))
            }
        })
    }

    pub(crate) async fn open(&self, offset: u64) -> io::Result<BlobReader> {
        (self.0)(offset).await
    }
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobSource")
    }
}

/// One blob to push.
#[derive(Clone, Debug)]
pub struct BlobUpload {
    pub digest: Digest,
    pub size: u64,
    pub source: BlobSource,
    /// A repository of the same registry that has the blob (the image this one was built
    /// from, say): the registry is asked to mount it from there before anything is sent.
    pub mount_from: Option<String>,
}

/// Where verified download bytes go.
pub(crate) trait ChunkSink: Send {
    fn accept(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
}

pub(crate) struct WriterSink<'a, W>(pub &'a mut W);

impl<W: AsyncWrite + Unpin + Send> ChunkSink for WriterSink<'_, W> {
    async fn accept(&mut self, chunk: Bytes) -> io::Result<()> {
        self.0.write_all(&chunk).await
    }
}

pub(crate) struct BufferSink(pub BytesMut);

impl ChunkSink for BufferSink {
    async fn accept(&mut self, chunk: Bytes) -> io::Result<()> {
        self.0.extend_from_slice(&chunk);
        Ok(())
    }
}

/// Hands chunks to another task; fails once that task has stopped listening.
pub(crate) struct ChannelSink<T>(pub mpsc::Sender<T>, pub fn(Bytes) -> T);

impl<T: Send> ChunkSink for ChannelSink<T> {
    async fn accept(&mut self, chunk: Bytes) -> io::Result<()> {
        self.0
            .send((self.1)(chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the blob's reader went away"))
    }
}

/// A blob download as a stream of chunks. Content is verified as it streams, and the last
/// chunk is held back until the whole blob matched its digest and size: a consumer that sees
/// the stream end cleanly has received exactly the blob, and one that gets an error must discard
/// what it got. Dropping the stream stops the download. A consumer that stops early (a tar
/// reader at its end-of-archive blocks) must still read to the end: the verdict is the last item.
pub struct BlobStream {
    pub(crate) chunks: mpsc::Receiver<Result<Bytes, Error>>,
    pub(crate) task: tokio::task::AbortHandle,
}

impl Stream for BlobStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx)
    }
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlobStream {
    /// The stream as an `AsyncRead` (errors become `io::Error`s wrapping [`Error`]); wrap it in
    /// `tokio_util::io::SyncIoBridge` on a blocking thread for a `std::io::Read`.
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin + 'static {
        use futures::TryStreamExt;
        tokio_util::io::StreamReader::new(self.map_err(io::Error::other))
    }
}
