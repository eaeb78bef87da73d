//! The build graph: which stages a target needs, in which order, from which bases.
//!
//! Mirrors the first half of BuildKit's `dockerfile2llb.toDispatchState`: the global ARGs
//! (predefined platform args, `TARGETSTAGE`, then the Dockerfile's own, with `--build-arg`
//! overrides), FROM expansion, stage references by name (case-insensitive) or index, cycle
//! detection, reachability from the target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Error, ErrorKind};
use crate::golang::{atoi, closest, quote};
use crate::instructions::InstructionKind;
use crate::shell::Lexer;
use crate::{Dockerfile, Location};

/// An OS/architecture/variant triple as OCI and containerd name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, `v8`, ... or empty.
    pub variant: String,
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64".into(),
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64".into(),
            if matches!(variant.as_str(), "8" | "v8" | "v8.0") {
                String::new()
            } else {
                variant
            },
        ),
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => (
            "arm".into(),
            match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => (arch, variant),
    }
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: os.to_lowercase(),
            architecture,
            variant,
        }
    }

    /// Parses `os[/arch[/variant]]` (or a lone architecture) as containerd's `platforms.Parse`,
    /// with `default` filling what is missing.
    pub fn parse(spec: &str, default: &Platform) -> Result<Platform, String> {
        let invalid = |why: &str| format!("{}: {why}: invalid argument", quote(spec));
        if spec.contains('*') {
            return Err(invalid("wildcards not yet supported"));
        }
        let parts: Vec<&str> = spec.split('/').collect();
        for p in &parts {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(invalid(&format!("invalid platform component {}", quote(p))));
            }
        }
        let os = |s: &str| {
            let s = s.to_lowercase();
            if s == "macos" {
                "darwin".to_string()
            } else {
                s
            }
        };
        match parts.as_slice() {
            [one] => {
                let candidate = os(one);
                if KNOWN_OS.contains(&candidate.as_str()) {
                    return Ok(Platform {
                        os: candidate,
                        architecture: default.architecture.clone(),
                        variant: default.variant.clone(),
                    });
                }
                let (arch, variant) = normalize_arch(one, "");
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Platform {
                        os: default.os.clone(),
                        architecture: arch,
                        variant,
                    });
                }
                Err(invalid("unknown operating system or architecture"))
            }
            [o, a] => {
                let (architecture, variant) = normalize_arch(a, "");
                Ok(Platform {
                    os: os(o),
                    architecture,
                    variant,
                })
            }
            [o, a, v] => {
                let (architecture, mut variant) = normalize_arch(a, v);
                if architecture == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform {
                    os: os(o),
                    architecture,
                    variant,
                })
            }
            _ => Err(invalid("cannot parse platform specifier")),
        }
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]` (containerd's `platforms.Format`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What the caller decides about a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg K=V` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name; the last stage when `None`.
    pub target: Option<String>,
    /// The platform the image is built for (`TARGETPLATFORM`...).
    pub target_platform: Platform,
    /// The platform the build runs on (`BUILDPLATFORM`...).
    pub build_platform: Platform,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem and config.
    Scratch,
    /// An image reference, expanded (not yet normalised: the caller resolves it).
    Image(String),
    /// An earlier stage, by its index in [`Dockerfile::stages`].
    Stage(usize),
}

/// What `COPY --from` or `RUN --mount from=` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A stage, by its index in [`Dockerfile::stages`].
    Stage(usize),
    /// An image reference (anything that is neither a stage name nor a stage index).
    Image(String),
}

/// A stage the target needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// Index in [`Dockerfile::stages`].
    pub index: usize,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// BuildKit's display name for progress: the name, `stage-N`, or empty for a file with a
    /// single stage and no other sources.
    pub display_name: String,
    /// The base after expanding global ARGs.
    pub base: Base,
    /// `FROM --platform`, expanded and parsed.
    pub platform: Option<Platform>,
    /// The stages this one needs first (its base stage, COPY --from and mount sources),
    /// as indices in [`Dockerfile::stages`], ascending.
    pub depends_on: Vec<usize>,
    /// Images used by COPY --from or RUN --mount from= (not stages).
    pub source_images: Vec<String>,
    /// Global ARGs the FROM line referenced (they matter for the base's cache key).
    pub used_global_args: BTreeSet<String>,
}

/// The build graph for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stages the target needs, in file order, which is a dependency order: every stage
    /// comes after the stages it depends on.
    pub stages: Vec<PlannedStage>,
    /// Position of the target in `stages` (always the last).
    pub target: usize,
    /// The global ARG scope: predefined platform args, `TARGETSTAGE` and the Dockerfile's
    /// global ARGs with their values, in definition order.
    pub global_args: Vec<(String, String)>,
    /// The build args as given.
    pub build_args: BTreeMap<String, String>,
    /// Proxy variables for RUN's environment (upper- and lower-case names), from build args
    /// named `HTTP_PROXY`, `https_proxy`, ... They are not ARGs and not part of cache keys.
    pub proxy_env: Vec<(String, String)>,
    /// Build args that no ARG in the global scope or in a needed stage declares (and that are not
    /// predefined): the builder warns about them.
    pub unused_build_args: Vec<String>,
    /// The target platform.
    pub target_platform: Platform,
    /// The build platform.
    pub build_platform: Platform,
}

impl Plan {
    /// The planned stage for [`Dockerfile::stages`] index `index`.
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// Groups of stages that can be built concurrently: every stage of a group depends only on
    /// stages of earlier groups. Indices are [`Dockerfile::stages`] indices.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut level: BTreeMap<usize, usize> = BTreeMap::new();
        for s in &self.stages {
            let l = s
                .depends_on
                .iter()
                .filter_map(|d| level.get(d))
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            level.insert(s.index, l);
        }
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for s in &self.stages {
            let l = level[&s.index];
            if waves.len() <= l {
                waves.resize(l + 1, Vec::new());
            }
            waves[l].push(s.index);
        }
        waves
    }
}

/// Names of the predefined platform ARGs.
pub const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

const PROXY_ARGS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

fn is_predefined(name: &str) -> bool {
    PLATFORM_ARGS.contains(&name)
        || PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(name))
        || name.starts_with("BUILDKIT_")
}

/// Sets `k=v` in an ordered env list, moving it to the end (llb's `AddOrReplace`).
pub(crate) fn add_or_replace(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    env.retain(|(key, _)| key != k);
    env.push((k.to_string(), v.to_string()));
}

fn plan_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Plan, message)
}

/// The stage named `name` (case-insensitive); the last one when names repeat.
pub(crate) fn find_stage_by_name(df: &Dockerfile, name: &str) -> Option<usize> {
    let name = name.to_lowercase();
    df.stages
        .iter()
        .rev()
        .find(|s| s.name() == Some(name.as_str()))
        .map(|s| s.index)
}

/// Resolves a `COPY --from` value as BuildKit does: a number is a stage index, anything else a
/// stage name (case-insensitive) or, failing that, an image.
pub fn resolve_copy_from(df: &Dockerfile, from: &str) -> Result<SourceRef, Error> {
    if let Some(index) = atoi(from) {
        if index < 0 || index as usize >= df.stages.len() {
            return Err(plan_error(format!("invalid stage index {index}")));
        }
        return Ok(SourceRef::Stage(index as usize));
    }
    Ok(match find_stage_by_name(df, from) {
        Some(i) => SourceRef::Stage(i),
        None => SourceRef::Image(from.to_string()),
    })
}

/// A reference from one stage to another, with the instruction that makes it.
struct Edge {
    to: SourceRef,
    location: Location,
    is_mount: bool,
}

fn stage_edges(df: &Dockerfile, stage: usize) -> Result<Vec<Edge>, Error> {
    let mut edges = Vec::new();
    for ins in &df.stages[stage].instructions {
        match &ins.kind {
            InstructionKind::Copy(c) => {
                if let Some(from) = &c.from {
                    let to =
                        resolve_copy_from(df, from).map_err(|e| df.locate(e, &ins.location))?;
                    edges.push(Edge {
                        to,
                        location: ins.location,
                        is_mount: false,
                    });
                }
            }
            InstructionKind::Run(r) => {
                for m in &r.mounts {
                    // BuildKit looks mount sources up by name only; no `from` means scratch.
                    let Some(from) = &m.from else { continue };
                    let to = match find_stage_by_name(df, from) {
                        Some(i) => SourceRef::Stage(i),
                        None => SourceRef::Image(from.clone()),
                    };
                    edges.push(Edge {
                        to,
                        location: ins.location,
                        is_mount: true,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(edges)
}

fn display_name(df: &Dockerfile, index: usize, single: bool) -> String {
    if single {
        return String::new();
    }
    match df.stages[index].name() {
        Some(n) => n.to_string(),
        None => format!("stage-{index}"),
    }
}

/// The global ARG scope: predefined args (overridable by build args), then each ARG before the
/// first FROM (BuildKit's `defaultArgs` + `buildMetaArgs`).
pub(crate) fn global_args(
    df: &Dockerfile,
    opts: &BuildOptions,
    target_name: &str,
) -> Result<Vec<(String, String)>, Error> {
    let bp = &opts.build_platform;
    let tp = &opts.target_platform;
    let predefined = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone()),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone()),
        ("TARGETSTAGE", target_name.to_string()),
    ];
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in predefined {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        add_or_replace(&mut env, k, &v);
    }
    let lexer = Lexer::new(df.escape());
    for ins in &df.global_args {
        let InstructionKind::Arg(decls) = &ins.kind else {
            continue;
        };
        for decl in decls {
            let value = match opts.build_args.get(&decl.name) {
                Some(v) => Some(v.clone()),
                None => match &decl.default {
                    Some(d) => Some(
                        lexer
                            .process_word(d, &env)
                            .map_err(|e| df.locate(e, &ins.location))?
                            .value,
                    ),
                    None => None,
                },
            };
            if let Some(v) = value {
                add_or_replace(&mut env, &decl.name, &v);
            }
        }
    }
    Ok(env)
}

/// What stage `stage` starts from, given its FROM expanded: the last earlier stage of that name,
/// scratch, or an image.
pub(crate) fn resolve_base(df: &Dockerfile, stage: usize, expanded: &str) -> Base {
    let earlier = df.stages[..stage.min(df.stages.len())]
        .iter()
        .rev()
        .find(|s| s.name() == Some(expanded));
    match earlier {
        Some(s) => Base::Stage(s.index),
        None if expanded == "scratch" => Base::Scratch,
        None => Base::Image(expanded.to_string()),
    }
}

/// BuildKit's dispatch-time check that the stages `stage` copies or mounts from come before it.
pub(crate) fn check_sources_defined_before(df: &Dockerfile, stage: usize) -> Result<(), Error> {
    let edges = stage_edges(df, stage)?;
    for e in &edges {
        if let SourceRef::Stage(s) = e.to {
            forward_reference(df, stage, s, e)?;
        }
    }
    Ok(())
}

fn forward_reference(df: &Dockerfile, stage: usize, source: usize, e: &Edge) -> Result<(), Error> {
    if source < stage {
        return Ok(());
    }
    let this = display_name(df, stage, false);
    let other = df.stages[source]
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| source.to_string());
    let verb = if e.is_mount { "mount" } else { "copy" };
    let message = format!(
        "cannot {verb} from stage {}, it needs to be defined before current stage {}",
        quote(&other),
        quote(&this)
    );
    Err(df.locate(plan_error(message), &e.location))
}

/// Plans the build of `opts.target` (or the last stage).
pub fn plan(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan, Error> {
    if df.stages.is_empty() {
        return Err(plan_error("dockerfile contains no stages to build"));
    }
    let target_index = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => find_stage_by_name(df, t)
            .ok_or_else(|| plan_error(format!("target stage {} could not be found", quote(t))))?,
    };
    let target_name = opts
        .target
        .clone()
        .unwrap_or_else(|| df.stages[target_index].name().unwrap_or("").to_string());
    let globals = global_args(df, opts, &target_name)?;
    let lexer = Lexer::new(df.escape());

    // Bases (FROM), expanded with the global scope.
    let mut bases = Vec::with_capacity(df.stages.len());
    let mut platforms = Vec::with_capacity(df.stages.len());
    let mut used_globals = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        let expanded = lexer
            .process_word(&stage.from.base, &globals)
            .map_err(|e| df.locate(e, &stage.location))?;
        if expanded.value.is_empty() {
            return Err(df.locate(
                plan_error(format!(
                    "base name ({}) should not be blank",
                    stage.from.base
                )),
                &stage.location,
            ));
        }
        let mut used = expanded.matched.clone();
        bases.push(resolve_base(df, stage.index, &expanded.value));
        let platform = match &stage.from.platform {
            None => None,
            Some(p) => {
                let e = lexer.process_word(p, &globals).map_err(|e| {
                    df.locate(
                        plan_error(format!(
                            "failed to process arguments for platform {p}: {}",
                            e.message()
                        )),
                        &stage.location,
                    )
                })?;
                // BuildKit's `wrapSuggestAny`: a misspelt ARG is the likely cause.
                let suggest_arg = |message: String| {
                    let keys: Vec<&str> = globals.iter().map(|(k, _)| k.as_str()).collect();
                    let hint = e.unmatched.iter().find_map(|u| closest(u, &keys, true));
                    let message = match hint {
                        Some(h) => format!("{message} (did you mean {h}?)"),
                        None => message,
                    };
                    df.locate(plan_error(message), &stage.location)
                };
                if e.value.is_empty() {
                    return Err(suggest_arg(format!(
                        "empty platform value from expression {p}"
                    )));
                }
                used.extend(e.matched.iter().cloned());
                Some(
                    Platform::parse(&e.value, &opts.target_platform)
                        .map_err(|m| suggest_arg(format!("failed to parse platform {p}: {m}")))?,
                )
            }
        };
        platforms.push(platform);
        used_globals.push(used);
    }

    let mut edges = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        edges.push(stage_edges(df, stage.index)?);
    }
    check_cycles(df, &edges)?;

    // Reachability from the target, through bases and sources.
    let mut needed = BTreeSet::new();
    let mut todo = vec![target_index];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        if let Base::Stage(b) = bases[i] {
            todo.push(b);
        }
        for e in &edges[i] {
            if let SourceRef::Stage(s) = e.to {
                todo.push(s);
            }
        }
    }

    let single = df.stages.len() == 1
        && edges
            .iter()
            .flatten()
            .all(|e| !matches!(e.to, SourceRef::Image(_)));
    let mut stages = Vec::new();
    for &i in &needed {
        let mut depends_on = BTreeSet::new();
        if let Base::Stage(b) = bases[i] {
            depends_on.insert(b);
        }
        let mut source_images = Vec::new();
        for e in &edges[i] {
            match &e.to {
                SourceRef::Stage(s) => {
                    forward_reference(df, i, *s, e)?;
                    depends_on.insert(*s);
                }
                SourceRef::Image(name) => {
                    if !source_images.contains(name) {
                        source_images.push(name.clone());
                    }
                }
            }
        }
        stages.push(PlannedStage {
            index: i,
            name: df.stages[i].name().map(str::to_string),
            display_name: display_name(df, i, single),
            base: bases[i].clone(),
            platform: platforms[i].clone(),
            depends_on: depends_on.into_iter().collect(),
            source_images,
            used_global_args: used_globals[i].clone(),
        });
    }

    let mut declared: BTreeSet<String> = BTreeSet::new();
    let arg_names = |ins: &crate::Instruction, declared: &mut BTreeSet<String>| {
        if let InstructionKind::Arg(decls) = &ins.kind {
            declared.extend(decls.iter().map(|d| d.name.clone()));
        }
    };
    for ins in &df.global_args {
        arg_names(ins, &mut declared);
    }
    for s in &stages {
        for ins in &df.stages[s.index].instructions {
            arg_names(ins, &mut declared);
        }
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !is_predefined(k))
        .cloned()
        .collect();

    let mut proxy_env = Vec::new();
    for name in PROXY_ARGS {
        if let Some((_, v)) = opts
            .build_args
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            && !v.is_empty()
        {
            proxy_env.push((name.to_uppercase(), v.clone()));
            proxy_env.push((name.to_string(), v.clone()));
        }
    }

    let target = stages.len() - 1;
    Ok(Plan {
        stages,
        target,
        global_args: globals,
        build_args: opts.build_args.clone(),
        proxy_env,
        unused_build_args,
        target_platform: opts.target_platform.clone(),
        build_platform: opts.build_platform.clone(),
    })
}

/// BuildKit's `validateCircularDependency`, over every stage (reachable or not), through
/// COPY --from and mount sources.
fn check_cycles(df: &Dockerfile, edges: &[Vec<Edge>]) -> Result<(), Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(i: usize, edges: &[Vec<Edge>], marks: &mut [Mark], path: &mut Vec<Location>) -> bool {
        if marks[i] != Mark::New {
            return false;
        }
        marks[i] = Mark::OnPath;
        for e in &edges[i] {
            let SourceRef::Stage(d) = e.to else { continue };
            path.push(e.location);
            if marks[d] == Mark::OnPath || visit(d, edges, marks, path) {
                return true;
            }
            path.pop();
        }
        marks[i] = Mark::Done;
        false
    }
    let mut marks = vec![Mark::New; df.stages.len()];
    for i in 0..df.stages.len() {
        let mut path = Vec::new();
        if visit(i, edges, &mut marks, &mut path) {
            let name = display_name(df, i, false);
            let err = plan_error(format!("circular dependency detected on stage: {name}"));
            return Err(match path.first() {
                Some(loc) => df.locate(err, loc),
                None => err,
            });
        }
    }
    Ok(())
}
