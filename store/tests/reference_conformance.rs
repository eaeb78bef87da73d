//! distribution/reference's test tables (`testdata/conformance/reference/tables.json`, and
//! `$STRATA_EXTRA_CONFORMANCE/reference/tables.json` when set), run against our parser as the
//! upstream tests use each table (see the README beside the tables).

use std::path::PathBuf;

use serde_json::Value;
use strata_store::reference::{
    self, AnyReference, Reference, familiar_match, parse_any, parse_docker_ref, parse_named,
    parse_normalized_named, with_name,
};

fn table_files() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/conformance/reference/tables.json"),
    ];
    if let Some(extra) = std::env::var_os("STRATA_EXTRA_CONFORMANCE") {
        let f = PathBuf::from(extra).join("reference/tables.json");
        if f.exists() {
            files.push(f);
        }
    }
    files
}

fn s<'a>(case: &'a Value, key: &str) -> &'a str {
    case.get(key).and_then(Value::as_str).unwrap_or("")
}

fn err_ident(case: &Value) -> Option<&str> {
    case.get("err")?.get("$ident")?.as_str()
}

/// Checks an error against the expected upstream identifier (when the case names one).
fn check_err(
    failures: &mut Vec<String>,
    table: &str,
    case: &Value,
    got: Result<String, reference::ReferenceError>,
) {
    match (err_ident(case), case.get("err").is_some(), got) {
        (Some(ident), _, Err(e)) if e.ident() != Some(ident) => {
            failures.push(format!("{table} {case}: expected {ident}, got {e:?}"))
        }
        (_, true, Ok(v)) => failures.push(format!("{table} {case}: expected an error, got {v}")),
        _ => {}
    }
}

fn expect_eq(
    failures: &mut Vec<String>,
    table: &str,
    case: &Value,
    what: &str,
    got: &str,
    want: &str,
) {
    if got != want {
        failures.push(format!(
            "{table} {case}: {what} is {got:?}, expected {want:?}"
        ));
    }
}

/// Checks name/domain/tag/digest of a `Parse` result against a TestReferenceParse-style case.
fn check_parsed(failures: &mut Vec<String>, table: &str, case: &Value, r: &Reference) {
    for (key, got) in [
        ("repository", Some(r.name())),
        ("name", Some(r.name())),
        ("domain", Some(r.domain().to_string())),
    ] {
        if case.get(key).is_some() {
            expect_eq(
                failures,
                table,
                case,
                key,
                &got.unwrap_or_default(),
                s(case, key),
            );
        }
    }
    expect_eq(
        failures,
        table,
        case,
        "tag",
        r.tag().unwrap_or(""),
        s(case, "tag"),
    );
    expect_eq(
        failures,
        table,
        case,
        "digest",
        r.digest().unwrap_or(""),
        s(case, "digest"),
    );
}

fn run_table(name: &str, cases: &[Value], failures: &mut Vec<String>) -> usize {
    let base = name.split('.').next().unwrap_or(name);
    for case in cases {
        match base {
            "TestReferenceParse" | "TestSerialization" => {
                let input = s(case, "input");
                match Reference::parse(input) {
                    Ok(r) if case.get("err").is_none() => check_parsed(failures, name, case, &r),
                    other => check_err(failures, name, case, other.map(|r| r.to_string())),
                }
            }
            "TestWithNameFailure" => check_err(
                failures,
                name,
                case,
                with_name(s(case, "input")).map(|r| r.to_string()),
            ),
            "TestDomainAndPath" => match with_name(s(case, "input")) {
                Ok(r) => {
                    expect_eq(
                        failures,
                        name,
                        case,
                        "domain",
                        r.domain(),
                        s(case, "domain"),
                    );
                    expect_eq(failures, name, case, "path", r.path(), s(case, "path"));
                }
                Err(e) => failures.push(format!("{name} {case}: {e}")),
            },
            "TestWithTag" | "TestWithDigest" => {
                let combined = with_name(s(case, "name")).and_then(|r| {
                    let r = if case.get("digest").is_some() && base == "TestWithTag" {
                        r.with_digest(s(case, "digest"))?
                    } else {
                        r
                    };
                    let r = if base == "TestWithDigest" && case.get("tag").is_some() {
                        r.with_tag(s(case, "tag"))?
                    } else {
                        r
                    };
                    if base == "TestWithTag" {
                        r.with_tag(s(case, "tag"))
                    } else {
                        r.with_digest(s(case, "digest"))
                    }
                });
                match combined {
                    Ok(r) => expect_eq(
                        failures,
                        name,
                        case,
                        "String()",
                        &r.to_string(),
                        s(case, "combined"),
                    ),
                    Err(e) => failures.push(format!("{name} {case}: {e}")),
                }
            }
            "TestParseNamed" => match parse_named(s(case, "input")) {
                Ok(r) if case.get("err").is_none() => {
                    expect_eq(
                        failures,
                        name,
                        case,
                        "domain",
                        r.domain(),
                        s(case, "domain"),
                    );
                    expect_eq(failures, name, case, "path", r.path(), s(case, "path"));
                }
                other => check_err(failures, name, case, other.map(|r| r.to_string())),
            },
            "TestNormalizedSplitHostname" => match parse_normalized_named(s(case, "input")) {
                Ok(r) => {
                    expect_eq(
                        failures,
                        name,
                        case,
                        "domain",
                        r.domain(),
                        s(case, "domain"),
                    );
                    expect_eq(failures, name, case, "path", r.path(), s(case, "path"));
                }
                Err(e) => failures.push(format!("{name} {case}: {e}")),
            },
            "TestParseRepositoryInfo" => {
                let mut inputs = vec![s(case, "FamiliarName"), s(case, "FullName")];
                if !s(case, "AmbiguousName").is_empty() {
                    inputs.push(s(case, "AmbiguousName"));
                }
                for input in inputs {
                    match parse_normalized_named(input) {
                        Ok(r) => {
                            expect_eq(
                                failures,
                                name,
                                case,
                                "familiar name",
                                &r.familiar_name(),
                                s(case, "FamiliarName"),
                            );
                            expect_eq(
                                failures,
                                name,
                                case,
                                "String()",
                                &r.to_string(),
                                s(case, "FullName"),
                            );
                            expect_eq(
                                failures,
                                name,
                                case,
                                "domain",
                                r.domain(),
                                s(case, "Domain"),
                            );
                            expect_eq(
                                failures,
                                name,
                                case,
                                "path",
                                r.path(),
                                s(case, "RemoteName"),
                            );
                        }
                        Err(e) => failures.push(format!("{name} {case} ({input}): {e}")),
                    }
                }
            }
            "TestParseAnyReference" => {
                let got = parse_any(s(case, "Reference"));
                let want = match case.get("Expected").and_then(Value::as_str) {
                    Some(d) => Ok(AnyReference::Digest(d.to_string())),
                    None => Reference::parse(s(case, "Equivalent")).map(AnyReference::Named),
                };
                match (got, want) {
                    (Ok(g), Ok(w)) => expect_eq(
                        failures,
                        name,
                        case,
                        "reference",
                        &g.to_string(),
                        &w.to_string(),
                    ),
                    (g, w) => {
                        if case.get("err").is_none() {
                            failures.push(format!("{name} {case}: got {g:?}, expected {w:?}"));
                        }
                    }
                }
            }
            "TestMatch" => {
                let r = parse_any(s(case, "reference"));
                let want = case
                    .get("expected")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                match r {
                    Ok(r) if familiar_match(s(case, "pattern"), &r) == want => {}
                    other => {
                        failures.push(format!("{name} {case}: match of {other:?} is not {want}"))
                    }
                }
            }
            "TestParseDockerRef" => match parse_docker_ref(s(case, "input")) {
                Ok(r) => expect_eq(
                    failures,
                    name,
                    case,
                    "String()",
                    &r.to_string(),
                    s(case, "expected"),
                ),
                Err(e) => failures.push(format!("{name} {case}: {e}")),
            },
            "TestValidateReferenceName" | "TestValidateRemoteName" => {
                let input = case.as_str().unwrap_or("");
                let valid =
                    name.ends_with(".validRepoNames") || name.ends_with(".validRepositoryNames");
                let ok = parse_normalized_named(input).is_ok();
                if ok != valid {
                    failures.push(format!(
                        "{name} {input:?}: parse ok = {ok}, expected {valid}"
                    ));
                }
            }
            "TestParseReferenceWithTagAndDigest" | "TestInvalidReferenceComponents" => {
                if !cases.is_empty() {
                    failures.push(format!("{name}: table has cases but no harness"));
                }
                return 0;
            }
            other => {
                failures.push(format!("no harness for table {other}"));
                return 0;
            }
        }
    }
    cases.len()
}

#[test]
fn distribution_reference_tables() {
    let mut failures = Vec::new();
    let mut total = 0;
    for file in table_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let tables: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        for (name, cases) in &tables {
            total += run_table(name, cases.as_array().unwrap(), &mut failures);
        }
    }
    assert!(total > 100, "only {total} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn extra_cases_from_the_readme() {
    let s =
        "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
    let r = parse_normalized_named(s).unwrap();
    assert_eq!(r.to_string(), format!("docker.io/library/{s}"));
    assert!(r.tag().is_some() && r.digest().is_some());
    assert_eq!(r.familiar_string(), s);
    assert!(parse_normalized_named("-foo").is_err());
    let busybox = with_name("busybox").unwrap();
    assert!(busybox.with_tag("-foo").is_err());
    assert!(busybox.with_digest("foo").is_err());
}
