//! Typed, validated instructions (BuildKit's `frontend/dockerfile/instructions`).
//!
//! Values are kept as written (unexpanded): expansion needs the environment of the stage, which
//! only the evaluator ([`crate::eval`]) has. What BuildKit checks at parse time is checked here,
//! with BuildKit's messages: argument counts, unknown and duplicate flags, flag value types,
//! `HEALTHCHECK` options, `ONBUILD` triggers, stage names, `RUN --network/--security` values.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::ast::{Heredoc, Node};
use crate::golang::{format_duration, parse_duration, parse_int, quote, suggest, trim_space};
use crate::syntax::{chomp_heredoc_content, parse_heredoc};

/// Every instruction name BuildKit knows, in lower case.
pub const INSTRUCTION_NAMES: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The base as written (may contain `$ARGS` from the global scope).
    pub base: String,
    /// The stage name, lower-cased, when `AS name` is given.
    pub name: Option<String>,
    /// `--platform` as written.
    pub platform: Option<String>,
}

/// A `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written (quotes not yet processed).
    pub value: String,
    /// The legacy `ENV key value` form (no `=`).
    pub legacy: bool,
}

/// One name of an `ARG` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default after `=`, as written.
    pub default: Option<String>,
}

/// A heredoc used as the script of RUN/CMD/ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc name.
    pub name: String,
    /// The content as written (not chomped).
    pub data: String,
    /// `<<-`: strip leading tabs before use.
    pub chomp: bool,
}

/// The command of RUN, CMD or ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the JSON elements. Shell form: one element, the rest of the line.
    pub args: Vec<String>,
    /// Shell form (BuildKit's `PrependShell`): run the single element through the shell.
    pub shell_form: bool,
    /// Heredocs attached to the command.
    pub files: Vec<InlineFile>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// `default`: the builder's default network.
    Default,
    /// `none`.
    None,
    /// `host`.
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `sandbox` (default).
    Sandbox,
    /// `insecure`.
    Insecure,
}

/// `RUN [--mount=...]... [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// Each `--mount` value as written; typed and expanded by the evaluator
    /// ([`crate::mount::Mount`]).
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: Security,
    /// The flags given, without `--` (BuildKit's `FlagsUsed`).
    pub flags_used: Vec<String>,
}

/// A `--mount` value as written, with the `from=` it names (known before expansion, as BuildKit
/// resolves mount sources before dispatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The CSV value of `--mount=`.
    pub raw: String,
    /// The `from=` field: a stage name or index, or an image.
    pub from: Option<String>,
}

/// A heredoc used as a source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    /// The file name (the heredoc name).
    pub path: String,
    /// The content, leading tabs already removed for `<<-`.
    pub data: String,
    /// Whether variables in the content are expanded.
    pub expand: bool,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source paths as written.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// Destination as written.
    pub dest: String,
    /// `--from` (stage name, index or image; never expanded, as in BuildKit).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Source paths or URLs as written.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// Destination as written.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack`, when given.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check (`Test: ["NONE"]`).
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Check(HealthConfig),
}

/// The options of `HEALTHCHECK CMD`; zero durations and retries mean "not set".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `["CMD", args...]` (exec form) or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// `ONBUILD instruction`: stored as text, parsed when the image is used as a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger, as BuildKit stores it in the image config (`OnBuild`).
    pub expression: String,
}

/// A typed instruction other than FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ADD`.
    Add(Add),
    /// `ARG name[=default]...`.
    Arg(Vec<ArgDecl>),
    /// `CMD`.
    Cmd(CommandLine),
    /// `COPY`.
    Copy(Copy),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `EXPOSE port...` (sorted, as BuildKit sorts them).
    Expose(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `RUN`.
    Run(Run),
    /// `SHELL ["exe", "args"...]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `USER`.
    User(String),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `WORKDIR`.
    Workdir(String),
}

impl InstructionKind {
    /// The instruction name in upper case.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::User(_) => "USER",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Workdir(_) => "WORKDIR",
        }
    }
}

/// What one node parses into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    From(From),
    Instruction(InstructionKind),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

/// BuildKit's `BFlags` after `Parse`.
struct Flags {
    defs: Vec<(&'static str, FlagType)>,
    values: Vec<(String, String)>,
    used: BTreeSet<String>,
}

impl Flags {
    /// Parses `args` against `defs`, with BuildKit's messages.
    fn parse(args: &[String], defs: &[(&'static str, FlagType)]) -> Result<Flags, String> {
        let mut flags = Flags {
            defs: defs.to_vec(),
            values: Vec::new(),
            used: BTreeSet::new(),
        };
        for a in args {
            if a == "--" {
                break;
            }
            if !a.starts_with("--") {
                return Err(format!("arg should start with -- : {a}"));
            }
            let (flag_name, value, has_value) = match a.split_once('=') {
                Some((n, v)) => (n, v, true),
                None => (a.as_str(), "", false),
            };
            let name = &flag_name[2..];
            let Some(&(_, kind)) = defs.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = defs.iter().map(|(n, _)| *n).collect();
                return Err(suggest(
                    format!("unknown flag: {flag_name}"),
                    name,
                    &names,
                    true,
                ));
            };
            if !flags.used.insert(name.to_string()) && kind != FlagType::Strings {
                return Err(format!("duplicate flag specified: {flag_name}"));
            }
            let stored = match kind {
                FlagType::Bool => {
                    if has_value && value.is_empty() {
                        return Err(format!("missing a value on flag: {flag_name}"));
                    }
                    match value.to_lowercase().as_str() {
                        "true" | "" => "true".to_string(),
                        "false" => "false".to_string(),
                        _ => {
                            return Err(format!(
                                "expecting boolean value for flag {flag_name}, not: {value}"
                            ));
                        }
                    }
                }
                FlagType::String | FlagType::Strings => {
                    if !has_value {
                        return Err(format!("missing a value on flag: {flag_name}"));
                    }
                    value.to_string()
                }
            };
            if kind != FlagType::Strings {
                flags.values.retain(|(n, _)| n != name);
            }
            flags.values.push((name.to_string(), stored));
        }
        Ok(flags)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    fn used_names(&self) -> Vec<String> {
        self.defs
            .iter()
            .filter(|(n, _)| self.used.contains(*n))
            .map(|(n, _)| n.to_string())
            .collect()
    }
}

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}

fn no_destination(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
}

fn blank_names(cmd: &str) -> String {
    format!("{cmd} names can not be blank")
}

/// Converts a node into a typed instruction (BuildKit's `ParseInstruction`); the error is the
/// inner message, without BuildKit's `dockerfile parse error on line N: ` prefix.
pub(crate) fn parse_node(node: &Node) -> Result<Parsed, String> {
    let args = node.arg_words();
    let flags = &node.flags;
    let kind = match node.name().as_str() {
        "env" => InstructionKind::Env(parse_kvps(&args, flags, "ENV")?),
        "maintainer" => {
            if args.len() != 1 {
                return Err(exactly_one("MAINTAINER"));
            }
            Flags::parse(flags, &[])?;
            InstructionKind::Maintainer(args[0].clone())
        }
        "label" => InstructionKind::Label(parse_kvps(&args, flags, "LABEL")?),
        "add" => InstructionKind::Add(parse_add(node, &args)?),
        "copy" => InstructionKind::Copy(parse_copy(node, &args)?),
        "from" => return parse_from(&args, flags).map(Parsed::From),
        "onbuild" => InstructionKind::Onbuild(parse_onbuild(node, &args)?),
        "workdir" => {
            if args.len() != 1 {
                return Err(exactly_one("WORKDIR"));
            }
            Flags::parse(flags, &[])?;
            InstructionKind::Workdir(args[0].clone())
        }
        "run" => InstructionKind::Run(parse_run(node, &args)?),
        "cmd" => {
            Flags::parse(flags, &[])?;
            InstructionKind::Cmd(command_line(node, &args))
        }
        "healthcheck" => InstructionKind::Healthcheck(parse_healthcheck(node, &args)?),
        "entrypoint" => {
            Flags::parse(flags, &[])?;
            InstructionKind::Entrypoint(command_line(node, &args))
        }
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            Flags::parse(flags, &[])?;
            let mut ports = args.clone();
            ports.sort();
            InstructionKind::Expose(ports)
        }
        "user" => {
            if args.len() != 1 {
                return Err(exactly_one("USER"));
            }
            Flags::parse(flags, &[])?;
            InstructionKind::User(args[0].clone())
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            Flags::parse(flags, &[])?;
            let mut volumes = Vec::new();
            for v in &args {
                let v = trim_space(v);
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                volumes.push(v.to_string());
            }
            InstructionKind::Volume(volumes)
        }
        "stopsignal" => {
            if args.len() != 1 {
                return Err(exactly_one("STOPSIGNAL"));
            }
            InstructionKind::StopSignal(args[0].clone())
        }
        "arg" => InstructionKind::Arg(parse_arg(&args)?),
        "shell" => {
            Flags::parse(flags, &[])?;
            if args.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            InstructionKind::Shell(args)
        }
        _ => {
            return Err(suggest(
                format!("unknown instruction: {}", node.value),
                &node.value,
                INSTRUCTION_NAMES,
                false,
            ));
        }
    };
    Ok(Parsed::Instruction(kind))
}

fn parse_kvps(args: &[String], flags: &[String], cmd: &str) -> Result<Vec<KeyValue>, String> {
    Flags::parse(flags, &[])?;
    if args.is_empty() {
        return Err(at_least_one(cmd));
    }
    if !args.len().is_multiple_of(3) {
        return Err(format!("Bad input to {cmd}, too many arguments"));
    }
    let mut out = Vec::new();
    for triple in args.chunks(3) {
        if triple[0].is_empty() {
            return Err(blank_names(cmd));
        }
        out.push(KeyValue {
            key: triple[0].clone(),
            value: triple[1].clone(),
            legacy: triple[2].is_empty(),
        });
    }
    Ok(out)
}

fn parse_from(args: &[String], flags: &[String]) -> Result<From, String> {
    let name = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_lowercase();
            if !valid_stage_name(&name) {
                return Err(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    quote(&args[2])
                ));
            }
            Some(name)
        }
        1 => None,
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    let parsed = Flags::parse(flags, &[("platform", FlagType::String)])?;
    Ok(From {
        base: args[0].clone(),
        name,
        platform: parsed.string("platform"),
    })
}

/// `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_onbuild(node: &Node, args: &[String]) -> Result<Onbuild, String> {
    let Some(trigger) = args.first() else {
        return Err(at_least_one("ONBUILD"));
    };
    Flags::parse(&node.flags, &[])?;
    let trigger = trim_space(trigger).to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "MAINTAINER" | "FROM" => {
            return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"));
        }
        _ => {}
    }
    let mut expression = strip_onbuild_keyword(&node.original).to_string();
    for heredoc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    Ok(Onbuild { expression })
}

/// `(?i)^\s*ONBUILD\s*` removed from the line.
fn strip_onbuild_keyword(original: &str) -> &str {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let s = original.trim_start_matches(is_re_space);
    match s.get(..7) {
        Some(word) if word.eq_ignore_ascii_case("onbuild") => {
            s[7..].trim_start_matches(is_re_space)
        }
        _ => original,
    }
}

fn inline_files(heredocs: &[Heredoc]) -> Vec<InlineFile> {
    heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
        })
        .collect()
}

/// BuildKit's `parseShellDependentCommand` (+ `handleJSONArgs`).
fn command_line(node: &Node, args: &[String]) -> CommandLine {
    let args = if node.json || args.is_empty() {
        args.to_vec()
    } else {
        vec![args.join(" ")]
    };
    CommandLine {
        args,
        shell_form: !node.json,
        files: inline_files(&node.heredocs),
    }
}

fn parse_run(node: &Node, args: &[String]) -> Result<Run, String> {
    let flags = Flags::parse(
        &node.flags,
        &[
            ("mount", FlagType::Strings),
            ("network", FlagType::String),
            ("security", FlagType::String),
        ],
    )?;
    let mut mounts = Vec::new();
    for raw in flags.strings("mount") {
        mounts.push(crate::mount::pre_check(&raw)?);
    }
    let network = match flags.string("network").as_deref().unwrap_or("default") {
        "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => return Err(format!("invalid network mode {}", quote(other))),
    };
    let security = match flags.string("security").as_deref().unwrap_or("sandbox") {
        "sandbox" => Security::Sandbox,
        "insecure" => Security::Insecure,
        other => return Err(format!("security {} is not valid", quote(other))),
    };
    Ok(Run {
        command: command_line(node, args),
        mounts,
        network,
        security,
        flags_used: flags.used_names(),
    })
}

/// BuildKit's `parseSourcesAndDest`.
fn sources_and_dest(
    node: &Node,
    args: &[String],
    cmd: &str,
) -> Result<(Vec<String>, Vec<InlineSource>, String), String> {
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    if parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match parse_heredoc(src).ok().flatten() {
            Some(marker) => {
                let content = node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == marker.name)
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                let data = if marker.chomp {
                    chomp_heredoc_content(&content)
                } else {
                    content
                };
                inline.push(InlineSource {
                    path: marker.name,
                    data,
                    expand: marker.expand,
                });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok((sources, inline, dest))
}

fn parse_add(node: &Node, args: &[String]) -> Result<Add, String> {
    if args.len() < 2 {
        return Err(no_destination("ADD"));
    }
    let flags = Flags::parse(
        &node.flags,
        &[
            ("exclude", FlagType::Strings),
            ("chown", FlagType::String),
            ("chmod", FlagType::String),
            ("link", FlagType::Bool),
            ("keep-git-dir", FlagType::Bool),
            ("checksum", FlagType::String),
            ("unpack", FlagType::Bool),
        ],
    )?;
    let (sources, inline, dest) = sources_and_dest(node, args, "ADD")?;
    Ok(Add {
        sources,
        inline,
        dest,
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        keep_git_dir: flags.bool("keep-git-dir"),
        checksum: flags.string("checksum"),
        unpack: flags.used.contains("unpack").then(|| flags.bool("unpack")),
        excludes: flags.strings("exclude"),
    })
}

fn parse_copy(node: &Node, args: &[String]) -> Result<Copy, String> {
    if args.len() < 2 {
        return Err(no_destination("COPY"));
    }
    let flags = Flags::parse(
        &node.flags,
        &[
            ("exclude", FlagType::Strings),
            ("parents", FlagType::Bool),
            ("chown", FlagType::String),
            ("from", FlagType::String),
            ("chmod", FlagType::String),
            ("link", FlagType::Bool),
        ],
    )?;
    let (sources, inline, dest) = sources_and_dest(node, args, "COPY")?;
    Ok(Copy {
        sources,
        inline,
        dest,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        excludes: flags.strings("exclude"),
    })
}

/// BuildKit's `parseOptInterval`.
fn interval(flags: &Flags, name: &str) -> Result<Duration, String> {
    let Some(s) = flags.string(name).filter(|s| !s.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let nanos = parse_duration(&s)?;
    if nanos == 0 {
        return Ok(Duration::ZERO);
    }
    const MINIMUM: i64 = 1_000_000;
    if nanos < MINIMUM {
        return Err(format!(
            "Interval {} cannot be less than {}",
            quote(name),
            format_duration(MINIMUM)
        ));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

fn parse_healthcheck(node: &Node, args: &[String]) -> Result<Healthcheck, String> {
    let Some(first) = args.first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let typ = first.to_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            quote(&typ)
        ));
    }
    let cmd = if node.json || rest.is_empty() {
        rest.to_vec()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let retries = match flags.string("retries").filter(|s| !s.is_empty()) {
        None => 0,
        Some(s) => {
            let n = parse_int(&s, 32)?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            n as u32
        }
    };
    Ok(Healthcheck::Check(HealthConfig {
        test,
        interval: interval(&flags, "interval")?,
        timeout: interval(&flags, "timeout")?,
        start_period: interval(&flags, "start-period")?,
        start_interval: interval(&flags, "start-interval")?,
        retries,
    }))
}

fn parse_arg(args: &[String]) -> Result<Vec<ArgDecl>, String> {
    if args.is_empty() {
        return Err(at_least_one("ARG"));
    }
    let mut out = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((name, value)) => {
                if name.is_empty() {
                    return Err(blank_names("ARG"));
                }
                out.push(ArgDecl {
                    name: name.to_string(),
                    default: Some(value.to_string()),
                });
            }
            None => out.push(ArgDecl {
                name: arg.clone(),
                default: None,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::node_from_line;

    fn parse(line: &str) -> Result<Parsed, String> {
        parse_node(&node_from_line(line, '\\').unwrap())
    }

    #[test]
    fn messages_match_buildkit() {
        assert_eq!(
            parse("FORM x").unwrap_err(),
            "unknown instruction: FORM (did you mean FROM?)"
        );
        assert_eq!(
            parse("COPY --form=a x y").unwrap_err(),
            "unknown flag: --form (did you mean from?)"
        );
        assert_eq!(
            parse("COPY x").unwrap_err(),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            parse("FROM a b").unwrap_err(),
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            parse("ONBUILD FROM x").unwrap_err(),
            "FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            parse("ONBUILD onbuild RUN x").unwrap_err(),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            parse("HEALTHCHECK --interval=1ns CMD x").unwrap_err(),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            parse("RUN --network=bridge x").unwrap_err(),
            "invalid network mode \"bridge\""
        );
        assert_eq!(
            parse("COPY --link=maybe a b").unwrap_err(),
            "expecting boolean value for flag --link, not: maybe"
        );
        assert_eq!(
            parse("COPY --from=a --from=b a b").unwrap_err(),
            "duplicate flag specified: --from"
        );
        assert_eq!(
            parse("SHELL sh -c").unwrap_err(),
            "SHELL requires the arguments to be in JSON form"
        );
    }

    #[test]
    fn args_and_healthchecks() {
        let Parsed::Instruction(InstructionKind::Arg(a)) = parse("ARG a b=1 c=").unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].default.as_deref(), Some("1"));
        let Parsed::Instruction(InstructionKind::Healthcheck(Healthcheck::Check(h))) =
            parse("HEALTHCHECK --retries=3 --interval=5s CMD [\"x\", \"y\"]").unwrap()
        else {
            panic!()
        };
        assert_eq!(h.test, vec!["CMD", "x", "y"]);
        assert_eq!(h.interval, Duration::from_secs(5));
        assert_eq!(h.retries, 3);
        assert_eq!(
            parse("HEALTHCHECK NONE").unwrap(),
            Parsed::Instruction(InstructionKind::Healthcheck(Healthcheck::None))
        );
    }
}
