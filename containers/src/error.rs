//! Errors, worded as Docker's daemon words them where users know the message.

use std::path::PathBuf;

/// Everything that can go wrong with containers and volumes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("Multiple IDs found with provided prefix: {0}")]
    AmbiguousPrefix(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    )]
    Running { name: String },
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("remove {name}: volume is in use - [{users}]")]
    VolumeInUse { name: String, users: String },
    #[error(
        "invalid volume name {0:?}: only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed, at least two characters"
    )]
    InvalidVolumeName(String),
    /// A request that cannot work (bad flag combination, missing path, ...): the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] strata_snapshotter::Error),
    #[error(transparent)]
    Runtime(#[from] strata_runtime::RunError),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds a context and a path to an I/O error.
pub(crate) fn io_err(
    context: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        context,
        path,
        source,
    }
}
