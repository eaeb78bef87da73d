//! The build cache, observed through `--progress=json` events: what runs, what comes from the
//! cache, and why.

mod build_support;

use std::fs;
use std::path::Path;
use std::process::Output;

use build_support::{Root, cached, ok, reason_of, started, text, write};
use serde_json::Value;

fn image_id(events: &[Value]) -> String {
    events
        .iter()
        .find(|e| e["event"] == "image")
        .and_then(|e| e["id"].as_str())
        .unwrap()
        .to_string()
}

fn context_event(events: &[Value]) -> &Value {
    events.iter().find(|e| e["event"] == "context").unwrap()
}

/// Three stages: two independent branches, each copying one context file, joined at the end.
const BRANCHES: &str = r#"FROM busybox AS one
COPY a.txt /
RUN cp /a.txt /a-copy
FROM busybox AS two
COPY b.txt /
RUN cp /b.txt /b-copy
FROM busybox
COPY --from=one /a-copy /
COPY --from=two /b-copy /
COPY c.txt /
"#;

fn branches(dir: &Path) {
    write(dir, "Dockerfile", BRANCHES);
    write(dir, "a.txt", "a\n");
    write(dir, "b.txt", "b\n");
    write(dir, "c.txt", "c\n");
}

#[test]
fn a_second_build_runs_nothing_and_writes_the_same_image() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    branches(ctx.path());
    let dir = ctx.path().to_str().unwrap();
    let first = ok(&root.build_json(&["-t", "cache:test", dir]));
    assert_eq!(started(&first).len(), 7, "{first:#?}");
    assert!(
        first
            .iter()
            .filter(|e| e["event"] == "started")
            .all(|e| e["reason"]["kind"] == "first_build")
    );
    let second = ok(&root.build_json(&["-t", "cache:test", dir]));
    assert_eq!(started(&second), Vec::<String>::new());
    assert_eq!(cached(&second).len(), 7);
    assert_eq!(image_id(&first), image_id(&second));
    // Nothing was read again: the stat cache vouched for every file.
    assert_eq!(context_event(&second)["hashed"], 0);
    // The manifest is byte-identical too.
    let store = root.store();
    let image = store.resolve("cache:test").unwrap();
    assert_eq!(image.id().to_string(), image_id(&second));
    // --no-cache runs everything, and says so.
    let forced = ok(&root.build_json(&["--no-cache", dir]));
    assert_eq!(started(&forced).len(), 7);
    assert_eq!(reason_of(&forced, "COPY a.txt")["kind"], "no_cache");
}

#[test]
fn touching_a_file_changes_nothing_and_editing_one_reruns_its_readers() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    branches(ctx.path());
    let dir = ctx.path().to_str().unwrap();
    let first = ok(&root.build_json(&[dir]));

    // A new mtime (and ctime): the file is read again, found unchanged, nothing runs.
    let b = ctx.path().join("b.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = ok(&root.build_json(&[dir]));
    assert_eq!(started(&touched), Vec::<String>::new());
    assert_eq!(context_event(&touched)["hashed"], 1);
    assert_eq!(image_id(&first), image_id(&touched));

    // New content: the steps that read b.txt and what follows them run; the other branch and
    // the steps before are cached.
    write(ctx.path(), "b.txt", "b, edited\n");
    let edited = ok(&root.build_json(&[dir]));
    assert_eq!(
        started(&edited),
        [
            "[two 2/3] COPY b.txt /",
            "[two 3/3] RUN cp /b.txt /b-copy",
            "[stage-2 3/4] COPY --from=two /b-copy /",
            "[stage-2 4/4] COPY c.txt /",
        ]
    );
    assert_eq!(
        cached(&edited),
        [
            "[one 2/3] COPY a.txt /",
            "[one 3/3] RUN cp /a.txt /a-copy",
            "[stage-2 2/4] COPY --from=one /a-copy /",
        ]
    );
    let r = reason_of(&edited, "COPY b.txt");
    assert_eq!(r["kind"], "files");
    assert_eq!(r["changed"], serde_json::json!(["b.txt"]));
    let r = reason_of(&edited, "RUN cp /b.txt");
    assert_eq!(r["kind"], "parent");
    assert_eq!(r["name"], "[two 2/3] COPY b.txt /");
    assert_eq!(reason_of(&edited, "COPY --from=two")["kind"], "source");
    assert_eq!(reason_of(&edited, "COPY --from=two")["name"], "stage two");
    assert_eq!(reason_of(&edited, "COPY c.txt")["kind"], "parent");

    // A new file in a copied directory and a removed one are named too.
    write(ctx.path(), "Dockerfile", "FROM busybox\nCOPY dir /dir\n");
    write(ctx.path(), "dir/old", "old\n");
    ok(&root.build_json(&[dir]));
    fs::remove_file(ctx.path().join("dir/old")).unwrap();
    write(ctx.path(), "dir/new", "new\n");
    let changed = ok(&root.build_json(&[dir]));
    let r = reason_of(&changed, "COPY dir");
    assert_eq!(r["kind"], "files");
    assert_eq!(r["changed"], serde_json::json!(["dir/new", "dir/old"]));
}

#[test]
fn a_build_arg_reruns_only_the_steps_that_use_it() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nCOPY x.txt /\nRUN echo before > /before\nARG V=1\nLABEL unrelated=$V\nRUN echo $V > /v\nCOPY y.txt /\n",
    );
    write(ctx.path(), "x.txt", "x\n");
    write(ctx.path(), "y.txt", "y\n");
    let dir = ctx.path().to_str().unwrap();
    ok(&root.build_json(&["--build-arg", "V=1", dir]));
    let second = ok(&root.build_json(&["--build-arg", "V=2", dir]));
    assert_eq!(
        started(&second),
        ["[4/5] RUN echo $V > /v", "[5/5] COPY y.txt /"]
    );
    assert_eq!(
        cached(&second),
        ["[2/5] COPY x.txt /", "[3/5] RUN echo before > /before"]
    );
    let r = reason_of(&second, "RUN echo $V");
    assert_eq!(r["kind"], "build_arg");
    assert_eq!(r["name"], "V");
    assert_eq!(r["before"], "1");
    assert_eq!(r["after"], "2");

    // An ENV change is named as such; so is a changed instruction.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nCOPY x.txt /\nENV MODE=a\nRUN echo $MODE > /mode\n",
    );
    ok(&root.build_json(&[dir]));
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nCOPY x.txt /\nENV MODE=b\nRUN echo $MODE > /mode\n",
    );
    let env = ok(&root.build_json(&[dir]));
    assert_eq!(started(&env), ["[3/3] RUN echo $MODE > /mode"]);
    let r = reason_of(&env, "RUN echo $MODE");
    assert_eq!(r["kind"], "env");
    assert_eq!(r["name"], "MODE");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nCOPY x.txt /\nENV MODE=b\nRUN echo $MODE >> /mode\n",
    );
    let changed = ok(&root.build_json(&[dir]));
    let r = reason_of(&changed, "RUN echo $MODE");
    assert_eq!(r["kind"], "instruction");
    assert_eq!(r["before"], "RUN echo $MODE > /mode");
}

#[test]
fn builds_running_at_once_on_one_store_both_succeed() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    branches(ctx.path());
    let dir = ctx.path().to_str().unwrap().to_string();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let root = &root;
                let dir = dir.clone();
                s.spawn(move || {
                    let tag = format!("parallel:{i}");
                    root.build_json(&["--no-cache", "-t", &tag, &dir])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        ok(out);
    }
    // Both recorded their results; the next build takes everything from the cache.
    let again = ok(&root.build_json(&[&dir]));
    assert_eq!(started(&again), Vec::<String>::new());
    let store = root.store();
    for i in 0..2 {
        store.resolve(&format!("parallel:{i}")).unwrap();
    }
}

#[test]
fn a_pruned_result_is_rebuilt_and_said_so() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN echo hi > /hi\n",
    );
    let dir = ctx.path().to_str().unwrap();
    ok(&root.build_json(&[dir]));
    let out = root
        .strata()
        .args(["system", "prune", "-f"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = ok(&root.build_json(&[dir]));
    assert_eq!(started(&again), ["[2/2] RUN echo hi > /hi"]);
    assert_eq!(reason_of(&again, "RUN echo hi")["kind"], "pruned");
}

#[test]
fn plain_progress_numbers_steps_and_says_why_each_one_ran() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN echo hello from the step\n",
    );
    let dir = ctx.path().to_str().unwrap();
    let build = |mode: &str| {
        let out = root
            .strata()
            .args(["build", "--progress", mode, dir])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (stdout, first) = build("plain");
    assert_eq!(stdout, "");
    for line in [
        "#1 [2/2] RUN echo hello from the step",
        "#1 not cached: no earlier build of this step",
        "hello from the step",
        "#1 DONE",
        "writing image sha256:",
    ] {
        assert!(first.contains(line), "{line:?} not in:\n{first}");
    }
    let (_, second) = build("plain");
    assert!(second.contains("#1 CACHED"), "{second}");
    let (_, tty) = build("tty");
    assert!(
        tty.contains("#1 [2/2] RUN echo hello from the step CACHED"),
        "{tty}"
    );
    let (quiet, quiet_err) = build("quiet");
    assert!(
        quiet.trim().starts_with("sha256:") && quiet_err.is_empty(),
        "{quiet}{quiet_err}"
    );
}

#[test]
fn a_copy_redone_from_its_previous_result_equals_a_fresh_one() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(
        c,
        "Dockerfile",
        "FROM busybox\nRUN mkdir -p /app/tree/keep && echo base > /app/tree/keep/base\nCOPY tree /app/tree\nRUN find /app/tree | sort > /listing\n",
    );
    for i in 0..50 {
        write(c, &format!("tree/d{}/f{i}", i % 5), &format!("{i}\n"));
    }
    write(c, "tree/gone/old", "old\n");
    write(c, "tree/typechange", "file\n");
    let dir = c.to_str().unwrap();
    ok(&root.build_json(&["-t", "inc:first", dir]));

    // Edit, add, remove, change a mode, turn a file into a directory.
    write(c, "tree/d1/f1", "edited\n");
    write(c, "tree/d9/new", "new\n");
    fs::remove_dir_all(c.join("tree/gone")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(c.join("tree/d2/f2"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(c.join("tree/typechange")).unwrap();
    write(c, "tree/typechange/inside", "now a directory\n");
    let edited = ok(&root.build_json(&["-t", "inc:edited", dir]));
    let r = reason_of(&edited, "COPY tree");
    assert_eq!(r["kind"], "files");
    assert_eq!(r["count"], 8, "{r}");
    let note = edited
        .iter()
        .find(|e| e["event"] == "note")
        .expect("an incremental copy");
    assert_eq!(
        note["message"],
        "copying 6 changed and removing 2 removed entries over the previous result"
    );
    let fresh = ok(&root.build_json(&["--no-cache", "-t", "inc:fresh", dir]));
    assert_eq!(image_id(&fresh).len(), 71);
    let store = root.store();
    let (a, b) = (
        build_support::describe(&store, "inc:edited"),
        build_support::describe(&store, "inc:fresh"),
    );
    assert_eq!(a["filesystem"], b["filesystem"]);
    // The previous image is untouched by the clone.
    let first = build_support::describe(&store, "inc:first");
    let content = |d: &Value, p: &str| {
        d["filesystem"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .map(|e| e["sha256"].clone())
    };
    assert_ne!(
        content(&first, "/app/tree/d1/f1"),
        content(&a, "/app/tree/d1/f1")
    );
    assert!(content(&first, "/app/tree/gone/old").is_some());
}
