//! The builder's error type.

use std::io;
use std::path::PathBuf;

/// Everything a build can fail with. The messages are meant for the user as they are and
/// include their causes (no variant has an error `source` that would repeat them).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse, plan or evaluate; [`strata_frontend::Error::render`] shows
    /// the file, line and column.
    #[error("{}", .0.render())]
    Dockerfile(strata_frontend::Error),
    /// A base or `COPY --from` image that is neither in the store nor obtainable.
    #[error("{0}")]
    ImageNotFound(String),
    /// A step failed; `step` names it as progress does (`[build 3/5] RUN make`).
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    /// A `RUN` command exited non-zero (or could not start).
    #[error(
        "{step}: process \"{command}\" did not complete successfully: {status}{}",
        output_tail(.output)
    )]
    RunFailed {
        step: String,
        command: String,
        status: String,
        /// The last lines the command printed.
        output: Vec<String>,
    },
    /// The build context cannot be read.
    #[error("build context {path}: {error}")]
    Context { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] strata_snapshotter::Error),
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    /// Something a later issue brings (cache mounts, ADD from a URL...).
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// Another thread of the same build failed first; this one stopped.
    #[error("cancelled")]
    Cancelled,
    /// A build arg the builder itself reads (`SOURCE_DATE_EPOCH`) has a value it cannot use.
    #[error("invalid build arg {name}: {message}")]
    InvalidBuildArg { name: String, message: String },
    /// A target platform this machine cannot run (`--platform`, `FROM --platform`).
    #[error("{0}")]
    ForeignPlatform(String),
}

impl From<strata_frontend::Error> for BuildError {
    fn from(e: strata_frontend::Error) -> Self {
        BuildError::Dockerfile(e)
    }
}

fn output_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n--- last output ---");
    for l in lines {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

/// `Result` with [`BuildError`].
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Attaches a context message to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| BuildError::Io {
            context: context(),
            error,
        })
    }
}
