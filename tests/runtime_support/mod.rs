//! Shared helpers for the runtime integration tests: a busybox rootfs, specs, running them.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_runtime::spec::{self, Network};
use strata_runtime::{Exit, Sandbox, Spec, StdioSet};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A busybox root filesystem in a temporary directory, with root and alice (uid 1000, also in
/// the groups wheel=10 and audio=29).
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-rt-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        for d in ["bin", "etc", "tmp", "root", "home/alice"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nwheel:x:10:alice\naudio:x:29:alice\nalice:x:1000:\n",
        )
        .unwrap();
        Rootfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A spec with Docker's defaults running `sh -c script`, hostname `sandbox`, private network.
    pub fn spec(&self, script: &str) -> Spec {
        let mut s = spec::default_spec(self.path(), vec!["sh".into(), "-c".into(), script.into()]);
        s.set_hostname(Some("sandbox".into()));
        spec::set_network(&mut s, Network::Private);
        s
    }

    /// Compiles a small static C program into the rootfs at /bin/<name>.
    pub fn compile(&self, name: &str, source: &str) -> PathBuf {
        let src = self.path().join(format!("tmp/{name}.c"));
        std::fs::write(&src, source).unwrap();
        let out = self.path().join("bin").join(name);
        let status = std::process::Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success(), "compiling {name}");
        std::fs::remove_file(src).unwrap();
        out
    }
}

/// What a finished run printed.
pub struct Output {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `spec` in strata's sandbox with stdout and stderr piped.
pub fn run(spec: &Spec) -> Output {
    run_with(&Sandbox::new(STRATA), spec)
}

pub fn run_with(sandbox: &Sandbox, spec: &Spec) -> Output {
    let mut container = sandbox.spawn(spec, StdioSet::piped()).expect("spawn");
    let mut out = container.stdout.take().unwrap();
    let mut err = container.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).unwrap();
    let exit = container.wait().expect("wait");
    Output {
        exit,
        stdout,
        stderr: stderr.join().unwrap(),
    }
}

/// The value of a `Key:\tvalue` line of /proc/<pid>/status output.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}
