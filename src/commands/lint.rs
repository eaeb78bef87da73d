//! Lint checks for `strata build --check`, `strata build` and `strata debug lint`: the
//! frontend's linter fed with what the command knows besides the Dockerfile, namely the context's
//! `.dockerignore` and the configs of base images already in the store.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use strata_frontend::dockerignore::{Matcher, ignore_file_names, read_patterns};
use strata_frontend::lint::{BaseImage, LintOptions, LintReport, UnknownBase, base_image_names};
use strata_frontend::plan::Platform;
use strata_store::Store;

/// A Dockerfile to lint, as a build command has resolved it.
pub struct LintInput<'a> {
    /// The Dockerfile's text.
    pub dockerfile: &'a str,
    /// Where it was read from (`None`: standard input).
    pub dockerfile_path: Option<&'a Path>,
    /// The build context directory, when there is one.
    pub context: Option<&'a Path>,
    /// `--build-arg` values.
    pub build_args: &'a BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
}

/// The platform strata builds for and on: the host's, in the frontend's terms.
pub fn host_platform() -> Platform {
    let host = strata_store::Platform::host();
    Platform::new(
        &host.os,
        &host.architecture,
        host.variant.as_deref().unwrap_or(""),
    )
}

/// Lints `input`. Base images found in `store` are linted with their config (environment,
/// `SHELL`, `ONBUILD`, platform); in stages on any other image, undefined variables are not
/// reported, since the image may define them.
pub fn lint(input: &LintInput, store: Option<&Store>) -> anyhow::Result<LintReport> {
    let file_name = input
        .dockerfile_path
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_string());
    let mut opts = LintOptions::new(host_platform());
    opts.build_args = input.build_args.clone();
    opts.target = input.target.map(str::to_string);
    opts.unknown_base = UnknownBase::Unchecked;
    opts.ignore = ignore_matcher(input, &file_name)?;
    let df = match strata_frontend::parse(input.dockerfile, &file_name) {
        Ok(df) => df,
        // The frontend reports the parse error with the warnings found before it.
        Err(_) => {
            return Ok(strata_frontend::lint::check_text(
                input.dockerfile,
                &file_name,
                &opts,
            ));
        }
    };
    if let Some(store) = store {
        for name in base_image_names(&df, &opts) {
            if let Ok(image) = store.resolve_for(&name, &strata_store::Platform::host()) {
                opts.base_images
                    .insert(name, base_image(&image.platform(), &image.config_json));
            }
        }
    }
    Ok(strata_frontend::lint::check(&df, &opts))
}

/// `strata build --check`: the report as `docker build --check` prints it on standard output,
/// the error (lint violations under `error=true`, or what stopped the check) on standard error.
pub fn check(input: &LintInput, store: &Store) -> anyhow::Result<ExitCode> {
    let report = lint(input, Some(store))?;
    print!("{}", report.render());
    if let Some(error) = report.render_error() {
        if !report.warnings.is_empty() {
            println!();
        }
        eprint!("{error}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Before a build: one line per warning on standard error (none when `quiet`), and the failure
/// when `error=true` makes warnings fatal. A check that cannot run stops nothing: the build
/// reports its own errors.
pub fn warn_before_build(input: &LintInput, store: &Store, quiet: bool) -> Option<ExitCode> {
    let report = lint(input, Some(store)).ok()?;
    if !quiet {
        eprint!("{}", report.render_short());
    }
    if report.fails_build() {
        eprint!("{}", report.render_error()?);
        return Some(ExitCode::FAILURE);
    }
    None
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` beside the Dockerfile, else
/// `.dockerignore` at the root of the context.
fn ignore_matcher(input: &LintInput, file_name: &str) -> anyhow::Result<Option<Matcher>> {
    let Some(context) = input.context else {
        return Ok(None);
    };
    let [beside, root] = ignore_file_names(file_name);
    let beside = input
        .dockerfile_path
        .and_then(Path::parent)
        .map(|dir| dir.join(beside));
    for path in beside.into_iter().chain([context.join(root)]) {
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let patterns = read_patterns(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        let matcher = Matcher::new(&patterns)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        return Ok(Some(matcher));
    }
    Ok(None)
}

/// What the linter needs of an image config (Docker's field names: `Shell` and `OnBuild` are
/// not OCI's).
fn base_image(platform: &strata_store::Platform, config: &Value) -> BaseImage {
    let strings = |key: &str| -> Vec<String> {
        config["config"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    BaseImage {
        platform: Some(Platform::new(
            &platform.os,
            &platform.architecture,
            platform.variant.as_deref().unwrap_or(""),
        )),
        env: strings("Env"),
        workdir: config["config"]["WorkingDir"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        shell: strings("Shell"),
        onbuild: strings("OnBuild"),
    }
}
