//! Helpers for the CLI's registry tests: the registry-client harness (the real docker-registry,
//! the fault proxy, test images), the store tests' busybox tarball, and a `strata` whose store,
//! config directories and credential files are private to the test.

#![allow(dead_code)] // each test binary uses part of it

#[path = "../../registry-client/tests/common/mod.rs"]
pub mod common;
#[path = "../store_support/mod.rs"]
pub mod store_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use strata_store::Store;

/// A `strata` with its own store root, `XDG_CONFIG_HOME` (registries.json, auth.json),
/// `DOCKER_CONFIG` and `HOME`, all removed on drop. `STRATA_OFFLINE=1` (from the cargo config)
/// stays set: these tests only talk to registries on loopback, which it allows.
pub struct Strata {
    pub dir: tempfile::TempDir,
    /// Directories put first on `PATH` (credential helpers).
    pub path_dirs: Vec<PathBuf>,
}

impl Strata {
    pub fn new() -> Strata {
        let dir = tempfile::tempdir().unwrap();
        for d in ["config/strata", "docker", "home"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Strata {
            dir,
            path_dirs: Vec::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// strata's config directory (`registries.json`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config/strata")
    }

    /// `$DOCKER_CONFIG` (`config.json`).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    pub fn store(&self) -> Store {
        Store::open(self.root()).unwrap()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("strata"));
        let mut path = std::env::join_paths(&self.path_dirs).unwrap();
        if let Some(system) = std::env::var_os("PATH") {
            if !path.is_empty() {
                path.push(":");
            }
            path.push(system);
        }
        c.env("STRATA_ROOT", self.root())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("DOCKER_CONFIG", self.docker_config())
            .env("HOME", self.dir.path().join("home"))
            .env("PATH", path)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs strata and returns its stdout; panics with everything it said when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs strata, expects it to fail, and returns stdout and stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "strata {args:?} succeeded:\n{}",
            text(&out)
        );
        text(&out)
    }

    /// Imports the busybox rootfs as `name` for `platform`; returns the image ID.
    pub fn import_busybox(&self, name: &str, platform: &str) -> String {
        let tar = store_support::busybox_tar().to_str().unwrap().to_string();
        self.ok(&[
            "import",
            &tar,
            name,
            "--platform",
            platform,
            "--change",
            r#"CMD ["sh"]"#,
        ])
        .trim()
        .to_string()
    }

    /// Files in the store's ingest directory (writes in progress or abandoned).
    pub fn ingest_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.root().join("ingest")) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy"]);
    c
}

/// `skopeo inspect --raw` of an image on a plain-HTTP registry.
pub fn raw_manifest(image: &str) -> Vec<u8> {
    let out = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

/// The `Digest:` and `N: digest: ... size:` values strata printed.
pub fn printed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| {
            l.strip_prefix("Digest: ")
                .or_else(|| l.split_once(": digest: ").map(|(_, r)| r))
        })
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in:\n{output}"))
        .to_string()
}

/// The registry's access-log request lines after the first `skip`.
pub fn requests_since(registry: &common::Registry, skip: usize) -> Vec<String> {
    registry.requests().into_iter().skip(skip).collect()
}

/// Unpacks `image` (OCI media types) from the store's OCI layout with umoci and runs
/// `sh -c script` in it under runc; returns its standard output.
pub fn run_with_umoci(root: &Path, image: &str, script: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    common::run(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{image}", root.join("oci").display()))
            .arg(&bundle),
    );
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
    config["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let name = format!(
        "strata-registry-test-{}-{}",
        std::process::id(),
        tmp.path().file_name().unwrap().to_string_lossy()
    );
    common::run(
        Command::new("runc")
            .arg("--root")
            .arg(tmp.path().join("runc-state"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&name)
            .stdin(Stdio::null()),
    )
}

/// Extracts `image`'s layers as the store has them (any media types) with tar into a rootfs
/// and runs `sh -c script` there in strata's sandbox (`strata debug run-bundle`); returns its
/// standard output.
pub fn run_in_sandbox(strata: &Strata, image: &str, script: &str) -> String {
    let store = strata.store();
    let resolved = store.resolve(image).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in resolved.manifest.layers() {
        // GNU tar recognises the compression by its magic.
        common::run(
            Command::new("tar")
                .arg("-xf")
                .arg(store.blob_path(layer.digest()))
                .arg("-C")
                .arg(&rootfs),
        );
    }
    let spec = strata.ok(&[
        "debug",
        "runtime-spec",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    strata.ok(&["debug", "run-bundle", bundle.to_str().unwrap()])
}
