//! `strata push` and `strata pull` against the real docker-registry on loopback, cross-checked
//! with skopeo, umoci and runc.

mod registry_support;

use std::process::Command;

use registry_support::common::{Auth, Registry, run};
use registry_support::{
    Strata, printed_digest, raw_manifest, requests_since, run_in_sandbox, run_with_umoci, skopeo,
    text,
};
use serde_json::{Value, json};
use strata_codec::{Digest, sha256_digest};
use strata_store::Platform;

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// A platform other than this machine's, for the second entry of an index.
fn other_platform() -> Platform {
    let host = Platform::host();
    let arch = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    Platform::new("linux", arch, None)
}

#[test]
fn push_round_trips_through_skopeo_with_head_skips_mounts_and_conversions() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let strata = Strata::new();
    let app = format!("{host}/team/app:v1");
    strata.import_busybox(&app, &Platform::host().to_string());
    let store = strata.store();
    let local = store.resolve(&app).unwrap();
    let manifest_digest = local.manifest_descriptor.digest().clone();
    let layer = local.manifest.layers()[0].clone();
    let diff_id: Digest = local.diff_ids()[0].parse().unwrap();

    // Push: OCI as stored, same bytes and digests as skopeo sees them.
    let out = strata.ok(&["push", &app]);
    assert!(out.contains(&format!("The push refers to repository [{host}/team/app]")));
    assert!(
        out.contains(&format!("{}: Pushed", &layer.digest().digest()[..12])),
        "{out}"
    );
    assert_eq!(printed_digest(&out), manifest_digest.to_string());
    let raw = raw_manifest(&app);
    assert_eq!(raw, store.read_blob(&manifest_digest).unwrap());
    let copy = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{app}"))
        .arg(format!("oci:{}:v1", copy.path().display())));
    let index = json_of(&std::fs::read(copy.path().join("index.json")).unwrap());
    assert_eq!(index["manifests"][0]["digest"], manifest_digest.to_string());
    for blob in [local.manifest.config().digest(), layer.digest()] {
        let bytes = std::fs::read(copy.path().join("blobs/sha256").join(blob.digest())).unwrap();
        assert_eq!(&sha256_digest(&bytes), blob);
    }

    // Again: the registry has every blob, which HEAD finds; nothing is uploaded.
    let before = registry.requests().len();
    let out = strata.ok(&["push", &app]);
    assert!(out.contains(": Layer already exists"), "{out}");
    let again = requests_since(&registry, before);
    assert!(
        again
            .iter()
            .any(|r| r.starts_with("HEAD /v2/team/app/blobs/")),
        "{again:?}"
    );
    assert!(
        !again.iter().any(|r| r.contains("/blobs/uploads")),
        "{again:?}"
    );

    // Another repository of the same registry: the layer is mounted from the first.
    let other = format!("{host}/team/other:v1");
    strata.ok(&["tag", &app, &other]);
    let before = registry.requests().len();
    let out = strata.ok(&["push", &other]);
    assert!(out.contains(": Mounted from team/app"), "{out}");
    let mounted = requests_since(&registry, before);
    let mount_post = format!(
        "POST /v2/team/other/blobs/uploads/?mount=sha256%3A{}&from=team%2Fapp",
        layer.digest().digest()
    );
    assert!(
        mounted.iter().any(|r| r.starts_with(&mount_post)),
        "{mounted:?}"
    );
    assert!(
        !mounted
            .iter()
            .any(|r| r.starts_with("PUT /v2/team/other/blobs/uploads") || r.starts_with("PATCH")),
        "{mounted:?}"
    );

    // --format docker: Docker media types, same config and layer, another manifest digest.
    let docker = format!("{host}/team/app:docker");
    strata.ok(&["tag", &app, &docker]);
    let out = strata.ok(&["push", "--format", "docker", &docker]);
    let raw = raw_manifest(&docker);
    assert_eq!(printed_digest(&out), sha256_digest(&raw).to_string());
    assert_ne!(sha256_digest(&raw), manifest_digest);
    let manifest = json_of(&raw);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["config"]["digest"],
        local.manifest.config().digest().to_string()
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(manifest["layers"][0]["digest"], layer.digest().to_string());

    // --compression zstd: the layer is recompressed (once), and decompresses to the same diffID.
    let zstd = format!("{host}/team/app:zstd");
    strata.ok(&["tag", &app, &zstd]);
    strata.ok(&["push", "--compression", "zstd", &zstd]);
    let manifest = json_of(&raw_manifest(&zstd));
    let zstd_layer = &manifest["layers"][0];
    assert_eq!(
        zstd_layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let zstd_digest: Digest = zstd_layer["digest"].as_str().unwrap().parse().unwrap();
    assert_ne!(&zstd_digest, layer.digest());
    let back = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{zstd}"))
        .arg(format!("oci:{}:zstd", back.path().display())));
    let blob = back.path().join("blobs/sha256").join(zstd_digest.digest());
    let tar = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(&blob)
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert_eq!(sha256_digest(&tar.stdout), diff_id);
    let records = store.layers_for_diff_id(&diff_id).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    // A second zstd push reuses the stored zstd blob: same digest, mounted, nothing uploaded.
    let zstd2 = format!("{host}/team/zstd2:v1");
    strata.ok(&["tag", &app, &zstd2]);
    let before = registry.requests().len();
    let out = strata.ok(&["push", "--compression", "zstd", &zstd2]);
    assert!(
        out.contains(&format!(
            "{}: Mounted from team/app",
            &zstd_digest.digest()[..12]
        )),
        "{out}"
    );
    assert!(
        !requests_since(&registry, before)
            .iter()
            .any(|r| r.starts_with("PATCH")),
    );
    assert_eq!(json_of(&raw_manifest(&zstd2))["layers"], manifest["layers"]);
    assert_eq!(store.layers_for_diff_id(&diff_id).unwrap().len(), 2);

    // -q prints the name only; a digest reference cannot be pushed.
    assert_eq!(strata.ok(&["push", "-q", &app]), format!("{app}\n"));
    let pinned = format!("{host}/team/app@{manifest_digest}");
    assert!(
        strata
            .fails(&["push", &pinned])
            .contains("digest reference")
    );
}

/// Blobs of images in `strata`'s store, as a skopeo-readable OCI layout holding an index over
/// them (`platform` each), tagged `multi`.
fn write_index_layout(
    strata: &Strata,
    images: &[(&str, &Platform)],
    dir: &std::path::Path,
) -> Digest {
    let store = strata.store();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut entries = Vec::new();
    for (name, platform) in images {
        let image = store.resolve(name).unwrap();
        let digests = [
            image.manifest_descriptor.digest(),
            image.manifest.config().digest(),
        ]
        .into_iter()
        .chain(image.manifest.layers().iter().map(|l| l.digest()));
        for digest in digests {
            std::fs::copy(store.blob_path(digest), blobs.join(digest.digest())).unwrap();
        }
        let d = &image.manifest_descriptor;
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.digest().to_string(), "size": d.size(),
            "platform": {"os": platform.os, "architecture": platform.architecture},
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    })
    .to_string();
    let digest = sha256_digest(index.as_bytes());
    std::fs::write(blobs.join(digest.digest()), &index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest.to_string(), "size": index.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": "multi",
                "io.containerd.image.name": "localhost/multi:1",
            },
        }]})
        .to_string(),
    )
    .unwrap();
    digest
}

#[test]
fn pulls_images_skopeo_pushed_and_runs_them() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let host_platform = Platform::host();
    let other = other_platform();

    // The source images: busybox for this machine and for another architecture.
    let source = Strata::new();
    source.import_busybox("localhost/src:host", &host_platform.to_string());
    source.import_busybox("localhost/src:other", &other.to_string());
    let source_oci = source.root().join("oci");
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:localhost/src:host", source_oci.display()))
        .arg(format!("docker://{host}/oci-image:1")));
    run(skopeo()
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:localhost/src:host", source_oci.display()))
        .arg(format!("docker://{host}/docker-image:1")));
    let layout = tempfile::tempdir().unwrap();
    let index_digest = write_index_layout(
        &source,
        &[
            ("localhost/src:host", &host_platform),
            ("localhost/src:other", &other),
        ],
        layout.path(),
    );
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{host}/multi:1")));

    let strata = Strata::new();
    let store = strata.store();

    // OCI media types.
    let oci_image = format!("{host}/oci-image:1");
    let out = strata.ok(&["pull", &oci_image]);
    let raw = raw_manifest(&oci_image);
    assert_eq!(printed_digest(&out), sha256_digest(&raw).to_string());
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {oci_image}")),
        "{out}"
    );
    assert!(out.ends_with(&format!("{oci_image}\n")), "{out}");
    let pulled = store.resolve(&oci_image).unwrap();
    assert_eq!(
        store
            .read_blob(pulled.manifest_descriptor.digest())
            .unwrap(),
        raw
    );
    let diff_id: Digest = pulled.diff_ids()[0].parse().unwrap();
    let layer = pulled.manifest.layers()[0].digest().clone();
    let recorded = store.layers_for_diff_id(&diff_id).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].digest, layer);
    // Pulled again: nothing downloaded, up to date.
    let out = strata.ok(&["pull", &oci_image]);
    assert!(out.contains(": Already exists"), "{out}");
    assert!(out.contains("Status: Image is up to date"), "{out}");
    assert_eq!(
        strata.ok(&["pull", "-q", &oci_image]),
        format!("{oci_image}\n")
    );

    // Docker media types: kept as pulled (same bytes, same digest); the layer is already here.
    let docker_image = format!("{host}/docker-image:1");
    let out = strata.ok(&["pull", &docker_image]);
    assert!(out.contains(": Already exists"), "{out}");
    let raw = raw_manifest(&docker_image);
    assert_eq!(
        json_of(&raw)["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let pulled = store.resolve(&docker_image).unwrap();
    assert_eq!(pulled.manifest_descriptor.digest(), &sha256_digest(&raw));
    assert_eq!(
        pulled.manifest_descriptor.media_type().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        run_in_sandbox(&strata, &docker_image, "echo docker-ran; cat /etc/passwd"),
        "docker-ran\nroot:x:0:0:root:/root:/bin/sh\n"
    );

    // An index with two platforms: this machine's is chosen, or the one asked for.
    let multi = format!("{host}/multi:1");
    let out = strata.ok(&["pull", &multi]);
    assert_eq!(printed_digest(&out), index_digest.to_string());
    let pulled = store.resolve(&multi).unwrap();
    assert_eq!(pulled.platform(), host_platform);
    assert_eq!(
        run_with_umoci(&strata.root(), &multi, "echo multi-ran"),
        "multi-ran\n"
    );
    let out = strata.ok(&["pull", "--platform", &other.to_string(), &multi]);
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert_eq!(store.resolve(&multi).unwrap().platform(), other);
    let err = strata.fails(&["pull", "--platform", "linux/s390x", &multi]);
    assert!(
        err.contains("has no image for platform linux/s390x"),
        "{err}"
    );
    registry_support::store_support::check_consistent(&strata.root());
}

#[test]
fn pushes_an_index_with_each_platform_and_converts_it() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let strata = Strata::new();
    let host_platform = Platform::host();
    let other = other_platform();
    strata.import_busybox("localhost/src:host", &host_platform.to_string());
    strata.import_busybox("localhost/src:other", &other.to_string());
    let layout = tempfile::tempdir().unwrap();
    let index_digest = write_index_layout(
        &strata,
        &[
            ("localhost/src:host", &host_platform),
            ("localhost/src:other", &other),
        ],
        layout.path(),
    );
    let archive = layout.path().join("multi.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(layout.path())
        .args(["oci-layout", "index.json", "blobs"]));
    strata.ok(&["load", "-i", archive.to_str().unwrap()]);
    let target = format!("{host}/multi:1");
    strata.ok(&["tag", "localhost/multi:1", &target]);

    // As stored: the same index and manifests, each platform's manifest pushed by digest.
    let out = strata.ok(&["push", &target]);
    assert_eq!(printed_digest(&out), index_digest.to_string());
    let index = json_of(&raw_manifest(&target));
    assert_eq!(sha256_digest(&raw_manifest(&target)), index_digest);
    for entry in index["manifests"].as_array().unwrap() {
        let by_digest = format!("{host}/multi@{}", entry["digest"].as_str().unwrap());
        assert_eq!(
            sha256_digest(&raw_manifest(&by_digest)).to_string(),
            entry["digest"]
        );
    }

    // As Docker's: a manifest list over Docker manifests, platforms kept, another digest.
    let docker = format!("{host}/multi:docker");
    strata.ok(&["tag", "localhost/multi:1", &docker]);
    let out = strata.ok(&["push", "--format", "docker", &docker]);
    let raw = raw_manifest(&docker);
    assert_eq!(printed_digest(&out), sha256_digest(&raw).to_string());
    let list = json_of(&raw);
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let platforms: Vec<&Value> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["platform"]["architecture"])
        .collect();
    assert_eq!(
        platforms,
        [
            &Value::from(host_platform.architecture.clone()),
            &Value::from(other.architecture.clone())
        ]
    );
    for entry in list["manifests"].as_array().unwrap() {
        assert_eq!(
            entry["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        let child = raw_manifest(&format!(
            "{host}/multi@{}",
            entry["digest"].as_str().unwrap()
        ));
        assert_eq!(
            json_of(&child)["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
    // skopeo copies the whole list back.
    let back = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{docker}"))
        .arg(format!("oci:{}:back", back.path().display())));
}

#[test]
fn run_pulls_an_image_it_does_not_have() {
    let registry = Registry::start(Auth::None, None);
    let image = format!("{}/tools/box:v1", registry.host());
    let pusher = Strata::new();
    pusher.import_busybox(&image, &Platform::host().to_string());
    pusher.ok(&["push", "-q", &image]);

    // A fresh store: `run` finds nothing locally, pulls, then runs; the container's stdout
    // holds only what the command printed.
    let runner = Strata::new();
    let out = runner.output(&["run", "--rm", &image, "echo", "ran after the pull"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran after the pull\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    assert!(runner.store().resolve(&image).is_ok());

    // An image the registry lacks fails before anything is created.
    let missing = format!("{}/tools/none:v1", registry.host());
    let err = runner.fails(&["run", "--rm", &missing, "true"]);
    assert!(err.contains("tools/none"), "{err}");
    assert_eq!(runner.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn build_pulls_its_base_follows_a_moved_tag_with_pull_and_pushes_what_it_built() {
    let registry = Registry::start(Auth::None, None);
    let base = format!("{}/base/box:v1", registry.host());
    let app = format!("{}/app/one:1", registry.host());
    let pusher = Strata::new();
    pusher.import_busybox(&base, &Platform::host().to_string());
    pusher.ok(&["push", "-q", &base]);

    // A fresh store: FROM pulls the base; --push uploads the new layer and mounts the base's
    // layer from the repository it came from instead of uploading it again.
    let builder = Strata::new();
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo one > /one\n"),
    )
    .unwrap();
    let ctx = context.path().to_str().unwrap();
    let err = builder.fails(&["build", "--push", ctx]);
    assert!(err.contains("--push needs a name"), "{err}");
    let seen = registry.requests().len();
    let out = builder.output(&["build", "--progress", "plain", "--push", "-t", &app, ctx]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Downloaded newer image for"),
        "{}",
        text(&out)
    );
    let requests = requests_since(&registry, seen);
    let uploads = requests
        .iter()
        .filter(|r| r.contains("POST /v2/app/one/blobs/uploads/"))
        .collect::<Vec<_>>();
    assert!(
        uploads.iter().any(|r| r.contains("mount=")),
        "the base layer is mounted: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("PUT /v2/app/one/manifests/1")),
        "{requests:#?}"
    );
    let consumer = Strata::new();
    let out = consumer.output(&["run", "--rm", &app, "cat", "/one"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");

    // The tag moves on the registry. Without --pull the build keeps the stored base (all
    // cached); with --pull it follows the tag and the RUN step is redone on the new base.
    let tar = registry_support::store_support::busybox_tar();
    pusher.ok(&[
        "import",
        tar.to_str().unwrap(),
        &base,
        "--change",
        "ENV MOVED=yes",
    ]);
    pusher.ok(&["push", "-q", &base]);
    let env_of = |s: &Strata| {
        let inspect: Value = json_of(s.ok(&["inspect", &app]).as_bytes());
        inspect[0]["Config"]["Env"].to_string()
    };
    let out = builder.output(&["build", "--progress", "plain", "-t", &app, ctx]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!env_of(&builder).contains("MOVED"));
    let out = builder.output(&["build", "--progress", "plain", "--pull", "-t", &app, ctx]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Downloaded newer image for"),
        "{}",
        text(&out)
    );
    assert!(
        env_of(&builder).contains("MOVED=yes"),
        "{}",
        env_of(&builder)
    );
}
