//! `strata debug dump-ast | expand | ignore | plan`: the frontend's parser, shell lexer,
//! `.dockerignore` matcher and planner, reachable for the conformance suites.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use strata_frontend::eval::{BaseState, EvaluatedStage, describe, evaluate_stage};
use strata_frontend::plan::{Base, BuildOptions, Platform, plan};
use strata_frontend::shell::Lexer;

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

/// The platform strata runs on, in the frontend's terms.
fn host_platform() -> Platform {
    let host = strata_store::Platform::host();
    Platform::new(
        &host.os,
        &host.architecture,
        host.variant.as_deref().unwrap_or(""),
    )
}

pub fn plan_command(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (text, name) = read_input(&args.file)?;
    let df = match strata_frontend::parse(&text, &name) {
        Ok(df) => df,
        Err(e) => return Ok(fail(&e)),
    };
    let mut build_args = BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            // Docker takes `--build-arg NAME` from the environment.
            None => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
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
