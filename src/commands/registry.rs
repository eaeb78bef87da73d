//! What the commands that talk to registries share (pull, push, login, and builds that pull
//! base images): the client with the process's offline switch, and transfer progress rendered
//! as Docker does (per-layer bars on a terminal, one line per layer event otherwise).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_registry_client::{
    BlobOutcome, Client, ClientConfig, Direction, ProgressEvent, ProgressFn,
};
use strata_store::Digest;

static OFFLINE: AtomicBool = AtomicBool::new(false);

/// Records the global `--offline` flag (`STRATA_OFFLINE` is read by [`client`] as well).
pub fn set_offline(offline: bool) {
    OFFLINE.store(offline, Ordering::Relaxed);
}

/// A registry client from the environment (credentials, `registries.json`, `certs.d`,
/// `STRATA_OFFLINE`) and the `--offline` flag, reporting to `progress`.
pub fn client(progress: Option<ProgressFn>) -> anyhow::Result<Client> {
    let mut config = ClientConfig::from_env().context("reading the registry configuration")?;
    config.offline |= OFFLINE.load(Ordering::Relaxed);
    config.progress = progress;
    Ok(Client::new(config))
}

/// A runtime for one registry command: transfers run on its threads, store work on its
/// blocking pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Docker's short form of a blob digest: its first 12 hex digits.
pub fn short(digest: &Digest) -> String {
    digest.digest().chars().take(12).collect()
}

/// How transfer progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live per-layer bars (stdout is a terminal).
    Bars,
    /// One line per layer event.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// Renders the layers of one pull or push. Blobs never queued (configs) are not shown.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    layers: Mutex<HashMap<Digest, (ProgressBar, Direction)>>,
    /// Set once the transfer is over: later lines go below the bars, plainly.
    done: AtomicBool,
}

impl Progress {
    pub fn new(mode: Mode) -> Arc<Progress> {
        let target = match mode {
            Mode::Bars => ProgressDrawTarget::stdout(),
            Mode::Lines | Mode::Quiet => ProgressDrawTarget::hidden(),
        };
        Arc::new(Progress {
            mode,
            multi: MultiProgress::with_draw_target(target),
            layers: Mutex::new(HashMap::new()),
            done: AtomicBool::new(false),
        })
    }

    /// The callback for [`ClientConfig::progress`].
    pub fn callback(self: &Arc<Self>) -> Option<ProgressFn> {
        if self.mode == Mode::Quiet {
            return None;
        }
        let this = self.clone();
        Some(Arc::new(move |event: &ProgressEvent| this.on_event(event)))
    }

    /// Prints a line: above the bars while they run, else plainly.
    pub fn println(&self, line: &str) {
        match self.mode {
            Mode::Bars if !self.done.load(Ordering::Relaxed) => {
                let _ = self.multi.println(line);
            }
            Mode::Bars | Mode::Lines => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Mode::Quiet => {}
        }
    }

    /// Ends the bars where they stand (their last state stays on the screen); lines printed
    /// afterwards go below them.
    pub fn done(&self) {
        if self.mode == Mode::Bars && !self.done.swap(true, Ordering::Relaxed) {
            let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            for (bar, _) in layers.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    fn on_event(&self, event: &ProgressEvent) {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            ProgressEvent::Queued {
                digest,
                size,
                direction,
            } => {
                if layers.contains_key(digest) {
                    return;
                }
                let status = match direction {
                    Direction::Download => "Pulling fs layer",
                    Direction::Upload => "Preparing",
                };
                let bar = self.multi.add(ProgressBar::new(*size));
                bar.set_style(message_style());
                bar.set_prefix(short(digest));
                bar.set_message(status);
                self.line(digest, status);
                layers.insert(digest.clone(), (bar, *direction));
            }
            ProgressEvent::Started {
                digest,
                size,
                direction,
            } => {
                let Some((bar, _)) = layers.get(digest) else {
                    return;
                };
                if *size > 0 {
                    bar.set_length(*size);
                }
                bar.set_style(bar_style());
                bar.set_message(match direction {
                    Direction::Download => "Downloading",
                    Direction::Upload => "Pushing",
                });
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            ProgressEvent::Transferred { digest, bytes } => {
                if let Some((bar, _)) = layers.get(digest) {
                    bar.set_position(*bytes);
                }
            }
            ProgressEvent::Retrying {
                digest,
                attempt,
                reason,
            } => {
                if let Some((bar, _)) = layers.get(digest) {
                    let status = format!("Retrying (attempt {attempt}): {reason}");
                    bar.set_message(status.clone());
                    self.line(digest, &status);
                }
            }
            ProgressEvent::Finished { digest, outcome } => {
                let Some((bar, direction)) = layers.get(digest) else {
                    return;
                };
                let status = match outcome {
                    BlobOutcome::Downloaded => "Pull complete".to_string(),
                    BlobOutcome::AlreadyPresent => match direction {
                        Direction::Download => "Already exists".to_string(),
                        Direction::Upload => "Layer already exists".to_string(),
                    },
                    BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
                    BlobOutcome::Uploaded => "Pushed".to_string(),
                };
                bar.set_style(message_style());
                bar.finish_with_message(status.clone());
                self.line(digest, &status);
            }
        }
    }

    fn line(&self, digest: &Digest, status: &str) {
        if self.mode == Mode::Lines {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}: {status}", short(digest));
        }
    }
}

fn message_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg} [{bar:40}] {bytes}/{total_bytes}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}
