//! Helpers shared by the store's integration tests: a private store root, a busybox rootfs
//! tarball made from /bin/busybox (built once per test binary), and a consistency check.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use strata_store::Store;

/// A store root of its own, removed on drop.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `strata` with `STRATA_ROOT` pointing here.
    pub fn strata(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("strata").unwrap();
        c.env("STRATA_ROOT", self.path());
        c
    }

    /// The same as a std Command (for spawning and killing).
    pub fn strata_process(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("strata"));
        c.env("STRATA_ROOT", self.path());
        c
    }

    pub fn stdout(&self, args: &[&str]) -> String {
        let out = self
            .strata()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    }

    pub fn store(&self) -> Store {
        Store::open(self.path()).unwrap()
    }

    /// Imports the busybox rootfs as `name`; returns the image ID.
    pub fn import_busybox(&self, name: &str) -> String {
        self.stdout(&[
            "import",
            busybox_tar().to_str().unwrap(),
            name,
            "--change",
            r#"CMD ["sh"]"#,
        ])
        .trim()
        .to_string()
    }
}

/// A tar of a busybox rootfs: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group.
/// Built once (its bytes are deterministic) under Cargo's target tmp dir and reused.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-tests");
        let tar = cache.join("busybox.tar");
        if tar.is_file() {
            return tar;
        }
        std::fs::create_dir_all(&cache).unwrap();
        let dir = tempfile::tempdir_in(&cache).unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "tmp", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            let link = rootfs.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link).unwrap();
            }
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        let partial = dir.path().join("busybox.tar");
        let status = Command::new("tar")
            .args(["--numeric-owner", "--sort=name", "--mtime=@0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&partial)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        // Renamed into place: test binaries running at once never see half a file.
        std::fs::rename(&partial, &tar).unwrap();
        tar
    })
}

/// Every name resolves, and every blob an image references exists and matches its digest.
/// Returns the number of images checked.
pub fn check_consistent(root: &Path) -> usize {
    let store = Store::open(root).unwrap();
    let entries = store.entries().unwrap();
    for e in &entries {
        let image = match &e.name {
            Some(n) => store.resolve(&n.to_string()),
            None => store.resolve(e.target.digest().as_ref()),
        }
        .unwrap_or_else(|err| panic!("{:?} does not resolve: {err}", e.name));
        let blobs = std::iter::once(image.manifest_descriptor.clone())
            .chain(std::iter::once(image.manifest.config().clone()))
            .chain(image.manifest.layers().iter().cloned());
        for d in blobs {
            let mut r = store
                .open_blob(d.digest())
                .unwrap_or_else(|err| panic!("blob {} of {:?}: {err}", d.digest(), e.name));
            let n = std::io::copy(&mut r, &mut std::io::sink())
                .unwrap_or_else(|err| panic!("blob {} does not verify: {err}", d.digest()));
            assert_eq!(n, d.size(), "blob {} has the wrong size", d.digest());
        }
    }
    entries.len()
}

/// Reads a file to a string.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}
