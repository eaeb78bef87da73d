//! The store and its archives against the real tools: dockerd (started here), podman, skopeo,
//! umoci and runc.

mod store_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store_support::Root;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A dockerd of the test's own (own data root, exec root and socket; no networking changes),
/// stopped when dropped.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none", "--ip-forward=false"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (the docker.io package, installed by .ci/setup)");
        let dockerd = Dockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd
            .docker()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(dockerd.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .env("DOCKER_CONFIG", self.dir.path().join("client"));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd; SIGKILL if it takes too long.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd leaves its network namespace mounted in the exec root; unmount whatever is
        // still mounted under our directory so it can be removed.
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.reverse();
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn save(root: &Root, dir: &Path, format: &str, refs: &[&str]) -> PathBuf {
    let out = dir.join(format!(
        "{format}-{}.tar",
        refs.join("_").replace(['/', ':'], "_")
    ));
    root.strata()
        .args(["save", "--format", format, "-o", out.to_str().unwrap()])
        .args(refs)
        .assert()
        .success();
    out
}

#[test]
fn docker_loads_and_runs_our_image_and_we_load_docker_save() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let id = root.import_busybox("strata-test/busybox:v1");
    let archive = save(&root, tmp.path(), "docker", &["strata-test/busybox:v1"]);

    let dockerd = Dockerd::start();
    let loaded = run(dockerd.docker().arg("load").arg("-i").arg(&archive));
    assert!(
        loaded.contains("Loaded image: strata-test/busybox:v1"),
        "{loaded}"
    );
    let out = run(dockerd.docker().args([
        "run",
        "--rm",
        "--network=host",
        "strata-test/busybox:v1",
        "sh",
        "-c",
        "echo hello from $(cat /etc/passwd | cut -d: -f1)",
    ]));
    assert_eq!(out, "hello from root\n");
    let docker_id = run(dockerd.docker().args([
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "strata-test/busybox:v1",
    ]));
    assert_eq!(docker_id.trim(), id, "docker sees the same image ID");

    // `diff` after the same changes: docker's and ours name the same changes (as sets: docker's
    // order follows Go map iteration), ours in a fixed order.
    const CHANGES: &str = "mkdir -p /new/sub; echo y > /new/sub/f; rm /bin/ls; ln -s /x /link; \
        echo x >> /etc/passwd; rm /etc/group; chmod 700 /new; echo q > /q; rm /q; \
        touch /etc/z; chmod 600 /etc/z";
    let image = "strata-test/busybox:v1";
    run(dockerd.docker().args([
        "run",
        "--name",
        "changed",
        "--network=none",
        image,
        "sh",
        "-c",
        CHANGES,
    ]));
    let theirs = run(dockerd.docker().args(["diff", "changed"]));
    run(root
        .strata_process()
        .args(["run", "--name", "changed", image, "sh", "-c", CHANGES]));
    let ours = run(root.strata_process().args(["diff", "changed"]));
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&ours),
        sorted(&theirs),
        "ours:\n{ours}theirs:\n{theirs}"
    );
    assert_eq!(
        ours,
        "C /bin\nD /bin/ls\nC /etc\nD /etc/group\nC /etc/passwd\nA /etc/z\nA /link\nA /new\n\
         A /new/sub\nA /new/sub/f\n"
    );

    // docker save -> strata load: same ID, same layers.
    let docker_archive = tmp.path().join("docker-save.tar");
    run(dockerd
        .docker()
        .args(["save", "-o"])
        .arg(&docker_archive)
        .arg("strata-test/busybox:v1"));
    drop(dockerd);
    let back = Root::new();
    back.strata()
        .args(["load", "-i", docker_archive.to_str().unwrap()])
        .assert()
        .success();
    let original = root.store().resolve("strata-test/busybox:v1").unwrap();
    let reloaded = back.store().resolve("strata-test/busybox:v1").unwrap();
    assert_eq!(reloaded.id(), original.id());
    assert_eq!(reloaded.diff_ids(), original.diff_ids());
    store_support::check_consistent(&back.path());
}

#[test]
fn podman_loads_our_docker_archive() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let id = root.import_busybox("localhost/strata-test:podman");
    let archive = save(
        &root,
        tmp.path(),
        "docker",
        &["localhost/strata-test:podman"],
    );
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run(&mut podman(&["load", "-i", archive.to_str().unwrap()]));
    let ids = run(&mut podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]));
    assert!(
        ids.contains(&format!("{} localhost/strata-test:podman", &id[7..])),
        "{ids}"
    );
}

#[test]
fn skopeo_reads_our_store_and_archives_and_we_read_its() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let id = root.import_busybox("busybox");
    root.strata()
        .args(["tag", "busybox", "localhost:5000/team/app:1.0"])
        .assert()
        .success();
    let manifest = root
        .store()
        .resolve("busybox")
        .unwrap()
        .manifest_descriptor
        .digest()
        .to_string();
    let layout = root.path().join("oci");
    let skopeo = || {
        let mut c = Command::new("skopeo");
        c.arg("--insecure-policy");
        c
    };
    // The store itself, by familiar and by full names.
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "localhost:5000/team/app:1.0",
    ] {
        let out = run(skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{name}", layout.display())));
        assert_eq!(
            strata_codec::sha256_digest(out.as_bytes()).to_string(),
            manifest,
            "{name}"
        );
    }
    // Our archives.
    let docker = save(&root, tmp.path(), "docker", &["busybox"]);
    let oci = save(&root, tmp.path(), "oci", &["busybox"]);
    for source in [
        format!("docker-archive:{}", docker.display()),
        format!("oci-archive:{}", oci.display()),
        format!("oci-archive:{}:latest", oci.display()),
    ] {
        let out = run(skopeo().args(["inspect", "--config", "--raw"]).arg(&source));
        assert_eq!(
            strata_codec::sha256_digest(out.as_bytes()).to_string(),
            id,
            "{source}"
        );
    }
    // skopeo copy out of our store into a docker-archive and an OCI layout, loaded back.
    let sk_docker = tmp.path().join("skopeo-docker.tar");
    run(skopeo()
        .arg("copy")
        .arg(format!("oci:{}:busybox", layout.display()))
        .arg(format!(
            "docker-archive:{}:copied/busybox:sk",
            sk_docker.display()
        )));
    let sk_oci = tmp.path().join("skopeo-oci.tar");
    run(skopeo()
        .arg("copy")
        .arg(format!("oci:{}:busybox", layout.display()))
        .arg(format!("oci-archive:{}:copied/oci:sk", sk_oci.display())));
    let back = Root::new();
    for archive in [&sk_docker, &sk_oci] {
        back.strata()
            .args(["load", "-i", archive.to_str().unwrap()])
            .assert()
            .success();
    }
    assert_eq!(
        back.store()
            .resolve("copied/busybox:sk")
            .unwrap()
            .id()
            .to_string(),
        id
    );
    let oci_copy = back.store().resolve("copied/oci:sk").unwrap();
    assert_eq!(oci_copy.id().to_string(), id);
    assert_eq!(
        oci_copy.manifest_descriptor.digest().to_string(),
        manifest,
        "skopeo kept our manifest"
    );
    store_support::check_consistent(&back.path());
}

#[test]
fn umoci_unpacks_a_runnable_bundle_from_the_store() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    root.import_busybox("localhost/bundle:v1");
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!(
            "{}:localhost/bundle:v1",
            root.path().join("oci").display()
        ))
        .arg(&bundle));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["process"]["args"], serde_json::json!(["sh"]));
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "echo bundle ran"]);
    config["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let name = format!("strata-store-test-{}", std::process::id());
    let out = run(Command::new("runc")
        .arg("--root")
        .arg(tmp.path().join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&name)
        .stdin(Stdio::null()));
    assert_eq!(out, "bundle ran\n");
}
