//! The build cases of `testdata/build/`: each a Dockerfile, a context and the expected result
//! (files with types, modes, owners and contents; config fields; history; layer count; or the
//! error), built with `strata build` and compared. `testdata/build/README.md` gives the format.

mod build_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use build_support::{Root, describe, text};
use serde_json::Value;
use strata_codec::sha256_digest;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/build")
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

/// Builds one run and checks it; returns the problems.
fn run_case(root: &Root, dir: &Path, name: &str, run: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = root.strata();
    cmd.arg("build").arg("--progress=plain");
    let tag = format!("case-{name}:{}", run["name"].as_str().unwrap_or("latest"));
    cmd.args(["-t", &tag]);
    for a in run["args"].as_array().into_iter().flatten() {
        cmd.arg(a.as_str().unwrap());
    }
    for (k, v) in run["env"].as_object().into_iter().flatten() {
        cmd.env(k, v.as_str().unwrap());
    }
    let iidfile = tmp.path().join("iid");
    if run["iidfile"].as_bool() == Some(true) {
        cmd.arg("--iidfile").arg(&iidfile);
    }
    let dockerfile = dir.join(run["dockerfile"].as_str().unwrap_or("Dockerfile"));
    let mut stdin = None;
    match run["context"].as_str() {
        // `strata build -` with the Dockerfile on stdin: no context.
        None if run["context"].is_null() && run.get("context").is_some() => {
            cmd.arg("-");
            stdin = Some(fs::read(&dockerfile).unwrap());
        }
        c => {
            let ctx = tmp.path().join("context");
            let src = dir.join(c.unwrap_or("context"));
            if src.is_dir() {
                copy_tree(&src, &ctx);
            } else {
                fs::create_dir_all(&ctx).unwrap();
            }
            for (p, mode) in run["modes"].as_object().into_iter().flatten() {
                let mode = u32::from_str_radix(mode.as_str().unwrap(), 8).unwrap();
                fs::set_permissions(ctx.join(p), fs::Permissions::from_mode(mode)).unwrap();
            }
            if run["dockerfile_stdin"].as_bool() == Some(true) {
                cmd.args(["-f", "-"]);
                stdin = Some(fs::read(&dockerfile).unwrap());
            } else {
                cmd.arg("-f").arg(&dockerfile);
            }
            cmd.arg(&ctx);
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
    let stdout = text(&out.stdout);
    let output = stdout.clone() + &text(&out.stderr);
    let expect = &run["expect"];
    let want_ok = expect["result"].as_str().unwrap_or("ok") == "ok";
    if out.status.success() != want_ok {
        problems.push(format!(
            "expected {}, got {}: {output}",
            if want_ok { "success" } else { "failure" },
            if out.status.success() {
                "success"
            } else {
                "failure"
            }
        ));
        return problems;
    }
    for s in expect["output_contains"].as_array().into_iter().flatten() {
        if !output.contains(s.as_str().unwrap()) {
            problems.push(format!("output lacks {s}: {output}"));
        }
    }
    if !want_ok {
        return problems;
    }
    let store = root.store();
    let image = store.resolve(&tag).unwrap();
    if run["iidfile"].as_bool() == Some(true) {
        let iid = fs::read_to_string(&iidfile).unwrap_or_default();
        if iid != image.id().to_string() {
            problems.push(format!(
                "iidfile holds {iid:?}, the image is {}",
                image.id()
            ));
        }
    }
    if let Some(want) = expect["stdout"].as_str() {
        let want = want.replace("$ID", image.id().as_ref());
        if stdout != want {
            problems.push(format!("stdout {stdout:?}, want {want:?}"));
        }
    }
    let desc = describe(&store, &tag);
    for (k, want) in expect["config"].as_object().into_iter().flatten() {
        if &desc["config"][k] != want {
            problems.push(format!("config {k}: {} != {want}", desc["config"][k]));
        }
    }
    for (k, want) in expect["raw_config"].as_object().into_iter().flatten() {
        let got = image.config_json["config"]
            .get(k)
            .cloned()
            .unwrap_or(Value::Null);
        if &got != want {
            problems.push(format!("raw config {k}: {got} != {want}"));
        }
    }
    if let Some(want) = expect.get("layer_count")
        && &desc["layer_count"] != want
    {
        problems.push(format!("layer_count {} != {want}", desc["layer_count"]));
    }
    if let Some(want) = expect["history"].as_array() {
        let got: Vec<Value> = desc["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| serde_json::json!([h["created_by"], h["empty_layer"]]))
            .collect();
        if &got != want {
            problems.push(format!(
                "history:\n  got  {}\n  want {}",
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(want).unwrap()
            ));
        }
    }
    let fs_entries: std::collections::BTreeMap<&str, &Value> = desc["filesystem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    for (path, want) in expect["files"].as_object().into_iter().flatten() {
        let Some(got) = fs_entries.get(path.as_str()) else {
            problems.push(format!("{path} is missing"));
            continue;
        };
        for (attr, w) in want.as_object().unwrap() {
            if attr == "content" {
                let sha = sha256_digest(w.as_str().unwrap().as_bytes());
                if got["sha256"].as_str() != Some(sha.digest()) {
                    problems.push(format!("{path}: content differs from {w}"));
                }
            } else if &got[attr] != w {
                problems.push(format!("{path}: {attr} {} != {w}", got[attr]));
            }
        }
    }
    for p in expect["absent"].as_array().into_iter().flatten() {
        if fs_entries.contains_key(p.as_str().unwrap()) {
            problems.push(format!("{p} should not exist"));
        }
    }
    problems
}

#[test]
fn every_build_case_gives_its_expected_image() {
    let root = Root::with_busybox();
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    let next = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(dir) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
                    let case: Value =
                        serde_json::from_slice(&fs::read(dir.join("case.json")).unwrap()).unwrap();
                    let runs: Vec<Value> = match case["runs"].as_array() {
                        Some(r) => r.clone(),
                        None => vec![case.clone()],
                    };
                    for run in &runs {
                        for p in run_case(&root, dir, &name, run) {
                            problems.lock().unwrap().push(format!(
                                "{name} {}: {p}",
                                run["name"].as_str().unwrap_or("")
                            ));
                        }
                    }
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(cases.len() >= 10, "found only {} cases", cases.len());
}
