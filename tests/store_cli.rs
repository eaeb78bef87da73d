//! The image commands end to end: import, images, tag, rmi, inspect, history, save, load, prune,
//! df and `debug parse-ref`, with Docker's output shapes.

mod store_support;

use std::process::Command;

use predicates::str::contains;
use serde_json::Value;
use store_support::{Root, busybox_tar, check_consistent};

#[test]
fn import_list_tag_inspect_history_rmi() {
    let root = Root::new();
    let id = root.import_busybox("busybox");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let short = &id[7..19];

    let table = root.stdout(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{table}"
    );
    assert!(lines[0].ends_with("SIZE"), "{table}");
    assert!(
        lines[1].starts_with("busybox      latest    ") && lines[1].contains(short),
        "{table}"
    );

    root.strata()
        .args(["tag", "busybox", "localhost:5000/tools/bb:v1"])
        .assert()
        .success();
    root.strata()
        .args(["tag", short, "other"])
        .assert()
        .success();
    assert_eq!(root.stdout(&["images", "-q"]).trim(), short);
    let digests = root.stdout(&["images", "--digests"]);
    assert!(
        digests.lines().next().unwrap().contains("DIGEST"),
        "{digests}"
    );
    assert_eq!(digests.matches("sha256:").count(), 3, "{digests}");
    assert!(
        digests.contains("localhost:5000/tools/bb   v1"),
        "{digests}"
    );
    let filtered = root.stdout(&["images", "localhost:5000/tools/*"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");

    let json_lines = root.stdout(&["images", "--format", "json"]);
    for line in json_lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ID"], short);
        for k in [
            "Repository",
            "Tag",
            "Digest",
            "CreatedSince",
            "CreatedAt",
            "Size",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {line}");
        }
    }

    let inspect: Value = serde_json::from_str(&root.stdout(&["inspect", "other"])).unwrap();
    let i = &inspect[0];
    assert_eq!(i["Id"], id.as_str());
    let mut tags: Vec<&str> = i["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "busybox:latest",
            "localhost:5000/tools/bb:v1",
            "other:latest"
        ]
    );
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(i["Size"].as_u64().unwrap() > 100_000);
    assert!(i["Created"].as_str().unwrap().ends_with('Z'));
    root.strata()
        .args(["inspect", "nothing-here"])
        .assert()
        .failure()
        .stderr(contains("No such image: nothing-here"));

    let history = root.stdout(&["history", "busybox"]);
    assert!(history.starts_with("IMAGE          CREATED"), "{history}");
    assert!(
        history.contains("CREATED BY") && history.contains("COMMENT"),
        "{history}"
    );
    assert!(
        history.lines().nth(1).unwrap().starts_with(short),
        "{history}"
    );
    assert!(history.contains("Imported from"), "{history}");

    // rmi: names first, then the image with its last name; an ID with several names needs -f.
    root.strata()
        .args(["rmi", short])
        .assert()
        .failure()
        .stderr(contains("must be forced"));
    root.strata()
        .args(["rmi", "other"])
        .assert()
        .success()
        .stdout("Untagged: other:latest\n");
    root.strata()
        .args(["rmi", "-f", short])
        .assert()
        .success()
        .stdout(contains("Untagged: busybox:latest"))
        .stdout(contains(format!("Deleted: {id}")));
    assert_eq!(root.stdout(&["images", "-q"]), "");
    // Nothing references the blobs any more and no lease is running: rmi freed them.
    let blobs = std::fs::read_dir(root.path().join("oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

fn compressed_copy(dir: &std::path::Path, tool: &str, ext: &str) -> std::path::PathBuf {
    let out = dir.join(format!("busybox.tar.{ext}"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{tool} < '{}' > '{}'",
            busybox_tar().display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "{tool}");
    out
}

#[test]
fn import_reads_every_compression_and_applies_changes() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut diff_ids = Vec::new();
    for (tool, ext) in [
        ("cat", "plain"),
        ("pigz -c", "gz"),
        ("zstd -c", "zst"),
        ("xz -c", "xz"),
        ("bzip2 -c", "bz2"),
    ] {
        let file = compressed_copy(tmp.path(), tool, ext);
        root.strata()
            .args(["import", file.to_str().unwrap(), &format!("bb:{ext}")])
            .args([
                "-c",
                "ENV A=1 B=\"two words\"",
                "-c",
                "EXPOSE 80",
                "-c",
                "WORKDIR /srv",
            ])
            .args([
                "-c",
                "ENTRYPOINT [\"/bin/sh\"]",
                "-c",
                "LABEL maintainer=me",
                "-m",
                "hello",
            ])
            .assert()
            .success();
        let v: Value =
            serde_json::from_str(&root.stdout(&["inspect", &format!("bb:{ext}")])).unwrap();
        diff_ids.push(v[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string());
        let c = &v[0]["Config"];
        assert_eq!(c["Env"], serde_json::json!(["A=1", "B=two words"]));
        assert_eq!(c["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh"]));
        assert_eq!(c["Labels"]["maintainer"], "me");
        assert_eq!(v[0]["Comment"], "hello");
    }
    diff_ids.dedup();
    assert_eq!(
        diff_ids.len(),
        1,
        "the diffID is the plain tar's whatever the input compression"
    );

    // From standard input, and refusals.
    root.strata()
        .args(["import", "-", "stdin:v1"])
        .pipe_stdin(busybox_tar())
        .unwrap()
        .assert()
        .success();
    root.strata()
        .args(["import", "-", "junk"])
        .write_stdin("this is not a tarball, not even close to 512 bytes")
        .assert()
        .failure()
        .stderr(contains("not a tar archive"));
    root.strata()
        .args([
            "import",
            busybox_tar().to_str().unwrap(),
            "x",
            "-c",
            "RUN true",
        ])
        .assert()
        .failure()
        .stderr(contains("RUN is not an instruction import accepts"));
    root.strata()
        .args(["import", busybox_tar().to_str().unwrap(), "Bad/Name"])
        .assert()
        .failure();
    assert_eq!(check_consistent(&root.path()), 6);
}

#[test]
fn save_and_load_round_trip() {
    let src = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let id = src.import_busybox("busybox");
    src.strata()
        .args(["tag", "busybox", "localhost:5000/bb:2"])
        .assert()
        .success();
    // A second, different image in the same archive.
    src.strata()
        .args([
            "import",
            busybox_tar().to_str().unwrap(),
            "second:v2",
            "-m",
            "another image",
        ])
        .assert()
        .success();
    let second = src.store().resolve("second:v2").unwrap().id().clone();
    assert_ne!(second.to_string(), id);
    let manifest = src
        .store()
        .resolve("busybox")
        .unwrap()
        .manifest_descriptor
        .digest()
        .clone();
    for format in ["docker", "oci"] {
        let archive = tmp.path().join(format!("{format}.tar"));
        src.strata()
            .args(["save", "--format", format, "-o", archive.to_str().unwrap()])
            .args(["busybox", "localhost:5000/bb:2", "second:v2"])
            .assert()
            .success();
        // Compressed archives load too.
        let gz = tmp.path().join(format!("{format}.tar.gz"));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -c '{}' > '{}'",
                archive.display(),
                gz.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        for input in [&archive, &gz] {
            let dst = Root::new();
            dst.strata()
                .args(["load", "-i", input.to_str().unwrap()])
                .assert()
                .success()
                .stdout(contains("Loaded image: busybox:latest"))
                .stdout(contains("Loaded image: localhost:5000/bb:2"));
            let loaded = dst.store().resolve("localhost:5000/bb:2").unwrap();
            assert_eq!(loaded.id().to_string(), id);
            assert_eq!(
                loaded.manifest_descriptor.digest(),
                &manifest,
                "manifest digest kept"
            );
            assert_eq!(dst.store().resolve("second:v2").unwrap().id(), &second);
            assert_eq!(check_consistent(&dst.path()), 3);
        }
    }
    // From stdin, by ID: no names.
    let archive = tmp.path().join("by-id.tar");
    src.strata()
        .args(["save", "-o", archive.to_str().unwrap(), &id[7..19]])
        .assert()
        .success();
    let dst = Root::new();
    dst.strata()
        .arg("load")
        .pipe_stdin(&archive)
        .unwrap()
        .assert()
        .success()
        .stdout(format!("Loaded image ID: {id}\n"));
}

/// Archive members: (path, content).
type Files<'a> = &'a [(&'a str, &'a [u8])];

fn tar_of(files: Files<'_>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *content).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn load_explains_bad_archives() {
    let root = Root::new();
    let cases: [(Files<'_>, &str); 5] = [
        (
            &[("manifest.json", b"null")],
            "manifest.json lists no images",
        ),
        (&[("manifest.json", b"[]")], "manifest.json lists no images"),
        (
            &[("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)],
            "index.json lists no images",
        ),
        (
            &[("hello.txt", b"hi")],
            "neither manifest.json nor index.json",
        ),
        (
            &[(
                "manifest.json",
                br#"[{"Config":"missing.json","RepoTags":["a:b"],"Layers":[]}]"#,
            )],
            "lacks the config missing.json",
        ),
    ];
    for (files, message) in cases {
        root.strata()
            .arg("load")
            .write_stdin(tar_of(files))
            .assert()
            .failure()
            .stderr(contains(message));
    }
    // A blob whose content does not match its name is refused.
    let bad = tar_of(&[(
        "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"not empty",
    )]);
    root.strata()
        .arg("load")
        .write_stdin(bad)
        .assert()
        .failure()
        .stderr(contains("digest mismatch"));
}

#[test]
fn prune_and_df() {
    let root = Root::new();
    let first = root.import_busybox("app");
    // A second import under the same name leaves the first untagged (dangling).
    let tmp = tempfile::tempdir().unwrap();
    let gz = compressed_copy(tmp.path(), "pigz -c", "gz");
    root.strata()
        .args(["import", gz.to_str().unwrap(), "app", "-m", "second"])
        .assert()
        .success();
    let images = root.stdout(&["images"]);
    assert!(images.contains("<none>       <none>"), "{images}");
    let dangling = root.stdout(&["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.trim(), &first[7..19]);

    let df = root.stdout(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(
        df.lines().nth(1).unwrap().starts_with("Images          2"),
        "{df}"
    );

    root.strata()
        .args(["image", "prune", "-f"])
        .assert()
        .success()
        .stdout(contains("Deleted Images:"))
        .stdout(contains("Total reclaimed space:"));
    assert_eq!(root.stdout(&["images", "-q"]).lines().count(), 1);
    // Without -f it asks, and stops on anything but yes.
    root.strata()
        .args(["image", "prune", "-a"])
        .write_stdin("n\n")
        .assert()
        .success();
    assert_eq!(root.stdout(&["images", "-q"]).lines().count(), 1);
    root.strata()
        .args(["system", "prune", "-a", "-f"])
        .assert()
        .success()
        .stdout(contains("untagged: app:latest"));
    assert_eq!(root.stdout(&["images", "-q"]), "");
    assert_eq!(
        std::fs::read_dir(root.path().join("oci/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn parse_ref_prints_the_normalised_reference() {
    let root = Root::new();
    let out = root.stdout(&["debug", "parse-ref", "busybox"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "docker.io/library/busybox", "familiar": "busybox",
            "domain": "docker.io", "path": "library/busybox", "tag": "latest", "digest": null})
    );
    let keys: Vec<&str> = out.split('"').skip(1).step_by(2).take(1).collect();
    assert_eq!(keys, ["name"], "name comes first: {out}");
    let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
    let v: Value = serde_json::from_str(&root.stdout(&[
        "debug",
        "parse-ref",
        &format!("localhost:5000/a/b@{d}"),
    ]))
    .unwrap();
    assert_eq!(v["domain"], "localhost:5000");
    assert_eq!(v["path"], "a/b");
    assert_eq!(v["familiar"], "localhost:5000/a/b");
    assert_eq!(v["tag"], Value::Null);
    assert_eq!(v["digest"], d);
    for bad in ["Busybox", "-foo", "a:b:c", ""] {
        root.strata()
            .args(["debug", "parse-ref", bad])
            .assert()
            .code(1)
            .stdout("");
    }
}

/// `strata images | head -1` and the like: a reader that goes away ends strata the way SIGPIPE
/// ends Docker's CLI (status 141, nothing on stderr), for a command that reports its write
/// errors (`images`) and for one that prints with `println!` (`version`).
#[test]
fn a_closed_stdout_ends_quietly() {
    let root = Root::new();
    root.import_busybox("busybox");
    for args in [&["images"][..], &["version"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = root
            .strata_process()
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
