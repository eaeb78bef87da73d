//! The cgroup v2 code path on this cgroup v1 (hybrid) machine: a cgroup2 mount of the unified
//! hierarchy, where the container is placed, killed and removed. Its controllers are all bound
//! to v1 here, so limits must fail with a clear error (the translation of limits to v2 files is
//! unit-tested in the runtime crate).

mod runtime_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use runtime_support::{Rootfs, STRATA};
use strata_runtime::spec::{self, Limits};
use strata_runtime::{RunError, Sandbox, StdioSet};

/// A cgroup2 mount in a temporary directory, unmounted on drop.
struct Cgroup2Mount {
    dir: tempfile::TempDir,
}

impl Cgroup2Mount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting cgroup2");
        Cgroup2Mount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cgroup2Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn containers_join_and_leave_a_cgroup2_hierarchy() {
    let mount = Cgroup2Mount::new();
    let rootfs = Rootfs::new();
    let name = format!("strata-test-v2-{}", std::process::id());
    let mut spec = rootfs.spec("cat /proc/self/cgroup | grep '^0::'; echo ready; exec sleep 60");
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{name}"))));
    spec.set_linux(Some(linux));
    let sandbox = Sandbox::new(STRATA).with_cgroup_v2_root(mount.path());

    let mut container = sandbox.spawn(&spec, StdioSet::piped()).unwrap();
    let mut stdout = BufReader::new(container.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line);
    }
    // Inside, the cgroup namespace makes its own cgroup the root.
    assert_eq!(lines, ["0::/\n", "ready\n"]);
    let dir = mount.path().join(&name);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|p| p == container.pid().to_string()),
        "{procs}"
    );
    assert_eq!(procs.lines().count(), 2, "init and the command: {procs}");
    drop(container); // killed through cgroup.kill, then removed
    assert!(!dir.exists(), "{} left behind", dir.display());

    // Limits need controllers that this machine binds to cgroup v1.
    let mut spec = rootfs.spec("true");
    spec::set_limits(
        &mut spec,
        &Limits {
            pids: Some(10),
            ..Default::default()
        },
    );
    match sandbox.spawn(&spec, StdioSet::piped()) {
        Err(RunError::Setup(message)) => assert!(
            message.contains("pids controller is not available"),
            "{message}"
        ),
        other => panic!("expected a setup error, got {other:?}"),
    }
    // The shared parent of unnamed containers' cgroups; removable once empty.
    let _ = std::fs::remove_dir(mount.path().join("strata"));
}
