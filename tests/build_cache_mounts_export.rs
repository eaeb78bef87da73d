//! `--cache-to ...,cache-mounts=true`: the build's `RUN --mount=type=cache` directories travel
//! with the build cache, and a machine that imports it starts with their content (unless it
//! has that cache already: a local cache is never replaced).

mod build_support;
mod registry_support;

use std::fs;
use std::path::Path;

use build_support::{Root, text};
use registry_support::common::{Auth, Registry};
use serde_json::Value;

const DOCKERFILE: &str = "\
FROM busybox
ARG RUN_ID
RUN --mount=type=cache,target=/cache echo \"run $RUN_ID\" >> /cache/log && cp /cache/log /seen
";

/// Builds `context` with `RUN_ID=run_id` and `extra` flags; returns what the RUN saw in
/// `/cache/log`.
fn build(root: &Root, context: &Path, run_id: &str, extra: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = root
        .strata()
        .arg("build")
        .arg("--progress=plain")
        .args(["--build-arg", &format!("RUN_ID={run_id}")])
        .arg(format!("-otype=local,dest={}", out_dir.path().display()))
        .args(extra)
        .arg(context)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    fs::read_to_string(out_dir.path().join("seen")).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The config of the cache artifact in OCI layout `dir`.
fn artifact_config(dir: &Path) -> Value {
    let blob = |digest: &str| dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let index = read_json(&dir.join("index.json"));
    let manifest = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    // The cache mounts' layers are the artifact's layers too, so rootfs stays consistent.
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        config["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
    config
}

#[test]
fn cache_mounts_travel_only_when_asked() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_mounts = dir.path().join("with-mounts");
    let without_mounts = dir.path().join("without-mounts");

    let first = Root::with_busybox();
    let seen = build(
        &first,
        ctx.path(),
        "1",
        &[
            "--cache-to",
            &format!(
                "type=local,dest={},cache-mounts=true",
                with_mounts.display()
            ),
            "--cache-to",
            &format!("type=local,dest={}", without_mounts.display()),
        ],
    );
    assert_eq!(seen, "run 1\n");
    let config = artifact_config(&with_mounts);
    let mounts = config["strata.cache-mounts.v1"].as_object().unwrap();
    assert_eq!(mounts.keys().collect::<Vec<_>>(), ["/cache"]);
    assert!(artifact_config(&without_mounts)["strata.cache-mounts.v1"].is_null());

    // A fresh machine whose RUN reruns (another RUN_ID) sees the exported cache.
    let second = Root::with_busybox();
    let from = format!("type=local,src={}", with_mounts.display());
    let seen = build(&second, ctx.path(), "2", &["--cache-from", &from]);
    assert_eq!(seen, "run 1\nrun 2\n");
    // Its own cache now exists: importing again does not replace it.
    let seen = build(&second, ctx.path(), "3", &["--cache-from", &from]);
    assert_eq!(seen, "run 1\nrun 2\nrun 3\n");

    // Without cache-mounts=true the cache stays home.
    let third = Root::with_busybox();
    let seen = build(
        &third,
        ctx.path(),
        "2",
        &[
            "--cache-from",
            &format!("type=local,src={}", without_mounts.display()),
        ],
    );
    assert_eq!(seen, "run 2\n");
}

#[test]
fn cache_mounts_travel_through_a_registry_and_are_uploaded_once() {
    let registry = Registry::start(Auth::None, None);
    let cache = format!("{}/ci/cache:main", registry.host());
    let cache_to = format!("type=registry,ref={cache},cache-mounts=true");
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();

    let first = Root::with_busybox();
    assert_eq!(
        build(&first, ctx.path(), "1", &["--cache-to", &cache_to]),
        "run 1\n"
    );
    let manifest: Value = serde_json::from_slice(&registry_support::raw_manifest(&cache)).unwrap();
    let cache_layer = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .get("digest")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();

    // An upload's digest is in its PUT's query, URL-encoded: match the hex.
    let hex = cache_layer.trim_start_matches("sha256:").to_string();
    let uploaded = |requests: &[String]| {
        requests
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains(&hex))
    };
    assert!(uploaded(&registry.requests()));

    // The same build again (a hit: the cache mount is unchanged) exports the same layer,
    // which the registry has: it is not uploaded twice.
    let before = registry.requests().len();
    build(&first, ctx.path(), "1", &["--cache-to", &cache_to]);
    let requests = registry_support::requests_since(&registry, before);
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("HEAD ") && r.contains(&cache_layer)),
        "{requests:?}"
    );
    assert!(!uploaded(&requests), "{requests:?}");

    let second = Root::with_busybox();
    let seen = build(
        &second,
        ctx.path(),
        "2",
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert_eq!(seen, "run 1\nrun 2\n");
}

#[test]
fn cache_mounts_is_an_export_option() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    for (flag, value, expected) in [
        (
            "--cache-from",
            "type=local,src=/nonexistent,cache-mounts=true",
            "cache-mounts is a --cache-to option",
        ),
        (
            "--cache-to",
            "type=inline,cache-mounts=true",
            "type=inline cannot carry cache mounts",
        ),
        (
            "--cache-to",
            "type=local,dest=/tmp/x,cache-mounts=yes",
            "cache-mounts=yes: expected true or false",
        ),
    ] {
        let out = root
            .strata()
            .args(["build", flag, value])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
    }
}
