//! The golden build cases (`testdata/golden/`: Buildah's conformance suite and moby's `docker
//! build` suite, each built by BuildKit): every run is built with `strata build` exactly as
//! `golden.py` built it (context restored from its manifest: modes, owners, xattrs, symlinks),
//! then judged as `judge.py` judges it: where BuildKit agreed with the upstream expectation, the
//! image must match BuildKit's (imgtree's rules with judge's flags: config, merged filesystem;
//! history not compared, /dev /proc /sys and the case's `fs_skip` left out); where it did not,
//! the upstream expectation decides (result, `error_regex`, data checks). Runs with a
//! `judge_skip` reason are not judged. Cases run two at a time on one store.

mod build_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use build_support::{DiffOptions, Root, describe, diff, text};
use serde_json::Value;
use strata_codec::sha256_digest;

/// Contents of context files that git cannot hold (a `.git` directory inside a case), known
/// from the upstream tests and checked against the manifest's sha256.
const KNOWN_CONTENTS: &[&str] = &["ref: foo"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

fn case_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for set in ["conformance", "moby-build"] {
        let mut dirs: Vec<PathBuf> = fs::read_dir(golden_dir().join(set))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("case.json").is_file())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

fn sha256_file(path: &Path) -> String {
    sha256_digest(&fs::read(path).unwrap()).digest().to_string()
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let meta = fs::symlink_metadata(&s).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s).unwrap(), &d).unwrap();
        } else if meta.is_dir() {
            copy_tree(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap();
        }
    }
}

/// golden.py's `materialize`: the run's context with the manifest's metadata restored.
fn materialize(
    case_dir: &Path,
    case: &Value,
    run: &Value,
    dest: &Path,
) -> Result<Option<PathBuf>, String> {
    let Some(context) = run["context"].as_str() else {
        return Ok(None);
    };
    let src = case_dir.join(context);
    let ctx = dest.join("context");
    if src.is_dir() {
        copy_tree(&src, &ctx);
    } else {
        fs::create_dir_all(&ctx).unwrap();
    }
    let manifest = if run.get("context_manifest").is_some() {
        &run["context_manifest"]
    } else {
        &case["context_manifest"]
    };
    let Some(entries) = manifest.as_array() else {
        return Ok(Some(ctx));
    };
    for e in entries {
        let p = ctx.join(e["path"].as_str().unwrap());
        match e["type"].as_str().unwrap() {
            "dir" => fs::create_dir_all(&p).unwrap(),
            "symlink" => {
                let want = e["linkname"].as_str().unwrap();
                if fs::read_link(&p).ok().as_deref() != Some(Path::new(want)) {
                    return Err(format!("context symlink {} differs", e["path"]));
                }
            }
            _ => {
                let want = e["sha256"].as_str().unwrap();
                if !p.is_file() {
                    let known = KNOWN_CONTENTS
                        .iter()
                        .find(|c| sha256_digest(c.as_bytes()).digest() == want)
                        .ok_or_else(|| format!("context file {} missing", e["path"]))?;
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, known).unwrap();
                }
                if sha256_file(&p) != want {
                    return Err(format!("context file {} differs", e["path"]));
                }
            }
        }
    }
    // Owners and xattrs first, modes last (chown clears setuid bits), deepest first.
    let mut sorted: Vec<&Value> = entries.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e["path"].as_str().unwrap().matches('/').count()));
    for e in sorted {
        let p = ctx.join(e["path"].as_str().unwrap());
        std::os::unix::fs::lchown(
            &p,
            Some(e["uid"].as_u64().unwrap() as u32),
            Some(e["gid"].as_u64().unwrap() as u32),
        )
        .unwrap();
        for (name, value) in e["xattrs"].as_object().into_iter().flatten() {
            xattr::set(&p, name, value.as_str().unwrap().as_bytes()).unwrap();
        }
        if e["type"] != "symlink" {
            let mode = u32::from_str_radix(e["mode"].as_str().unwrap(), 8).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    Ok(Some(ctx))
}

/// Builds one run as golden.py's `build_cmd` does; returns (success, output).
fn build(
    root: &Root,
    run: &Value,
    ctx: Option<&Path>,
    dockerfile: &Path,
    tags: &[String],
) -> (bool, String) {
    let mut cmd = root.strata();
    cmd.args(["build", "--network=host", "--progress=plain"]);
    if !run["use_cache"].as_bool().unwrap_or(false) {
        cmd.arg("--no-cache");
    }
    for (k, v) in run["build_args"].as_object().into_iter().flatten() {
        match v.as_str() {
            Some(v) => cmd.args(["--build-arg", &format!("{k}={v}")]),
            None => {
                cmd.env_remove(k);
                cmd.args(["--build-arg", k])
            }
        };
    }
    for (k, v) in run["client_env"].as_object().into_iter().flatten() {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    if let Some(t) = run["target"].as_str() {
        cmd.args(["--target", t]);
    }
    for f in run["flags"].as_array().into_iter().flatten() {
        cmd.arg(f.as_str().unwrap());
    }
    for t in tags {
        cmd.args(["-t", t]);
    }
    let mut stdin: Option<Vec<u8>> = None;
    match ctx {
        None => {
            cmd.arg("-");
            stdin = Some(fs::read(dockerfile).unwrap());
        }
        Some(ctx) if run["dockerfile_stdin"].as_bool() == Some(true) => {
            cmd.args(["-f", "-"]).arg(ctx);
            stdin = Some(fs::read(dockerfile).unwrap());
        }
        Some(ctx) if run["omit_dockerfile_flag"].as_bool() == Some(true) => {
            cmd.arg(ctx);
        }
        Some(ctx) => {
            cmd.arg("-f").arg(dockerfile).arg(ctx);
        }
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// golden.py's `check_run`, without the checks on builder-specific output text.
fn check(root: &Root, checks: &Value, tag: &str, desc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let cfg = &desc["config"];
    let fs: BTreeMap<&str, &Value> = desc["filesystem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    let blank = |v: &Value| v.is_null() || v == "";
    for (k, want) in checks["config"].as_object().into_iter().flatten() {
        let got = &cfg[k];
        if build_support::STRING_KEYS.contains(&k.as_str()) && blank(want) && blank(got) {
            continue;
        }
        if got != want {
            problems.push(format!("config {k}: want {want}, got {got}"));
        }
    }
    for (k, want) in checks["config_contains"].as_object().into_iter().flatten() {
        let got = &cfg[k];
        match want {
            Value::Object(m) => {
                for (wk, wv) in m {
                    if got.get(wk) != Some(wv) {
                        problems.push(format!("config {k} lacks {wk}={wv} (got {got})"));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    if !got.as_array().is_some_and(|a| a.contains(item)) {
                        problems.push(format!("config {k} lacks {item} (got {got})"));
                    }
                }
            }
            _ => {}
        }
    }
    for k in checks["config_empty"].as_array().into_iter().flatten() {
        let got = &cfg[k.as_str().unwrap()];
        if !(got.is_null()
            || got == ""
            || got == &Value::Array(vec![])
            || got == &serde_json::json!({}))
        {
            problems.push(format!("config {k}: want empty, got {got}"));
        }
    }
    for (k, items) in checks["config_not_contains"]
        .as_object()
        .into_iter()
        .flatten()
    {
        for item in items.as_array().into_iter().flatten() {
            if cfg[k].as_array().is_some_and(|a| a.contains(item)) {
                problems.push(format!("config {k} must not contain {item}"));
            }
        }
    }
    for (path, content) in checks["files"].as_object().into_iter().flatten() {
        let want = sha256_digest(content.as_str().unwrap().as_bytes());
        if fs.get(path.as_str()).and_then(|e| e["sha256"].as_str()) != Some(want.digest()) {
            problems.push(format!("file {path}: want content {content}"));
        }
    }
    for p in checks["absent"].as_array().into_iter().flatten() {
        if fs.contains_key(p.as_str().unwrap()) {
            problems.push(format!("path {p} must be absent"));
        }
    }
    for p in checks["present"].as_array().into_iter().flatten() {
        if !fs.contains_key(p.as_str().unwrap()) {
            problems.push(format!("path {p} must exist"));
        }
    }
    let history: Vec<&str> = desc["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    for s in checks["history_contains"].as_array().into_iter().flatten() {
        if !history.iter().any(|h| h.contains(s.as_str().unwrap())) {
            problems.push(format!("history lacks {s}"));
        }
    }
    for s in checks["history_not_contains"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if history.iter().any(|h| h.contains(s.as_str().unwrap())) {
            problems.push(format!("history must not contain {s}"));
        }
    }
    for rc in checks["run"].as_array().into_iter().flatten() {
        let args: Vec<String> = rc["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let (code, out, combined) = build_support::run_image(root, tag, &args);
        let label = format!("run {args:?}");
        match rc["exit_code"].as_i64() {
            Some(want) if i64::from(code) != want => {
                problems.push(format!("{label}: exit code {code}, want {want}"))
            }
            None if code != 0 => problems.push(format!("{label}: exit code {code}: {combined}")),
            _ => {}
        }
        if let Some(want) = rc["stdout"].as_str()
            && out != want
        {
            problems.push(format!("{label}: stdout {out:?}, want {want:?}"));
        }
        if let Some(want) = rc["stdout_trimmed"].as_str()
            && out.trim() != want
        {
            problems.push(format!("{label}: stdout {out:?}, want {want:?}"));
        }
        for s in rc["output_contains"].as_array().into_iter().flatten() {
            if !combined.contains(s.as_str().unwrap()) {
                problems.push(format!("{label}: output lacks {s} (got {combined:?})"));
            }
        }
        for s in rc["output_not_contains"].as_array().into_iter().flatten() {
            if combined.contains(s.as_str().unwrap()) {
                problems.push(format!("{label}: output must not contain {s}"));
            }
        }
        if let Some(re) = rc["output_regex"].as_str()
            && !regex::Regex::new(&format!("(?m){re}"))
                .unwrap()
                .is_match(&combined)
        {
            problems.push(format!("{label}: output {combined:?} does not match {re}"));
        }
    }
    problems
}

/// Judges every run of one case; returns (runs judged, problems).
fn judge_case(root: &Root, case_dir: &Path) -> (usize, Vec<String>) {
    let case: Value =
        serde_json::from_slice(&fs::read(case_dir.join("case.json")).unwrap()).unwrap();
    let name = case_dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut judged = 0;
    let mut problems = Vec::new();
    for (i, run) in case["runs"].as_array().unwrap().iter().enumerate() {
        let i = i + 1;
        let reference = &run["reference"];
        if reference["result"] == "not-run" || run["judge_skip"].is_string() {
            continue;
        }
        judged += 1;
        let trust_golden = reference["agrees_with_expected"].as_bool().unwrap_or(false);
        let expected = &run["expected"];
        let want = if trust_golden {
            reference["result"].as_str().unwrap()
        } else {
            expected["result"].as_str().unwrap_or("ok")
        };
        let tmp = tempfile::tempdir().unwrap();
        let ctx = match materialize(case_dir, &case, run, tmp.path()) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{name}#{i}: {e}"));
                continue;
            }
        };
        let dockerfile = case_dir.join(run["dockerfile"].as_str().unwrap());
        let tag = format!("golden-{}:run{i}", name.to_lowercase());
        let mut tags = vec![tag.clone()];
        if let Some(t) = run["tag"].as_str() {
            tags.push(t.to_string());
        }
        let (ok, output) = build(root, run, ctx.as_deref(), &dockerfile, &tags);
        let got = if ok { "ok" } else { "fail" };
        if got != want {
            let last = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            problems.push(format!("{name}#{i}: expected {want}, got {got}: {last}"));
            continue;
        }
        if !ok {
            if let Some(re) = expected["error_regex"].as_str() {
                let flat = output.split_whitespace().collect::<Vec<_>>().join(" ");
                if !regex::Regex::new(re).unwrap().is_match(&flat) {
                    problems.push(format!("{name}#{i}: error does not match /{re}/: {flat}"));
                }
            }
            continue;
        }
        let store = root.store();
        let desc = describe(&store, &tag);
        if trust_golden && let Some(golden) = reference["golden"].as_str() {
            let want: Value =
                serde_json::from_slice(&fs::read(case_dir.join(golden)).unwrap()).unwrap();
            for d in diff(&want, &desc, &DiffOptions::judge(&case)) {
                problems.push(format!("{name}#{i}: differs from golden: {d}"));
            }
        }
        let mut checks = run["checks"].clone();
        if let Some(c) = checks.as_object_mut() {
            c.remove("build_output_contains");
            c.remove("build_output_count");
        }
        for p in check(root, &checks, &tag, &desc) {
            problems.push(format!("{name}#{i}: {p}"));
        }
    }
    (judged, problems)
}

#[test]
fn every_golden_case_agrees() {
    let root = Root::with_busybox();
    let cases = case_dirs();
    assert!(cases.len() >= 90, "found {} golden cases", cases.len());
    let next = AtomicUsize::new(0);
    let judged = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (n, p) = judge_case(&root, case);
                    judged.fetch_add(n, Ordering::Relaxed);
                    problems.lock().unwrap().extend(p);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    let judged = judged.into_inner();
    assert!(judged >= 100, "only {judged} runs judged");
    assert!(
        problems.is_empty(),
        "{} problems in {judged} judged runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
