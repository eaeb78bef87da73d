//! End-to-end tests of the `strata debug` commands, through the real binary.

use std::path::PathBuf;

use assert_cmd::Command;

fn strata() -> Command {
    Command::cargo_bin("strata").unwrap()
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd.assert().code(1).get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn dump_ast_prints_buildkits_dump() {
    let case = repo("testdata/conformance/dockerfile-parser/testfiles/flags");
    let expected = std::fs::read_to_string(case.join("result")).unwrap();
    let got = stdout(
        strata()
            .args(["debug", "dump-ast"])
            .arg(case.join("Dockerfile")),
    );
    assert_eq!(got, expected);
    let from_stdin = stdout(
        strata()
            .args(["debug", "dump-ast", "-"])
            .write_stdin(std::fs::read(case.join("Dockerfile")).unwrap()),
    );
    assert_eq!(from_stdin, expected);
}

#[test]
fn dump_ast_reports_parse_errors_with_the_line() {
    let err = stderr_of_failure(
        strata()
            .args(["debug", "dump-ast", "-"])
            .write_stdin("# escape=x\nFROM busybox\n"),
    );
    assert!(
        err.contains("invalid escape token 'x' does not match ` or \\"),
        "{err}"
    );
    assert!(err.contains("<stdin>:1:1"), "{err}");
    let err = stderr_of_failure(
        strata()
            .args(["debug", "dump-ast", "-"])
            .write_stdin("FROM busybox\nRUN <<EOF\necho\n"),
    );
    assert!(err.contains("unterminated heredoc"), "{err}");
}

#[test]
fn expand_prints_value_and_variables() {
    let out = stdout(strata().args(["debug", "expand", "--env", "A=1", "--", "$A${B:-x}"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["value"], "1x");
    assert_eq!(v["matched"], serde_json::json!(["A"]));
    assert_eq!(v["unmatched"], serde_json::json!(["B"]));
    let out = stdout(strata().args([
        "debug",
        "expand",
        "--words",
        "--env",
        "X=a b",
        "--",
        "$X \"c d\"",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["words"], serde_json::json!(["a", "b", "c d"]));
    let err = stderr_of_failure(strata().args(["debug", "expand", "--", "${A"]));
    assert!(err.contains("failed to process"), "{err}");
}

#[test]
fn ignore_applies_dockerignore_semantics() {
    let out = stdout(strata().args([
        "debug",
        "ignore",
        "--pattern",
        "docs",
        "--pattern",
        "!docs/README.md",
        "--",
        "docs/a.md",
        "docs/README.md",
        "src/main.rs",
    ]));
    assert_eq!(
        out,
        "excluded docs/a.md\nincluded docs/README.md\nincluded src/main.rs\n"
    );
    let err = stderr_of_failure(strata().args(["debug", "ignore", "--pattern", "[", "x"]));
    assert!(err.contains("syntax error in pattern"), "{err}");
}

#[test]
fn plan_shows_the_expanded_graph() {
    let out = stdout(
        strata()
            .args(["debug", "plan", "-f"])
            .arg(repo("testdata/example/Dockerfile"))
            .args(["--build-arg", "GREETING=hi", "--build-arg", "UNUSED=1"]),
    );
    assert!(
        out.contains("stage 0 (build): FROM ${BASE} AS build"),
        "{out}"
    );
    assert!(out.contains("base: image busybox"), "{out}");
    assert!(out.contains("ARG GREETING=\"hi\""), "{out}");
    assert!(
        out.contains("COPY --from=<stage 0> \"/out/\" \"/app/\""),
        "{out}"
    );
    assert!(out.contains("target: stage 1"), "{out}");
    assert!(out.contains("unused build args: UNUSED"), "{out}");
}

#[test]
fn plan_errors_exit_one() {
    let example = repo("testdata/example/Dockerfile");
    let err = stderr_of_failure(
        strata()
            .args(["debug", "plan", "--target", "nope", "-f"])
            .arg(&example),
    );
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
    let err = stderr_of_failure(strata().args(["debug", "plan", "-f", "-"]).write_stdin(
        "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n",
    ));
    assert!(
        err.contains("circular dependency detected on stage: a"),
        "{err}"
    );
    let err = stderr_of_failure(
        strata()
            .args(["debug", "plan", "-f", "-"])
            .write_stdin("FROM busybox\nFORM x\n"),
    );
    assert!(
        err.contains(
            "dockerfile parse error on line 2: unknown instruction: FORM (did you mean FROM?)"
        ),
        "{err}"
    );
    assert!(err.contains("FORM x"), "the offending line is shown: {err}");
}

#[test]
fn lint_prints_warnings_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# check=experimental=CopyIgnoredFile\nFROM scratch as Build\nCOPY app.env /\nCMD run\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "*.env\n").unwrap();
    let out = stdout(
        strata()
            .env("STRATA_ROOT", dir.path().join("no-store"))
            .args(["debug", "lint"])
            .arg(dir.path()),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<(&str, u64)> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["ruleName"].as_str().unwrap(),
                w["location"]["start"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("StageNameCasing", 2),
            ("FromAsCasing", 2),
            ("CopyIgnoredFile", 3),
            ("JSONArgsRecommended", 4)
        ]
    );
    let copy = &report["warnings"][2];
    assert_eq!(
        copy["detail"],
        "Attempting to Copy file \"app.env\" that is excluded by .dockerignore"
    );
    assert_eq!(copy["location"]["file"], "Dockerfile");
    assert_eq!(copy["location"]["end"]["column"], 14);
    assert_eq!(report["error"], serde_json::Value::Null);
    assert!(!dir.path().join("no-store").exists());

    // `-f -` reads standard input; `error=true` makes warnings fail the check.
    let out = strata()
        .env("STRATA_ROOT", dir.path().join("no-store"))
        .args(["debug", "lint", "-f", "-", "--build-arg"])
        .arg("BUILDKIT_DOCKERFILE_CHECK=error=true")
        .arg(dir.path())
        .write_stdin("FROM scratch\nMAINTAINER me\n")
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        report["error"]["message"],
        "lint violation found for rules: MaintainerDeprecated"
    );
}
