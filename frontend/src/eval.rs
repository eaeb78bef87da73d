//! Evaluating one stage: BuildKit's dispatch, minus the building.
//!
//! A stage's environment starts from its base: the base image config's `Env` (plus a default
//! `PATH` when it has none), or the final state of the parent stage. The builder learns the
//! image config only after resolving `FROM`, so it calls [`evaluate_stage`] with a
//! [`BaseState`] built from it. Instructions then change the environment in order, as in
//! BuildKit's LLB state: `ENV` and `ARG` both set variables, the later one wins (an `ARG` after an
//! inherited `ENV` of the same name wins, as in BuildKit; the classic builder differed). Only
//! `ENV` reaches the image config.
//!
//! Each step carries the words as BuildKit expands them (only the instructions and fields
//! BuildKit expands), the environment in effect, and the build args it used: for `RUN` every
//! build arg in scope (they are in its process environment), for the others the ARG-valued
//! variables its words referenced. The builder keys its cache on those.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ErrorKind};
use crate::golang::{clean_path, parse_uint, quote};
use crate::instructions::{
    CommandLine, Healthcheck, InlineSource, InstructionKind, NetworkMode, Security,
};
use crate::mount::{Mount, parse_mount};
use crate::plan::{Plan, SourceRef, add_or_replace, find_stage_by_name, resolve_copy_from};
use crate::shell::{Env, Lexer};
use crate::{Dockerfile, Instruction, Location};

/// `PATH` BuildKit sets when the base image has none (`system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ARGs BuildKit keeps out of the environment.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// An ARG in scope and its value (`None`: declared without value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgValue {
    /// The name.
    pub name: String,
    /// The value, if any.
    pub value: Option<String>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseState {
    /// The environment instructions see and RUN runs with, in order.
    pub env: Vec<(String, String)>,
    /// The image config's `Env`.
    pub config_env: Vec<(String, String)>,
    /// ARGs in scope (inherited from a parent stage).
    pub build_args: Vec<ArgValue>,
    /// The image config's `WorkingDir` (empty when unset).
    pub workdir: String,
    /// `ONBUILD` triggers to run before the stage's own instructions.
    pub onbuild: Vec<String>,
    /// Variables whose current value was set by an ARG.
    arg_vars: BTreeSet<String>,
}

fn split_kv(kv: &str) -> (String, String) {
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    (k.to_string(), v.to_string())
}

impl BaseState {
    /// The state of a stage whose base is an image with config `Env` = `env` (`K=V` strings),
    /// `WorkingDir` = `workdir` and `OnBuild` = `onbuild`. Adds BuildKit's default `PATH` when
    /// `env` has none (`os` selects it: empty on Windows).
    pub fn from_image(env: &[String], workdir: &str, onbuild: &[String], os: &str) -> BaseState {
        let mut config_env: Vec<(String, String)> = Vec::new();
        for kv in env {
            let (k, v) = split_kv(kv);
            match config_env.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => config_env.push((k, v)),
            }
        }
        if !config_env.iter().any(|(k, _)| k == "PATH") {
            let path = if os == "windows" { "" } else { DEFAULT_PATH };
            config_env.push(("PATH".into(), path.into()));
        }
        let mut state_env = Vec::new();
        for (k, v) in &config_env {
            add_or_replace(&mut state_env, k, v);
        }
        BaseState {
            env: state_env,
            config_env,
            build_args: Vec::new(),
            workdir: workdir.to_string(),
            onbuild: onbuild.to_vec(),
            arg_vars: BTreeSet::new(),
        }
    }

    /// The state of `FROM scratch`.
    pub fn scratch(os: &str) -> BaseState {
        BaseState::from_image(&[], "", &[], os)
    }

    /// The config `Env` as `K=V` strings.
    pub fn config_env_strings(&self) -> Vec<String> {
        self.config_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        add_or_replace(&mut self.env, k, v);
        self.arg_vars.remove(k);
        match self.config_env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => self.config_env.push((k.to_string(), v.to_string())),
        }
    }

    fn set_arg(&mut self, k: &str, v: &str) {
        add_or_replace(&mut self.env, k, v);
        self.arg_vars.insert(k.to_string());
    }

    /// The names of `unset` that no ARG in scope declares (BuildKit's `reportUnmatchedVariables`
    /// filter), without the ARGs BuildKit keeps out of the environment.
    fn undeclared(&self, unset: &BTreeSet<String>) -> BTreeSet<String> {
        unset
            .iter()
            .filter(|n| {
                !NON_ENV_ARGS.contains(&n.as_str())
                    && !self.build_args.iter().any(|a| &a.name == *n)
            })
            .cloned()
            .collect()
    }
}

/// A typed `RUN` after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedRun {
    /// The command (not expanded: the shell does that).
    pub command: CommandLine,
    /// Mounts, typed, values expanded.
    pub mounts: Vec<Mount>,
    /// What each mount's `from=` refers to (`None` without `from`).
    pub mount_sources: Vec<Option<SourceRef>>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: Security,
    /// The build args BuildKit writes in the history (`RUN |N K=V ... cmd`), in order.
    pub history_build_args: Vec<(String, String)>,
}

/// A `COPY` after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedCopy {
    /// Source paths.
    pub sources: Vec<String>,
    /// Heredoc sources (content expanded when the heredoc allows it).
    pub inline: Vec<InlineSource>,
    /// Destination.
    pub dest: String,
    /// `--from`, resolved (`None`: the build context).
    pub from: Option<SourceRef>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`, parsed.
    pub chmod: Option<u32>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude`.
    pub excludes: Vec<String>,
}

/// An `ADD` after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedAdd {
    /// Sources (paths, URLs, git references).
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// Destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`, parsed.
    pub chmod: Option<u32>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`, validated as a digest.
    pub checksum: Option<String>,
    /// `--unpack`.
    pub unpack: Option<bool>,
    /// `--exclude`.
    pub excludes: Vec<String>,
}

/// One instruction after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expanded {
    /// `RUN`.
    Run(ExpandedRun),
    /// `COPY`.
    Copy(ExpandedCopy),
    /// `ADD`.
    Add(ExpandedAdd),
    /// `ENV` pairs.
    Env(Vec<(String, String)>),
    /// `LABEL` pairs.
    Label(Vec<(String, String)>),
    /// `ARG` names and the values they took.
    Arg(Vec<ArgValue>),
    /// `WORKDIR`: the expanded path and the resulting absolute working directory.
    Workdir {
        /// As expanded.
        path: String,
        /// Absolute, cleaned (what goes in the config).
        resolved: String,
    },
    /// `USER`.
    User(String),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `STOPSIGNAL` (validated).
    StopSignal(String),
    /// `EXPOSE` as `port/proto` entries (ranges spelled out).
    Expose(Vec<String>),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL`.
    Shell(Vec<String>),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `ONBUILD` (the trigger text for the config).
    Onbuild(String),
}

/// One evaluated instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The instruction as parsed.
    pub instruction: Instruction,
    /// Whether it came from an `ONBUILD` trigger of the base.
    pub from_onbuild: bool,
    /// The environment in effect when it runs (before its own changes).
    pub env: Vec<(String, String)>,
    /// The working directory in effect when it runs.
    pub workdir: String,
    /// Build args this step used, with their values.
    pub used_build_args: BTreeMap<String, String>,
    /// Variables the step's expanded words referenced that neither the environment nor an ARG
    /// declared in the stage defines (BuildKit's `UndefinedVar` input). Only words BuildKit
    /// reports on: those of the instructions it expands one word at a time, heredoc sources and
    /// ARG defaults; not `EXPOSE`.
    pub undefined: BTreeSet<String>,
    /// The instruction after expansion.
    pub expanded: Expanded,
}

/// A stage after evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluatedStage {
    /// Index in [`Dockerfile::stages`].
    pub index: usize,
    /// The steps, ONBUILD triggers first.
    pub steps: Vec<Step>,
    /// The state at the end: the [`BaseState`] of a stage based on this one (its `onbuild` holds
    /// this stage's own `ONBUILD` instructions, which such a stage runs first).
    pub final_state: BaseState,
}

fn at(df: &Dockerfile, err: Error, loc: &Location) -> Error {
    df.locate(err, loc)
}

fn instruction_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Instruction, message)
}

/// Expands words for one step, recording the variables it referenced, set or not.
struct Expander<'a> {
    lexer: Lexer,
    env: &'a Vec<(String, String)>,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl Expander<'_> {
    fn word(&mut self, w: &str) -> Result<String, Error> {
        let e = self.lexer.process_word(w, self.env)?;
        self.matched.extend(e.matched);
        self.unmatched.extend(e.unmatched);
        Ok(e.value)
    }

    /// Expands an optional flag value; empty after expansion counts as not given, as in
    /// BuildKit (`--chmod=$UNSET` sets no mode).
    fn opt(&mut self, w: &Option<String>) -> Result<Option<String>, Error> {
        Ok(w.as_deref()
            .map(|w| self.word(w))
            .transpose()?
            .filter(|v| !v.is_empty()))
    }

    fn all(&mut self, ws: &[String]) -> Result<Vec<String>, Error> {
        ws.iter().map(|w| self.word(w)).collect()
    }

    fn inline(&mut self, sources: &[InlineSource]) -> Result<Vec<InlineSource>, Error> {
        let mut raw = Lexer::new('\\');
        raw.skip_process_quotes = true;
        let mut out = Vec::new();
        for s in sources {
            let mut s = s.clone();
            if s.expand {
                let e = raw.process_word(&s.data, self.env)?;
                self.matched.extend(e.matched);
                self.unmatched.extend(e.unmatched);
                s.data = e.value;
            }
            out.push(s);
        }
        Ok(out)
    }
}

fn parse_chmod(chmod: Option<String>) -> Result<Option<u32>, Error> {
    let Some(c) = chmod else { return Ok(None) };
    let err = || {
        instruction_error(format!(
            "invalid chmod parameter: '{c}'. it should be octal string and between 0 and 07777"
        ))
    };
    match parse_uint(&c, 8, 32) {
        Ok(v) if v <= 0o7777 => Ok(Some(v as u32)),
        _ => Err(err()),
    }
}

/// go-digest's `Parse` checks.
fn validate_digest(d: &str) -> Result<(), Error> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(instruction_error("invalid checksum digest format"));
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(instruction_error("unsupported digest algorithm")),
    };
    if hex.len() != len {
        return Err(instruction_error("invalid checksum digest length"));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(instruction_error("invalid checksum digest format"));
    }
    Ok(())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// moby's `signal.ParseSignal` (Linux table).
fn validate_signal(sig: &str) -> Result<(), Error> {
    let invalid = || instruction_error(format!("Invalid signal: {sig}"));
    if let Some(n) = crate::golang::atoi(sig) {
        return if n == 0 { Err(invalid()) } else { Ok(()) };
    }
    let upper = sig.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    if SIGNALS.contains(&name) || realtime("RTMIN+", 15) || realtime("RTMAX-", 14) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// docker/go-connections' `nat.ParsePortSpec`, for the container port part.
fn parse_port_spec(raw: &str) -> Result<Vec<String>, Error> {
    let container = raw.rsplit(':').next().unwrap_or(raw);
    let parts: Vec<&str> = container.split('/').collect();
    let (proto, port) = match parts.as_slice() {
        [p] => ("tcp", *p),
        [p, "", ..] => ("tcp", *p),
        [p, proto, ..] => (*proto, *p),
        [] => ("tcp", ""),
    };
    if port.is_empty() {
        return Err(instruction_error(format!(
            "no port specified: {raw}<empty>"
        )));
    }
    let bad_port = || instruction_error(format!("invalid containerPort: {port}"));
    let parse = |s: &str| parse_uint(s, 10, 16).map_err(|_| bad_port());
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(port)?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad_port());
    }
    let proto = proto.to_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(instruction_error(format!("invalid proto: {proto}")));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Evaluates stage `stage` (an index in [`Dockerfile::stages`]) of a planned build, starting
/// from `base`. Errors carry the location of the failing instruction (an ONBUILD trigger's
/// errors point at the stage's FROM).
pub fn evaluate_stage(
    df: &Dockerfile,
    plan: &Plan,
    stage: usize,
    base: BaseState,
) -> Result<EvaluatedStage, Error> {
    let (steps, end) = evaluate_steps(df, plan, stage, base);
    Ok(EvaluatedStage {
        index: stage,
        steps,
        final_state: end?,
    })
}

/// [`evaluate_stage`] that keeps the steps evaluated before an error: the linter reports on them
/// as BuildKit does on the instructions it dispatched before failing.
pub(crate) fn evaluate_steps(
    df: &Dockerfile,
    plan: &Plan,
    stage: usize,
    base: BaseState,
) -> (Vec<Step>, Result<BaseState, Error>) {
    let mut steps = Vec::new();
    let Some(st) = df.stages.get(stage) else {
        let err = Error::new(ErrorKind::Plan, format!("stage index {stage} out of range"));
        return (steps, Err(err));
    };
    let mut state = base;
    let triggers = std::mem::take(&mut state.onbuild);
    let mut eval = Evaluator {
        df,
        plan,
        lexer: Lexer::new(df.escape()),
        state,
        declared_onbuild: Vec::new(),
    };
    for trigger in &triggers {
        let relocate = |e: Error| {
            Error::new(e.kind(), e.message().to_string()).at(
                df.file_name(),
                &df.source,
                st.location.span,
            )
        };
        let step = crate::parse_instruction(trigger).and_then(|i| eval.step(&i, true));
        match step {
            Ok(step) => steps.push(step),
            Err(e) => return (steps, Err(relocate(e))),
        }
    }
    for instruction in &st.instructions {
        match eval.step(instruction, false) {
            Ok(step) => steps.push(step),
            Err(e) => return (steps, Err(at(df, e, &instruction.location))),
        }
    }
    let mut final_state = eval.state;
    final_state.onbuild = eval.declared_onbuild;
    (steps, Ok(final_state))
}

struct Evaluator<'a> {
    df: &'a Dockerfile,
    plan: &'a Plan,
    lexer: Lexer,
    state: BaseState,
    declared_onbuild: Vec<String>,
}

impl Evaluator<'_> {
    fn step(&mut self, instruction: &Instruction, from_onbuild: bool) -> Result<Step, Error> {
        let env_before = self.state.env.clone();
        let arg_vars_before = self.state.arg_vars.clone();
        let workdir_before = self.state.workdir.clone();
        let mut x = Expander {
            lexer: self.lexer,
            env: &env_before,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let mut used_extra: BTreeMap<String, String> = BTreeMap::new();
        // ARG defaults are checked one name at a time, against the ARGs declared before it.
        let mut undefined_in_args: BTreeSet<String> = BTreeSet::new();
        let expanded = match &instruction.kind {
            InstructionKind::Env(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((x.word(&kv.key)?, x.word(&kv.value)?));
                }
                for (k, v) in &pairs {
                    self.state.set_env(k, v);
                }
                Expanded::Env(pairs)
            }
            InstructionKind::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((x.word(&kv.key)?, x.word(&kv.value)?));
                }
                Expanded::Label(pairs)
            }
            InstructionKind::Arg(decls) => {
                let mut values = Vec::new();
                for decl in decls {
                    let given = self.plan.build_args.get(&decl.name).cloned();
                    let value = if let Some(v) = given {
                        used_extra.insert(decl.name.clone(), v.clone());
                        Some(v)
                    } else if let Some(default) = &decl.default {
                        let env = self.state.env.clone();
                        let e = self.lexer.process_word(default, &env)?;
                        undefined_in_args.extend(self.state.undeclared(&e.unmatched));
                        for m in &e.matched {
                            if self.state.arg_vars.contains(m)
                                && let Some(v) = env.as_slice().lookup(m)
                            {
                                used_extra.insert(m.clone(), v.to_string());
                            }
                        }
                        Some(e.value)
                    } else {
                        let global = self
                            .plan
                            .global_args
                            .iter()
                            .rev()
                            .find(|(k, _)| *k == decl.name)
                            .map(|(_, v)| v.clone());
                        if let Some(v) = &global {
                            used_extra.insert(decl.name.clone(), v.clone());
                        }
                        global
                    };
                    if let Some(v) = &value
                        && !NON_ENV_ARGS.contains(&decl.name.as_str())
                    {
                        self.state.set_arg(&decl.name, v);
                    }
                    let arg = ArgValue {
                        name: decl.name.clone(),
                        value,
                    };
                    self.state.build_args.push(arg.clone());
                    values.push(arg);
                }
                Expanded::Arg(values)
            }
            InstructionKind::Workdir(p) => {
                let path = x.word(p)?;
                let resolved = if path.starts_with('/') {
                    clean_path(&path).into_owned()
                } else {
                    clean_path(&format!("/{}/{}", self.state.workdir, path)).into_owned()
                };
                self.state.workdir = resolved.clone();
                Expanded::Workdir { path, resolved }
            }
            InstructionKind::User(u) => Expanded::User(x.word(u)?),
            InstructionKind::Volume(vs) => {
                let vs = x.all(vs)?;
                if vs.iter().any(String::is_empty) {
                    return Err(instruction_error(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                Expanded::Volume(vs)
            }
            InstructionKind::StopSignal(s) => {
                let s = x.word(s)?;
                validate_signal(&s)?;
                Expanded::StopSignal(s)
            }
            InstructionKind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let e = self.lexer.process_word(p, &env_before)?;
                    x.matched.extend(e.matched);
                    for word in e.words {
                        for spec in parse_port_spec(&word)? {
                            if !out.contains(&spec) {
                                out.push(spec);
                            }
                        }
                    }
                }
                Expanded::Expose(out)
            }
            InstructionKind::Copy(c) => {
                let chown = x.opt(&c.chown)?;
                let chmod = parse_chmod(x.opt(&c.chmod)?)?;
                let sources = x.all(&c.sources)?;
                let dest = x.word(&c.dest)?;
                let inline = x.inline(&c.inline)?;
                let excludes = x.all(&c.excludes)?;
                let from = c
                    .from
                    .as_deref()
                    .map(|f| resolve_copy_from(self.df, f))
                    .transpose()?;
                Expanded::Copy(ExpandedCopy {
                    sources,
                    inline,
                    dest,
                    from,
                    chown,
                    chmod,
                    link: c.link,
                    parents: c.parents,
                    excludes,
                })
            }
            InstructionKind::Add(a) => {
                let chown = x.opt(&a.chown)?;
                let chmod = parse_chmod(x.opt(&a.chmod)?)?;
                let checksum = x.opt(&a.checksum)?;
                if let Some(d) = checksum.as_deref() {
                    validate_digest(d)?;
                }
                let sources = x.all(&a.sources)?;
                let dest = x.word(&a.dest)?;
                let inline = x.inline(&a.inline)?;
                let excludes = x.all(&a.excludes)?;
                Expanded::Add(ExpandedAdd {
                    sources,
                    inline,
                    dest,
                    chown,
                    chmod,
                    link: a.link,
                    keep_git_dir: a.keep_git_dir,
                    checksum,
                    unpack: a.unpack,
                    excludes,
                })
            }
            InstructionKind::Run(r) => {
                let mut mounts = Vec::new();
                let mut mount_sources = Vec::new();
                for spec in &r.mounts {
                    let m = parse_mount(&spec.raw, &mut |w| x.word(w))?;
                    mount_sources.push(m.from.as_deref().map(|f| {
                        match find_stage_by_name(self.df, f) {
                            Some(i) => SourceRef::Stage(i),
                            None => SourceRef::Image(f.to_string()),
                        }
                    }));
                    mounts.push(m);
                }
                let history_build_args = self.history_build_args();
                used_extra.extend(history_build_args.iter().cloned());
                Expanded::Run(ExpandedRun {
                    command: r.command.clone(),
                    mounts,
                    mount_sources,
                    network: r.network,
                    security: r.security,
                    history_build_args,
                })
            }
            InstructionKind::Cmd(c) => Expanded::Cmd(c.clone()),
            InstructionKind::Entrypoint(c) => Expanded::Entrypoint(c.clone()),
            InstructionKind::Healthcheck(h) => Expanded::Healthcheck(h.clone()),
            InstructionKind::Shell(s) => Expanded::Shell(s.clone()),
            InstructionKind::Maintainer(m) => Expanded::Maintainer(m.clone()),
            InstructionKind::Onbuild(o) => {
                self.declared_onbuild.push(o.expression.clone());
                Expanded::Onbuild(o.expression.clone())
            }
        };
        let mut undefined = self.state.undeclared(&x.unmatched);
        undefined.extend(undefined_in_args);
        let mut used_build_args = used_extra;
        for name in &x.matched {
            if arg_vars_before.contains(name)
                && let Some(v) = env_before.as_slice().lookup(name)
            {
                used_build_args.insert(name.clone(), v.to_string());
            }
        }
        Ok(Step {
            instruction: instruction.clone(),
            from_onbuild,
            env: env_before,
            workdir: workdir_before,
            used_build_args,
            undefined,
            expanded,
        })
    }

    /// BuildKit's `runCommandString` build-arg prefix: every ARG in scope, its value from the
    /// environment when set there, in first-declaration order.
    fn history_build_args(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for arg in &self.state.build_args {
            let value = self
                .state
                .env
                .as_slice()
                .lookup(&arg.name)
                .map(str::to_string)
                .unwrap_or_else(|| arg.value.clone().unwrap_or_default());
            match out.iter_mut().find(|(k, _)| *k == arg.name) {
                Some(slot) => slot.1 = value,
                None => out.push((arg.name.clone(), value)),
            }
        }
        out
    }
}

/// Renders a step for people (used by `strata debug plan`): the instruction name and its
/// expanded arguments.
pub fn describe(step: &Step) -> String {
    let name = step.instruction.kind.name();
    let list = |v: &[String]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ");
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let command = |c: &CommandLine| {
        if c.shell_form {
            c.args.join(" ")
        } else {
            format!("[{}]", list(&c.args))
        }
    };
    let source = |s: &SourceRef| match s {
        SourceRef::Stage(i) => format!("stage {i}"),
        SourceRef::Image(n) => format!("image {n}"),
    };
    let body = match &step.expanded {
        Expanded::Run(r) => {
            let mut parts = Vec::new();
            for (m, s) in r.mounts.iter().zip(&r.mount_sources) {
                let mut d = format!("--mount=type={}", m.kind.as_str());
                if let Some(t) = &m.target {
                    d.push_str(&format!(",target={t}"));
                }
                if let Some(s) = s {
                    d.push_str(&format!(",from=<{}>", source(s)));
                }
                parts.push(d);
            }
            if r.network != NetworkMode::Default {
                parts.push(format!("--network={:?}", r.network).to_lowercase());
            }
            if r.security != Security::Sandbox {
                parts.push("--security=insecure".into());
            }
            parts.push(command(&r.command));
            parts.join(" ")
        }
        Expanded::Copy(c) => {
            let mut parts = Vec::new();
            if let Some(f) = &c.from {
                parts.push(format!("--from=<{}>", source(f)));
            }
            if let Some(o) = &c.chown {
                parts.push(format!("--chown={o}"));
            }
            if let Some(m) = c.chmod {
                parts.push(format!("--chmod={m:o}"));
            }
            let mut srcs: Vec<String> = c.sources.clone();
            srcs.extend(c.inline.iter().map(|i| format!("<<{}", i.path)));
            parts.push(list(&srcs));
            parts.push(quote(&c.dest));
            parts.join(" ")
        }
        Expanded::Add(a) => {
            let mut srcs: Vec<String> = a.sources.clone();
            srcs.extend(a.inline.iter().map(|i| format!("<<{}", i.path)));
            format!("{} {}", list(&srcs), quote(&a.dest))
        }
        Expanded::Env(p) | Expanded::Label(p) => pairs(p),
        Expanded::Arg(a) => a
            .iter()
            .map(|a| match &a.value {
                Some(v) => format!("{}={}", a.name, quote(v)),
                None => a.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Expanded::Workdir { resolved, .. } => resolved.clone(),
        Expanded::User(u) | Expanded::StopSignal(u) | Expanded::Maintainer(u) => u.clone(),
        Expanded::Onbuild(o) => o.clone(),
        Expanded::Volume(v) | Expanded::Shell(v) => list(v),
        Expanded::Expose(v) => v.join(" "),
        Expanded::Cmd(c) | Expanded::Entrypoint(c) => command(c),
        Expanded::Healthcheck(Healthcheck::None) => "NONE".into(),
        Expanded::Healthcheck(Healthcheck::Check(h)) => list(&h.test),
    };
    if body.is_empty() {
        name.to_string()
    } else {
        format!("{name} {body}")
    }
}
