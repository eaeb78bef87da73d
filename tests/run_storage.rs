//! What containers keep: volumes (named, anonymous, filled from the image), commit, cp (safe
//! against the container's symlinks), memory limits, and garbage collection of snapshots.

mod run_support;
mod store_support;

use std::path::Path;
use std::time::Duration;

use run_support::Env;

#[test]
fn a_named_volume_keeps_its_data_across_containers() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        env.ok(&["run", "--rm", "-v", "data:/data:ro", "bb", "cat", "/data/f"]),
        "kept\n"
    );
    let (_, err) = env.fails(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "bb",
        "touch",
        "/data/g",
    ]);
    assert!(err.contains("Read-only file system"), "{err}");
    // A new volume is filled from what the image has at the mount point.
    assert_eq!(
        env.ok(&["run", "--rm", "-v", "etc:/etc", "bb", "cat", "/etc/passwd"]),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    let etc = env.path().join("volumes/etc/_data");
    assert!(etc.join("group").is_file());
    // ls, inspect, rm refused while used, rm, prune.
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "data\netc\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!(
        inspect[0]["Mountpoint"].as_str().unwrap(),
        env.path().join("volumes/data/_data").to_str().unwrap()
    );
    env.ok(&["create", "--name", "user", "-v", "data:/data", "bb"]);
    let (_, err) = env.fails(&["volume", "rm", "data"]);
    assert!(err.contains("volume is in use"), "{err}");
    env.ok(&["rm", "user"]);
    env.ok(&["volume", "rm", "data"]);
    let (_, err) = env.fails(&["volume", "inspect", "data"]);
    assert!(err.contains("no such volume"), "{err}");
    // Image VOLUMEs become anonymous volumes; rm -v removes them, prune the unused rest.
    env.image("withvol", &["VOLUME /cache", r#"CMD ["sh"]"#]);
    let id = env
        .ok(&["create", "withvol", "sh", "-c", "echo x > /cache/y"])
        .trim()
        .to_string();
    let mounts = env.inspect(&id)["Mounts"].clone();
    let anonymous = mounts[0]["Name"].as_str().unwrap().to_string();
    assert_eq!(
        (anonymous.len(), mounts[0]["Destination"].as_str()),
        (64, Some("/cache"))
    );
    env.ok(&["start", "-a", &id]);
    env.ok(&["rm", "-v", &id]);
    assert!(!env.ok(&["volume", "ls", "-q"]).contains(&anonymous));
    env.ok(&["run", "--rm", "-v", "/scratch", "bb", "true"]);
    env.ok(&["volume", "create", "named"]);
    let pruned = env.ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.starts_with("Total reclaimed space"),
        "--rm removed the anonymous one: {pruned}"
    );
    let pruned = env.ok(&["volume", "prune", "-a", "-f"]);
    assert!(
        pruned.contains("Deleted Volumes:\netc\nnamed\n"),
        "{pruned}"
    );
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn commit_makes_an_image_that_runs_with_the_changes() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "--name",
        "changer",
        "-e",
        "KEPT=yes",
        "bb",
        "sh",
        "-c",
        "echo changed > /etc/motd; rm /etc/group; mkdir -p /srv/app",
    ]);
    let id = env
        .ok(&[
            "commit",
            "-m",
            "my change",
            "-c",
            "WORKDIR /srv/app",
            "changer",
            "mine:v1",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let out = env.ok(&[
        "run",
        "--rm",
        "mine:v1",
        "sh",
        "-c",
        "cat /etc/motd; test -e /etc/group || echo group-gone; pwd; echo $KEPT",
    ]);
    assert_eq!(out, "changed\ngroup-gone\n/srv/app\nyes\n");
    let history = env.ok(&["history", "mine:v1"]);
    assert!(history.contains("my change"), "{history}");
    let image: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["inspect", "mine:v1"])).unwrap();
    assert_eq!(image[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    // A running container commits as it is.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "bb",
        "sh",
        "-c",
        "echo live > /live; sleep 100",
    ]);
    env.until("the file", Duration::from_secs(5), || {
        env.output(&["exec", "live", "test", "-e", "/live"])
            .status
            .success()
    });
    env.ok(&["commit", "live", "mine:v2"]);
    assert_eq!(
        env.ok(&["run", "--rm", "mine:v2", "cat", "/live"]),
        "live\n"
    );
}

#[test]
fn cp_copies_both_ways_and_never_follows_the_containers_links_out() {
    let env = Env::new();
    env.image("bb", &[]);
    let work = tempfile::tempdir().unwrap();
    let host = work.path();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let secret = host.join("secret");
    let setup = format!(
        "mkdir -p /d/sub && echo inner > /d/sub/f && ln -s {s} /d/link && ln -s {h} /escape \
         && ln -s ../../../../../../../..{h} /up && ln -s {s} /leak && echo up; exec sleep 100",
        s = secret.display(),
        h = host.display()
    );
    env.ok(&[
        "run", "-d", "--name", "box", "-v", "vol:/vol", "bb", "sh", "-c", &setup,
    ]);
    env.until("the setup", Duration::from_secs(5), || {
        env.ok(&["logs", "box"]) == "up\n"
    });

    // Out of a running container: a directory with its links as links.
    let out = host.join("out");
    std::fs::create_dir(&out).unwrap();
    env.ok(&["cp", "box:/d", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("d/sub/f")).unwrap(),
        "inner\n"
    );
    assert_eq!(std::fs::read_link(out.join("d/link")).unwrap(), secret);
    // A link as the source is copied as a link; -L follows it inside the container only.
    env.ok(&["cp", "box:/leak", out.join("leak").to_str().unwrap()]);
    assert!(
        std::fs::symlink_metadata(out.join("leak"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let (_, err) = env.fails(&[
        "cp",
        "-L",
        "box:/leak",
        out.join("followed").to_str().unwrap(),
    ]);
    assert!(!out.join("followed").exists(), "{err}");

    // Into the container: through a link that points at the host path, the write stays in
    // the container (where that path does not exist) and never reaches the host directory.
    std::fs::create_dir(host.join("src")).unwrap();
    let planted = host.join("src/planted");
    std::fs::write(&planted, "planted\n").unwrap();
    let escapes = [
        "box:/escape/planted",
        "box:/up/planted",
        "box:/escape/",
        "box:/up/",
    ];
    for target in escapes {
        let _ = env.output(&["cp", planted.to_str().unwrap(), target]);
        assert!(!host.join("planted").exists(), "{target} escaped");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
    let file = host.join("payload");
    std::fs::write(&file, "payload\n").unwrap();
    env.ok(&["cp", file.to_str().unwrap(), "box:/tmp/"]);
    env.ok(&["cp", out.join("d").to_str().unwrap(), "box:/copied"]);
    let check = "cat /tmp/payload /copied/sub/f; readlink /copied/link; stat -c %u /tmp/payload";
    let seen = env.ok(&["exec", "box", "sh", "-c", check]);
    assert_eq!(seen, format!("payload\ninner\n{}\n0\n", secret.display()));
    // Into a volume (visible through the running container's mounts).
    env.ok(&["cp", file.to_str().unwrap(), "box:/vol/in-volume"]);
    assert!(env.path().join("volumes/vol/_data/in-volume").is_file());

    // A stopped container: its snapshot and volumes are mounted for the copy.
    env.ok(&["stop", "-t", "0", "box"]);
    env.ok(&[
        "cp",
        "box:/tmp/payload",
        out.join("from-stopped").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("from-stopped")).unwrap(),
        "payload\n"
    );
    env.ok(&[
        "cp",
        "box:/vol/in-volume",
        out.join("vol-file").to_str().unwrap(),
    ]);
    for target in escapes {
        let _ = env.output(&["cp", planted.to_str().unwrap(), target]);
        assert!(!host.join("planted").exists(), "{target} escaped (stopped)");
    }
    // Mounts of this test's root only: the other tests of this file run containers meanwhile.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&env.path().display().to_string()),
        "cp left the snapshot mounted"
    );
}

#[test]
fn a_memory_limit_hit_is_reported_as_oom() {
    let env = Env::new();
    env.image("bb", &[]);
    let out = env.output(&[
        "run",
        "--name",
        "hungry",
        "--memory",
        "16m",
        "bb",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
    ]);
    assert_eq!(out.status.code(), Some(137));
    let state = env.inspect("hungry")["State"].clone();
    assert_eq!(state["OOMKilled"], true);
    assert_eq!(state["ExitCode"], 137);
    // Under the limit it runs fine.
    env.ok(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "bb",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=8M",
        "count=1",
    ]);
}

#[test]
fn removed_containers_and_images_give_their_snapshots_back_to_gc() {
    let env = Env::new();
    env.image("bb", &[]);
    let id = env.ok(&["create", "bb", "true"]).trim().to_string();
    let snapshots = |env: &Env| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(env.path().join("snapshots/s"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = snapshots(&env);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.contains(&format!("container-{id}")));
    let layer = before
        .iter()
        .find(|s| s.starts_with("sha256-"))
        .unwrap()
        .clone();
    // The image is held by its container: pruning keeps it and its layer snapshot.
    env.ok(&["image", "prune", "-a", "-f"]);
    assert!(Path::new(&env.path().join("snapshots/s").join(&layer)).exists());
    env.ok(&["rm", &id]);
    assert_eq!(snapshots(&env), vec![layer]);
    env.ok(&["rmi", "bb"]);
    env.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(snapshots(&env), Vec::<String>::new());
}

/// `system df` counts containers (a writable layer each; a stopped one's is reclaimable) and
/// volumes (an unused one's is reclaimable), as Docker's does.
#[test]
fn system_df_counts_containers_and_volumes() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["volume", "create", "used"]);
    env.ok(&["volume", "create", "spare"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "-v",
        "used:/data",
        "bb",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero > /big; head -c 1000000 /dev/zero > /data/x; sleep 60",
    ]);
    env.ok(&[
        "run",
        "--name",
        "down",
        "bb",
        "sh",
        "-c",
        "head -c 2000000 /dev/zero > /f",
    ]);
    env.until(
        "the running container's writes",
        Duration::from_secs(20),
        || {
            env.ok(&["system", "df"])
                .lines()
                .any(|l| l.starts_with("Local Volumes") && l.contains(" 1MB "))
        },
    );
    let df = env.ok(&["system", "df"]);
    let row = |kind: &str| -> Vec<String> {
        let line = df
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row in {df}"));
        line[kind.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let containers = row("Containers");
    assert_eq!(containers[..2], ["2", "1"], "{df}");
    // 3 MB + 2 MB written, 2 MB of it in the stopped container (40%), counted as Docker counts
    // (the sizes of the files, so exactly).
    assert_eq!(containers[2..4], ["5MB", "2MB"], "{df}");
    assert_eq!(containers[4], "(40%)", "{df}");
    let volumes = row("Local Volumes");
    assert_eq!(volumes[..2], ["2", "1"], "{df}");
    assert_eq!(volumes[2], "1MB", "{df}");
    // The unused volume is empty: 0 B, as Docker counts (file sizes, not directory blocks).
    assert_eq!(volumes[3..5], ["0B", "(0%)"], "{df}");
    env.ok(&["rm", "-f", "up", "down"]);
}

/// `container prune` removes what is not running (created and exited containers), keeps the
/// running one and the volumes; `system prune` removes stopped containers too. Docker's
/// management forms (`container ls`, `image rm`...) are the same commands.
#[test]
fn container_prune_and_the_management_commands() {
    let env = Env::new();
    env.image("bb", &[]);
    let created = env.ok(&["create", "-v", "kept:/data", "bb", "true"]);
    env.ok(&[
        "run",
        "--name",
        "exited",
        "bb",
        "sh",
        "-c",
        "head -c 2000 /dev/zero > /f",
    ]);
    env.ok(&["run", "-d", "--name", "up", "bb", "sleep", "60"]);
    let exited = env.inspect("exited")["Id"].as_str().unwrap().to_string();
    let all = env.ok(&["container", "ls", "-a", "-q", "--no-trunc"]);
    assert_eq!(all.lines().count(), 3, "{all}");

    let pruned = env.ok(&["container", "prune", "-f"]);
    let mut deleted: Vec<&str> = pruned
        .strip_prefix("Deleted Containers:\n")
        .unwrap_or_else(|| panic!("{pruned}"))
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    deleted.sort();
    let mut expected = vec![created.trim(), exited.as_str()];
    expected.sort();
    assert_eq!(deleted, expected, "{pruned}");
    assert!(pruned.ends_with("Total reclaimed space: 2kB\n"), "{pruned}");
    assert_eq!(
        env.ok(&["container", "ls", "-a", "--format", "json"])
            .lines()
            .count(),
        1
    );
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "kept\n", "volumes stay");
    assert_eq!(
        env.ok(&["container", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );

    // system prune takes stopped containers along.
    env.ok(&["stop", "-t", "0", "up"]);
    let pruned = env.ok(&["system", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:\n"), "{pruned}");
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]), "");

    // Images through `image ...`.
    env.ok(&["image", "tag", "bb", "other:1"]);
    let listed = env.ok(&["image", "ls"]);
    assert!(listed.contains("other "), "{listed}");
    let inspected: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "other:1"])).unwrap();
    let tags = inspected[0]["RepoTags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t == "other:1"), "{tags:?}");
    let (_, err) = env.fails(&["container", "inspect", "other:1"]);
    assert!(err.contains("No such container: other:1"), "{err}");
    env.ok(&["image", "rm", "other:1"]);
    assert!(!env.ok(&["image", "ls"]).contains("other "));
}

/// `export`: the container's filesystem as a tar, its own changes in and its volumes out, running
/// or not; `diff` names the same changes.
#[test]
fn export_and_diff_a_container() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "--name",
        "changed",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        "echo mine > /mine; rm /etc/group; echo in-volume > /data/v",
    ]);
    let exported = env.path().with_file_name("changed.tar");
    env.ok(&["export", "-o", exported.to_str().unwrap(), "changed"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&exported).unwrap());
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        files.insert(path, String::from_utf8_lossy(&content).into_owned());
    }
    assert_eq!(files.get("mine").map(String::as_str), Some("mine\n"));
    assert!(files.contains_key("bin/busybox") && files.contains_key("etc/passwd"));
    assert!(!files.contains_key("etc/group"), "deleted");
    assert!(
        !files.keys().any(|k| k.starts_with("data/")),
        "volumes stay out"
    );
    assert_eq!(
        env.ok(&["diff", "changed"]),
        "C /etc\nD /etc/group\nA /mine\n"
    );

    // Running: read through the monitor's mount.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "bb",
        "sh",
        "-c",
        "echo up > /up; sleep 60",
    ]);
    env.until(
        "the running container's write",
        Duration::from_secs(10),
        || env.ok(&["diff", "live"]).contains("A /up"),
    );
    let out = env.output(&["container", "export", "live"]);
    assert!(out.status.success());
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "up"), "{names:?}");
    env.ok(&["rm", "-f", "live"]);
}

/// `cp` with `-`: a container path out as a tar on standard output, and a tar from standard
/// input into a container directory, as Docker's.
#[test]
fn cp_tar_streams() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "bb",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo inner > /d/sub/f && ln -s sub/f /d/l && echo up; exec sleep 60",
    ]);
    env.until("the setup", Duration::from_secs(10), || {
        env.ok(&["logs", "box"]) == "up\n"
    });
    let out = env.output(&["cp", "box:/d", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
        let link = entry.link_name().unwrap().map(|l| l.display().to_string());
        entries.push((path, content, link));
    }
    assert_eq!(
        entries,
        [
            ("d/".to_string(), String::new(), None),
            ("d/l".to_string(), String::new(), Some("sub/f".to_string())),
            ("d/sub/".to_string(), String::new(), None),
            ("d/sub/f".to_string(), "inner\n".to_string(), None),
        ]
    );

    // A tar in: its top-level entries land in the directory named.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o640);
    header.set_cksum();
    tar.append_data(&mut header, "dir/hello", &b"hello\n"[..])
        .unwrap();
    let input = tar.into_inner().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .env("STRATA_ROOT", env.path())
        .args(["cp", "-", "box:/tmp"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        env.ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "cat /tmp/dir/hello; stat -c %a /tmp/dir/hello"
        ]),
        "hello\n640\n"
    );
    env.ok(&["rm", "-f", "box"]);
}

/// `volume ls` filters and formats as Docker's: `dangling` (no container uses it), `name`,
/// `label`; `--format json` and templates.
#[test]
fn volume_ls_filters_and_formats() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["volume", "create", "--label", "team=web", "web-data"]);
    env.ok(&["volume", "create", "spare"]);
    env.ok(&["create", "-v", "web-data:/data", "bb", "true"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["volume", "ls", "-q"];
        all.extend(args);
        env.ok(&all).lines().map(str::to_string).collect()
    };
    assert_eq!(names(&[]), ["spare", "web-data"]);
    assert_eq!(names(&["-f", "dangling=true"]), ["spare"]);
    assert_eq!(names(&["-f", "dangling=false"]), ["web-data"]);
    assert_eq!(names(&["-f", "label=team=web"]), ["web-data"]);
    assert_eq!(names(&["-f", "name=sp"]), ["spare"]);
    assert_eq!(
        names(&["-f", "name=^web", "-f", "label=team"]),
        ["web-data"]
    );
    assert_eq!(
        env.ok(&[
            "volume",
            "ls",
            "--format",
            "{{.Name}} {{.Labels}}",
            "-f",
            "label=team"
        ]),
        "web-data team=web\n"
    );
    let json: serde_json::Value = serde_json::from_str(
        env.ok(&["volume", "ls", "--format", "json", "-f", "name=spare"])
            .trim(),
    )
    .unwrap();
    assert_eq!(json["Driver"], "local");
    let (_, err) = env.fails(&["volume", "ls", "-f", "colour=red"]);
    assert!(err.contains("invalid filter 'colour'"), "{err}");
}
