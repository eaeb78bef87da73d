//! Rendering the builder's progress events: live lines on a terminal (indicatif), plain lines
//! (CI logs), JSON lines (tools), or nothing (`-q`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_builder::{DownloadPhase, Event, ProgressSink};

use crate::commands::image_output::human_size;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, else `plain`.
    Auto,
    /// Live lines: one per running step, with elapsed time.
    Tty,
    /// One line per event, with step numbers, CACHED, durations and why each step ran.
    Plain,
    /// Only the image ID.
    Quiet,
    /// One JSON object per event, on standard output.
    Json,
}

impl ProgressMode {
    /// `auto` decided for this process's standard error.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        }
    }
}

/// A progress sink that writes what `mode` asks for.
pub struct Renderer {
    mode: ProgressMode,
    state: Mutex<State>,
}

struct State {
    names: HashMap<usize, String>,
    started: HashMap<usize, Instant>,
    multi: Option<MultiProgress>,
    bars: HashMap<usize, ProgressBar>,
}

impl Renderer {
    pub fn new(mode: ProgressMode) -> Renderer {
        let mode = mode.resolve();
        // Live lines only where they can be drawn; `--progress tty` elsewhere prints the same
        // lines without the spinners.
        let multi = (mode == ProgressMode::Tty && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Renderer {
            mode,
            state: Mutex::new(State {
                names: HashMap::new(),
                started: HashMap::new(),
                multi,
                bars: HashMap::new(),
            }),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// A line of the binary's own (after the build: cache exports), where the build's lines
    /// went; nothing in quiet and JSON modes.
    pub fn line(&self, text: &str) {
        if matches!(self.mode, ProgressMode::Plain | ProgressMode::Tty) {
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .line(text);
        }
    }

    /// Clears live lines (before an error is printed).
    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, bar) in s.bars.drain() {
            bar.finish_and_clear();
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl State {
    /// A line above the live area (tty) or on stderr (plain).
    fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    fn name(&self, id: usize) -> &str {
        self.names.get(&id).map_or("", String::as_str)
    }
}

impl ProgressSink for Renderer {
    fn event(&self, event: Event) {
        match self.mode {
            ProgressMode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
            }
            ProgressMode::Quiet => {}
            ProgressMode::Plain | ProgressMode::Tty | ProgressMode::Auto => {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                self.human(&mut s, event);
            }
        }
    }
}

impl Renderer {
    fn human(&self, s: &mut State, event: Event) {
        let tty = self.mode == ProgressMode::Tty;
        match event {
            Event::Plan { steps } => {
                for step in steps {
                    s.names.insert(step.id, step.name);
                }
            }
            Event::Base { stage, image, id } => {
                let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
                let stage = if stage.is_empty() {
                    String::new()
                } else {
                    format!("[{stage}] ")
                };
                s.line(&format!("#0 {stage}FROM {image} ({short})"));
            }
            Event::Context {
                files,
                hashed,
                hashed_bytes,
                duration_ms,
            } => s.line(&format!(
                "#0 [internal] load build context: {files} entries, {hashed} files read ({hashed_bytes} bytes) {}",
                secs(Duration::from_millis(duration_ms))
            )),
            Event::Cached { id, name } => {
                s.names.insert(id, name.clone());
                if tty {
                    s.line(&format!("#{id} {name} CACHED"));
                } else {
                    s.line(&format!("#{id} {name}\n#{id} CACHED"));
                }
            }
            Event::Started {
                id,
                name,
                reason_text,
                ..
            } => {
                s.names.insert(id, name.clone());
                s.started.insert(id, Instant::now());
                if let Some(multi) = &s.multi {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_message(name.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    s.bars.insert(id, bar);
                    s.line(&format!("#{id} {name} (not cached: {reason_text})"));
                } else {
                    s.line(&format!("#{id} {name}\n#{id} not cached: {reason_text}"));
                }
            }
            Event::Log { id, line, .. } => {
                let t = s
                    .started
                    .get(&id)
                    .map_or(0.0, |t| t.elapsed().as_secs_f64());
                if let Some(bar) = s.bars.get(&id) {
                    let name = s.names.get(&id).cloned().unwrap_or_default();
                    bar.set_message(format!("{name}: {line}"));
                } else {
                    s.line(&format!("#{id} {t:.3} {line}"));
                }
            }
            Event::Note { id, message } => s.line(&format!("#{id} {message}")),
            Event::Done { id, duration_ms } => {
                if let Some(bar) = s.bars.remove(&id) {
                    bar.finish_and_clear();
                }
                let d = secs(Duration::from_millis(duration_ms));
                if tty {
                    let name = s.name(id).to_string();
                    s.line(&format!("#{id} {name} DONE {d}"));
                } else {
                    s.line(&format!("#{id} DONE {d}"));
                }
            }
            Event::Failed { id, error } => {
                if let Some(bar) = s.bars.remove(&id) {
                    bar.finish_and_clear();
                }
                let name = s.name(id).to_string();
                s.line(&format!("#{id} {name} ERROR: {}", first_line(&error)));
            }
            Event::Download {
                url,
                phase,
                bytes,
                total,
                duration_ms,
            } => {
                let took = secs(Duration::from_millis(duration_ms));
                let what = match phase {
                    DownloadPhase::Started => return s.line(&format!("#0 [internal] download {url}")),
                    DownloadPhase::Running => match total {
                        Some(t) => format!("{} / {} {took}", human_size(bytes), human_size(t)),
                        None => format!("{} {took}", human_size(bytes)),
                    },
                    DownloadPhase::Done => format!("{} done {took}", human_size(bytes)),
                    DownloadPhase::NotModified => format!("not modified, the copy fetched before is used {took}"),
                };
                s.line(&format!("#0 [internal] download {url}: {what}"));
            }
            Event::Warning { message } => s.line(&format!("WARNING: {message}")),
            Event::Image {
                id,
                tags,
                duration_ms,
            } => {
                s.line(&format!("#{} writing image {id} done", s.names.len() + 1));
                for t in tags {
                    s.line(&format!("#{} naming to {t} done", s.names.len() + 1));
                }
                s.line(&format!(
                    "built in {}",
                    secs(Duration::from_millis(duration_ms))
                ));
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
