//! `RUN --mount`: secrets that leak nowhere, cache mounts kept across builds and cleared by
//! `strata builder prune`, bind mounts keyed by what they select, and a real ssh-agent.

mod build_support;

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use build_support::{Root, describe, ok, text, write};
use serde_json::Value;
use strata_codec::Decoder;

/// Names of the steps that ran (not cached) in a json progress stream.
fn ran(events: &[Value]) -> Vec<String> {
    build_support::started(events)
        .into_iter()
        .filter(|n| !build_support::cached(events).contains(n))
        .collect()
}

/// The content of `path` in image `reference` (the topmost layer that has it).
fn file_in_image(root: &Root, reference: &str, path: &str) -> Option<String> {
    let store = root.store();
    let image = store.resolve(reference).expect("built image");
    let want = path.trim_start_matches('/');
    for layer in image.manifest.layers().iter().rev() {
        let blob = BufReader::new(store.open_blob(layer.digest()).unwrap());
        let (_, decoder) = Decoder::detect(blob).unwrap();
        let mut archive = tar::Archive::new(decoder);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name.trim_start_matches("./").trim_end_matches('/') == want {
                let mut s = String::new();
                entry.read_to_string(&mut s).unwrap();
                return Some(s);
            }
        }
    }
    None
}

/// Paths in the image's merged filesystem.
fn paths(root: &Root, reference: &str) -> Vec<String> {
    describe(&root.store(), reference)["filesystem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    strata_codec::sha256_digest(data).digest().to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, plus the decompressed form of those that are compressed.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                let raw = fs::read(e.path()).unwrap();
                let mut plain = Vec::new();
                if let Ok((c, mut dec)) = Decoder::detect(&raw[..])
                    && c != strata_codec::Compression::None
                {
                    let _ = dec.read_to_end(&mut plain);
                }
                if contains(&raw, needle) || contains(&plain, needle) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

#[test]
fn secrets_reach_the_command_and_nothing_else() {
    let root = Root::with_busybox();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    // Distinctive bytes to search for; the env one is different so both are checked.
    let file_secret = "file-secret-Qx7vR2mZp9Lw";
    let env_secret = "env-secret-Hk3nB8tYc5Jd";
    let secret_file = work.path().join("token");
    fs::write(&secret_file, file_secret).unwrap();
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file-sum && stat -c '%a %u:%g' /run/secrets/tok > /file-stat\n\
         RUN --mount=type=secret,id=tok,target=/deep/dir/tok,mode=0440,uid=7,gid=8 stat -c '%a %u:%g' /deep/dir/tok > /custom-stat\n\
         RUN --mount=type=secret,id=envtok,env=TOKEN,required sh -c 'printf %s \"$TOKEN\" | sha256sum | cut -d\" \" -f1 > /env-sum; test ! -e /run/secrets/envtok && echo no-file > /env-only'\n\
         RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /absent\n",
    );
    let build = |tag: &str, file_value: Option<&str>| {
        if let Some(v) = file_value {
            fs::write(&secret_file, v).unwrap();
        }
        root.strata()
            .env("MY_ENV_SECRET", env_secret)
            .args(["build", "--progress=json", "-t", tag])
            .arg("--secret")
            .arg(format!("id=tok,src={}", secret_file.display()))
            .args(["--secret", "id=envtok,env=MY_ENV_SECRET"])
            .arg(&ctx)
            .output()
            .unwrap()
    };
    let out = build("secrets:1", None);
    ok(&out);
    // The command saw the values, with BuildKit's default and custom modes and owners.
    assert_eq!(
        file_in_image(&root, "secrets:1", "/file-sum")
            .unwrap()
            .trim(),
        sha256_hex(file_secret.as_bytes())
    );
    assert_eq!(
        file_in_image(&root, "secrets:1", "/file-stat").unwrap(),
        "400 0:0\n"
    );
    assert_eq!(
        file_in_image(&root, "secrets:1", "/custom-stat").unwrap(),
        "440 7:8\n"
    );
    assert_eq!(
        file_in_image(&root, "secrets:1", "/env-sum")
            .unwrap()
            .trim(),
        sha256_hex(env_secret.as_bytes())
    );
    assert_eq!(
        file_in_image(&root, "secrets:1", "/env-only").unwrap(),
        "no-file\n"
    );
    assert_eq!(
        file_in_image(&root, "secrets:1", "/absent").unwrap(),
        "skipped\n"
    );
    // No mount point is left behind.
    let all = paths(&root, "secrets:1");
    for p in ["/run", "/run/secrets", "/deep"] {
        assert!(
            !all.iter().any(|x| x == p),
            "{p} left in the image: {all:?}"
        );
    }

    // The search works: it finds the secret file itself, and the digest the step wrote inside
    // a compressed layer blob.
    assert_eq!(
        files_containing(work.path(), file_secret.as_bytes()),
        vec![secret_file.clone()]
    );
    let digest = sha256_hex(file_secret.as_bytes());
    let blobs = root.store().layout_dir().join("blobs");
    assert!(!files_containing(&blobs, digest.as_bytes()).is_empty());

    for secret in [file_secret, env_secret] {
        let s = secret.as_bytes();
        // Progress output and logs.
        assert!(
            !contains(&out.stdout, s) && !contains(&out.stderr, s),
            "in the output"
        );
        // Config and history.
        let image = root.store().resolve("secrets:1").unwrap();
        assert!(
            !image.config_json.to_string().contains(secret),
            "in the config"
        );
        // Layers, blobs, the metadata database, snapshots: everything under the root.
        let found = files_containing(&root.path(), s);
        assert!(found.is_empty(), "{secret} found in {found:?}");
        // A saved archive (its layers decompressed too).
        let saved_dir = tempfile::tempdir().unwrap();
        let tar = saved_dir.path().join("saved.tar");
        let saved = root
            .strata()
            .args(["save", "-o", tar.to_str().unwrap(), "secrets:1"])
            .output()
            .unwrap();
        assert!(saved.status.success(), "{}", text(&saved.stderr));
        let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
        archive.unpack(saved_dir.path().join("unpacked")).unwrap();
        let found = files_containing(saved_dir.path(), s);
        assert!(found.is_empty(), "{secret} found in {found:?}");
    }

    // A secret file that is not there fails before the build starts.
    let unreadable = root
        .strata()
        .args(["build", "--secret", "id=tok,src=/nonexistent/secret"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!unreadable.status.success());
    assert!(
        text(&unreadable.stderr).contains("--secret id=tok: /nonexistent/secret"),
        "{}",
        text(&unreadable.stderr)
    );

    // The key holds no value: another secret value still hits the cache.
    let again = ok(&build("secrets:2", Some("another-value")));
    assert!(ran(&again).is_empty(), "ran: {:?}", ran(&again));

    // A required secret that was not given fails the step.
    let missing = root
        .strata()
        .args(["build", "--progress=plain", "--no-cache", "--secret"])
        .arg(format!("id=tok,src={}", secret_file.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("secret envtok: not found"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn cache_mounts_persist_across_builds_until_builder_or_system_prune() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\n\
         ARG N\n\
         RUN --mount=type=cache,target=/var/cache/app,sharing=locked echo $N >> /var/cache/app/log && cat /var/cache/app/log > /seen\n\
         RUN --mount=type=cache,id=app2,target=cache,uid=5,mode=0750 stat -c '%a %u' cache > /cache-stat\n",
    );
    let build = |n: &str| {
        root.build_json(&[
            "-t",
            &format!("cache:{n}"),
            "--build-arg",
            &format!("N={n}"),
            ctx.path().to_str().unwrap(),
        ])
    };
    ok(&build("1"));
    ok(&build("2"));
    assert_eq!(file_in_image(&root, "cache:2", "/seen").unwrap(), "1\n2\n");
    assert_eq!(
        file_in_image(&root, "cache:2", "/cache-stat").unwrap(),
        "750 5\n"
    );
    let all = paths(&root, "cache:2");
    assert!(
        !all.iter()
            .any(|p| p.starts_with("/var/cache") || p == "/cache"),
        "{all:?}"
    );
    // Only the options are in the key: the same build again is all cached.
    let same = ok(&build("2"));
    assert!(ran(&same).is_empty(), "ran: {:?}", ran(&same));
    let mounts_dir = root.path().join("cache-mounts");
    assert_eq!(fs::read_dir(&mounts_dir).unwrap().count(), 2);

    // Without -f it asks, and "no" keeps everything.
    let mut declined = root.strata();
    declined.args(["builder", "prune"]);
    let declined = run_with_stdin(declined, "n\n");
    assert!(declined.status.success());
    assert_eq!(fs::read_dir(&mounts_dir).unwrap().count(), 2);

    let pruned = root
        .strata()
        .args(["builder", "prune", "-f"])
        .output()
        .unwrap();
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert!(
        text(&pruned.stdout).contains("cache mount /var/cache/app"),
        "{}",
        text(&pruned.stdout)
    );
    assert_eq!(fs::read_dir(&mounts_dir).unwrap().count(), 0);
    let roots = root.store().read_meta(|m| m.roots()).unwrap();
    assert!(
        !roots
            .iter()
            .any(|(h, _)| h.starts_with(strata_store::meta::CACHE_HOLDER_PREFIX)),
        "{roots:?}"
    );
    // The images themselves stay; the next build starts with an empty cache and runs again.
    assert!(root.store().resolve("cache:2").is_ok());
    let after = ok(&build("3"));
    assert!(!ran(&after).is_empty());
    assert_eq!(file_in_image(&root, "cache:3", "/seen").unwrap(), "3\n");

    // `system prune` removes the build cache too, cache mounts included, as Docker's does.
    assert_eq!(fs::read_dir(&mounts_dir).unwrap().count(), 2);
    let pruned = root
        .strata()
        .args(["system", "prune", "-f"])
        .output()
        .unwrap();
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    let out = text(&pruned.stdout);
    assert!(out.contains("Deleted build cache objects:\n"), "{out}");
    for line in ["cache mount /var/cache/app\n", "cache mount app2\n"] {
        assert!(out.contains(line), "{out}");
    }
    assert_eq!(fs::read_dir(&mounts_dir).unwrap().count(), 0);
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bind_mounts_key_on_what_they_select() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "dir/a.txt", "one\n");
    write(ctx.path(), "other.txt", "other\n");
    write(ctx.path(), "ignored.txt", "ignored\n");
    write(ctx.path(), ".dockerignore", "ignored.txt\n");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox AS tools\n\
         RUN echo tool > /tool.txt\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=dir,target=/mnt cat /mnt/a.txt > /from-context\n\
         RUN --mount=target=/ctx ls /ctx > /ctx-list\n\
         RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t cat /t > /from-stage\n\
         RUN --mount=type=bind,from=tools,target=/w,rw sh -c 'echo x > /w/new && rm /w/tool.txt && ls /w > /rw-list'\n\
         RUN --mount=type=bind,from=tools,target=/w ls /w > /after-rw\n\
         RUN --mount=type=bind,from=tools,target=/r sh -c 'if touch /r/x 2>/dev/null; then echo writable; else echo readonly; fi > /ro'\n\
         RUN --mount=type=tmpfs,target=/tmp/t,size=1m sh -c 'df -k /tmp/t | tail -1 | awk \"{print \\$2}\" > /tmpfs-size; echo x > /tmp/t/f'\n",
    );
    let build = |tag: &str| root.build_json(&["-t", tag, ctx.path().to_str().unwrap()]);
    ok(&build("bind:1"));
    let f = |p: &str| file_in_image(&root, "bind:1", p).unwrap();
    assert_eq!(f("/from-context"), "one\n");
    assert_eq!(f("/ctx-list"), "Dockerfile\ndir\nother.txt\n");
    assert_eq!(f("/from-stage"), "tool\n");
    let rw = f("/rw-list");
    assert!(rw.contains("new\n") && !rw.contains("tool.txt"), "{rw}");
    let after = f("/after-rw");
    assert!(
        !after.contains("new\n") && after.contains("tool.txt"),
        "{after}"
    );
    assert_eq!(f("/ro"), "readonly\n");
    assert_eq!(f("/tmpfs-size"), "1024\n");
    let all = paths(&root, "bind:1");
    for p in ["/mnt", "/ctx", "/t", "/w", "/r", "/tmp/t"] {
        assert!(!all.iter().any(|x| x == p), "{p} left in the image");
    }
    // A file the first mount selects changes: that step (and all after it) runs again.
    write(ctx.path(), "dir/a.txt", "two\n");
    let changed = ok(&build("bind:2"));
    let names = ran(&changed);
    assert!(
        names.iter().any(|n| n.contains("/from-context")),
        "{names:?}"
    );
    let reason = build_support::reason_of(&changed, "/from-context");
    assert_eq!(reason["kind"], "files", "{reason}");
    assert_eq!(
        reason["changed"],
        serde_json::json!(["dir/a.txt"]),
        "{reason}"
    );
    assert_eq!(
        file_in_image(&root, "bind:2", "/from-context").unwrap(),
        "two\n"
    );
    // An ignored file is outside every selection: all cached.
    write(ctx.path(), "ignored.txt", "changed\n");
    let same = ok(&build("bind:3"));
    assert!(ran(&same).is_empty(), "ran: {:?}", ran(&same));
}

/// Kills the ssh-agent it started.
struct Agent {
    pid: i32,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the agent this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}

fn start_agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let out = Command::new("ssh-agent")
        .arg("-a")
        .arg(&socket)
        .arg("-s")
        .output()
        .expect("ssh-agent (openssh-client, see .ci/setup)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid: i32 = text(&out.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .expect("agent pid");
    let agent = Agent {
        pid,
        socket,
        _dir: dir,
    };
    let key = agent._dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "strata-test-key",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let add = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", text(&add.stderr));
    agent
}

/// Copies `binary` and the shared libraries `ldd` names into `into`, each at its own path.
fn copy_with_libraries(binary: &Path, into: &Path) {
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    assert!(ldd.status.success(), "{}", text(&ldd.stderr));
    let mut files = vec![binary.to_path_buf()];
    for line in text(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = into.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap();
    }
}

#[test]
fn ssh_mounts_forward_the_agent() {
    let root = Root::with_busybox();
    let agent = start_agent();
    let ctx = tempfile::tempdir().unwrap();
    // The host's ssh-add and the libraries it loads, copied into the image at their paths.
    copy_with_libraries(Path::new("/usr/bin/ssh-add"), &ctx.path().join("sshroot"));
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\n\
         COPY sshroot/ /\n\
         RUN --mount=type=ssh sh -c 'echo $SSH_AUTH_SOCK > /sock; stat -c %a $SSH_AUTH_SOCK > /sock-mode; ssh-add -l > /keys'\n\
         RUN --mount=type=ssh,id=other,target=/agent,required SSH_AUTH_SOCK=/agent ssh-add -l > /other-keys\n",
    );
    let mut cmd = root.strata();
    cmd.env("SSH_AUTH_SOCK", &agent.socket)
        .args([
            "build",
            "--progress=plain",
            "-t",
            "ssh:1",
            "--ssh",
            "default",
        ])
        .arg(format!("--ssh=other={}", agent.socket.display()))
        .arg(ctx.path());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        file_in_image(&root, "ssh:1", "/sock").unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert_eq!(
        file_in_image(&root, "ssh:1", "/sock-mode").unwrap(),
        "600\n"
    );
    for listing in ["/keys", "/other-keys"] {
        let keys = file_in_image(&root, "ssh:1", listing).unwrap();
        assert!(
            keys.contains("strata-test-key (ED25519)"),
            "{listing}: {keys:?}"
        );
    }
    assert!(
        !paths(&root, "ssh:1")
            .iter()
            .any(|p| p == "/run" || p == "/agent")
    );

    // A required agent that was not forwarded fails.
    let missing = root
        .strata()
        .args([
            "build",
            "--progress=plain",
            "--no-cache",
            "--ssh",
            "default",
        ])
        .env("SSH_AUTH_SOCK", &agent.socket)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no SSH key \"other\""),
        "{}",
        text(&missing.stderr)
    );
}
