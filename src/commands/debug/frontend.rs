//! `strata debug dump-ast | expand | ignore | plan | lint`: the frontend's parser, shell lexer,
//! `.dockerignore` matcher, planner and linter, reachable for the conformance suites.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use strata_frontend::eval::{BaseState, EvaluatedStage, describe, evaluate_stage};
use strata_frontend::plan::{Base, BuildOptions, plan};
use strata_frontend::shell::Lexer;

use crate::commands::lint::{LintInput, host_platform, lint};

#[derive(Debug, Args)]
pub struct DumpAstArgs {
    /// The Dockerfile, or `-` for standard input.
    #[arg(default_value = "Dockerfile")]
    file: String,
}

#[derive(Debug, Args)]
pub struct ExpandArgs {
    /// Print the word split into words (`{"words": [...]}`).
    #[arg(long)]
    words: bool,
    /// A variable of the environment, `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The escape character (`\` or `` ` ``).
    #[arg(long, default_value_t = '\\')]
    escape: char,
    /// The word to expand.
    #[arg(last = true, required = true)]
    word: String,
}

#[derive(Debug, Args)]
pub struct IgnoreArgs {
    /// A `.dockerignore` pattern (repeatable, in order).
    #[arg(long = "pattern", value_name = "P")]
    patterns: Vec<String>,
    /// Paths relative to the context, `/`-separated.
    #[arg(required = true)]
    paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The Dockerfile, or `-` for standard input.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: String,
    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// A build argument, `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile), or `-` for standard input.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// The stage to lint with what it needs (default: every stage).
    #[arg(long)]
    target: Option<String>,
    /// A build argument, `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The build context (for its `.dockerignore`).
    #[arg(default_value = ".")]
    context: PathBuf,
}

/// `--build-arg` values; `KEY` alone takes the value from the environment, as Docker does.
fn build_args(list: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in list {
        match kv.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(kv) {
                    out.insert(kv.clone(), v);
                }
            }
        }
    }
    out
}

fn read_input(file: &str) -> anyhow::Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok((text, "<stdin>".to_string()));
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        file.to_string(),
    ))
}

/// Prints a frontend error for people and returns the failure exit code.
fn fail(err: &strata_frontend::Error) -> ExitCode {
    eprintln!("{}", err.render().trim_end());
    ExitCode::FAILURE
}

pub fn dump_ast(args: DumpAstArgs) -> anyhow::Result<ExitCode> {
    let (text, name) = read_input(&args.file)?;
    match strata_frontend::parse_ast(&text, &name) {
        Ok(ast) => {
            print!("{}", strata_frontend::ast::dump(&ast.nodes));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&e)),
    }
}

pub fn expand(args: ExpandArgs) -> anyhow::Result<ExitCode> {
    let mut env: Vec<(String, String)> = Vec::new();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected NAME=VALUE");
        };
        env.push((k.to_string(), v.to_string()));
    }
    let expansion = match Lexer::new(args.escape).process_word(&args.word, &env) {
        Ok(e) => e,
        Err(e) => return Ok(fail(&e)),
    };
    let out = if args.words {
        serde_json::json!({ "words": expansion.words })
    } else {
        serde_json::json!({
            "value": expansion.value,
            "matched": expansion.matched,
            "unmatched": expansion.unmatched,
        })
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn ignore(args: IgnoreArgs) -> anyhow::Result<ExitCode> {
    let matcher = match strata_frontend::dockerignore::Matcher::new(&args.patterns) {
        Ok(m) => m,
        Err(e) => return Ok(fail(&e)),
    };
    for path in &args.paths {
        match matcher.matches(path) {
            Ok(true) => println!("excluded {path}"),
            Ok(false) => println!("included {path}"),
            Err(e) => return Ok(fail(&e)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plan_command(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (text, name) = read_input(&args.file)?;
    let df = match strata_frontend::parse(&text, &name) {
        Ok(df) => df,
        Err(e) => return Ok(fail(&e)),
    };
    let build_args = build_args(&args.build_args);
    let platform = host_platform();
    let opts = BuildOptions {
        build_args,
        target: args.target,
        target_platform: platform.clone(),
        build_platform: platform,
    };
    let plan = match plan(&df, &opts) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&e)),
    };
    // Printed only once every stage evaluated, so an error leaves no partial plan on stdout.
    let mut out = String::new();
    writeln!(
        out,
        "platforms: build {}, target {}",
        plan.build_platform, plan.target_platform
    )?;
    let mut evaluated: Vec<EvaluatedStage> = Vec::new();
    for planned in &plan.stages {
        let stage = &df.stages[planned.index];
        let label = match &planned.name {
            Some(n) => format!("stage {} ({n})", planned.index),
            None => format!("stage {}", planned.index),
        };
        writeln!(out, "{label}: {}", stage.original)?;
        let (base_text, base_state) = match &planned.base {
            Base::Scratch => ("scratch".to_string(), BaseState::scratch("linux")),
            Base::Image(image) => (
                format!("image {image}"),
                BaseState::from_image(&[], "", &[], "linux"),
            ),
            Base::Stage(i) => (
                format!("stage {i}"),
                evaluated
                    .iter()
                    .find(|e| e.index == *i)
                    .map(|e| e.final_state.clone())
                    .unwrap_or_else(|| BaseState::scratch("linux")),
            ),
        };
        writeln!(out, "  base: {base_text}")?;
        if let Some(p) = &planned.platform {
            writeln!(out, "  platform: {p}")?;
        }
        let deps: Vec<String> = planned
            .depends_on
            .iter()
            .map(|d| format!("stage {d}"))
            .chain(planned.source_images.iter().map(|i| format!("image {i}")))
            .collect();
        if !deps.is_empty() {
            writeln!(out, "  needs: {}", deps.join(", "))?;
        }
        let result = match evaluate_stage(&df, &plan, planned.index, base_state) {
            Ok(r) => r,
            Err(e) => return Ok(fail(&e)),
        };
        for step in &result.steps {
            let mut line = format!(
                "  {:>3}: {}",
                step.instruction.location.start_line,
                describe(step)
            );
            if !step.used_build_args.is_empty() {
                let used: Vec<String> = step
                    .used_build_args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                line.push_str(&format!("   [args: {}]", used.join(" ")));
            }
            writeln!(out, "{line}")?;
        }
        evaluated.push(result);
    }
    let target = &plan.stages[plan.target];
    writeln!(
        out,
        "target: stage {}{}",
        target.index,
        target
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    )?;
    if !plan.unused_build_args.is_empty() {
        writeln!(
            out,
            "unused build args: {}",
            plan.unused_build_args.join(", ")
        )?;
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Lints a Dockerfile as `strata build --check` does and prints the report as JSON; fails
/// when the check would.
pub fn lint_command(args: LintArgs) -> anyhow::Result<ExitCode> {
    let path = match args.file.as_deref() {
        Some("-") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => Some(args.context.join("Dockerfile")),
    };
    let text = match &path {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => read_input("-")?.0,
    };
    let store_root = strata_store::default_root();
    let store = if store_root.exists() {
        Some(crate::commands::image_output::open_store()?)
    } else {
        None
    };
    let build_args = build_args(&args.build_args);
    let report = lint(
        &LintInput {
            dockerfile: &text,
            dockerfile_path: path.as_deref(),
            context: Some(&args.context),
            build_args: &build_args,
            target: args.target.as_deref(),
        },
        store.as_ref(),
    )?;
    println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
