//! Per-blob progress for the binary to render (bars on a terminal, lines in CI).

use std::sync::Arc;

use strata_codec::Digest;

/// The progress callback: called from the tasks doing the transfers, so keep it quick (update a
/// bar, send on a channel).
pub type ProgressFn = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Which way a blob moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Download,
    Upload,
}

/// What happened to a blob in the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Downloaded and verified.
    Downloaded,
    /// The destination already had it (the registry, by HEAD, on a push; the local store on
    /// a pull), so nothing was sent.
    AlreadyPresent,
    /// Mounted from another repository of the same registry, so nothing was sent.
    Mounted { from: String },
    /// Uploaded.
    Uploaded,
}

/// One step of one blob's transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// An image's layer is waiting its turn ([`crate::pull_image`], [`crate::push_image`]):
    /// renderers show layers from here on, in image order, and may ignore blobs never queued
    /// (configs).
    Queued {
        digest: Digest,
        size: u64,
        direction: Direction,
    },
    Started {
        digest: Digest,
        size: u64,
        direction: Direction,
    },
    /// Bytes of the blob the registry has (upload) or that were received (download) so far. It
    /// can go down after a failed attempt, when a transfer resumes from what the registry kept.
    Transferred { digest: Digest, bytes: u64 },
    /// An attempt failed in a way worth retrying; the transfer goes on after a pause.
    Retrying {
        digest: Digest,
        attempt: u32,
        reason: String,
    },
    Finished {
        digest: Digest,
        outcome: BlobOutcome,
    },
}
