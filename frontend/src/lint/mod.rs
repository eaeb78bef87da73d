//! BuildKit's Dockerfile lint checks (`docker build --check`), without building.
//!
//! Every rule of BuildKit's linter ([`rules::ALL`]) is raised where BuildKit raises it, with its
//! message: while the parser reads lines (`NoEmptyContinuation`), while instructions are typed
//! (`MaintainerDeprecated`, stage name and `AS` casing, definition descriptions), over the whole
//! file (instruction casing, stage names, base names with default ARGs), on each FROM line with
//! the global ARGs (undefined ARGs, `--platform` values), and while each stage is dispatched,
//! which here is the evaluator ([`crate::eval`]) run over every stage: its expansion reports the
//! variables nothing defines (`UndefinedVar`), and the steps it returns carry what the other
//! rules look at (ENV/LABEL forms, secrets in names, WORKDIR, CMD/ENTRYPOINT/HEALTHCHECK,
//! EXPOSE, COPY/ADD sources against `.dockerignore`).
//!
//! As BuildKit's lint request does, [`check`] lints every stage when no target is given and the
//! stages the target needs otherwise, and keeps the warnings found before an error. The
//! configuration comes from the `# check=` directive or the `BUILDKIT_DOCKERFILE_CHECK` build
//! arg ([`LintConfig`]); with `error=true`, warnings become the report's error.
//!
//! What BuildKit learns by resolving base images is an input here ([`BaseImage`]): their
//! platform (`InvalidBaseImagePlatform`), `Env` (variables `UndefinedVar` must not report),
//! `Shell` (`JSONArgsRecommended`) and `OnBuild` triggers. So is the `.dockerignore` matcher.

mod config;
mod render;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use config::{CHECK_BUILD_ARG, LintConfig};
pub use rules::Rule;

use crate::ast::Node;
use crate::dockerignore::Matcher;
use crate::error::{Error, ErrorKind, ErrorLocation, LineIndex, Span};
use crate::eval::{BaseState, Expanded, Step, evaluate_steps};
use crate::golang::{clean_path, closest, quote};
use crate::instructions::{InstructionKind, Parsed, parse_node};
use crate::plan::{self, Base, BuildOptions, PLATFORM_ARGS, Platform};
use crate::reference::is_normalized_named;
use crate::shell::{Env, Lexer};
use crate::{Directives, Dockerfile, Warning};

/// What the linter knows of a base image: BuildKit reads it from the image config it resolves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// The image's platform (`os`, `architecture`, `variant` of its config), when known.
    pub platform: Option<Platform>,
    /// The config's `Env` (`K=V` strings).
    pub env: Vec<String>,
    /// The config's `WorkingDir`.
    pub workdir: String,
    /// The config's `Shell`: when set, shell-form CMD/ENTRYPOINT are deliberate.
    pub shell: Vec<String>,
    /// The config's `OnBuild` triggers, run (and linted) before the stage's instructions.
    pub onbuild: Vec<String>,
}

/// How to treat a base image that [`LintOptions::base_images`] does not describe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownBase {
    /// As an image whose config sets nothing but BuildKit's default `PATH` (what `alpine` or
    /// `busybox` are): variables it might define are reported as undefined.
    #[default]
    Empty,
    /// As an image that may define any variable: `UndefinedVar` is not reported in stages built
    /// on it (a false warning is worse than none).
    Unchecked,
}

/// What a lint run is given besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// `--build-arg` values (`BUILDKIT_DOCKERFILE_CHECK` among them configures the linter).
    pub build_args: BTreeMap<String, String>,
    /// `--target`: lint the stages it needs. `None`: lint every stage, as BuildKit does.
    pub target: Option<String>,
    /// The platform the image is built for.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// Base images by the name their FROM line expands to (`busybox`, `alpine:3.20`).
    pub base_images: BTreeMap<String, BaseImage>,
    /// What to assume of base images not in `base_images`.
    pub unknown_base: UnknownBase,
    /// The build context's `.dockerignore` patterns, compiled (`CopyIgnoredFile`).
    pub ignore: Option<Matcher>,
}

impl LintOptions {
    /// Options for a build on and for `platform`, without build args, target, known base images
    /// or `.dockerignore`.
    pub fn new(platform: Platform) -> LintOptions {
        LintOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: platform.clone(),
            build_platform: platform,
            base_images: BTreeMap::new(),
            unknown_base: UnknownBase::default(),
            ignore: None,
        }
    }

    fn build_options(&self, build_args: BTreeMap<String, String>) -> BuildOptions {
        BuildOptions {
            build_args,
            target: self.target.clone(),
            target_platform: self.target_platform.clone(),
            build_platform: self.build_platform.clone(),
        }
    }
}

/// One finding.
#[derive(Debug, Clone)]
pub struct LintWarning {
    /// The rule (name, description, documentation URL).
    pub rule: Rule,
    /// BuildKit's message for this occurrence (its `detail`).
    pub message: String,
    /// Where: the file, and the instruction's lines (the line, for an empty continuation).
    pub location: ErrorLocation,
}

/// The result of a lint run.
#[derive(Debug, Clone)]
pub struct LintReport {
    /// The configuration in effect (default when it could not be read).
    pub config: LintConfig,
    /// The warnings, ordered by line as `docker build --check` prints them.
    pub warnings: Vec<LintWarning>,
    /// What stopped the check, as BuildKit reports it: a parse or build-graph error (the
    /// warnings before it are kept), or, with `error=true`, `lint violation found for rules: ...`.
    pub error: Option<Error>,
    file: String,
    source: Arc<str>,
}

impl LintReport {
    /// Whether the check fails (`build --check` exits 1): an error, or warnings with `error=true`.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Lints a parsed Dockerfile.
pub fn check(df: &Dockerfile, opts: &LintOptions) -> LintReport {
    let mut linter = Linter::new(df.file_name(), df.source.clone());
    if let Err(e) = linter.configure(&df.directives, opts) {
        return linter.finish(Err(e));
    }
    linter.parser_warnings(&df.warnings);
    linter.node_rules(df.nodes(), false);
    let result = linter.dispatch(df, opts);
    linter.finish(result)
}

/// Parses and lints a Dockerfile. When it does not parse, the report carries the parse error and
/// the warnings BuildKit finds before it (those of the instructions above the failing one).
pub fn check_text(text: &str, file_name: &str, opts: &LintOptions) -> LintReport {
    let err = match crate::parse(text, file_name) {
        Ok(df) => return check(&df, opts),
        Err(e) => e,
    };
    let mut linter = Linter::new(file_name, Arc::from(text));
    if let Ok(ast) = crate::parse_ast(text, file_name) {
        if let Err(e) = linter.configure(&ast.directives, opts) {
            return linter.finish(Err(e));
        }
        linter.parser_warnings(&ast.warnings);
        linter.node_rules(&ast.nodes, true);
    }
    linter.finish(Err(err))
}

/// The base images a lint of `df` with `opts` looks up in [`LintOptions::base_images`]: the
/// image names FROM lines expand to, in file order, without repeats.
pub fn base_image_names(df: &Dockerfile, opts: &LintOptions) -> Vec<String> {
    let mut linter = Linter::new(df.file_name(), df.source.clone());
    let target_name = target_name(df, opts);
    let Ok(globals) = plan::global_args(
        df,
        &opts.build_options(opts.build_args.clone()),
        &target_name,
    ) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for from in linter.resolve_from_lines(df, &globals, opts) {
        if let Base::Image(name) = from.base
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

fn target_name(df: &Dockerfile, opts: &LintOptions) -> String {
    opts.target.clone().unwrap_or_else(|| {
        df.stages
            .last()
            .and_then(|s| s.name())
            .unwrap_or("")
            .to_string()
    })
}

/// What a FROM line resolved to.
struct FromLine {
    base: Base,
    platform: Option<Platform>,
}

/// Per-stage state the dispatch-time rules need, beyond what the evaluator tracks.
#[derive(Debug, Clone, Default)]
struct StageLint {
    /// A SHELL (of the stage, a parent stage or the base image) is in effect.
    shell_set: bool,
    /// A WORKDIR of this Dockerfile (this stage or a parent stage) was already seen.
    workdir_set: bool,
    /// The base image's environment is known, so undefined variables can be reported.
    env_known: bool,
    /// The last CMD, ENTRYPOINT and HEALTHCHECK of this stage (not inherited).
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
}

impl StageLint {
    fn child(&self) -> StageLint {
        StageLint {
            shell_set: self.shell_set,
            workdir_set: self.workdir_set,
            env_known: self.env_known,
            ..StageLint::default()
        }
    }
}

struct Linter {
    config: LintConfig,
    file: String,
    source: Arc<str>,
    warnings: Vec<LintWarning>,
}

impl Linter {
    fn new(file: &str, source: Arc<str>) -> Linter {
        Linter {
            config: LintConfig::default(),
            file: file.to_string(),
            source,
            warnings: Vec::new(),
        }
    }

    fn configure(&mut self, directives: &Directives, opts: &LintOptions) -> Result<(), Error> {
        self.config = LintConfig::resolve(directives, &opts.build_args)?;
        Ok(())
    }

    fn warn(&mut self, rule: &Rule, message: String, span: Span) {
        if self.config.enabled(rule) {
            self.warnings.push(LintWarning {
                rule: *rule,
                message,
                location: ErrorLocation::new(&self.file, &self.source, span),
            });
        }
    }

    fn finish(mut self, result: Result<(), Error>) -> LintReport {
        let error = match result {
            Err(e) => Some(e),
            Ok(()) if self.config.error && !self.warnings.is_empty() => {
                // BuildKit lists the rules in Go map order (random); here in the order they
                // were first reported, so the message is stable.
                let mut names: Vec<&str> = Vec::new();
                for w in &self.warnings {
                    if !names.contains(&w.rule.name) {
                        names.push(w.rule.name);
                    }
                }
                Some(Error::new(
                    ErrorKind::Plan,
                    format!("lint violation found for rules: {}", names.join(", ")),
                ))
            }
            Ok(()) => None,
        };
        self.warnings.sort_by_key(|w| w.location.span.start.line);
        LintReport {
            config: self.config,
            warnings: self.warnings,
            error,
            file: self.file,
            source: self.source,
        }
    }

    /// `NoEmptyContinuation`, from the parser's warnings.
    fn parser_warnings(&mut self, warnings: &[Warning]) {
        for w in warnings {
            let span = LineIndex::new(&self.source).line_span(w.line, w.line);
            self.warn(
                &rules::NO_EMPTY_CONTINUATION,
                "Empty continuation line".into(),
                span,
            );
        }
    }

    /// The rules BuildKit runs while typing instructions. With `until_error`, stops after the
    /// instruction that makes parsing fail (the file is known not to parse).
    fn node_rules(&mut self, nodes: &[Node], until_error: bool) {
        let mut in_stage = false;
        for node in nodes {
            let words = node.arg_words();
            match node.name().as_str() {
                "maintainer" => self.warn(
                    &rules::MAINTAINER_DEPRECATED,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                    node.span,
                ),
                "from" => self.stage_keyword_casing(node, &words),
                _ => {}
            }
            let parsed = parse_node(node);
            match &parsed {
                Ok(Parsed::From(from)) => {
                    in_stage = true;
                    if let Some(name) = &from.name {
                        self.definition_description("FROM", std::slice::from_ref(name), node);
                    }
                }
                Ok(Parsed::Instruction(InstructionKind::Arg(decls))) => {
                    let keys: Vec<String> = decls.iter().map(|d| d.name.clone()).collect();
                    self.definition_description("ARG", &keys, node);
                }
                _ => {}
            }
            let outside_stage =
                !in_stage && !matches!(parsed, Ok(Parsed::Instruction(InstructionKind::Arg(_))));
            if until_error && (parsed.is_err() || outside_stage) {
                break;
            }
        }
    }

    fn stage_keyword_casing(&mut self, node: &Node, words: &[String]) {
        if words.len() == 3 && words[2] != words[2].to_lowercase() {
            self.warn(
                &rules::STAGE_NAME_CASING,
                format!("Stage name '{}' should be lowercase", words[2]),
                node.span,
            );
        }
        if words.len() >= 3 {
            let from = &node.value;
            let as_word = &words[1];
            let mismatch = if *from == from.to_lowercase() {
                *as_word != as_word.to_lowercase()
            } else if *from == from.to_uppercase() {
                *as_word != as_word.to_uppercase()
            } else {
                // Inconsistent FROM casing is ConsistentInstructionCasing's to report.
                false
            };
            if mismatch {
                self.warn(
                    &rules::FROM_AS_CASING,
                    format!("'{as_word}' and '{from}' keywords' casing do not match"),
                    node.span,
                );
            }
        }
    }

    /// `InvalidDefinitionDescription`: the comment right above a stage or ARG should start with
    /// its name.
    fn definition_description(&mut self, instruction: &str, keys: &[String], node: &Node) {
        let (Some(comment), Some(first_key)) = (node.comments.last(), keys.first()) else {
            return;
        };
        let first_word = comment.split(' ').next().unwrap_or("");
        if keys.iter().any(|k| k == first_word) {
            return;
        }
        let example = if keys.len() > 1 {
            "<arg_key>"
        } else {
            first_key.as_str()
        };
        self.warn(
            &rules::INVALID_DEFINITION_DESCRIPTION,
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
            node.span,
        );
    }

    /// Everything after parsing, in BuildKit's order; an error stops it where BuildKit stops.
    fn dispatch(&mut self, df: &Dockerfile, opts: &LintOptions) -> Result<(), Error> {
        if df.stages.is_empty() {
            return Err(Error::new(
                ErrorKind::Plan,
                "dockerfile contains no stages to build",
            ));
        }
        self.stage_names(df);
        self.instruction_casing(df);
        let target_name = target_name(df, opts);
        self.default_args_in_from(df, opts, &target_name);
        let build = opts.build_options(opts.build_args.clone());
        let globals = plan::global_args(df, &build, &target_name)?;
        let froms = self.resolve_from_lines(df, &globals, opts);
        // The FROM pass stops at the first line that cannot be resolved; planning reports why.
        let plan = plan::plan(df, &build)?;
        let stages: Vec<usize> = match opts.target {
            Some(_) => plan.stages.iter().map(|s| s.index).collect(),
            None => (0..df.stages.len()).collect(),
        };
        for &i in &stages {
            if let Some(from) = froms.get(i) {
                self.base_image_platform(df, i, from, opts);
            }
        }
        let mut ends: Vec<Option<(BaseState, StageLint)>> = vec![None; df.stages.len()];
        for &i in &stages {
            let Some(from) = froms.get(i) else { break };
            let os = from
                .platform
                .as_ref()
                .unwrap_or(&opts.target_platform)
                .os
                .clone();
            let (base, mut lint) = match &from.base {
                Base::Scratch => (
                    BaseState::scratch(&os),
                    StageLint {
                        env_known: true,
                        ..StageLint::default()
                    },
                ),
                Base::Image(name) => match opts.base_images.get(name) {
                    Some(img) => (
                        BaseState::from_image(&img.env, &img.workdir, &img.onbuild, &os),
                        StageLint {
                            shell_set: !img.shell.is_empty(),
                            env_known: true,
                            ..StageLint::default()
                        },
                    ),
                    None => (
                        BaseState::from_image(&[], "", &[], &os),
                        StageLint {
                            env_known: opts.unknown_base == UnknownBase::Empty,
                            ..StageLint::default()
                        },
                    ),
                },
                Base::Stage(j) => match ends.get(*j).and_then(Option::as_ref) {
                    Some((state, lint)) => (state.clone(), lint.child()),
                    None => (BaseState::scratch(&os), StageLint::default()),
                },
            };
            // Without a target every stage is dispatched, so BuildKit's check that copy and
            // mount sources come first applies to stages the plan did not need.
            let forward = match opts.target {
                Some(_) => None,
                None => plan::check_sources_defined_before(df, i).err(),
            };
            let forward_line = forward
                .as_ref()
                .and_then(|e| e.location())
                .map(|l| l.span.start.line);
            let stage_span = df.stages[i].location.span;
            let (steps, end) = evaluate_steps(df, &plan, i, base);
            for step in &steps {
                let line = step.instruction.location.start_line;
                if let Some(e) = &forward
                    && !step.from_onbuild
                    && forward_line.is_none_or(|l| line >= l)
                {
                    return Err(e.clone());
                }
                self.step_rules(df, step, &os, stage_span, &mut lint, opts);
            }
            let state = end?;
            if let Some(e) = forward {
                return Err(e);
            }
            ends[i] = Some((state, lint));
        }
        Ok(())
    }

    /// `ReservedStageName` and `DuplicateStageName`.
    fn stage_names(&mut self, df: &Dockerfile) {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for stage in &df.stages {
            let Some(name) = stage.name() else { continue };
            if matches!(name, "context" | "scratch") {
                self.warn(
                    &rules::RESERVED_STAGE_NAME,
                    format!(
                        "Stage name should not use the same name as reserved stage {}",
                        quote(name)
                    ),
                    stage.location.span,
                );
            }
            if !seen.insert(name) {
                self.warn(
                    &rules::DUPLICATE_STAGE_NAME,
                    format!(
                        "Duplicate stage name {}, stage names should be unique",
                        quote(name)
                    ),
                    stage.location.span,
                );
            }
        }
    }

    /// `ConsistentInstructionCasing`: every instruction from the first FROM on (global ARGs are
    /// not part of a stage) against the majority casing.
    fn instruction_casing(&mut self, df: &Dockerfile) {
        let Some(first) = df.stages.first() else {
            return;
        };
        let nodes: Vec<&Node> = df
            .nodes()
            .iter()
            .filter(|n| n.start_line >= first.location.start_line)
            .collect();
        let (mut lower, mut upper) = (0, 0);
        for node in &nodes {
            let name = &node.value;
            if *name == name.to_lowercase() {
                lower += 1;
            } else if *name == name.to_uppercase() {
                upper += 1;
            }
        }
        let majority_lower = lower > upper;
        for node in &nodes {
            let name = &node.value;
            let casing = if majority_lower && *name != name.to_lowercase() {
                "lowercase"
            } else if !majority_lower && *name != name.to_uppercase() {
                "uppercase"
            } else {
                continue;
            };
            self.warn(
                &rules::CONSISTENT_INSTRUCTION_CASING,
                format!(
                    "Command '{name}' should match the case of the command majority ({casing})"
                ),
                node.span,
            );
        }
    }

    /// `InvalidDefaultArgInFrom`: each FROM expanded with the global ARGs' defaults only (build
    /// args set only the predefined platform args) must be a valid image reference.
    fn default_args_in_from(&mut self, df: &Dockerfile, opts: &LintOptions, target_name: &str) {
        let predefined: BTreeMap<String, String> = opts
            .build_args
            .iter()
            .filter(|(k, _)| PLATFORM_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let Ok(defaults) = plan::global_args(df, &opts.build_options(predefined), target_name)
        else {
            return;
        };
        let lexer = Lexer::new(df.escape());
        for stage in &df.stages {
            let Ok(e) = lexer.process_word(&stage.from.base, &defaults) else {
                return;
            };
            if !is_normalized_named(&e.value) {
                self.warn(
                    &rules::INVALID_DEFAULT_ARG_IN_FROM,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.from.base
                    ),
                    stage.location.span,
                );
            }
        }
    }

    /// Expands each FROM line with the global ARGs and runs the FROM rules: `UndefinedArgInFrom`,
    /// `RedundantTargetPlatform`, `FromPlatformFlagConstDisallowed`. Stops at the first line that
    /// does not resolve (empty base, bad platform, expansion error).
    fn resolve_from_lines(
        &mut self,
        df: &Dockerfile,
        globals: &[(String, String)],
        opts: &LintOptions,
    ) -> Vec<FromLine> {
        let mut declared: BTreeSet<String> = globals.iter().map(|(k, _)| k.clone()).collect();
        for ins in &df.global_args {
            if let InstructionKind::Arg(decls) = &ins.kind {
                declared.extend(decls.iter().map(|d| d.name.clone()));
            }
        }
        let declared: Vec<String> = declared.into_iter().collect();
        let lexer = Lexer::new(df.escape());
        let env = globals.to_vec();
        let mut out = Vec::new();
        for stage in &df.stages {
            let span = stage.location.span;
            let Ok(base) = lexer.process_word(&stage.from.base, &env) else {
                break;
            };
            self.undeclared_in_from(&base.unmatched, &declared, span);
            if base.value.is_empty() {
                break;
            }
            let mut platform = None;
            if let Some(p) = &stage.from.platform {
                let Ok(e) = lexer.process_word(p, &env) else {
                    break;
                };
                self.undeclared_in_from(&e.unmatched, &declared, span);
                if e.matched.len() == 1
                    && e.unmatched.is_empty()
                    && e.matched.contains("TARGETPLATFORM")
                    && env.lookup("TARGETPLATFORM") == Some(e.value.as_str())
                {
                    self.warn(
                        &rules::REDUNDANT_TARGET_PLATFORM,
                        format!(
                            "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                        ),
                        span,
                    );
                }
                let parsed = Platform::parse(&e.value, &opts.target_platform);
                if e.matched.is_empty()
                    && e.unmatched.is_empty()
                    && let Ok(constant) = &parsed
                {
                    let name = stage.name().unwrap_or("");
                    if !name.contains(&constant.os) && !name.contains(&constant.architecture) {
                        self.warn(
                            &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                            format!(
                                "FROM --platform flag should not use constant value {}",
                                quote(&e.value)
                            ),
                            span,
                        );
                    }
                }
                match parsed {
                    Ok(p) if !e.value.is_empty() => platform = Some(p),
                    _ => break,
                }
            }
            out.push(FromLine {
                base: plan::resolve_base(df, stage.index, &base.value),
                platform,
            });
        }
        out
    }

    fn undeclared_in_from(&mut self, unset: &BTreeSet<String>, declared: &[String], span: Span) {
        for name in unset {
            if declared.contains(name) {
                continue;
            }
            let hint = closest(name, declared, true)
                .map(|m| format!(" (did you mean {m}?)"))
                .unwrap_or_default();
            self.warn(
                &rules::UNDEFINED_ARG_IN_FROM,
                format!("FROM argument '{name}' is not declared{hint}"),
                span,
            );
        }
    }

    /// `InvalidBaseImagePlatform`: the base image's OS and architecture against the stage's.
    fn base_image_platform(
        &mut self,
        df: &Dockerfile,
        stage: usize,
        from: &FromLine,
        opts: &LintOptions,
    ) {
        let Base::Image(name) = &from.base else {
            return;
        };
        let Some(actual) = opts.base_images.get(name).and_then(|i| i.platform.as_ref()) else {
            return;
        };
        let expected = from.platform.as_ref().unwrap_or(&opts.target_platform);
        if expected.os != actual.os || expected.architecture != actual.architecture {
            self.warn(
                &rules::INVALID_BASE_IMAGE_PLATFORM,
                format!(
                    "Base image {name} was pulled with platform {}, expected {} for current build",
                    quote(&actual.to_string()),
                    quote(&expected.to_string())
                ),
                df.stages[stage].location.span,
            );
        }
    }

    /// The rules BuildKit runs while dispatching one instruction.
    fn step_rules(
        &mut self,
        df: &Dockerfile,
        step: &Step,
        os: &str,
        stage_span: Span,
        lint: &mut StageLint,
        opts: &LintOptions,
    ) {
        // ONBUILD triggers report at the FROM line, as BuildKit relocates them there.
        let span = if step.from_onbuild {
            stage_span
        } else {
            step.instruction.location.span
        };
        let name = step.instruction.name.as_str();
        let kind = &step.instruction.kind;
        if !matches!(kind, InstructionKind::Arg(_)) {
            self.undefined_vars(step, lint, span);
        }
        match (kind, &step.expanded) {
            (InstructionKind::Env(kvs), Expanded::Env(pairs)) => {
                for (kv, (key, _)) in kvs.iter().zip(pairs) {
                    if kv.legacy {
                        self.legacy_key_value(name, span);
                    }
                    self.secret_key("ENV", key, span);
                }
            }
            (InstructionKind::Label(kvs), _) => {
                for _ in kvs.iter().filter(|kv| kv.legacy) {
                    self.legacy_key_value(name, span);
                }
            }
            (InstructionKind::Arg(decls), _) => {
                for decl in decls {
                    self.secret_key("ARG", &decl.name, span);
                }
                self.undefined_vars(step, lint, span);
            }
            (InstructionKind::Workdir(_), Expanded::Workdir { path, .. }) => {
                if !lint.workdir_set && !is_absolute(path, os) {
                    self.warn(
                        &rules::WORKDIR_RELATIVE_PATH,
                        format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            quote(path)
                        ),
                        span,
                    );
                }
                lint.workdir_set = true;
            }
            (InstructionKind::Cmd(c), _) => {
                self.used_once(name, &mut lint.cmd, span);
                self.json_args(name, c.shell_form && !lint.shell_set, span);
            }
            (InstructionKind::Entrypoint(c), _) => {
                self.used_once(name, &mut lint.entrypoint, span);
                self.json_args(name, c.shell_form && !lint.shell_set, span);
            }
            (InstructionKind::Healthcheck(_), _) => {
                self.used_once(name, &mut lint.healthcheck, span);
            }
            (InstructionKind::Shell(_), _) => lint.shell_set = true,
            (InstructionKind::Expose(ports), _) => self.expose(df, step, ports, span),
            (InstructionKind::Copy(c), Expanded::Copy(e)) if c.from.is_none() => {
                self.ignored_sources("Copy", &e.sources, span, opts);
            }
            (InstructionKind::Add(_), Expanded::Add(e)) => {
                let local: Vec<String> = e
                    .sources
                    .iter()
                    .filter(|s| !is_remote_source(s))
                    .cloned()
                    .collect();
                self.ignored_sources("Add", &local, span, opts);
            }
            _ => {}
        }
    }

    fn undefined_vars(&mut self, step: &Step, lint: &StageLint, span: Span) {
        if !lint.env_known {
            return;
        }
        let keys: Vec<&str> = step.env.iter().map(|(k, _)| k.as_str()).collect();
        for var in &step.undefined {
            let hint = closest(var, &keys, true)
                .map(|m| format!(" (did you mean ${m}?)"))
                .unwrap_or_default();
            self.warn(
                &rules::UNDEFINED_VAR,
                format!("Usage of undefined variable '${var}'{hint}"),
                span,
            );
        }
    }

    fn legacy_key_value(&mut self, name: &str, span: Span) {
        self.warn(
            &rules::LEGACY_KEY_VALUE_FORMAT,
            format!(
                "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
            ),
            span,
        );
    }

    /// `SecretsUsedInArgOrEnv`: a name with a secret-like word (`_`-separated, any case) and no
    /// word that marks it harmless.
    fn secret_key(&mut self, instruction: &str, key: &str, span: Span) {
        const SECRET: &[&str] = &[
            "apikey",
            "auth",
            "credential",
            "credentials",
            "key",
            "password",
            "pword",
            "passwd",
            "secret",
            "token",
        ];
        const HARMLESS: &[&str] = &["public", "file", "version"];
        let lower = key.to_lowercase();
        let words: Vec<&str> = lower.split('_').collect();
        // `(?:_|^)(word)(?:_|$)`: the word is a whole `_`-separated part.
        let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
        if has(SECRET) && !has(HARMLESS) {
            self.warn(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                    quote(key)
                ),
                span,
            );
        }
    }

    /// `MultipleInstructionsDisallowed`, reported at the earlier instruction (the one ignored).
    fn used_once(&mut self, name: &str, last: &mut Option<Span>, span: Span) {
        if let Some(previous) = last.replace(span) {
            self.warn(
                &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                format!(
                    "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
                ),
                previous,
            );
        }
    }

    fn json_args(&mut self, name: &str, shell_form_without_shell: bool, span: Span) {
        if shell_form_without_shell {
            self.warn(
                &rules::JSON_ARGS_RECOMMENDED,
                format!(
                    "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                ),
                span,
            );
        }
    }

    /// `ExposeProtoCasing` and `ExposeInvalidFormat`, on the ports as expanded and split.
    fn expose(&mut self, df: &Dockerfile, step: &Step, ports: &[String], span: Span) {
        let lexer = Lexer::new(df.escape());
        for port in ports {
            let Ok(words) = lexer.process_words(port, &step.env) else {
                continue;
            };
            for raw in words {
                let (ip, host_port, container) = split_port_parts(&raw);
                let (number, proto) = container.split_once('/').unwrap_or((container, ""));
                let valid_proto =
                    matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp");
                if number.is_empty() || !valid_proto {
                    // BuildKit fails on this port before linting it.
                    continue;
                }
                if proto != proto.to_lowercase() {
                    self.warn(
                        &rules::EXPOSE_PROTO_CASING,
                        format!(
                            "Defined protocol '{raw}' in EXPOSE instruction should be lowercase"
                        ),
                        span,
                    );
                }
                if !ip.is_empty() || !host_port.is_empty() {
                    self.warn(
                        &rules::EXPOSE_INVALID_FORMAT,
                        format!(
                            "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
                        ),
                        span,
                    );
                }
            }
        }
    }

    /// `CopyIgnoredFile`: context sources that `.dockerignore` excludes. Skipped when a `!`
    /// pattern exists, as BuildKit does: re-included files below excluded directories cannot be
    /// told apart statically.
    fn ignored_sources(&mut self, cmd: &str, sources: &[String], span: Span, opts: &LintOptions) {
        let Some(matcher) = &opts.ignore else { return };
        if matcher.patterns().is_empty() || matcher.has_exclusions() {
            return;
        }
        for src in sources {
            let cleaned = clean_path(src);
            if matcher.matches(&cleaned).unwrap_or(false) {
                self.warn(
                    &rules::COPY_IGNORED_FILE,
                    format!(
                        "Attempting to {cmd} file {} that is excluded by .dockerignore",
                        quote(&cleaned)
                    ),
                    span,
                );
            }
        }
    }
}

/// BuildKit's `splitParts` of an EXPOSE port: `[ip:]host-port:container-port` (an IPv6 address
/// keeps its colons).
fn split_port_parts(raw: &str) -> (String, &str, &str) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [container] => (String::new(), "", container),
        [host, container] => (String::new(), host, container),
        [ip, host, container] => (ip.to_string(), host, container),
        [ip @ .., host, container] => (ip.join(":"), host, container),
        [] => (String::new(), "", ""),
    }
}

/// An ADD source that is fetched rather than read from the context (URL or git).
fn is_remote_source(src: &str) -> bool {
    src.contains("://") || src.starts_with("git@")
}

/// `system.IsAbs` for the stage's OS.
fn is_absolute(path: &str, os: &str) -> bool {
    if os == "windows" {
        let bytes = path.as_bytes();
        path.starts_with(['/', '\\'])
            || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
    } else {
        path.starts_with('/')
    }
}
