//! Planning and running a build: every key before any work, then the stages on threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde_json::json;
use strata_frontend::dockerignore::{Matcher, ignore_file_names, read_patterns};
use strata_frontend::eval::{BaseState, EvaluatedStage, Expanded, Step, evaluate_stage};
use strata_frontend::instructions::{CommandLine, NetworkMode, Security};
use strata_frontend::mount::MountType;
use strata_frontend::plan::{self, Base, BuildOptions, SourceRef};
use strata_runtime::spec::Network;
use strata_store::{Image, Platform, canonical_json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cache::{self, CacheRecord, Lookup, StepInputs, StepRecord, Updates};
use crate::config::{
    self, HISTORY_COMMENT, HealthcheckConfig, History, ImageConfig, chomp_heredoc, command_args,
    go_list, go_quote_list,
};
use crate::context::{Context, Kind};
use crate::copy::{CopyOptions, copy_path, dest_is_dir, mkdir_all, resolve_chown};
use crate::error::{BuildError, IoContext, Result};
use crate::filter::{CopyFilter, CopyFlags};
use crate::layers::{self, Layer, LayerStore, Pending};
use crate::manifest::Manifest;
use crate::mounts::{self, MountFrom, MountInputs, RunMount};
use crate::progress::{Event, MissReason, ProgressSink, StepInfo};
use crate::remote;
use crate::reproducible;
use crate::run::{self, PIPES_DIR, RunSpec};
use crate::source::SourceRoot;
use crate::{BuildOutcome, BuildRequest, Builder};

/// Context files named in a "files changed" miss reason.
const REASON_FILES: usize = 5;

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

/// What a layer step does.
enum Op {
    Run {
        args: Vec<String>,
        env: Vec<String>,
        user: String,
        workdir: String,
        network: Network,
        script: Option<(String, String)>,
        command: String,
        mounts: Vec<RunMount>,
    },
    Copy {
        from: CopyFrom,
        sources: Vec<String>,
        inline: Vec<(String, String)>,
        /// Absolute, cleaned; ends in `/` when the Dockerfile's destination names a directory.
        dest: String,
        chown: Option<String>,
        chmod: Option<u32>,
        unpack: bool,
        flags: CopyFlags,
    },
    Workdir {
        path: String,
        user: String,
    },
}

enum CopyFrom {
    Context,
    Stage(usize),
    Image(Vec<Layer>),
}

/// A step that makes a layer.
struct PStep {
    info: StepInfo,
    op: Op,
    inputs: StepInputs,
    key: String,
    /// The instruction as written (for records and messages).
    text: String,
    /// Dockerfile + stage + position: "the same step" across builds.
    identity: String,
    /// Context files it copies (to name the changed ones), as positions in the context.
    context_files: Vec<usize>,
    context_roots: Vec<String>,
    /// For a COPY from the context: one line per selected entry (see [`StepRecord::manifest`]).
    manifest: Manifest,
    cached: Option<CacheRecord>,
    reason: Option<MissReason>,
    recorded_key: Option<String>,
    /// How to redo only what changed since the last build of this step, when that is possible.
    incremental: Option<Incremental>,
}

/// A COPY from the context whose previous result (same parent, same instruction) differs only
/// in some files: its snapshot is cloned with hard links and only those files are copied again.
struct Incremental {
    previous: Layer,
    changed: HashSet<String>,
    removed: HashSet<String>,
}

enum BaseLayers {
    None,
    Image(Vec<Layer>),
    Stage(usize),
}

/// A history entry and, for one this build makes, the step whose layer dates it.
#[derive(Clone)]
struct HistEntry {
    history: History,
    appended: bool,
    layer: Option<(usize, usize)>,
}

struct PStage {
    index: usize,
    display: String,
    base_layers: BaseLayers,
    base_description: String,
    config: ImageConfig,
    history: Vec<HistEntry>,
    steps: Vec<PStep>,
    final_key: String,
    final_state: BaseState,
    deps: Vec<usize>,
}

struct Planned {
    stages: Vec<PStage>,
}

impl Planned {
    fn stage(&self, index: usize) -> Option<&PStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn key_of(parts: &serde_json::Value) -> String {
    strata_codec::sha256_digest(&canonical_json(parts).unwrap_or_default()).to_string()
}

/// Go's `path.Clean` of an absolute path.
fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// A context source path relative to the context root, or `None` when it leaves the context.
fn context_relative(src: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// The first line of an instruction, for progress names.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Whether a shell-form command is a single heredoc marker (`<<EOF`, `<<-"EOF"`): BuildKit's
/// `MustParseHeredoc`. Returns the name.
fn single_heredoc(command: &str) -> Option<String> {
    let rest = command.trim().strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    let name = match rest.chars().next()? {
        q @ ('"' | '\'') => rest.strip_prefix(q)?.strip_suffix(q)?,
        _ => rest,
    };
    (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then(|| name.to_string())
}

/// The words a RUN runs (BuildKit's `dispatchRun`), and a heredoc script to mount.
fn run_args(cmd: &CommandLine, shell: &[String]) -> (Vec<String>, Option<(String, String)>) {
    if cmd.shell_form && !cmd.files.is_empty() {
        let command = cmd.args.first().cloned().unwrap_or_default();
        let mut args = shell.to_vec();
        if cmd.files.len() == 1
            && let Some(name) = single_heredoc(&command)
            && name == cmd.files[0].name
        {
            let f = &cmd.files[0];
            let data = if f.chomp {
                chomp_heredoc(&f.data)
            } else {
                f.data.clone()
            };
            if data.starts_with("#!") {
                args.push(format!("{PIPES_DIR}/{}", f.name));
                return (args, Some((f.name.clone(), data)));
            }
            args.push(data);
            return (args, None);
        }
        let mut full = command;
        for f in &cmd.files {
            full.push('\n');
            full.push_str(&f.data);
            full.push_str(&f.name);
        }
        args.push(full);
        return (args, None);
    }
    (command_args(cmd, shell), None)
}

/// BuildKit's `runCommandString`: `|N K=V ... args`.
fn run_history(args: &[String], build_args: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    format!("RUN {} # buildkit", parts.join(" "))
}

struct Planner<'a> {
    b: &'a Builder,
    req: &'a BuildRequest,
    df: &'a strata_frontend::Dockerfile,
    plan: &'a plan::Plan,
    platform: Platform,
    /// `SOURCE_DATE_EPOCH`: a setting of every layer step's key.
    epoch: Option<i64>,
    context: Option<Context>,
    context_dir: String,
    dockerfile_name: String,
    images: HashMap<String, (Image, ImageConfig, Vec<Layer>)>,
    next_id: usize,
    progress: &'a dyn ProgressSink,
}

impl Planner<'_> {
    fn context(&mut self) -> Result<&Context> {
        if self.context.is_none() {
            self.context = Some(load_context(self.b, self.req)?);
        }
        Ok(self.context.as_ref().unwrap_or_else(|| unreachable!()))
    }

    fn image(&mut self, reference: &str) -> Result<(Image, ImageConfig, Vec<Layer>)> {
        if let Some(i) = self.images.get(reference) {
            return Ok(i.clone());
        }
        let refresh = self.req.pull
            && strata_store::reference::parse_normalized_named(reference)
                .is_ok_and(|r| r.digest().is_none());
        let local = if refresh {
            Err(strata_store::StoreError::ImageNotFound(
                reference.to_string(),
            ))
        } else {
            self.b.store.resolve_for(reference, &self.platform)
        };
        let image = match local {
            Ok(i) => i,
            Err(strata_store::StoreError::ImageNotFound(_)) => {
                self.b
                    .images
                    .provide(&self.b.store, reference, &self.platform)?
            }
            Err(e) => return Err(e.into()),
        };
        let config: ImageConfig =
            serde_json::from_value(image.config_json.clone()).map_err(|e| {
                BuildError::Store(strata_store::StoreError::Invalid(format!(
                    "config of image {reference}: {e}"
                )))
            })?;
        let layers = Layer::of_image(&image)?;
        let entry = (image, config, layers);
        self.images.insert(reference.to_string(), entry.clone());
        Ok(entry)
    }

    fn plan(&mut self) -> Result<Planned> {
        let mut planned = Planned { stages: Vec::new() };
        for ps in &self.plan.stages {
            let stage = self.plan_stage(ps, &planned)?;
            planned.stages.push(stage);
        }
        Ok(planned)
    }

    fn plan_stage(&mut self, ps: &plan::PlannedStage, done: &Planned) -> Result<PStage> {
        let os = self.platform.os.clone();
        let (config, history, base_layers, base_key, state, description) = match &ps.base {
            Base::Scratch => {
                let mut config = ImageConfig {
                    architecture: self.platform.architecture.clone(),
                    os: os.clone(),
                    variant: self.platform.variant.clone(),
                    ..Default::default()
                };
                config.config.WorkingDir = "/".into();
                let key = key_of(
                    &json!({"base": "scratch", "platform": format!("{}/{}", os, self.platform.architecture)}),
                );
                (
                    config,
                    Vec::new(),
                    BaseLayers::None,
                    key,
                    BaseState::scratch(&os),
                    "scratch".to_string(),
                )
            }
            Base::Image(reference) => {
                let (image, mut config, layers) = self.image(reference)?;
                self.progress.event(Event::Base {
                    stage: ps.display_name.clone(),
                    image: reference.clone(),
                    id: image.id().to_string(),
                });
                let state = BaseState::from_image(
                    &config.config.Env,
                    &config.config.WorkingDir,
                    &config.config.OnBuild,
                    &config.os,
                );
                let history = config
                    .history
                    .drain(..)
                    .map(|h| HistEntry {
                        history: h,
                        appended: false,
                        layer: None,
                    })
                    .collect();
                let key = key_of(&json!({"base": "image", "id": image.id().to_string()}));
                (
                    config,
                    history,
                    BaseLayers::Image(layers),
                    key,
                    state,
                    reference.clone(),
                )
            }
            Base::Stage(p) => {
                let parent = done.stage(*p).ok_or_else(|| {
                    BuildError::Unsupported(format!("a stage based on unplanned stage {p}"))
                })?;
                (
                    parent.config.clone(),
                    parent.history.clone(),
                    BaseLayers::Stage(*p),
                    parent.final_key.clone(),
                    parent.final_state.clone(),
                    format!("stage {}", stage_label(self.df, *p)),
                )
            }
        };
        let evaluated = evaluate_stage(self.df, self.plan, ps.index, state)?;
        let mut stage = PStage {
            index: ps.index,
            display: ps.display_name.clone(),
            base_layers,
            base_description: description,
            config,
            history,
            steps: Vec::new(),
            final_key: base_key,
            final_state: evaluated.final_state.clone(),
            deps: ps.depends_on.clone(),
        };
        self.plan_steps(&mut stage, &evaluated, done)?;
        stage.config.config.Env = evaluated.final_state.config_env_strings();
        Ok(stage)
    }

    fn plan_steps(
        &mut self,
        stage: &mut PStage,
        evaluated: &EvaluatedStage,
        done: &Planned,
    ) -> Result<()> {
        let total = 1 + evaluated.steps.iter().filter(|s| makes_layer(s)).count();
        let mut n = 1;
        let mut cmd_set = false;
        // Triggers of the base are consumed; the image gets this stage's own ONBUILDs.
        stage.config.config.OnBuild.clear();
        for (position, step) in evaluated.steps.iter().enumerate() {
            let cfg = &mut stage.config;
            let history = match &step.expanded {
                Expanded::Env(pairs) => Some(format!(
                    "ENV {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
                Expanded::Label(pairs) => {
                    for (k, v) in pairs {
                        cfg.config.Labels.insert(k.clone(), v.clone());
                    }
                    Some(format!(
                        "LABEL {}",
                        pairs
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))
                }
                Expanded::Arg(args) => Some(format!(
                    "ARG {}",
                    args.iter()
                        .map(|a| match &a.value {
                            Some(v) => format!("{}={v}", a.name),
                            None => a.name.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
                Expanded::User(u) => {
                    cfg.config.User = u.clone();
                    Some(format!("USER {u}"))
                }
                Expanded::Volume(vs) => {
                    for v in vs {
                        cfg.config.Volumes.insert(v.clone(), config::Empty {});
                    }
                    Some(format!("VOLUME {}", go_list(vs)))
                }
                Expanded::StopSignal(s) => {
                    cfg.config.StopSignal = s.clone();
                    Some(format!("STOPSIGNAL {s}"))
                }
                Expanded::Expose(ports) => {
                    let mut sorted = ports.clone();
                    sorted.sort();
                    sorted.dedup();
                    for p in &sorted {
                        cfg.config.ExposedPorts.insert(p.clone(), config::Empty {});
                    }
                    let items: Vec<String> = sorted.iter().map(|p| format!("{p}:{{}}")).collect();
                    Some(format!("EXPOSE map[{}]", items.join(" ")))
                }
                Expanded::Cmd(c) => {
                    let args = command_args(c, &cfg.config.shell());
                    let history = format!("CMD {}", go_quote_list(&args));
                    cfg.config.Cmd = Some(args);
                    cfg.config.ArgsEscaped |= c.shell_form;
                    cmd_set = true;
                    Some(history)
                }
                Expanded::Entrypoint(c) => {
                    let args = command_args(c, &cfg.config.shell());
                    let history = format!("ENTRYPOINT {}", go_quote_list(&args));
                    cfg.config.Entrypoint = Some(args);
                    cfg.config.ArgsEscaped |= c.shell_form;
                    if !cmd_set {
                        cfg.config.Cmd = None;
                    }
                    Some(history)
                }
                Expanded::Healthcheck(h) => {
                    let hc = HealthcheckConfig::from_instruction(h);
                    let history = format!("HEALTHCHECK {}", hc.history_form());
                    cfg.config.Healthcheck = Some(hc);
                    Some(history)
                }
                Expanded::Shell(s) => {
                    cfg.config.Shell = s.clone();
                    Some(format!("SHELL {}", go_list(s)))
                }
                Expanded::Maintainer(m) => {
                    cfg.author = Some(m.clone());
                    Some(format!("MAINTAINER {m}"))
                }
                Expanded::Onbuild(o) => {
                    cfg.config.OnBuild.push(o.clone());
                    Some(format!("ONBUILD {o}"))
                }
                Expanded::Workdir { resolved, .. } => {
                    cfg.config.WorkingDir = resolved.clone();
                    if resolved == "/" {
                        Some(format!("WORKDIR {resolved}"))
                    } else {
                        None
                    }
                }
                Expanded::Run(_) | Expanded::Copy(_) | Expanded::Add(_) => None,
            };
            if let Some(created_by) = history {
                stage.history.push(HistEntry {
                    history: History {
                        created_by,
                        comment: HISTORY_COMMENT.into(),
                        empty_layer: true,
                        ..Default::default()
                    },
                    appended: true,
                    layer: None,
                });
                continue;
            }
            n += 1;
            let step_index = stage.steps.len();
            let pstep = self.plan_layer_step(stage, step, position, n, total, done)?;
            stage.history.push(HistEntry {
                history: History {
                    created_by: layer_history(step, &pstep.op),
                    comment: HISTORY_COMMENT.into(),
                    empty_layer: false,
                    ..Default::default()
                },
                appended: true,
                layer: Some((stage.index, step_index)),
            });
            stage.final_key = match &pstep.op {
                // What follows a linked copy still depends on what is below it.
                Op::Copy { flags, .. } if flags.link => {
                    key_of(&json!([stage.final_key, pstep.key]))
                }
                _ => pstep.key.clone(),
            };
            stage.steps.push(pstep);
        }
        Ok(())
    }

    fn plan_layer_step(
        &mut self,
        stage: &PStage,
        step: &Step,
        position: usize,
        n: usize,
        total: usize,
        done: &Planned,
    ) -> Result<PStep> {
        self.next_id += 1;
        let text = step.instruction.original.clone();
        let prefix = if stage.display.is_empty() {
            format!("[{n}/{total}]")
        } else {
            format!("[{} {n}/{total}]", stage.display)
        };
        let info = StepInfo {
            id: self.next_id,
            stage: stage.display.clone(),
            name: format!("{prefix} {}", first_line(&text)),
            line: if step.from_onbuild {
                0
            } else {
                step.instruction.location.start_line
            },
        };
        let identity = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            self.context_dir,
            self.dockerfile_name,
            stage_label(self.df, stage.index),
            position
        );
        let cfg = &stage.config.config;
        let mut inputs = StepInputs {
            parent: stage.final_key.clone(),
            build_args: step.used_build_args.clone(),
            ..Default::default()
        };
        let mut context_files = Vec::new();
        let mut context_roots = Vec::new();
        let mut manifest = Manifest::default();
        let step_error = |message: String| BuildError::Step {
            step: info.name.clone(),
            message,
        };
        let op = match &step.expanded {
            Expanded::Run(r) => {
                if r.security == Security::Insecure {
                    return Err(BuildError::Unsupported("RUN --security=insecure".into()));
                }
                let (args, script) = run_args(&r.command, &cfg.shell());
                let network = match r.network {
                    NetworkMode::Default => self.req.network,
                    NetworkMode::None => Network::None,
                    NetworkMode::Host => Network::Host,
                };
                let workdir = if step.workdir.is_empty() {
                    "/".to_string()
                } else {
                    step.workdir.clone()
                };
                let mut env: Vec<String> =
                    step.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                for (k, v) in &self.plan.proxy_env {
                    if !step.env.iter().any(|(name, _)| name == k) {
                        env.push(format!("{k}={v}"));
                    }
                }
                let mut run_mounts = Vec::new();
                for (m, from) in r.mounts.iter().zip(&r.mount_sources) {
                    let ssh_index = run_mounts
                        .iter()
                        .filter(|p: &&RunMount| p.kind == MountType::Ssh)
                        .count();
                    let (from, source) = self
                        .mount_source(
                            m,
                            from.as_ref(),
                            &mut inputs,
                            (&mut context_files, &mut context_roots),
                            done,
                        )
                        .map_err(step_error)?;
                    run_mounts.push(
                        RunMount::plan(m, from, source, &workdir, ssh_index).map_err(step_error)?,
                    );
                }
                inputs.op = if run_mounts.is_empty() {
                    json!({"run": args, "script": script})
                } else {
                    let keys: Vec<_> = run_mounts.iter().map(RunMount::key).collect();
                    json!({"run": args, "script": script, "mounts": keys})
                }
                .to_string();
                inputs.env = step.env.clone();
                inputs.settings = BTreeMap::from([
                    ("USER".to_string(), cfg.User.clone()),
                    ("WORKDIR".to_string(), workdir.clone()),
                    ("network".to_string(), network_name(network).to_string()),
                ]);
                Op::Run {
                    command: args.join(" "),
                    args,
                    env,
                    user: cfg.User.clone(),
                    workdir,
                    network,
                    script,
                    mounts: run_mounts,
                }
            }
            Expanded::Copy(_) | Expanded::Add(_) => {
                let (what, sources, inline, raw_dest, from, chown, chmod, unpack, flags) =
                    match &step.expanded {
                        Expanded::Copy(c) => {
                            let flags = CopyFlags {
                                link: c.link,
                                parents: c.parents,
                                excludes: c.excludes.clone(),
                                remotes: Vec::new(),
                            };
                            (
                                "copy",
                                c.sources.clone(),
                                &c.inline,
                                c.dest.clone(),
                                c.from.clone(),
                                c.chown.clone(),
                                c.chmod,
                                false,
                                flags,
                            )
                        }
                        Expanded::Add(a) => {
                            let downloads = self.b.store.root().join(remote::DOWNLOADS_DIR);
                            let (local, remotes, keyed) =
                                remote::plan_sources(a, &downloads, self.progress)
                                    .map_err(step_error)?;
                            inputs.sources.extend(keyed);
                            let flags = CopyFlags {
                                link: a.link,
                                parents: false,
                                excludes: a.excludes.clone(),
                                remotes,
                            };
                            (
                                "add",
                                local,
                                &a.inline,
                                a.dest.clone(),
                                None,
                                a.chown.clone(),
                                a.chmod,
                                a.unpack.unwrap_or(true),
                                flags,
                            )
                        }
                        _ => unreachable!(),
                    };
                let workdir = if step.workdir.is_empty() {
                    "/"
                } else {
                    step.workdir.as_str()
                };
                let mut dest = if raw_dest.starts_with('/') {
                    clean_abs(&raw_dest)
                } else {
                    clean_abs(&format!("{workdir}/{raw_dest}"))
                };
                if dest_is_dir(&raw_dest) && dest != "/" {
                    dest.push('/');
                }
                let inline: Vec<(String, String)> = inline
                    .iter()
                    .map(|i| (i.path.clone(), i.data.clone()))
                    .collect();
                let copy_from = match &from {
                    None if sources.is_empty() && !flags.remotes.is_empty() => CopyFrom::Context,
                    None => {
                        let (digest, files, roots, lines) = self
                            .select_context(&sources, inline.is_empty(), &flags)
                            .map_err(step_error)?;
                        context_files = files;
                        context_roots = roots;
                        manifest = lines;
                        inputs.sources.push(("context".into(), digest));
                        CopyFrom::Context
                    }
                    Some(SourceRef::Stage(s)) => {
                        let source = done.stage(*s).ok_or_else(|| {
                            step_error(format!("stage {s} is not part of this build"))
                        })?;
                        inputs.sources.push((
                            format!("stage {}", stage_label(self.df, *s)),
                            source.final_key.clone(),
                        ));
                        CopyFrom::Stage(*s)
                    }
                    Some(SourceRef::Image(reference)) => {
                        let (image, _, layers) = self.image(reference)?;
                        inputs
                            .sources
                            .push((format!("image {reference}"), image.id().to_string()));
                        CopyFrom::Image(layers)
                    }
                };
                inputs.op = json!({
                    what: sources,
                    "inline": inline,
                    "dest": dest,
                    "chmod": chmod,
                    "unpack": unpack,
                    "link": flags.link,
                    "parents": flags.parents,
                    "exclude": flags.excludes,
                })
                .to_string();
                if flags.link {
                    // BuildKit: a linked copy does not depend on what is below it.
                    inputs.parent = String::new();
                }
                if let Some(c) = &chown {
                    inputs.settings.insert("chown".into(), c.clone());
                }
                Op::Copy {
                    from: copy_from,
                    sources,
                    inline,
                    dest,
                    chown,
                    chmod,
                    unpack,
                    flags,
                }
            }
            Expanded::Workdir { resolved, .. } => {
                inputs.op = json!({"workdir": resolved}).to_string();
                inputs.settings = BTreeMap::from([("USER".to_string(), cfg.User.clone())]);
                Op::Workdir {
                    path: resolved.clone(),
                    user: cfg.User.clone(),
                }
            }
            _ => unreachable!("only layer steps are planned here"),
        };
        if let Some(epoch) = self.epoch {
            inputs
                .settings
                .insert(reproducible::SOURCE_DATE_EPOCH.into(), epoch.to_string());
        }
        let key = inputs.key();
        Ok(PStep {
            info,
            op,
            inputs,
            key,
            text,
            identity,
            context_files,
            context_roots,
            manifest,
            cached: None,
            reason: None,
            recorded_key: None,
            incremental: None,
        })
    }

    /// What a bind or cache mount reads from, and the path inside it. A bind's source adds its
    /// content to the key (the context's selection, a stage's key, an image's ID), like COPY's;
    /// a cache's `from` only seeds a new cache, so only its name is in the key (options).
    fn mount_source(
        &mut self,
        m: &strata_frontend::mount::Mount,
        from: Option<&SourceRef>,
        inputs: &mut StepInputs,
        (context_files, context_roots): (&mut Vec<usize>, &mut Vec<String>),
        done: &Planned,
    ) -> std::result::Result<(MountFrom, String), String> {
        if !matches!(m.kind, MountType::Bind | MountType::Cache) {
            return Ok((MountFrom::Nothing, String::new()));
        }
        let bind = m.kind == MountType::Bind;
        let raw = m.source.clone().unwrap_or_else(|| ".".into());
        let outside = || format!("forbidden path outside the build context: {raw}");
        let image_rel = clean_abs(&raw).trim_start_matches('/').to_string();
        Ok(match from {
            None if bind => {
                let rel = context_relative(&raw).ok_or_else(outside)?;
                let (digest, files, roots, _) =
                    self.select_context(std::slice::from_ref(&raw), true, &CopyFlags::default())?;
                context_files.extend(files);
                context_roots.extend(roots);
                // Named as COPY's, so a miss names the changed files.
                inputs.sources.push(("context".into(), digest));
                (MountFrom::Context, rel)
            }
            None => (MountFrom::Nothing, String::new()),
            Some(SourceRef::Stage(s)) => {
                let stage = done
                    .stage(*s)
                    .ok_or_else(|| format!("stage {s} is not part of this build"))?;
                if bind {
                    inputs.sources.push((
                        format!("mount stage {}", stage_label(self.df, *s)),
                        stage.final_key.clone(),
                    ));
                }
                (MountFrom::Stage(*s), image_rel)
            }
            Some(SourceRef::Image(reference)) => {
                let (image, _, layers) = self.image(reference).map_err(|e| e.to_string())?;
                if bind {
                    inputs
                        .sources
                        .push((format!("mount image {reference}"), image.id().to_string()));
                }
                (MountFrom::Image(layers), image_rel)
            }
        })
    }

    /// What a COPY from the context selects, hashed: every matched path, and for each the
    /// relative path, type, mode, content hash and link target of it and everything below it.
    /// Returns (digest, the files read as positions in the context, matched roots, the hashed
    /// lines). Fails when a source is missing (or when nothing at all matched and `need_match`).
    #[allow(clippy::type_complexity)]
    fn select_context(
        &mut self,
        sources: &[String],
        need_match: bool,
        flags: &CopyFlags,
    ) -> std::result::Result<(String, Vec<usize>, Vec<String>, Manifest), String> {
        let threads = self.b.jobs.max(2);
        let ctx = self.context().map_err(|e| e.to_string())?;
        let view = SourceRoot::Context(ctx);
        // (source, match, resolved, what is selected below it)
        let mut selected: Vec<(String, String, String, Option<std::rc::Rc<CopyFilter>>)> =
            Vec::new();
        for src in sources {
            let (rel, filter) = flags.selection(src, context_relative, &view)?;
            let filter = filter.map(std::rc::Rc::new);
            let matches = view.expand(&rel).map_err(|e| format!("{src}: {e}"))?;
            let wildcard = matches.len() != 1 || matches[0] != rel;
            for m in matches {
                match view.resolve(&m).map_err(|e| format!("{src}: {e}"))? {
                    Some((resolved, _)) if wildcard || !ctx.is_hollow(&resolved) => {
                        selected.push((src.clone(), m, resolved, filter.clone()))
                    }
                    _ if wildcard => {}
                    _ => {
                        return Err(format!(
                            "file not found in build context or excluded by .dockerignore: \
                             stat {rel}: file does not exist"
                        ));
                    }
                }
            }
        }
        if need_match && selected.is_empty() {
            return Err(
                "no source files were specified (nothing in the build context matches)".into(),
            );
        }
        let kept =
            |resolved: &str, path: &str, e: &crate::context::Entry, f: Option<&CopyFilter>| {
                f.is_none_or(|f| {
                    let below = path[resolved.len()..].trim_start_matches('/');
                    below.is_empty()
                        || f.decide(below, e.kind == Kind::Dir) != crate::filter::Decision::Skip
                })
            };
        // Positions in the context of the regular files selected.
        let mut files: Vec<usize> = Vec::new();
        for (_, _, resolved, filter) in &selected {
            let position = ctx.position(resolved);
            match position.and_then(|i| ctx.at(i)) {
                Some((_, e)) if e.kind == Kind::File => files.extend(position),
                Some((_, e)) if e.kind != Kind::Dir => {}
                _ => files.extend(
                    ctx.below(resolved)
                        .filter(|(_, p, e)| {
                            e.kind == Kind::File && kept(resolved, p, e, filter.as_deref())
                        })
                        .map(|(i, _, _)| i),
                ),
            }
        }
        ctx.hash_files(files.iter().filter_map(|&i| ctx.at(i)), threads)
            .map_err(|e| e.to_string())?;
        use std::fmt::Write as _;
        // A line per source, file and directory.
        let mut lines = Manifest::with_capacity(selected.len() + files.len() * 9 / 8);
        for (src, m, resolved, filter) in &selected {
            // Writing to a String cannot fail.
            lines.push_line(|l| {
                let _ = write!(l, "source {src} {m} {resolved}");
            });
            let mut describe = |p: &str, e: &crate::context::Entry| {
                lines.push_entry(
                    p,
                    e.kind.name(),
                    e.mode,
                    e.content_hash().unwrap_or(""),
                    e.link.as_deref().unwrap_or(""),
                    if matches!(e.kind, Kind::Char | Kind::Block) {
                        e.rdev
                    } else {
                        0
                    },
                );
            };
            if let Some(e) = ctx.entry(resolved) {
                describe(resolved, e);
            }
            for (_, p, e) in ctx.below(resolved) {
                if kept(resolved, p, e, filter.as_deref()) {
                    describe(p, e);
                }
            }
        }
        let digest = lines.digest();
        let roots = selected.into_iter().map(|(_, _, r, _)| r).collect();
        Ok((digest, files, roots, lines))
    }
}

fn network_name(n: Network) -> &'static str {
    match n {
        Network::Host => "host",
        Network::None => "none",
        Network::Private => "private",
    }
}

fn makes_layer(step: &Step) -> bool {
    match &step.expanded {
        Expanded::Run(_) | Expanded::Copy(_) | Expanded::Add(_) => true,
        Expanded::Workdir { resolved, .. } => resolved != "/",
        _ => false,
    }
}

/// The history line of a layer step.
fn layer_history(step: &Step, op: &Op) -> String {
    match (&step.expanded, op) {
        (Expanded::Run(r), Op::Run { args, .. }) => run_history(args, &r.history_build_args),
        (Expanded::Copy(c), _) => copy_history("COPY", &c.sources, &c.inline, &c.dest),
        (Expanded::Add(a), _) => copy_history("ADD", &a.sources, &a.inline, &a.dest),
        (_, Op::Workdir { path, .. }) => format!("WORKDIR {path}"),
        _ => step.instruction.original.clone(),
    }
}

fn copy_history(
    name: &str,
    sources: &[String],
    inline: &[strata_frontend::instructions::InlineSource],
    dest: &str,
) -> String {
    let mut s = name.to_string();
    for src in sources {
        s.push(' ');
        s.push_str(src);
    }
    for i in inline {
        s.push_str(" <<");
        s.push_str(&i.path);
    }
    format!("{s} {dest} # buildkit")
}

/// A stage's name, or its index.
fn stage_label(df: &strata_frontend::Dockerfile, index: usize) -> String {
    df.stages
        .get(index)
        .and_then(|s| s.name())
        .map_or_else(|| index.to_string(), str::to_string)
}

fn load_context(b: &Builder, req: &BuildRequest) -> Result<Context> {
    let Some(dir) = &req.context else {
        return Ok(Context::empty());
    };
    let root = fs::canonicalize(dir).map_err(|error| BuildError::Context {
        path: dir.clone(),
        error,
    })?;
    if !root.is_dir() {
        return Err(BuildError::Context {
            path: dir.clone(),
            error: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(df) = &req.dockerfile_path {
        let name = df
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("Dockerfile");
        let [specific, _] = ignore_file_names(name);
        candidates.push(df.with_file_name(specific));
    }
    candidates.push(root.join(".dockerignore"));
    let mut patterns = Vec::new();
    for c in candidates {
        if let Ok(text) = fs::read_to_string(&c) {
            patterns = read_patterns(&text)?;
            break;
        }
    }
    let matcher = Matcher::new(&patterns)?;
    let previous = || cache::read_stat_cache(&b.store, &root.to_string_lossy());
    Context::walk(&root, &matcher, previous, b.jobs.max(2))
}

// ---------------------------------------------------------------------------------------------
// Cache lookup and miss reasons
// ---------------------------------------------------------------------------------------------

fn lookup_and_explain(
    b: &Builder,
    req: &BuildRequest,
    planned: &mut Planned,
    ctx: Option<&Context>,
) -> Result<()> {
    let keys: Vec<String> = planned
        .stages
        .iter()
        .flat_map(|s| s.steps.iter().map(|p| p.key.clone()))
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let id_refs: Vec<(&str, &str)> = planned
        .stages
        .iter()
        .flat_map(|s| {
            s.steps
                .iter()
                .map(|p| (p.identity.as_str(), p.key.as_str()))
        })
        .collect();
    let Lookup { results, steps } = cache::lookup(&b.store, &key_refs, &id_refs)?;
    // Which step made each key in this build: for "the step before it changed".
    let mut made_by: HashMap<String, (usize, String)> = HashMap::new();
    let mut missed: HashSet<usize> = HashSet::new();
    for stage in &mut planned.stages {
        for step in &mut stage.steps {
            let record = steps.get(&step.identity);
            step.recorded_key = record.map(|r| r.key.clone());
            let hit = results
                .get(&step.key)
                .filter(|r| r.layer.parsed_digest().is_ok_and(|d| b.store.has_blob(&d)))
                .cloned()
                .or_else(|| {
                    b.import.get(&step.key).map(|e| CacheRecord {
                        layer: e.layer.clone(),
                        created: e.created.clone(),
                    })
                });
            if let Some(hit) = hit.filter(|_| !req.no_cache) {
                step.cached = Some(hit);
            } else {
                missed.insert(step.info.id);
                step.reason = Some(if req.no_cache {
                    MissReason::NoCache
                } else {
                    explain(step, record, ctx, &made_by, &stage.base_description)
                });
            }
            made_by.insert(step.key.clone(), (step.info.id, step.info.name.clone()));
        }
    }
    // Misses that can redo only what changed: their previous results.
    let mut previous: Vec<(usize, usize, String, ManifestDiff)> = Vec::new();
    for (si, stage) in planned.stages.iter().enumerate() {
        for (pi, step) in stage.steps.iter().enumerate() {
            if step.cached.is_some() || req.no_cache {
                continue;
            }
            let Some(record) = steps.get(&step.identity) else {
                continue;
            };
            if let Some(d) = incremental_diff(step, record, ctx) {
                previous.push((si, pi, record.key.clone(), d));
            }
        }
    }
    if !previous.is_empty() {
        let keys: Vec<&str> = previous.iter().map(|(_, _, k, _)| k.as_str()).collect();
        let found = cache::results(&b.store, &keys)?;
        for (si, pi, key, diff) in previous {
            if let Some(r) = found.get(&key) {
                planned.stages[si].steps[pi].incremental = Some(Incremental {
                    previous: r.layer.clone(),
                    changed: diff.changed,
                    removed: diff.removed,
                });
            }
        }
    }
    Ok(())
}

/// What changed between two manifests of a COPY's selection (paths relative to the context).
struct ManifestDiff {
    changed: HashSet<String>,
    removed: HashSet<String>,
}

fn manifest_diff(old: &[String], new: &Manifest) -> ManifestDiff {
    let path = |l: &str| l.split('\t').next().unwrap_or_default().to_string();
    let old_lines: HashSet<&str> = old.iter().map(String::as_str).collect();
    let new_paths: HashSet<String> = new.lines().map(path).collect();
    ManifestDiff {
        changed: new
            .lines()
            .filter(|l| !l.starts_with("source ") && !old_lines.contains(l))
            .map(path)
            .collect(),
        removed: old
            .iter()
            .filter(|l| !l.starts_with("source "))
            .map(|l| path(l))
            .filter(|p| !new_paths.contains(p))
            .collect(),
    }
}

/// Whether a missed COPY can be redone from its previous result: same instruction, parent and
/// settings, the same sources matched, only files changed (none of them hard-linked).
fn incremental_diff(
    step: &PStep,
    record: &StepRecord,
    ctx: Option<&Context>,
) -> Option<ManifestDiff> {
    let Op::Copy {
        from: CopyFrom::Context,
        inline,
        unpack: false,
        flags,
        ..
    } = &step.op
    else {
        return None;
    };
    if flags.link || flags.parents || !flags.excludes.is_empty() {
        return None;
    }
    let (old, new) = (&record.inputs, &step.inputs);
    if !inline.is_empty()
        || record.manifest.is_empty()
        || old.op != new.op
        || old.parent != new.parent
        || old.env != new.env
        || old.settings != new.settings
        || old.build_args != new.build_args
    {
        return None;
    }
    let old_sources = record.manifest.iter().filter(|l| l.starts_with("source "));
    let new_sources = step.manifest.lines().filter(|l| l.starts_with("source "));
    if !old_sources.eq(new_sources) {
        return None;
    }
    let diff = manifest_diff(&record.manifest, &step.manifest);
    let ctx = ctx?;
    let hard_linked = diff.changed.iter().any(|p| {
        ctx.entry(p)
            .is_some_and(|e| e.kind == Kind::File && e.nlink > 1)
    });
    (!hard_linked).then_some(diff)
}

fn diff_map<'a>(
    before: impl IntoIterator<Item = (&'a String, &'a String)>,
    after: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<(String, Option<String>, Option<String>)> {
    let before: BTreeMap<&String, &String> = before.into_iter().collect();
    let after: BTreeMap<&String, &String> = after.into_iter().collect();
    let names: std::collections::BTreeSet<&String> =
        before.keys().chain(after.keys()).copied().collect();
    names.into_iter().find_map(|k| {
        let (b, a) = (before.get(k), after.get(k));
        (b != a).then(|| {
            (
                k.clone(),
                b.map(|v| v.to_string()),
                a.map(|v| v.to_string()),
            )
        })
    })
}

fn explain(
    step: &PStep,
    record: Option<&StepRecord>,
    ctx: Option<&Context>,
    made_by: &HashMap<String, (usize, String)>,
    base: &str,
) -> MissReason {
    let Some(record) = record else {
        return MissReason::FirstBuild;
    };
    let (old, new) = (&record.inputs, &step.inputs);
    if old == new {
        return MissReason::Pruned;
    }
    if old.op != new.op {
        return MissReason::Instruction {
            before: record.text.clone(),
            after: step.text.clone(),
        };
    }
    if let Some((name, before, after)) = diff_map(&old.build_args, &new.build_args) {
        return MissReason::BuildArg {
            name,
            before,
            after,
        };
    }
    let env_before = old.env.iter().map(|(k, v)| (k, v));
    let env_after = new.env.iter().map(|(k, v)| (k, v));
    if let Some((name, before, after)) = diff_map(env_before, env_after) {
        return MissReason::Env {
            name,
            before,
            after,
        };
    }
    if let Some((name, before, after)) = diff_map(&old.settings, &new.settings) {
        return MissReason::Setting {
            name,
            before,
            after,
        };
    }
    if old.sources != new.sources {
        let changed_source = new
            .sources
            .iter()
            .find(|s| !old.sources.contains(s))
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| "its sources".into());
        if changed_source == "context" && !record.manifest.is_empty() && !step.manifest.is_empty() {
            let diff = manifest_diff(&record.manifest, &step.manifest);
            let mut changed: Vec<String> = diff.changed.into_iter().chain(diff.removed).collect();
            changed.sort();
            if !changed.is_empty() {
                let count = changed.len();
                changed.truncate(REASON_FILES);
                return MissReason::Files { changed, count };
            }
        }
        if changed_source == "context"
            && let Some(ctx) = ctx
        {
            let mut changed: Vec<String> = step
                .context_files
                .iter()
                .filter_map(|&i| ctx.at(i))
                .filter(|(f, _)| ctx.changed_since_last_build(f))
                .map(|(f, _)| f.to_string())
                .collect();
            for root in &step.context_roots {
                changed.extend(ctx.removed_since_last_build(root));
            }
            changed.sort();
            changed.dedup();
            if !changed.is_empty() {
                let count = changed.len();
                changed.truncate(REASON_FILES);
                return MissReason::Files { changed, count };
            }
            return MissReason::Source {
                name: "the context files it copies".into(),
            };
        }
        return MissReason::Source {
            name: changed_source,
        };
    }
    match made_by.get(&new.parent) {
        Some((id, name)) => MissReason::Parent {
            id: Some(*id),
            name: name.clone(),
        },
        None if base.starts_with("stage ") => MissReason::Parent {
            id: None,
            name: base.to_string(),
        },
        None => MissReason::Base {
            image: base.to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

struct StageResult {
    layers: Vec<Layer>,
    created: Vec<String>,
}

struct Exec<'a> {
    b: &'a Builder,
    req: &'a BuildRequest,
    planned: &'a Planned,
    ctx: Option<&'a Context>,
    layers: LayerStore<'a>,
    progress: &'a dyn ProgressSink,
    updates: &'a Mutex<Updates>,
    cancelled: AtomicBool,
    scratch: PathBuf,
    executed: AtomicU64,
}

/// A directory of our own under the store's scratch area, removed on drop.
struct ScratchDir(PathBuf);

static SCRATCH: AtomicU64 = AtomicU64::new(0);

impl ScratchDir {
    fn new(base: &Path) -> Result<ScratchDir> {
        let path = base.join(format!(
            "{}-{}",
            std::process::id(),
            SCRATCH.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The store's scratch area: directories named `<pid>-...`, removed by the next build once
/// their process is gone.
const SCRATCH_DIR: &str = "builder-tmp";

/// An empty directory of this process in the store's scratch area, removed when dropped (or,
/// if the process is killed, by the next build): where the binary stages files for a tar
/// export or `cp -`. `purpose` names it (`<pid>-<purpose>-...`).
pub fn scratch_dir(store_root: &Path, purpose: &str) -> std::io::Result<tempfile::TempDir> {
    let base = store_root.join(SCRATCH_DIR);
    fs::create_dir_all(&base)?;
    tempfile::Builder::new()
        .prefix(&format!("{}-{purpose}-", std::process::id()))
        .tempdir_in(&base)
}

/// Removes scratch directories of processes that are gone.
fn clean_scratch(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let alive = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            mounts::release_stale(&e.path());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// An active snapshot that is removed unless committed.
struct ActiveGuard<'a> {
    snapshotter: &'a strata_snapshotter::Snapshotter,
    id: String,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if self
            .snapshotter
            .info(&self.id)
            .is_ok_and(|i| i.state == strata_snapshotter::State::Active)
        {
            let _ = self.snapshotter.remove(&self.id);
        }
    }
}

struct Sched {
    started: HashSet<usize>,
    results: HashMap<usize, StageResult>,
    error: Option<BuildError>,
}

impl Exec<'_> {
    fn run_stages(&self) -> Result<HashMap<usize, StageResult>> {
        let stages = &self.planned.stages;
        let sched = Mutex::new(Sched {
            started: HashSet::new(),
            results: HashMap::new(),
            error: None,
        });
        let cv = Condvar::new();
        let workers = self.b.jobs.min(stages.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let (stage, deps) = {
                            let mut g = sched.lock().unwrap_or_else(|e| e.into_inner());
                            let stage = loop {
                                if g.error.is_some() || g.started.len() == stages.len() {
                                    return;
                                }
                                let ready = stages.iter().find(|s| {
                                    !g.started.contains(&s.index)
                                        && s.deps.iter().all(|d| g.results.contains_key(d))
                                });
                                if let Some(s) = ready {
                                    g.started.insert(s.index);
                                    break s;
                                }
                                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                            };
                            let deps: HashMap<usize, Vec<Layer>> = stage
                                .deps
                                .iter()
                                .filter_map(|d| g.results.get(d).map(|r| (*d, r.layers.clone())))
                                .collect();
                            (stage, deps)
                        };
                        let result = self.run_stage(stage, &deps);
                        let mut g = sched.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(r) => {
                                g.results.insert(stage.index, r);
                            }
                            Err(BuildError::Cancelled) => {}
                            Err(e) => {
                                self.cancelled.store(true, Ordering::Relaxed);
                                if g.error.is_none() {
                                    g.error = Some(e);
                                }
                            }
                        }
                        cv.notify_all();
                    }
                });
            }
        });
        let sched = sched.into_inner().unwrap_or_else(|e| e.into_inner());
        match sched.error {
            Some(e) => Err(e),
            None => Ok(sched.results),
        }
    }

    fn run_stage(&self, stage: &PStage, deps: &HashMap<usize, Vec<Layer>>) -> Result<StageResult> {
        let mut layers = match &stage.base_layers {
            BaseLayers::None => Vec::new(),
            BaseLayers::Image(l) => l.clone(),
            BaseLayers::Stage(p) => deps.get(p).cloned().unwrap_or_default(),
        };
        let mut created = Vec::new();
        for step in &stage.steps {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            if let Some(hit) = &step.cached {
                self.progress.event(Event::Cached {
                    id: step.info.id,
                    name: step.info.name.clone(),
                });
                if step.recorded_key.as_deref() != Some(step.key.as_str()) {
                    self.record_step(step);
                }
                layers.push(hit.layer.clone());
                created.push(hit.created.clone());
                continue;
            }
            let reason = step.reason.clone().unwrap_or(MissReason::FirstBuild);
            self.progress.event(Event::Started {
                id: step.info.id,
                name: step.info.name.clone(),
                reason_text: reason.to_string(),
                reason,
            });
            let t0 = Instant::now();
            let layer = match self.run_step(step, &layers, deps) {
                Ok(l) => l,
                Err(e) => {
                    self.progress.event(Event::Failed {
                        id: step.info.id,
                        error: e.to_string(),
                    });
                    return Err(e);
                }
            };
            let now = now_rfc3339();
            {
                let mut u = self.updates.lock().unwrap_or_else(|e| e.into_inner());
                u.results.push((
                    step.key.clone(),
                    CacheRecord {
                        layer: layer.clone(),
                        created: now.clone(),
                    },
                ));
            }
            self.record_step(step);
            self.executed.fetch_add(1, Ordering::Relaxed);
            self.progress.event(Event::Done {
                id: step.info.id,
                duration_ms: t0.elapsed().as_millis() as u64,
            });
            layers.push(layer);
            created.push(now);
        }
        Ok(StageResult { layers, created })
    }

    fn record_step(&self, step: &PStep) {
        let mut u = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        u.steps.push((
            step.identity.clone(),
            StepRecord {
                key: step.key.clone(),
                text: step.text.clone(),
                inputs: step.inputs.clone(),
                manifest: step.manifest.to_lines(),
            },
        ));
    }

    fn step_error(step: &PStep, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            step: step.info.name.clone(),
            message: message.to_string(),
        }
    }

    /// Runs one step on a snapshot of `layers`; returns its layer.
    fn run_step(
        &self,
        step: &PStep,
        layers: &[Layer],
        deps: &HashMap<usize, Vec<Layer>>,
    ) -> Result<Layer> {
        let snapshotter = &self.b.snapshotter;
        // A linked copy is made on an empty tree and stacked on its parent afterwards.
        let linked = matches!(&step.op, Op::Copy { flags, .. } if flags.link);
        let parent = if linked {
            None
        } else {
            self.layers.ensure_snapshot(layers)?
        };
        let active = layers::active_id();
        // Volatile: no sync of the step's files, not even when unmounting (0.3 s after a RUN
        // writing 20,000 files). The snapshot is committed right after the step, trusted only
        // in this boot, and made again from its layer blob (durable before anything names it)
        // after a reboot: a crash loses nothing that was promised.
        snapshotter.prepare_volatile(&active, parent.as_deref())?;
        let guard = ActiveGuard {
            snapshotter,
            id: active.clone(),
        };
        // Start from the previous result of this COPY when only some files changed.
        let mut only: Option<&Incremental> = None;
        if let Some(inc) = &step.incremental
            && snapshotter.driver() == strata_snapshotter::Driver::Overlay
        {
            let mut previous = layers.to_vec();
            previous.push(inc.previous.clone());
            if let Some(id) = layers::snapshot_id(&previous)
                && snapshotter.info(&id).is_ok()
            {
                crate::clone::clone_tree(
                    &snapshotter.fs_path(&id),
                    &snapshotter.fs_path(&active),
                    self.b.jobs.max(2),
                )
                .ctx(|| format!("cloning the previous result of {}", step.info.name))?;
                self.progress.event(Event::Note {
                    id: step.info.id,
                    message: format!(
                        "copying {} changed and removing {} removed entries over the previous result",
                        inc.changed.len(),
                        inc.removed.len()
                    ),
                });
                only = Some(inc);
            }
        }
        let mount = snapshotter.mount(&active)?;
        let root = mount.path().to_path_buf();
        let outcome = match &step.op {
            Op::Run { .. } => self.run_command(step, &root, deps),
            Op::Copy { .. } => self.copy(step, &root, layers, deps, only),
            Op::Workdir { path, user } => (|| {
                // BuildKit's mkdir owner lookup: a user name it cannot find means root.
                let owner = if user.is_empty() {
                    None
                } else {
                    resolve_chown(Some(&root), user).ok()
                };
                let target = strata_runtime::rootpath::resolve_in_root(&root, Path::new(path))
                    .map_err(|e| Self::step_error(step, e))?;
                mkdir_all(&root, &target, owner).map_err(|e| Self::step_error(step, e))
            })(),
        };
        let unmounted = |result: std::io::Result<()>| {
            result.ctx(|| format!("unmounting the snapshot of {}", step.info.name))
        };
        if let Err(e) = outcome {
            unmounted(mount.unmount())?;
            return Err(e);
        }
        // The unmount runs while the layer is made from the upper directory, which needs no
        // mount (a volatile overlay syncs nothing on unmount, but a kernel without `volatile`
        // mounts it as usual and syncs the whole upper file system then).
        let parents = if linked { &[][..] } else { layers };
        let layer = std::thread::scope(|scope| {
            let unmounting = scope.spawn(move || mount.unmount());
            self.layers.commit_active(&active, parents, || {
                unmounted(
                    unmounting
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("the unmount panicked"))),
                )
            })
        })?;
        drop(guard);
        Ok(layer)
    }

    fn run_command(
        &self,
        step: &PStep,
        root: &Path,
        deps: &HashMap<usize, Vec<Layer>>,
    ) -> Result<()> {
        let Op::Run {
            args,
            env,
            user,
            workdir,
            network,
            script,
            command,
            mounts,
        } = &step.op
        else {
            return Ok(());
        };
        // BuildKit leaves the /etc it makes for the hosts and resolv.conf mount points.
        let etc = root.join("etc");
        if fs::symlink_metadata(&etc).is_err() {
            mkdir_all(root, &etc, None).map_err(|e| Self::step_error(step, e))?;
        }
        let state = ScratchDir::new(&self.scratch)?;
        // The stages and images mounts read from, viewed for the run.
        let mut views = Vec::new();
        let mut roots = Vec::new();
        for m in mounts {
            let layers = match &m.from {
                MountFrom::Stage(s) => deps.get(s).cloned().unwrap_or_default(),
                MountFrom::Image(l) => l.clone(),
                MountFrom::Context | MountFrom::Nothing => {
                    roots.push(None);
                    continue;
                }
            };
            let root = match self.layers.ensure_snapshot(&layers)? {
                Some(id) => {
                    let view = self.b.snapshotter.view(&id)?;
                    let path = view.path().to_path_buf();
                    views.push(view);
                    Some(path)
                }
                None => None,
            };
            roots.push(root);
        }
        let attached = mounts::attach(
            &MountInputs {
                store_root: self.b.store.root(),
                scratch: &state.0,
                context: self.ctx,
                secrets: &self.req.secrets,
                ssh: &self.req.ssh,
            },
            mounts,
            &roots,
        )
        .map_err(|e| Self::step_error(step, e))?;
        let mut env = env.clone();
        env.extend(attached.env.iter().map(|(k, v)| format!("{k}={v}")));
        let spec = RunSpec {
            rootfs: root,
            args: args.clone(),
            env,
            user,
            workdir,
            network: *network,
            script: script.clone(),
            state_dir: &state.0,
            mounts: &attached.mounts,
        };
        let id = step.info.id;
        let progress = self.progress;
        let outcome = run::run(&self.b.sandbox, &spec, &|stream, line| {
            progress.event(Event::Log { id, stream, line });
        })
        .map_err(|e| Self::step_error(step, e))?;
        if outcome.success {
            return Ok(());
        }
        Err(BuildError::RunFailed {
            step: step.info.name.clone(),
            command: command.clone(),
            status: outcome.status,
            output: outcome.tail,
        })
    }

    fn copy(
        &self,
        step: &PStep,
        root: &Path,
        below: &[Layer],
        deps: &HashMap<usize, Vec<Layer>>,
        only: Option<&Incremental>,
    ) -> Result<()> {
        let Op::Copy {
            from,
            sources,
            inline,
            dest,
            chown,
            chmod,
            unpack,
            flags,
        } = &step.op
        else {
            return Ok(());
        };
        let err = |m: String| Self::step_error(step, m);
        let chown = match chown {
            // A linked copy's tree is empty: names are looked up in what it is stacked on.
            Some(spec) if flags.link && !spec.split(':').all(|p| p.parse::<u32>().is_ok()) => {
                let view = match self.layers.ensure_snapshot(below)? {
                    Some(id) => Some(self.b.snapshotter.view(&id)?),
                    None => None,
                };
                Some(resolve_chown(view.as_ref().map(|v| v.path()), spec).map_err(err)?)
            }
            Some(spec) => Some(resolve_chown(Some(root), spec).map_err(err)?),
            None => None,
        };
        let options = CopyOptions {
            chown,
            chmod: *chmod,
            unpack_into: None,
            only: only.map(|i| (&i.changed, &i.removed)),
            filter: None,
        };
        // Where the sources are read from; views stay mounted until the copy is done.
        let empty;
        let mut _view = None;
        let src_root: SourceRoot<'_> = match from {
            CopyFrom::Context => match self.ctx {
                Some(c) => SourceRoot::Context(c),
                None if sources.is_empty() => {
                    empty = ScratchDir::new(&self.scratch)?;
                    SourceRoot::Dir(empty.0.clone())
                }
                None => return Err(err("the build has no context".into())),
            },
            CopyFrom::Stage(_) | CopyFrom::Image(_) => {
                let layers = match from {
                    CopyFrom::Stage(s) => deps.get(s).cloned().unwrap_or_default(),
                    CopyFrom::Image(l) => l.clone(),
                    CopyFrom::Context => Vec::new(),
                };
                match self.layers.ensure_snapshot(&layers)? {
                    Some(id) => {
                        let view = self.b.snapshotter.view(&id)?;
                        let path = view.path().to_path_buf();
                        _view = Some(view);
                        SourceRoot::Dir(path)
                    }
                    None => {
                        empty = ScratchDir::new(&self.scratch)?;
                        SourceRoot::Dir(empty.0.clone())
                    }
                }
            }
        };
        let mut matched: Vec<(String, Option<std::rc::Rc<CopyFilter>>)> = Vec::new();
        for src in sources {
            let normalize = |s: &str| match from {
                CopyFrom::Context => context_relative(s),
                _ => Some(clean_abs(s).trim_start_matches('/').to_string()),
            };
            let (rel, filter) = flags.selection(src, normalize, &src_root).map_err(err)?;
            let filter = filter.map(std::rc::Rc::new);
            let found = src_root.expand(&rel).map_err(|e| err(e.to_string()))?;
            let wildcard = found.len() != 1 || found[0] != rel;
            if !wildcard
                && src_root
                    .resolve(&rel)
                    .map_err(|e| err(e.to_string()))?
                    .is_none()
            {
                return Err(err(match from {
                    CopyFrom::Context => format!(
                        "file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist"
                    ),
                    _ => format!("\"/{rel}\": not found: no such file or directory"),
                }));
            }
            matched.extend(found.into_iter().map(|m| (m, filter.clone())));
        }
        if matched.is_empty() && inline.is_empty() && flags.remotes.is_empty() {
            return Err(err("no source files were specified".into()));
        }
        // Docker's rule for several sources (BuildKit lets a wildcard's matches overwrite
        // each other, and so do we).
        if sources.len() + inline.len() + flags.remotes.len() > 1 && !dest.ends_with('/') {
            let target = strata_runtime::rootpath::resolve_in_root(root, Path::new(dest))
                .map_err(|e| err(e.to_string()))?;
            if !target.is_dir() {
                return Err(err(
                    "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
                ));
            }
        }
        for (m, filter) in &matched {
            let scratch = if *unpack {
                Some(ScratchDir::new(&self.scratch)?)
            } else {
                None
            };
            let options = CopyOptions {
                unpack_into: scratch.as_ref().map(|s| s.0.as_path()),
                filter: filter.as_deref(),
                ..options
            };
            copy_path(&src_root, m, root, dest, &options).map_err(|e| err(format!("{m}: {e}")))?;
        }
        if !flags.remotes.is_empty() {
            let excludes = CopyFilter::new(&[], &flags.excludes).map_err(err)?;
            let options = CopyOptions {
                filter: excludes.as_ref(),
                ..options
            };
            remote::copy_remotes(&flags.remotes, &self.scratch, root, dest, &options)
                .map_err(err)?;
        }
        if !inline.is_empty() {
            let dir = ScratchDir::new(&self.scratch)?;
            for (name, data) in inline {
                let path = dir.0.join(name.trim_start_matches('/'));
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).ctx(|| "writing a heredoc file".into())?;
                }
                fs::write(&path, data).ctx(|| "writing a heredoc file".into())?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .ctx(|| "writing a heredoc file".into())?;
            }
            let heredocs = SourceRoot::Dir(dir.0.clone());
            let plain = options;
            for (name, _) in inline {
                copy_path(&heredocs, name.trim_start_matches('/'), root, dest, &plain)
                    .map_err(|e| err(format!("<<{name}: {e}")))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The build
// ---------------------------------------------------------------------------------------------

pub(crate) fn build(
    b: &Builder,
    req: &BuildRequest,
    progress: &dyn ProgressSink,
) -> Result<BuildOutcome> {
    let started = Instant::now();
    layers::remove_stale_actives(&b.snapshotter);
    let scratch = b.store.root().join(SCRATCH_DIR);
    clean_scratch(&scratch);
    let lease = b.store.lease()?;

    let file_name = req
        .dockerfile_path
        .as_ref()
        .map_or_else(|| "Dockerfile".to_string(), |p| p.display().to_string());
    let df = strata_frontend::parse(&req.dockerfile, &file_name)?;
    let platform = req.platform.clone().unwrap_or_else(Platform::host);
    crate::platform::check_runnable(&platform, "--platform")?;
    let plan = plan::plan(
        &df,
        &BuildOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone(),
            target_platform: crate::platform::to_plan(&platform),
            build_platform: crate::platform::to_plan(&Platform::host()),
        },
    )?;
    for stage in &plan.stages {
        if let Some(p) = &stage.platform {
            crate::platform::check_stage(p, &stage.display_name)?;
        }
    }
    let epoch =
        reproducible::source_date_epoch(&req.build_args, b.layer_options.source_date_epoch)?;
    // The builder consumes SOURCE_DATE_EPOCH itself, as BuildKit does.
    let unused: Vec<&String> = plan
        .unused_build_args
        .iter()
        .filter(|a| *a != reproducible::SOURCE_DATE_EPOCH)
        .collect();
    if !unused.is_empty() {
        progress.event(Event::Warning {
            message: format!(
                "one or more build args were not consumed: {}",
                unused
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }

    let context_dir = req
        .context
        .as_ref()
        .and_then(|c| fs::canonicalize(c).ok())
        .map_or_else(String::new, |p| p.to_string_lossy().into_owned());
    let t_context = Instant::now();
    let mut planner = Planner {
        b,
        req,
        df: &df,
        plan: &plan,
        platform: platform.clone(),
        epoch,
        context: None,
        context_dir: context_dir.clone(),
        dockerfile_name: req
            .dockerfile_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or_else(|| "-".into(), |n| n.to_string_lossy().into_owned()),
        images: HashMap::new(),
        next_id: 0,
        progress,
    };
    let mut planned = planner.plan()?;
    let ctx = planner.context.take();
    if let Some(c) = &ctx {
        let (hashed, hashed_bytes) = c.hash_stats();
        progress.event(Event::Context {
            files: c.len(),
            hashed,
            hashed_bytes,
            duration_ms: t_context.elapsed().as_millis() as u64,
        });
    }
    lookup_and_explain(b, req, &mut planned, ctx.as_ref())?;
    progress.event(Event::Plan {
        steps: planned
            .stages
            .iter()
            .flat_map(|s| s.steps.iter().map(|p| p.info.clone()))
            .collect(),
    });

    let pending = Mutex::new(Pending::default());
    let unpacking = Mutex::new(());
    let updates = Mutex::new(Updates::default());
    let commits = layers::BlobCommits::default();
    let exec = Exec {
        b,
        req,
        planned: &planned,
        ctx: ctx.as_ref(),
        layers: LayerStore {
            store: &b.store,
            snapshotter: &b.snapshotter,
            lease: &lease,
            options: strata_snapshotter::LayerOptions {
                source_date_epoch: epoch,
                ..b.layer_options
            },
            pending: &pending,
            unpacking: &unpacking,
            import: &b.import,
            commits: &commits,
        },
        progress,
        updates: &updates,
        cancelled: AtomicBool::new(false),
        scratch,
        executed: AtomicU64::new(0),
    };
    let results = exec.run_stages();
    // Every layer blob this build wrote is in the store before anything reads or names it.
    let committed = commits.wait();
    let blobs_committed = committed.is_ok();
    let results = match (results, committed) {
        (Ok(_), Err(e)) => Err(e),
        (results, _) => results,
    };
    let executed = exec.executed.load(Ordering::Relaxed) as usize;
    // The final image's layers that only an imported cache has, unless they may stay there.
    let results = results.and_then(|r| {
        if b.import.fetches_final()
            && let Some(target) = planned.stages.last().and_then(|t| r.get(&t.index))
        {
            for layer in &target.layers {
                exec.layers.fetch(layer)?;
            }
        }
        Ok(r)
    });

    let mut updates = updates.into_inner().unwrap_or_else(|e| e.into_inner());
    let cache_entries = remote_cache_entries(&planned, &updates, results.as_ref().ok());
    // Imported hits whose layers are here now are hits for later builds without the import.
    for e in &cache_entries {
        if b.import.get(&e.key).is_some_and(|i| i.layer == e.layer)
            && e.layer.parsed_digest().is_ok_and(|d| b.store.has_blob(&d))
        {
            updates.results.push((
                e.key.clone(),
                CacheRecord {
                    layer: e.layer.clone(),
                    created: e.created.clone(),
                },
            ));
        }
    }
    if let Some(c) = &ctx
        && let Some(stat) = c.updated_stat_cache()
    {
        updates.stat_cache = Some((context_dir.clone(), stat));
    }
    let pending = pending.into_inner().unwrap_or_else(|e| e.into_inner());
    // What succeeded is cached even when a later step failed.
    let written = if blobs_committed {
        cache::write(&b.store, &updates, &pending)
    } else {
        Ok(())
    };
    let results = results?;
    written?;

    let image = assemble(b, req, &planned, &results, epoch, &platform, &lease)?;
    let total: usize = planned.stages.iter().map(|s| s.steps.len()).sum();
    progress.event(Event::Image {
        id: image.id().to_string(),
        tags: req.tags.iter().map(|t| t.to_string()).collect(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Ok(BuildOutcome {
        image,
        executed,
        cached: total - executed,
        cache: cache_entries,
        cache_mounts: cache_mount_ids(&planned),
    })
}

/// Ids of the cache mounts the planned RUN steps name, sorted and once each.
fn cache_mount_ids(planned: &Planned) -> Vec<String> {
    let ids: std::collections::BTreeSet<&str> = planned
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .filter_map(|step| match &step.op {
            Op::Run { mounts, .. } => Some(mounts),
            _ => None,
        })
        .flatten()
        .filter(|m| m.kind == MountType::Cache)
        .map(|m| m.id.as_str())
        .collect();
    ids.into_iter().map(str::to_string).collect()
}

/// Every step's result in this build, for `--cache-to`.
fn remote_cache_entries(
    planned: &Planned,
    updates: &Updates,
    results: Option<&HashMap<usize, StageResult>>,
) -> Vec<crate::CacheEntry> {
    let made: HashMap<&str, &CacheRecord> = updates
        .results
        .iter()
        .map(|(k, r)| (k.as_str(), r))
        .collect();
    let final_layers: HashSet<&str> = planned
        .stages
        .last()
        .and_then(|t| results?.get(&t.index))
        .map(|r| r.layers.iter().map(|l| l.digest.as_str()).collect())
        .unwrap_or_default();
    planned
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .filter_map(|step| {
            let record = step
                .cached
                .as_ref()
                .or(made.get(step.key.as_str()).copied())?;
            Some(crate::CacheEntry {
                key: step.key.clone(),
                layer: record.layer.clone(),
                created: record.created.clone(),
                in_final_image: final_layers.contains(record.layer.digest.as_str()),
            })
        })
        .collect()
}

/// Writes the target stage's image: config (history dated by the layers' records, so a cached
/// rebuild gives the same bytes) and manifest, named as asked.
fn assemble(
    b: &Builder,
    req: &BuildRequest,
    planned: &Planned,
    results: &HashMap<usize, StageResult>,
    epoch: Option<i64>,
    platform: &Platform,
    lease: &strata_store::Lease,
) -> Result<Image> {
    let Some(target) = planned.stages.last() else {
        return Err(BuildError::Unsupported(
            "a Dockerfile without stages".into(),
        ));
    };
    let result = results.get(&target.index).ok_or(BuildError::Cancelled)?;
    let mut config = target.config.clone();
    config.rootfs.diff_ids = result.layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut last: Option<String> = None;
    config.history = Vec::with_capacity(target.history.len());
    for entry in &target.history {
        let mut h = entry.history.clone();
        if !entry.appended {
            if h.created.is_some() {
                last = h.created.clone();
            }
        } else if let Some((stage, step)) = entry.layer {
            let created = results
                .get(&stage)
                .and_then(|r| r.created.get(step))
                .cloned();
            h.created = created.clone();
            last = created;
        } else {
            h.created = last.clone();
        }
        config.history.push(h);
    }
    config.created = last;
    config.os = platform.os.clone();
    config.architecture = platform.architecture.clone();
    config.variant = platform.variant.clone();
    if let Some(epoch) = epoch {
        reproducible::date_config(&mut config, epoch);
    }
    for (k, v) in &req.labels {
        config.config.Labels.insert(k.clone(), v.clone());
    }
    let descriptors: Vec<_> = result
        .layers
        .iter()
        .map(Layer::descriptor)
        .collect::<Result<_>>()?;
    // A rebuild that changes nothing finds its image already named: nothing to write.
    if !req.tags.is_empty() {
        let config_bytes = canonical_json(&config)?;
        let config_digest = strata_codec::sha256_digest(&config_bytes);
        let existing: Vec<Image> = req
            .tags
            .iter()
            .filter_map(|t| b.store.resolve(&t.to_string()).ok())
            .collect();
        if existing.len() == req.tags.len()
            && existing.iter().all(|i| {
                *i.id() == config_digest && i.manifest.layers().as_slice() == descriptors.as_slice()
            })
            && let Some(image) = existing.into_iter().next()
        {
            return Ok(image);
        }
    }
    if descriptors.iter().all(|d| b.store.has_blob(d.digest())) {
        return Ok(b
            .store
            .create_image(lease, &config, &descriptors, &req.tags)?);
    }
    // Imported cache hits of a pushed build: their layers stay in the registry.
    Ok(b.store
        .create_image_with_remote_layers(lease, &config, &descriptors, &req.tags)?)
}
