//! `strata build -o/--output`: OCI and docker archives read by skopeo, umoci and podman, the final
//! filesystem as a directory and as a tar (whiteouts applied), standard output, and `-t` with
//! `-o` (stored and exported).

mod build_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use build_support::{Root, text};

const DOCKERFILE: &str = "FROM busybox\n\
    RUN rm /etc/group && mkdir -p /gone && touch /gone/x && echo hi > /hello\n\
    RUN rm -r /gone\n\
    COPY f /f\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn context(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("f"), "file\n").unwrap();
    dir.to_str().unwrap().to_string()
}

/// Path -> (type, contents of regular files) of a tar of a filesystem.
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut entries = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        entries.insert(path, (e.header().entry_type(), data));
    }
    entries
}

/// The final filesystem's contents as the Dockerfile leaves them.
fn assert_final_fs(dir: &Path) {
    assert_eq!(std::fs::read_to_string(dir.join("hello")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "file\n");
    assert!(dir.join("bin/busybox").is_file());
    assert!(!dir.join("etc/group").exists(), "a removed file came back");
    assert!(!dir.join("gone").exists(), "a removed directory came back");
    let whiteouts = run(Command::new("find").arg(dir).args(["-name", ".wh.*"]));
    assert!(whiteouts.is_empty(), "whiteouts left: {whiteouts}");
}

#[test]
fn every_output_type_is_readable_by_the_usual_tools() {
    let root = Root::with_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(&t.join("ctx"));
    let out = root
        .strata()
        .args(["build", "--progress=plain", "-t", "localhost/out:1"])
        .arg(format!(
            "--output=type=oci,dest={}",
            t.join("oci.tar").display()
        ))
        .arg(format!(
            "--output=type=oci,dest={},tar=false",
            t.join("layout").display()
        ))
        .arg(format!(
            "-otype=docker,dest={}",
            t.join("docker.tar").display()
        ))
        .arg(format!("-otype=local,dest={}", t.join("fs").display()))
        .arg(format!("-otype=tar,dest={}", t.join("fs.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));

    // `-t` with `-o`: stored under its name too.
    let image = root.store().resolve("localhost/out:1").unwrap();
    let manifest_digest = image.manifest_descriptor.digest().to_string();

    // The OCI archive: skopeo finds the same manifest, named as `-t` named it.
    let inspected: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", t.join("oci.tar").display()))))
    .unwrap();
    assert_eq!(inspected["config"]["digest"], image.id().to_string());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("layout/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], manifest_digest.as_str());

    // The OCI layout directory: umoci unpacks it to the final filesystem.
    let tags = run(Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(t.join("layout")));
    assert_eq!(tags.trim(), "1");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", t.join("layout").display()))
        .arg(t.join("bundle")));
    assert_final_fs(&t.join("bundle/rootfs"));

    // The docker archive: podman loads it under the `-t` name with the same image ID.
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(t.join("podman-root"))
            .arg("--runroot")
            .arg(t.join("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run(&mut podman(&[
        "load",
        "-i",
        t.join("docker.tar").to_str().unwrap(),
    ]));
    let ids = run(&mut podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]));
    assert!(
        ids.contains(&format!("{} localhost/out:1", &image.id().to_string()[7..])),
        "{ids}"
    );

    // type=local: the final filesystem, whiteouts applied.
    assert_final_fs(&t.join("fs"));

    // type=tar: the same filesystem in one tar, no whiteout entries.
    let entries = tar_entries(&std::fs::read(t.join("fs.tar")).unwrap());
    assert_eq!(entries["hello"].1, b"hi\n");
    assert_eq!(entries["f"].1, b"file\n");
    assert_eq!(entries["bin/sh"].0, tar::EntryType::Symlink);
    assert!(!entries.contains_key("etc/group"));
    assert!(entries.keys().all(|p| !p.starts_with("gone")));
    assert!(entries.keys().all(|p| !p.contains(".wh.")), "{entries:?}");
}

#[test]
fn dash_streams_a_tar_and_a_dir_means_local() {
    let root = Root::with_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(&t.join("ctx"));

    // `-o -`: a tar of the filesystem on standard output (progress stays on stderr).
    let out = root
        .strata()
        .args(["build", "--progress=plain", "-o", "-", &ctx])
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
    let entries = tar_entries(&out.stdout);
    assert_eq!(entries["hello"].1, b"hi\n");
    assert!(!entries.contains_key("etc/group"));

    // `-q -o -`: the image ID is not mixed into the tar.
    let out = root
        .strata()
        .args(["build", "-q", "-o", "type=oci", &ctx])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
    std::fs::write(t.join("stdout-oci.tar"), &out.stdout).unwrap();
    run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci-archive:{}",
            t.join("stdout-oci.tar").display()
        )));

    // `-o DIR`: type=local.
    let out = root
        .strata()
        .args(["build", "-q", "-o"])
        .arg(t.join("plain-dir"))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", text(&out.stderr));
    assert_final_fs(&t.join("plain-dir"));
}

#[test]
fn output_mistakes_are_refused_before_building() {
    let root = Root::with_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(&tmp.path().join("ctx"));
    for (spec, message) in [
        ("type=local", "dest=DIR is required for type=local"),
        ("dest=x", "type is required for output"),
        ("type=oci,tar=false", "tar=false needs dest=DIR"),
        ("type=bogus,dest=x", "unknown type \"bogus\""),
    ] {
        let out = root
            .strata()
            .args(["build", "--progress=plain", "-o", spec, &ctx])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{spec} was accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{spec}: {stderr}");
        assert!(
            !stderr.contains("RUN"),
            "{spec}: built before refusing: {stderr}"
        );
    }
    let out = root
        .strata()
        .args(["build", "-o", "-", "-o", "type=oci", &ctx])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("only one output can go to standard output"));
}
