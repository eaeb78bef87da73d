//! Data-driven conformance harnesses over the vectors in `testdata/conformance/` (copied from
//! BuildKit, moby/patternmatcher and real-world Dockerfiles). Every harness also reads the same
//! layout from `$STRATA_EXTRA_CONFORMANCE/<folder>` when that variable is set, so cases can be added
//! without code. Each harness collects every failing case and reports them together.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_frontend::dockerignore::{MatchType, Matcher, compile_pattern, read_patterns};
use strata_frontend::shell::Lexer;

/// The directories holding `folder`: the copy in the repository, then the extra one.
fn roots(folder: &str) -> Vec<PathBuf> {
    let mut out = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/conformance")
            .join(folder),
    ];
    if let Some(extra) = std::env::var_os("STRATA_EXTRA_CONFORMANCE") {
        let dir = PathBuf::from(extra).join(folder);
        if dir.exists() {
            out.push(dir);
        }
    }
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn report(what: &str, checked: usize, failures: Vec<String>) {
    assert!(checked > 0, "{what}: no cases found");
    assert!(
        failures.is_empty(),
        "{what}: {} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_testfiles_dump_like_buildkit() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerfile-parser/testfiles") {
        let mut cases: Vec<PathBuf> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        for case in cases {
            let dockerfile = case.join("Dockerfile");
            if !dockerfile.exists() {
                continue;
            }
            checked += 1;
            let expected = read(&case.join("result"));
            match strata_frontend::parse_ast(&read(&dockerfile), "Dockerfile") {
                Ok(ast) => {
                    let got = strata_frontend::ast::dump(&ast.nodes);
                    if got != expected {
                        failures.push(format!(
                            "{}:\n--- expected\n{expected}--- got\n{got}",
                            case.display()
                        ));
                    }
                }
                Err(e) => failures.push(format!("{}: {}", case.display(), e.render())),
            }
        }
    }
    report("parser testfiles", checked, failures);
}

#[test]
fn heredocs_are_extracted_like_buildkit() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerfile-parser/heredoc") {
        let expected: Value = serde_json::from_str(&read(&root.join("expected.json"))).unwrap();
        let ast = strata_frontend::parse_ast(&read(&root.join("Dockerfile")), "Dockerfile")
            .unwrap_or_else(|e| panic!("{}", e.render()));
        for (i, want) in expected["children_heredocs"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            checked += 1;
            let Some(node) = ast.nodes.get(i + 1) else {
                failures.push(format!("instruction {} missing", i + 1));
                continue;
            };
            let got: Vec<Value> = node
                .heredocs
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "Name": h.name,
                        "Content": h.content,
                        "Expand": h.expand,
                        "Chomp": h.chomp,
                        "FileDescriptor": h.file_descriptor,
                    })
                })
                .collect();
            let want: Vec<Value> = want.as_array().cloned().unwrap_or_default();
            if got != want {
                failures.push(format!(
                    "instruction {} ({}): expected {want:?}, got {got:?}",
                    i + 1,
                    node.original
                ));
            }
        }
    }
    report("heredoc", checked, failures);
}

#[test]
fn instruction_lines_match_buildkit() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerfile-parser/testfile-line") {
        let expected: Value = serde_json::from_str(&read(&root.join("expected.json"))).unwrap();
        let ast = strata_frontend::parse_ast(&read(&root.join("Dockerfile")), "Dockerfile")
            .unwrap_or_else(|e| panic!("{}", e.render()));
        checked += 1;
        let got: Vec<(u64, u64)> = ast
            .nodes
            .iter()
            .map(|n| (n.start_line as u64, n.end_line as u64))
            .collect();
        let want: Vec<(u64, u64)> = expected["children_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
            .collect();
        if got != want {
            failures.push(format!("children lines: expected {want:?}, got {got:?}"));
        }
        let root_lines = (got.first().map(|l| l.0), got.last().map(|l| l.1));
        let want_root = (
            expected["root"]["StartLine"].as_u64(),
            expected["root"]["EndLine"].as_u64(),
        );
        if root_lines != want_root {
            failures.push(format!(
                "root lines: expected {want_root:?}, got {root_lines:?}"
            ));
        }
    }
    report("testfile-line", checked, failures);
}

#[test]
fn env_var_test_expands_like_buildkit() {
    let env: HashMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("shell-words") {
        let path = root.join("envVarTest");
        if !path.exists() {
            continue;
        }
        for (n, line) in read(&path).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
            let [platform, source, expected] = fields[..] else {
                failures.push(format!("line {}: malformed: {line}", n + 1));
                continue;
            };
            if platform != "A" && platform != "U" {
                continue;
            }
            checked += 1;
            match (lexer.process_word(source, &env), expected) {
                (Err(_), "error") => {}
                (Ok(e), "error") => failures.push(format!(
                    "line {}: {source}: expected an error, got {:?}",
                    n + 1,
                    e.value
                )),
                (Err(e), _) => failures.push(format!("line {}: {source}: {e}", n + 1)),
                (Ok(e), want) if e.value != want => failures.push(format!(
                    "line {}: {source}: expected {want:?}, got {:?}",
                    n + 1,
                    e.value
                )),
                _ => {}
            }
        }
    }
    report("envVarTest", checked, failures);
}

fn string_set(v: &Value) -> Option<BTreeSet<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

#[test]
fn process_word_extra_cases() {
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("shell-words") {
        let path = root.join("process_word_extra.jsonl");
        if !path.exists() {
            continue;
        }
        for line in read(&path).lines().filter(|l| !l.trim().is_empty()) {
            checked += 1;
            let case: Value = serde_json::from_str(line).unwrap();
            let env: HashMap<String, String> = case["envs"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let input = case["input"].as_str().unwrap();
            let result = lexer.process_word(input, &env);
            if case["expectedErr"].as_bool() == Some(true) {
                match result {
                    Ok(e) => {
                        failures.push(format!("{input}: expected an error, got {:?}", e.value))
                    }
                    Err(e) => {
                        if let Some(part) = case["errorContains"].as_str()
                            && !e.message().contains(part)
                        {
                            failures.push(format!("{input}: error {e} lacks {part:?}"));
                        }
                    }
                }
                continue;
            }
            match result {
                Err(e) => failures.push(format!("{input}: {e}")),
                Ok(e) => {
                    if Some(e.value.as_str()) != case["expected"].as_str() {
                        failures.push(format!(
                            "{input}: expected {}, got {:?}",
                            case["expected"], e.value
                        ));
                    }
                    if let Some(want) = string_set(&case["matches"])
                        && want != e.matched
                    {
                        failures.push(format!("{input}: matched {:?}, want {want:?}", e.matched));
                    }
                    if let Some(want) = string_set(&case["unmatched"])
                        && want != e.unmatched
                    {
                        failures.push(format!(
                            "{input}: unmatched {:?}, want {want:?}",
                            e.unmatched
                        ));
                    }
                }
            }
        }
    }
    report("process_word_extra", checked, failures);
}

#[test]
fn dockerignore_matches_like_patternmatcher() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerignore") {
        let path = root.join("matches.tsv");
        if !path.exists() {
            continue;
        }
        for line in read(&path).lines().skip(1).filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let [suite, api, patterns, file, expect, error, platform] = f[..] else {
                failures.push(format!("malformed row: {line}"));
                continue;
            };
            if !matches!(platform, "all" | "unix" | "unix-only-if-backslash") {
                continue;
            }
            checked += 1;
            let patterns: Vec<String> = serde_json::from_str(patterns).unwrap();
            let result = Matcher::new(&patterns).and_then(|m| match api {
                "MatchesOrParentMatches" => m.matches(file),
                _ => m.matches_single_parent(file),
            });
            let case = format!("{suite} {api} {patterns:?} {file}");
            match (result, error.is_empty()) {
                (Ok(got), true) => {
                    if got != (expect == "true") {
                        failures.push(format!("{case}: expected {expect}, got {got}"));
                    }
                }
                (Err(_), false) => {}
                (Ok(got), false) => {
                    failures.push(format!("{case}: expected error {error}, got {got}"))
                }
                (Err(e), true) => failures.push(format!("{case}: unexpected error {e}")),
            }
        }
    }
    report("matches.tsv", checked, failures);
}

#[test]
fn dockerignore_patterns_compile_like_patternmatcher() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerignore") {
        let path = root.join("compile.jsonl");
        if !path.exists() {
            continue;
        }
        for line in read(&path).lines().filter(|l| !l.trim().is_empty()) {
            checked += 1;
            let case: Value = serde_json::from_str(line).unwrap();
            let pattern = case["pattern"].as_str().unwrap();
            let want_type = match case["matchType"].as_str().unwrap() {
                "exactMatch" => MatchType::Exact,
                "prefixMatch" => MatchType::Prefix,
                "suffixMatch" => MatchType::Suffix,
                _ => MatchType::Regexp,
            };
            for (sep, key) in [('/', "regexp_slash"), ('\\', "regexp_backslash")] {
                let p = if sep == '\\' {
                    pattern.replace('/', "\\")
                } else {
                    pattern.to_string()
                };
                let (got_type, got_re) = compile_pattern(&p, sep);
                if got_type != want_type || got_re != case[key].as_str().unwrap() {
                    failures.push(format!(
                        "{pattern} ({sep}): expected {want_type:?} {}, got {got_type:?} {got_re}",
                        case[key]
                    ));
                }
            }
        }
    }
    report("compile.jsonl", checked, failures);
}

#[test]
fn dockerignore_files_read_like_ignorefile() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for root in roots("dockerignore") {
        let path = root.join("ignorefile_readall.json");
        if !path.exists() {
            continue;
        }
        checked += 1;
        let case: Value = serde_json::from_str(&read(&path)).unwrap();
        let got = read_patterns(case["input"].as_str().unwrap()).unwrap();
        let want: Vec<String> = serde_json::from_value(case["expected_patterns"].clone()).unwrap();
        if got != want {
            failures.push(format!("expected {want:?}, got {got:?}"));
        }
    }
    report("ignorefile_readall", checked, failures);
}

/// The corpus Dockerfiles to parse: every file under `dockerfiles/` except the metadata
/// (`COMMIT`, `LICENSE*`, the indexes), skipping only what `buildkit-integration/index.jsonl`
/// allows (`has_printf_verbs`: Go format strings; `windows_variant`).
fn corpus() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, out);
            } else if !(name == "COMMIT"
                || name.starts_with("LICENSE")
                || name.ends_with(".json")
                || name.ends_with(".jsonl"))
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for root in roots("dockerfiles") {
        let mut skipped = BTreeSet::new();
        let bk = root.join("buildkit-integration/index.jsonl");
        if bk.exists() {
            for line in read(&bk).lines().filter(|l| !l.trim().is_empty()) {
                let e: Value = serde_json::from_str(line).unwrap();
                if e["has_printf_verbs"].as_bool() == Some(true)
                    || e["windows_variant"].as_bool() == Some(true)
                {
                    skipped.insert(
                        root.join("buildkit-integration")
                            .join(e["file"].as_str().unwrap()),
                    );
                }
            }
        }
        let mut all = Vec::new();
        walk(&root, &mut all);
        files.extend(all.into_iter().filter(|f| !skipped.contains(f)));
    }
    files
}

#[test]
fn corpus_dockerfiles_parse() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in corpus() {
        checked += 1;
        let text = read(&file);
        if let Err(e) = strata_frontend::parse_ast(&text, &file.display().to_string()) {
            failures.push(e.render());
        }
    }
    report("dockerfiles corpus (parser)", checked, failures);
}

#[test]
fn corpus_real_world_dockerfiles_have_valid_instructions() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in corpus() {
        if file.to_string_lossy().contains("buildkit-integration") {
            continue;
        }
        checked += 1;
        if let Err(e) = strata_frontend::parse(&read(&file), &file.display().to_string()) {
            failures.push(e.render());
        }
    }
    report("dockerfiles corpus (instructions)", checked, failures);
}
