//! Reproducible images with `SOURCE_DATE_EPOCH`: two checkouts of the same inputs (other paths,
//! other mtimes, fresh stores) give the same image; another epoch rebuilds the layers instead of
//! reusing them.

mod build_support;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use build_support::{Root, events, reason_of, started, text};
use strata_codec::Decoder;

/// 2023-11-14T22:13:20Z.
const EPOCH: i64 = 1_700_000_000;

const DOCKERFILE: &str = "FROM busybox AS build\n\
    COPY . /src\n\
    RUN mkdir -p /out/made && cp -r /src/sub /out/ && echo built > /out/made/b\n\
    FROM busybox\n\
    WORKDIR /app\n\
    COPY --from=build /out /app/\n\
    COPY a /app/a\n\
    RUN touch /app/stamp\n\
    ENV K=v\n";

/// A checkout of the context at `dir`, every file and directory dated `touched` (`touch -d`).
fn checkout(dir: &Path, touched: &str) -> String {
    std::fs::create_dir_all(dir.join("sub/deep")).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("a"), "a\n").unwrap();
    std::fs::write(dir.join("sub/c"), "c\n").unwrap();
    std::fs::write(dir.join("sub/deep/d"), "d\n").unwrap();
    let out = Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d", touched, "{}", "+"])
        .output()
        .unwrap();
    assert!(out.status.success(), "touch: {}", text(&out.stderr));
    dir.to_str().unwrap().to_string()
}

/// A store with the same busybox image as `from` (saved and loaded, so both have one image ID).
fn root_like(from: &Root, tmp: &Path) -> Root {
    let archive = tmp.join("busybox.tar");
    let out = from
        .strata()
        .args(["save", "-o", archive.to_str().unwrap(), "busybox:latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "save: {}", text(&out.stderr));
    let root = Root {
        dir: tempfile::tempdir().unwrap(),
    };
    let out = root
        .strata()
        .args(["load", "-i", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "load: {}", text(&out.stderr));
    root
}

/// `strata build --progress=json -t repro ARGS CONTEXT` with `SOURCE_DATE_EPOCH` in the
/// environment when `epoch` is given; returns the image ID and the events.
fn build(
    root: &Root,
    epoch: Option<&str>,
    args: &[&str],
    ctx: &str,
) -> (String, Vec<serde_json::Value>) {
    let mut cmd = root.strata();
    cmd.env_remove("SOURCE_DATE_EPOCH");
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e);
    }
    let out = cmd
        .args(["build", "--progress=json", "-t", "repro"])
        .args(args)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
    let id = root.store().resolve("repro").unwrap().id().to_string();
    (id, events(&out))
}

/// Every mtime in every layer this build wrote (those after the base's).
fn layer_mtimes(root: &Root, base_layers: usize) -> Vec<(String, u64)> {
    let store = root.store();
    let image = store.resolve("repro").unwrap();
    let mut mtimes = Vec::new();
    for layer in &image.manifest.layers()[base_layers..] {
        let blob = store.open_blob(layer.digest()).unwrap();
        let (_, mut decoded) = Decoder::detect(std::io::BufReader::new(blob)).unwrap();
        let mut bytes = Vec::new();
        decoded.read_to_end(&mut bytes).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            mtimes.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mtime().unwrap(),
            ));
        }
    }
    mtimes
}

#[test]
fn two_checkouts_give_the_same_image() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let one = Root::with_busybox();
    let two = root_like(&one, t);
    let base_layers = one
        .store()
        .resolve("busybox")
        .unwrap()
        .manifest
        .layers()
        .len();
    let ctx_one = checkout(&t.join("one/ctx"), "2024-05-06 07:08:09");
    let ctx_two = checkout(&t.join("elsewhere/deeper/checkout"), "2025-01-02 03:04:05");

    let (id_one, _) = build(&one, Some(&EPOCH.to_string()), &[], &ctx_one);
    // The build arg is the same thing as the environment variable.
    let (id_two, _) = build(
        &two,
        None,
        &["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH}")],
        &ctx_two,
    );
    assert_eq!(id_one, id_two, "the two checkouts gave different images");
    let manifest = |r: &Root| {
        r.store()
            .resolve("repro")
            .unwrap()
            .manifest_descriptor
            .digest()
            .to_string()
    };
    assert_eq!(manifest(&one), manifest(&two));

    // Dated by the epoch: config and history (the base was imported today, after the epoch, so
    // its entry is clamped too, as BuildKit clamps it; older entries are kept: unit tests).
    let image = one.store().resolve("repro").unwrap();
    let config = &image.config_json;
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 6, "{history:#?}");
    for h in history {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }

    // Layers: every mtime clamped (the checkouts' files are all newer than the epoch).
    let mtimes = layer_mtimes(&one, base_layers);
    assert!(mtimes.iter().any(|(p, _)| p == "app/made/b"), "{mtimes:?}");
    for (path, mtime) in &mtimes {
        assert!(
            *mtime <= EPOCH as u64,
            "{path}: mtime {mtime} after the epoch"
        );
    }

    // Without an epoch the same two checkouts differ (the test would notice a clamp that is
    // not there): dates of the checkouts and of the build reach the image.
    let (plain_one, _) = build(&one, None, &[], &ctx_one);
    let (plain_two, _) = build(&two, None, &[], &ctx_two);
    assert_ne!(plain_one, plain_two);
    assert_ne!(plain_one, id_one);
}

#[test]
fn another_epoch_rebuilds_the_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Root::with_busybox();
    let ctx = checkout(&tmp.path().join("ctx"), "2024-05-06 07:08:09");

    let (first, events_first) = build(&root, Some("1700000000"), &[], &ctx);
    let steps = started(&events_first).len();
    assert_eq!(steps, 6, "{events_first:#?}");

    let (second, events_second) = build(&root, Some("1600000000"), &[], &ctx);
    assert_ne!(first, second);
    // Every layer step ran again; the first of each stage says why.
    assert_eq!(started(&events_second).len(), steps, "{events_second:#?}");
    let reason = reason_of(&events_second, "COPY . /src");
    assert_eq!(reason["kind"], "setting", "{reason}");
    assert_eq!(reason["name"], "SOURCE_DATE_EPOCH");
    assert_eq!(reason["before"], "1700000000");
    assert_eq!(reason["after"], "1600000000");
    let config = root.store().resolve("repro").unwrap().config_json;
    assert_eq!(config["created"], "2020-09-13T12:26:40Z");
    for (path, mtime) in layer_mtimes(&root, 1) {
        assert!(
            mtime <= 1_600_000_000,
            "{path}: mtime {mtime} after the epoch"
        );
    }

    // Back to the first epoch: its layers are still cached, and the image is the first one.
    let (third, events_third) = build(&root, Some("1700000000"), &[], &ctx);
    assert!(started(&events_third).is_empty(), "{events_third:#?}");
    assert_eq!(third, first);

    // No epoch: not the epoch's layers.
    let (plain, events_plain) = build(&root, None, &[], &ctx);
    assert_ne!(plain, first);
    assert_eq!(started(&events_plain).len(), steps);
    assert_eq!(
        reason_of(&events_plain, "COPY . /src")["after"],
        serde_json::Value::Null
    );

    // A value that is not a time is refused, naming it.
    let out = root
        .strata()
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            "SOURCE_DATE_EPOCH=soon",
            &ctx,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("SOURCE_DATE_EPOCH") && stderr.contains("soon"),
        "{stderr}"
    );
}
