//! `strata build --cache-to / --cache-from`: a cache exported by one machine (store root) makes
//! a fresh one's build fully cached, fetching only the layers the final image needs locally
//! (none when it is pushed: the registry mounts them), observed through json progress events
//! and the registry's access log.

mod build_support;
mod registry_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

use build_support::{Root, events, started, text};
use registry_support::common::{Auth, Registry};
use serde_json::Value;

const MULTI_STAGE: &str = "\
FROM busybox AS deps
COPY deps.txt /deps.txt
RUN cat /deps.txt > /deps.out && echo built-deps >> /deps.out

FROM busybox AS app
COPY --from=deps /deps.out /deps.out
COPY src.txt /src.txt
RUN cat /src.txt /deps.out > /app.out

FROM busybox
COPY --from=app /app.out /app.out
RUN wc -c < /app.out > /size
";

/// A fresh machine: a store of its own with the same busybox base as every other (imported
/// with a fixed date, as a base pulled by digest would be).
fn machine() -> Root {
    let root = Root {
        dir: tempfile::tempdir().unwrap(),
    };
    let out = root
        .strata()
        .env("SOURCE_DATE_EPOCH", "0")
        .args([
            "import",
            build_support::busybox_tar().to_str().unwrap(),
            "busybox:latest",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    root
}

fn project(src: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), MULTI_STAGE).unwrap();
    fs::write(dir.path().join("deps.txt"), "dependency\n").unwrap();
    fs::write(dir.path().join("src.txt"), src).unwrap();
    dir
}

fn build(root: &Root, context: &Path, args: &[&str]) -> Vec<Value> {
    let mut all: Vec<&str> = args.to_vec();
    let ctx = context.to_str().unwrap();
    all.push(ctx);
    let out: Output = root.build_json(&all);
    assert!(
        out.status.success(),
        "build failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Standard output is for the JSON events alone, even with --push.
    let stdout = text(&out.stdout);
    for line in stdout.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line:?}"
        );
    }
    events(&out)
}

fn cached_count(events: &[Value]) -> usize {
    events.iter().filter(|e| e["event"] == "cached").count()
}

/// Digests of blobs fetched (`GET .../blobs/sha256:...`) in `requests`.
fn blob_gets(requests: &[String]) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/sha256:"))
        .filter_map(|r| r.split("/blobs/").nth(1))
        .map(|d| d.split(['?', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// The layers of `image` in `root`'s store that the busybox base does not have.
fn own_layers(root: &Root, image: &str) -> BTreeSet<String> {
    let store = root.store();
    let base: BTreeSet<String> = store
        .resolve("busybox:latest")
        .unwrap()
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    store
        .resolve(image)
        .unwrap()
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .filter(|d| !base.contains(d))
        .collect()
}

/// Builds `context` as `tag` on a fresh machine with `--cache-from cache_from`: nothing may run,
/// and the image's output must be `expected_output`.
fn fresh_machine_runs_nothing(context: &Path, tag: &str, cache_from: &str, expected_output: &str) {
    let fresh = machine();
    let ev = build(&fresh, context, &["-t", tag, "--cache-from", cache_from]);
    assert_eq!(started(&ev), Vec::<String>::new(), "{ev:?}");
    assert_eq!(output_of(&fresh, tag), expected_output);
}

fn output_of(root: &Root, image: &str) -> String {
    let (code, stdout, stderr) = build_support::run_image(
        root,
        image,
        &[
            "cat".to_string(),
            "/app.out".to_string(),
            "/size".to_string(),
        ],
    );
    assert_eq!(code, 0, "run {image}: {stderr}");
    stdout
}

#[test]
fn registry_cache_makes_a_fresh_store_fully_cached_and_fetches_only_what_the_image_needs() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let cache = format!("{host}/ci/cache:main");
    let cache_to = format!("type=registry,ref={cache},mode=max");
    let cache_from = format!("type=registry,ref={cache}");
    let ctx = project("source v1\n");

    // The first CI job: everything runs; the cache goes to the registry.
    let first = machine();
    let ev = build(
        &first,
        ctx.path(),
        &[
            "-t",
            "app:v1",
            "--cache-from",
            &cache_from,
            "--cache-to",
            &cache_to,
        ],
    );
    assert_eq!(started(&ev).len(), 7, "{ev:?}");
    let expected_output = output_of(&first, "app:v1");
    let image_id = first.store().resolve("app:v1").unwrap().id().to_string();

    // The cache is an OCI image manifest with a plain config and our artifactType.
    let manifest: Value = serde_json::from_slice(&registry_support::raw_manifest(&cache)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.strata.build-cache.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 7);

    // A fresh machine: every step is a hit, nothing runs, and only the final image's own
    // layers are downloaded (the base is local).
    let second = machine();
    let before = registry.requests().len();
    let ev = build(
        &second,
        ctx.path(),
        &["-t", "app:v1", "--cache-from", &cache_from],
    );
    assert_eq!(started(&ev), Vec::<String>::new(), "{ev:?}");
    assert_eq!(cached_count(&ev), 7);
    let requests = registry_support::requests_since(&registry, before);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut fetched = blob_gets(&requests);
    assert!(fetched.remove(&config_digest), "{requests:?}");
    let needed = own_layers(&second, "app:v1");
    assert_eq!(needed.len(), 2);
    assert_eq!(fetched, needed, "{requests:?}");
    assert_eq!(
        second.store().resolve("app:v1").unwrap().id().to_string(),
        image_id,
        "a cached build gives the same image"
    );
    assert_eq!(output_of(&second, "app:v1"), expected_output);

    // With --push to the same registry: no layer is downloaded; the registry mounts them.
    let third = machine();
    let pushed = format!("{host}/ci/app:v1");
    let before = registry.requests().len();
    let ev = build(
        &third,
        ctx.path(),
        &["-t", &pushed, "--push", "--cache-from", &cache_from],
    );
    assert_eq!(started(&ev), Vec::<String>::new(), "{ev:?}");
    let requests = registry_support::requests_since(&registry, before);
    let fetched = blob_gets(&requests);
    assert_eq!(
        fetched,
        BTreeSet::from([config_digest.clone()]),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /v2/ci/app/blobs/uploads/?") && r.contains("mount=")),
        "{requests:?}"
    );
    // The layers stayed in the registry, so the image is not kept under its name here (every
    // named image of a store has all its blobs); pulling it fetches them and it runs.
    let images = third
        .strata()
        .args(["images", "-q", &pushed])
        .output()
        .unwrap();
    assert!(images.status.success(), "{}", text(&images.stderr));
    assert_eq!(text(&images.stdout).trim(), "", "{}", text(&images.stdout));
    let pull = third.strata().args(["pull", &pushed]).output().unwrap();
    assert!(pull.status.success(), "{}", text(&pull.stderr));
    assert_eq!(output_of(&third, &pushed), expected_output);
    // What was pushed runs elsewhere.
    let fourth = machine();
    let pull = fourth.strata().args(["pull", &pushed]).output().unwrap();
    assert!(pull.status.success(), "{}", text(&pull.stderr));
    assert_eq!(output_of(&fourth, &pushed), expected_output);

    // One source file changes: only the steps that depend on it run.
    fs::write(ctx.path().join("src.txt"), "source v2\n").unwrap();
    let fifth = machine();
    let before = registry.requests().len();
    let ev = build(
        &fifth,
        ctx.path(),
        &[
            "-t",
            "app:v2",
            "--cache-from",
            &cache_from,
            "--cache-to",
            &cache_to,
        ],
    );
    // Its export uploads only the new layers: the registry has the others (HEAD).
    let requests = registry_support::requests_since(&registry, before);
    let uploaded: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("digest=sha256"))
        .filter_map(|r| r.split("digest=").nth(1))
        .map(|d| d.split('&').next().unwrap().replace("%3A", ":"))
        .collect();
    let old_layers: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let new_manifest: Value =
        serde_json::from_slice(&registry_support::raw_manifest(&cache)).unwrap();
    let reused = new_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| old_layers.contains(l["digest"].as_str().unwrap()))
        .count();
    assert!(reused >= 3, "{new_manifest}");
    assert!(!uploaded.is_empty(), "{requests:?}");
    assert!(
        uploaded.is_disjoint(&old_layers),
        "{uploaded:?} {requests:?}"
    );
    let ran = started(&ev);
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert!(ran.iter().any(|s| s.contains("COPY src.txt")), "{ran:?}");
    assert!(
        ran.iter()
            .all(|s| !s.contains("deps.txt") && !s.contains("built-deps")),
        "{ran:?}"
    );
    assert!(output_of(&fifth, "app:v2").contains("source v2"));
}

#[test]
fn local_directory_cache_round_trips() {
    let ctx = project("local\n");
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let first = machine();
    let ev = build(
        &first,
        ctx.path(),
        &[
            "-t",
            "app:v1",
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache_dir.display()),
        ],
    );
    assert_eq!(started(&ev).len(), 7);
    let index: Value =
        serde_json::from_slice(&fs::read(cache_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.strata.build-cache.v1+json"
    );

    // Plain progress says where the cache went.
    let plain = first
        .strata()
        .args(["build", "--progress=plain", "-t", "app:v1", "--cache-to"])
        .arg(format!("type=local,dest={},mode=max", cache_dir.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let stderr = text(&plain.stderr);
    let exported = format!("#0 exporting cache to local {}: ", cache_dir.display());
    assert!(
        stderr.contains(&exported) && stderr.contains(" layers, done "),
        "{stderr}"
    );

    fresh_machine_runs_nothing(
        ctx.path(),
        "app:v1",
        &format!("type=local,src={}", cache_dir.display()),
        &output_of(&first, "app:v1"),
    );
}

#[test]
fn local_cache_exported_as_zstd_round_trips() {
    let ctx = project("zstd\n");
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let first = machine();
    build(
        &first,
        ctx.path(),
        &[
            "-t",
            "app:v1",
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,compression=zstd",
                cache_dir.display()
            ),
        ],
    );
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::read(cache_dir.join("blobs/sha256").join(hex)).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&fs::read(cache_dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{layer}"
        );
        let bytes = blob(layer["digest"].as_str().unwrap());
        assert_eq!(bytes[..4], [0x28, 0xb5, 0x2f, 0xfd], "{layer}");
        assert_eq!(bytes.len() as u64, layer["size"].as_u64().unwrap());
    }

    fresh_machine_runs_nothing(
        ctx.path(),
        "app:v1",
        &format!("type=local,src={}", cache_dir.display()),
        &output_of(&first, "app:v1"),
    );
}

#[test]
fn inline_cache_in_a_pushed_image() {
    let registry = Registry::start(Auth::None, None);
    let image = format!("{}/ci/inline:v1", registry.host());
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY src.txt /src.txt\nRUN cat /src.txt > /app.out && echo ok > /size\n",
    )
    .unwrap();
    fs::write(ctx.path().join("src.txt"), "inline\n").unwrap();

    let first = machine();
    let ev = build(
        &first,
        ctx.path(),
        &["-t", &image, "--push", "--cache-to", "type=inline"],
    );
    assert_eq!(started(&ev).len(), 2);

    fresh_machine_runs_nothing(ctx.path(), "local:v1", &image, "inline\nok\n");
}

#[test]
fn a_cache_that_does_not_exist_yet_is_not_an_error() {
    let registry = Registry::start(Auth::None, None);
    let ctx = project("first run\n");
    let root = machine();
    let ev = build(
        &root,
        ctx.path(),
        &[
            "-t",
            "app:v1",
            "--cache-from",
            &format!("{}/ci/none:main", registry.host()),
        ],
    );
    assert_eq!(started(&ev).len(), 7);
}

#[test]
fn bad_cache_specs_are_refused() {
    let root = machine();
    let ctx = project("x\n");
    for (flag, value, says) in [
        ("--cache-to", "type=nowhere", "type=nowhere"),
        ("--cache-to", "type=registry", "needs ref="),
        ("--cache-to", "type=local,dest=/tmp/x,mode=all", "mode=all"),
        ("--cache-to", "type=inline", "--push"),
        (
            "--cache-to",
            "type=local,dest=/tmp/x,compression=estargz",
            "compression=estargz is not supported",
        ),
        ("--cache-from", "type=local,src=/tmp/x,colour=red", "colour"),
    ] {
        let out = root.build_json(&[flag, value, ctx.path().to_str().unwrap()]);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(
            text(&out.stderr).contains(says),
            "{flag} {value}: {}",
            text(&out.stderr)
        );
    }
}
