//! The crate's error type. Messages name what was being done (`GET manifest
//! 127.0.0.1:5000/app:1`) and never contain a secret: credentials, tokens and token-server bodies
//! are kept out of every variant. A variant with an underlying error leaves it out of its own
//! message and returns it as `source()`, so a chain printed link by link (anyhow's `{:#}`)
//! says everything once.

use std::path::PathBuf;

use strata_codec::DigestMismatch;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: String },

    #[error(
        "offline: this needs {image} from the registry {registry}, which strata may not contact \
         (STRATA_OFFLINE or --offline is set)"
    )]
    Offline { image: String, registry: String },

    #[error("{what}")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{what}: the registry answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        /// The registry's error codes and messages (`: MANIFEST_UNKNOWN manifest unknown`).
        detail: String,
    },

    #[error("{what}: not found")]
    NotFound { what: String },

    #[error("{what}: access denied ({detail}); check `strata login` or the credentials in use")]
    Unauthorized { what: String, detail: String },

    #[error("{what}")]
    Corrupt {
        what: String,
        #[source]
        source: DigestMismatch,
    },

    #[error("{what}: {why}")]
    Protocol { what: String, why: String },

    #[error("{image} has no image for platform {wanted} (it has: {available})")]
    NoMatchingPlatform {
        image: String,
        wanted: String,
        available: String,
    },

    #[error("credentials for {key}: {why}")]
    Credentials { key: String, why: String },

    #[error("{}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The local store failed while pulling into it or pushing from it.
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: strata_store::StoreError,
    },

    #[error("unsupported digest algorithm in {digest}: only sha256 is supported")]
    UnsupportedDigest { digest: String },
}

impl Error {
    /// The message with every underlying error's appended (`what: cause: cause`), for places
    /// that show one line without walking `source()` (progress, logs).
    pub fn full_message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }

    /// Whether trying the same request again may succeed: dropped connections, timeouts and the
    /// statuses registries use for overload and transient failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { source, .. } => {
                source.is_connect()
                    || source.is_timeout()
                    || source.is_request()
                    || source.is_body()
                    || source.is_decode()
            }
            Error::Status { status, .. } => retryable_status(*status),
            _ => false,
        }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(strata_store::StoreError) -> Self {
        let what = what.into();
        move |source| Error::Store { what, source }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::File {
            path: path.into(),
            source,
        }
    }
}

/// 408 Request Timeout, 429 Too Many Requests and the 5xx statuses that mean "not now".
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}
