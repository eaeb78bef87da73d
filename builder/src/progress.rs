//! Progress events: what the builder reports while it works. It knows nothing of terminals; the
//! binary renders these (live lines, plain lines, JSON lines).

use std::fmt;

use serde::Serialize;

/// Receives the events of a build, from several threads at once (stages run in parallel).
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: Event);
}

/// A sink that drops everything.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _: Event) {}
}

/// One step of the build as progress shows it: the instructions that do work (`RUN`, `COPY`,
/// `ADD`, `WORKDIR`), numbered in build order. Instructions that only change the image config
/// (`ENV`, `LABEL`, `CMD`...) cost nothing and are not steps.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepInfo {
    /// 1-based, unique in the build.
    pub id: usize,
    /// The stage's display name (`build`, `stage-1`, or empty in a single-stage file).
    pub stage: String,
    /// BuildKit's vertex name: `[build 2/4] RUN make`.
    pub name: String,
    /// The Dockerfile line it starts on (0 for ONBUILD triggers of the base).
    pub line: usize,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Something that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The build is planned: every step, in order, before any runs.
    Plan { steps: Vec<StepInfo> },
    /// A stage's base image was resolved.
    Base {
        stage: String,
        image: String,
        id: String,
    },
    /// The context was walked (and the files steps read were hashed).
    Context {
        files: usize,
        /// Files whose content was read because the stat cache could not vouch for them.
        hashed: usize,
        hashed_bytes: u64,
        duration_ms: u64,
    },
    /// The step's result came from the cache: nothing ran.
    Cached { id: usize, name: String },
    /// The step runs, and why it could not come from the cache.
    Started {
        id: usize,
        name: String,
        reason: MissReason,
        /// `reason` in words.
        reason_text: String,
    },
    /// A line of a RUN step's output.
    Log {
        id: usize,
        stream: Stream,
        line: String,
    },
    /// Something about how the step is done (a COPY redone from its previous result).
    Note { id: usize, message: String },
    /// The step finished.
    Done { id: usize, duration_ms: u64 },
    /// The step failed.
    Failed { id: usize, error: String },
    /// An `ADD <url>` is being fetched while the build is planned: when it starts, about every
    /// second while it runs, and when it ends.
    Download {
        url: String,
        phase: DownloadPhase,
        /// Bytes received so far (the whole body once `done`).
        bytes: u64,
        /// The size the server announced, if it did.
        total: Option<u64>,
        duration_ms: u64,
    },
    /// Something the user should know (unused build args, ignored options).
    Warning { message: String },
    /// The image was written.
    Image {
        id: String,
        tags: Vec<String>,
        duration_ms: u64,
    },
}

/// Where a download is.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DownloadPhase {
    Started,
    Running,
    Done,
    /// The server said the copy an earlier build fetched is current (304 to its ETag).
    NotModified,
}

/// Why a step was not taken from the cache.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MissReason {
    /// `--no-cache`.
    NoCache,
    /// This step (same stage and position in this Dockerfile and context) was never built.
    FirstBuild,
    /// The instruction itself changed.
    Instruction { before: String, after: String },
    /// A build arg the step uses changed.
    BuildArg {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// An environment variable (ENV) the step runs with changed.
    Env {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// A setting the step runs with changed (`USER`, `WORKDIR`, `SHELL`, network).
    Setting {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// Context files the step copies changed (first few named; `count` in all).
    Files { changed: Vec<String>, count: usize },
    /// The stage or image a `COPY --from` reads changed.
    Source { name: String },
    /// The step before it (in the same stage, or the stage it is based on) was rebuilt.
    Parent { id: Option<usize>, name: String },
    /// The base image is another one.
    Base { image: String },
    /// Same inputs as last time, but the cached result is gone (pruned).
    Pruned,
}

fn opt(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "unset".into(),
    }
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::NoCache => write!(f, "--no-cache"),
            MissReason::FirstBuild => write!(f, "no earlier build of this step"),
            MissReason::Instruction { before, .. } => {
                write!(f, "the instruction changed (was: {before})")
            }
            MissReason::BuildArg {
                name,
                before,
                after,
            } => write!(
                f,
                "build arg {name} changed: {} -> {}",
                opt(before),
                opt(after)
            ),
            MissReason::Env {
                name,
                before,
                after,
            } => write!(f, "ENV {name} changed: {} -> {}", opt(before), opt(after)),
            MissReason::Setting {
                name,
                before,
                after,
            } => write!(f, "{name} changed: {} -> {}", opt(before), opt(after)),
            MissReason::Files { changed, count } => {
                let what = if *count == 1 { "file" } else { "files" };
                write!(f, "{count} context {what} changed: {}", changed.join(", "))?;
                if *count > changed.len() {
                    write!(f, ", ...")?;
                }
                Ok(())
            }
            MissReason::Source { name } => write!(f, "{name} changed"),
            MissReason::Parent { id: Some(id), name } => {
                write!(f, "the step before it changed (#{id} {name})")
            }
            MissReason::Parent { id: None, name } => write!(f, "{name} changed"),
            MissReason::Base { image } => write!(f, "the base image changed ({image})"),
            MissReason::Pruned => write!(f, "the cached result was pruned"),
        }
    }
}
