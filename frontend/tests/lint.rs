//! The linter against data: BuildKit's own lint test cases (`testdata/conformance/dockerfile-lint`,
//! also read from `$STRATA_EXTRA_CONFORMANCE/dockerfile-lint`) and strata's cases for what those do
//! not cover (`tests/testdata/lint.json`, same format). A new case is a new JSON object.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_frontend::dockerignore::{Matcher, read_patterns};
use strata_frontend::lint::{BaseImage, LintOptions, UnknownBase, check_text};
use strata_frontend::plan::Platform;

fn case_files() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![manifest.join("../testdata/conformance/dockerfile-lint")];
    if let Some(extra) = std::env::var_os("STRATA_EXTRA_CONFORMANCE") {
        dirs.push(PathBuf::from(extra).join("dockerfile-lint"));
    }
    let mut files = vec![manifest.join("tests/testdata/lint.json")];
    for dir in dirs.iter().filter(|d| d.exists()) {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn str_field<'a>(case: &'a Value, key: &str) -> Option<&'a str> {
    case.get(key).and_then(Value::as_str)
}

fn platform(text: &str) -> Platform {
    Platform::parse(text, &Platform::new("linux", "amd64", "")).unwrap()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn options(case: &Value) -> LintOptions {
    let mut opts = LintOptions::new(platform(
        str_field(case, "target_platform").unwrap_or("linux/amd64"),
    ));
    if let Some(args) = case.get("build_args").and_then(Value::as_object) {
        for (k, v) in args {
            opts.build_args
                .insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    opts.target = str_field(case, "target").map(str::to_string);
    if let Some(text) = str_field(case, "dockerignore") {
        opts.ignore = Some(Matcher::new(&read_patterns(text).unwrap()).unwrap());
    }
    if let Some(images) = case.get("base_images").and_then(Value::as_object) {
        for (name, image) in images {
            let image = BaseImage {
                platform: str_field(image, "platform").map(platform),
                env: strings(image.get("env")),
                workdir: str_field(image, "workdir").unwrap_or("").to_string(),
                shell: strings(image.get("shell")),
                onbuild: strings(image.get("onbuild")),
            };
            opts.base_images.insert(name.clone(), image);
        }
    }
    if str_field(case, "unknown_base") == Some("unchecked") {
        opts.unknown_base = UnknownBase::Unchecked;
    }
    opts
}

type Expected = (u64, String, String, String, String);

fn expected_warnings(case: &Value) -> Vec<Expected> {
    let mut out: Vec<Expected> = case["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["line"].as_u64().unwrap(),
                w["detail"].as_str().unwrap().to_string(),
                w["rule"].as_str().unwrap().to_string(),
                w["description"].as_str().unwrap().to_string(),
                w["url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Everything that is wrong with the report for `case`, empty when it passes.
fn check_case(case: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let dockerfile = str_field(case, "dockerfile").unwrap();
    let report = check_text(dockerfile, "Dockerfile", &options(case));

    let mut got: Vec<Expected> = report
        .warnings
        .iter()
        .map(|w| {
            (
                w.location.span.start.line as u64,
                w.message.clone(),
                w.rule.name.to_string(),
                w.rule.description.to_string(),
                w.rule.url.to_string(),
            )
        })
        .collect();
    got.sort();
    let expected = expected_warnings(case);
    if got != expected {
        problems.push(format!(
            "warnings\n  expected {expected:#?}\n  got {got:#?}"
        ));
    }
    let lines: Vec<usize> = report
        .warnings
        .iter()
        .map(|w| w.location.span.start.line)
        .collect();
    if !lines.is_sorted() {
        problems.push(format!("warnings not in line order: {lines:?}"));
    }

    let message = report.error.as_ref().map(|e| e.message().to_string());
    let wants_error = case.get("error").is_some() || case.get("error_contains").is_some();
    match (&message, wants_error) {
        (None, true) => problems.push("expected an error, got none".into()),
        (Some(m), false) => problems.push(format!("unexpected error: {m}")),
        _ => {}
    }
    if let (Some(m), Some(want)) = (&message, str_field(case, "error"))
        && m != want
    {
        problems.push(format!("error\n  expected {want:?}\n  got      {m:?}"));
    }
    if let Some(m) = &message {
        for part in strings(case.get("error_contains")) {
            if !m.contains(&part) {
                problems.push(format!("error {m:?} lacks {part:?}"));
            }
        }
    }
    if let Some(line) = case.get("error_line").and_then(Value::as_u64) {
        let got = report
            .error
            .as_ref()
            .and_then(|e| e.location())
            .map(|l| l.span.start.line as u64);
        if got != Some(line) {
            problems.push(format!("error line: expected {line}, got {got:?}"));
        }
    }
    if report.failed() != report.error.is_some() {
        problems.push("failed() disagrees with the error".into());
    }
    problems
}

#[test]
fn lint_cases_match_expectations() {
    let mut checked = 0;
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for file in case_files() {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let cases: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        *per_file.entry(file.display().to_string()).or_default() += cases.len();
        for case in &cases {
            checked += 1;
            let problems = check_case(case);
            if !problems.is_empty() {
                failures.push(format!(
                    "{} [{}]: {}",
                    file.file_name().unwrap().to_string_lossy(),
                    str_field(case, "name").unwrap_or("?"),
                    problems.join("\n  ")
                ));
            }
        }
    }
    assert!(
        per_file.values().all(|n| *n > 0),
        "a case file is empty: {per_file:?}"
    );
    assert!(
        checked > 80,
        "only {checked} lint cases found: {per_file:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} lint cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
