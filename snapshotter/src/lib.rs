//! Snapshots and layers.
//!
//! Overlayfs (and copying) snapshots for RUN steps, diffs to deterministic OCI layer tars with
//! streaming hashing and parallel compression, and safe extraction of layers into directories.
//! Everything here blocks: async callers run it on blocking threads.

mod chain;
mod changes;
mod docker_diff;
mod fsutil;
mod layer_in;
mod layer_out;
mod overlay;
mod snapshots;
mod tarfmt;

pub use chain::{chain_ids, chain_snapshot_id};
pub use changes::ChangeKind;
pub use docker_diff::Change;
pub use layer_in::{ExtractOptions, ExtractedLayer, WhiteoutMode, extract_layer};
pub use layer_out::{Diff, LayerDescriptor, LayerOptions, write_layer};
pub use overlay::Mount;
pub use snapshots::{Cleanup, Driver, SnapshotInfo, Snapshotter, State};
pub use strata_codec::{Compression, Digest, EncoderOptions};

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing layer: {0}")]
    Write(#[source] io::Error),
    #[error("reading layer: {0}")]
    Read(#[source] io::Error),
    /// The archive asked for something unsafe or impossible (a path escape, a link out of the
    /// root, a device node without the right to make one, an unknown entry type...).
    #[error("layer entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("extracting {path:?}: {source}")]
    Extract {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer is larger than the limit of {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error(
        "invalid snapshot id {0:?}: use 1-128 characters from [A-Za-z0-9_.:-], not starting with '.'"
    )]
    InvalidId(String),
    #[error("snapshot {id:?} is the parent of {child:?}: remove that first")]
    HasChildren { id: String, child: String },
    #[error("snapshot {id:?} is {state}, expected {expected}")]
    WrongState {
        id: String,
        state: &'static str,
        expected: &'static str,
    },
    #[error("unknown snapshotter {0:?} (STRATA_SNAPSHOTTER): use overlay or copy")]
    UnknownDriver(String),
    #[error(
        "the snapshots in {root} were made by the {recorded} snapshotter, not {requested}: \
         unset STRATA_SNAPSHOTTER or use another STRATA_ROOT"
    )]
    DriverMismatch {
        root: PathBuf,
        recorded: Driver,
        requested: Driver,
    },
    #[error("layer of snapshot {id:?} unpacks to diffID {actual}, but the image says {expected}")]
    DiffIdMismatch {
        id: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("mounting overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}
