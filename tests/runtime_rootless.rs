//! Rootless mode: an unprivileged user created by the test runs a container in a user namespace
//! that maps it to root and its /etc/subuid range to the other ids.

mod runtime_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use runtime_support::{Rootfs, STRATA};
use strata_runtime::spec;
use strata_runtime::user::resolve_user;

/// A user made for this test, with subordinate ids; removed (with its lines) on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// The first subordinate id and how many (the same range for uids and gids).
    sub: (u32, u32),
}

impl TestUser {
    /// `tag` tells apart the users of tests running at the same time.
    fn create(tag: &str) -> Self {
        let name = format!("strata-rl{}{tag}", std::process::id());
        let status = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/false", &name])
            .status()
            .unwrap();
        assert!(status.success(), "useradd {name}");
        // Debian's useradd may already have given the user ranges; otherwise add them.
        let existing = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() == 3 && f[0] == name)
                        .then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
                })
        };
        let sub = match (existing("/etc/subuid"), existing("/etc/subgid")) {
            (Some(u), Some(g)) if u == g => u,
            _ => {
                let sub = (410_000, 65_536);
                for file in ["/etc/subuid", "/etc/subgid"] {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    let kept: String = text
                        .lines()
                        .filter(|l| !l.starts_with(&format!("{name}:")))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    std::fs::write(file, format!("{kept}{name}:{}:{}\n", sub.0, sub.1)).unwrap();
                }
                sub
            }
        };
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser {
            name,
            uid,
            gid,
            sub,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let prefix = format!("{}:", self.name);
        for file in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&prefix))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = std::fs::write(file, kept);
            }
        }
        // Whatever a failed test left running as the user would keep userdel from working.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs the bundle as `user`, with `extra_path` first on PATH when given. A run that hangs is
/// stopped after a minute (exit code 124) so that it fails instead of holding CI.
fn run_as(user: &TestUser, bundle: &Path) -> (i32, String, String) {
    run_as_with_path(user, bundle, None)
}

fn run_as_with_path(
    user: &TestUser,
    bundle: &Path,
    extra_path: Option<&Path>,
) -> (i32, String, String) {
    let mut command = Command::new("timeout");
    command
        .args(["60", "setpriv"])
        .args([
            &format!("--reuid={}", user.uid),
            &format!("--regid={}", user.gid),
            "--clear-groups",
        ])
        .args([STRATA, "debug", "run-bundle"])
        .arg(bundle);
    if let Some(dir) = extra_path {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn an_unprivileged_user_runs_a_container_mapped_to_root() {
    let user = TestUser::create("a");
    let rootfs = Rootfs::new();
    let bundle = tempfile::tempdir().unwrap();

    let script = "echo pid=$$; id; hostname; cat /proc/self/uid_map /proc/self/gid_map | tr -s ' '; \
                  grep CapEff /proc/self/status; touch /made-by-root; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
                  cat /proc/sys/net/ipv4/ping_group_range";
    let spec = rootfs.spec(script);
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    chown_tree(rootfs.path(), user.uid, user.gid);
    chown_tree(bundle.path(), user.uid, user.gid);
    let (code, out, err) = run_as(&user, bundle.path());
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "pid=2\nuid=0(root) gid=0(root)\nsandbox\n 0 {uid} 1\n 1 {start} {count}\n 0 {gid} 1\n 1 {start} {count}\nCapEff:\t00000000a80425fb\nlo\n0\t{count}\n",
        uid = user.uid,
        gid = user.gid,
        start = user.sub.0,
        count = user.sub.1,
    );
    assert_eq!(out, expected, "{err}");
    // Root inside is the user outside.
    assert_eq!(
        std::fs::metadata(rootfs.path().join("made-by-root"))
            .unwrap()
            .uid(),
        user.uid
    );

    // A non-root user inside maps into the subordinate range.
    let mut spec = rootfs.spec("id -u; touch /tmp/made-by-alice");
    spec::set_user(&mut spec, &resolve_user(rootfs.path(), "alice").unwrap());
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        rootfs.path().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let (code, out, err) = run_as(&user, bundle.path());
    assert_eq!((code, out.as_str()), (0, "1000\n"), "{err}");
    let owner = std::fs::metadata(rootfs.path().join("tmp/made-by-alice"))
        .unwrap()
        .uid();
    assert_eq!(owner, user.sub.0 + 1000 - 1);
}

#[test]
fn an_unprivileged_user_publishes_a_port() {
    let user = TestUser::create("b");
    let rootfs = Rootfs::new();
    let bundle = tempfile::tempdir().unwrap();
    // Serves one connection, then the container ends.
    let spec = rootfs.spec("echo hello from rootless | nc -l -p 8080");
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    chown_tree(rootfs.path(), user.uid, user.gid);
    chown_tree(bundle.path(), user.uid, user.gid);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={}", user.uid),
            &format!("--regid={}", user.gid),
            "--clear-groups",
        ])
        .args([
            STRATA,
            "debug",
            "run-bundle",
            "--publish",
            &format!("{port}:8080"),
        ])
        .arg(bundle.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut received = String::new();
    while received.is_empty() && std::time::Instant::now() < deadline {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = std::io::Read::read_to_string(&mut conn, &mut received);
        }
        if received.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if received.is_empty() {
        let _ = child.kill(); // the container goes with it
    }
    let status = child.wait().unwrap();
    assert_eq!(received, "hello from rootless\n");
    assert!(status.success(), "{status}");
}

#[test]
fn a_refused_id_map_fails_the_run_instead_of_hanging_it() {
    let user = TestUser::create("c");
    let rootfs = Rootfs::new();
    let bundle = tempfile::tempdir().unwrap();
    // A newuidmap that refuses, found first on PATH: the helper's half of the handshake fails
    // while the intermediate process waits for it.
    let tools = tempfile::tempdir().unwrap();
    let fake = tools.path().join("newuidmap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'newuidmap: mapping refused' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        tools.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&rootfs.spec("echo never")).unwrap(),
    )
    .unwrap();
    chown_tree(rootfs.path(), user.uid, user.gid);
    chown_tree(bundle.path(), user.uid, user.gid);
    let (code, out, err) = run_as_with_path(&user, bundle.path(), Some(tools.path()));
    assert_ne!(code, 124, "the run hung: {err}");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("mapping refused"), "{err}");
    assert_eq!(out, "");
}
