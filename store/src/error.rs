//! The store's error type.

use std::io;

use crate::reference::ReferenceError;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("metadata database: {0}")]
    Db(#[from] redb::Error),
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("blob {0} is not in the store")]
    BlobNotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A manifest, index, config or archive that does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// An operation that would break something unless forced (Docker's "conflict").
    #[error("conflict: {0}")]
    Conflict(String),
    /// An error of a caller's closure run inside a metadata transaction.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a context message to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            context: context(),
            source,
        })
    }
}

pub(crate) fn json_err(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Json { context, source }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::DatabaseError,
    redb::TransactionError,
    redb::CommitError
);
