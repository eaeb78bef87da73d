//! COPY/ADD sources beyond the context: `--link` layers reused across bases, ADD from http(s)
//! URLs (checksums, cache by content, ETags, offline refusal, `builder prune`) and from git
//! repositories, all served on 127.0.0.1 by a small file server of the test's own.

mod build_support;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use build_support::{Root, cached, ok, run_image, started, text, write};

fn layers(root: &Root, reference: &str) -> Vec<String> {
    let image = root.store().resolve(reference).unwrap();
    image
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect()
}

/// A request the server saw: path and `If-None-Match`.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    if_none_match: Option<String>,
}

/// Serves the files of a directory on 127.0.0.1 (GET only) with an ETag (the content's hash),
/// a fixed Last-Modified and 304 for a matching If-None-Match; stops on drop.
struct FileServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_UNIX: &str = "1445412480";

impl FileServer {
    fn start(dir: PathBuf) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // A thread per connection: clients keep idle connections open.
                    if let Ok(conn) = conn {
                        let (dir, seen) = (dir.clone(), seen.clone());
                        std::thread::spawn(move || {
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                            let _ = serve(conn, &dir, &seen);
                        });
                    }
                }
            })
        };
        FileServer {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, dir: &Path, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let path = request
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            if_none_match: headers.get("if-none-match").cloned(),
        });
        let file = dir.join(path.trim_start_matches('/'));
        let response: Vec<u8> = match fs::read(&file) {
            Ok(body) if file.is_file() => {
                let etag = format!("\"{}\"", &strata_codec::sha256_digest(&body).digest()[..16]);
                if headers.get("if-none-match") == Some(&etag) {
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n"
                    )
                    .into_bytes()
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nETag: {etag}\r\nLast-Modified: {LAST_MODIFIED}\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        conn.write_all(&response)?;
        conn.flush()?;
        if headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}

fn sha256(data: &[u8]) -> String {
    strata_codec::sha256_digest(data).to_string()
}

#[test]
fn a_linked_copy_is_reused_on_a_new_base_and_stacked_on_it() {
    let root = Root::with_busybox();
    let base_dir = tempfile::tempdir().unwrap();
    let app_dir = tempfile::tempdir().unwrap();
    let base = "strata-test.invalid/linkbase:1";
    let build_base = |value: &str| {
        write(
            base_dir.path(),
            "Dockerfile",
            &format!("FROM busybox\nRUN echo {value} > /base\n"),
        );
        ok(&root.build_json(&["-t", base, base_dir.path().to_str().unwrap()]));
    };
    build_base("one");
    write(
        app_dir.path(),
        "Dockerfile",
        &format!(
            "FROM {base}\nCOPY --link --chown=5:6 app.txt /app/\nRUN cat /app/app.txt /base > /both\n"
        ),
    );
    write(app_dir.path(), "app.txt", "app\n");
    let app = app_dir.path().to_str().unwrap();
    ok(&root.build_json(&["-t", "app:1", app]));
    let first = layers(&root, "app:1");

    build_base("two");
    let ev = ok(&root.build_json(&["-t", "app:2", app]));
    assert!(
        cached(&ev).iter().any(|n| n.contains("COPY --link")),
        "the linked copy should be a hit: {:?}",
        started(&ev)
    );
    assert!(
        started(&ev).iter().any(|n| n.contains("RUN cat")),
        "what follows it depends on the base: {:?}",
        cached(&ev)
    );
    let second = layers(&root, "app:2");
    assert_eq!(first.len(), second.len());
    let n = first.len();
    assert_ne!(first[n - 3], second[n - 3], "the base layer changed");
    assert_eq!(
        first[n - 2],
        second[n - 2],
        "the linked layer is the same blob"
    );
    let (code, out, all) = run_image(
        &root,
        "app:2",
        &[
            "sh".into(),
            "-c".into(),
            "cat /both; stat -c '%u:%g' /app/app.txt".into(),
        ],
    );
    assert_eq!(code, 0, "{all}");
    assert_eq!(out, "app\ntwo\n5:6\n");
}

#[test]
fn add_url_checks_the_checksum_and_is_cached_by_content() {
    let root = Root::with_busybox();
    let served = tempfile::tempdir().unwrap();
    write(served.path(), "files/tool.txt", "version 1\n");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/build/add-archives/context/archive.tar.gz"),
        served.path().join("archive.tar.gz"),
    )
    .unwrap();
    let server = FileServer::start(served.path().to_path_buf());
    let ctx = tempfile::tempdir().unwrap();
    let url = server.url("files/tool.txt");
    let archive = server.url("archive.tar.gz");
    let dockerfile = |checksum: &str| {
        format!(
            "FROM busybox\n\
             ADD --checksum={checksum} --chmod=0755 --chown=7:8 {url} /dl/\n\
             ADD {url} /plain\n\
             ADD {archive} /packed/\n\
             ADD --unpack=true {archive} /unpacked/\n\
             RUN stat -c '%a %u:%g %Y' /dl/tool.txt /plain > /stat\n"
        )
    };
    let good = sha256(b"version 1\n");
    write(ctx.path(), "Dockerfile", &dockerfile(&good));
    let dir = ctx.path().to_str().unwrap();
    let ev = ok(&root.build_json(&["-t", "url:1", dir]));
    // Each fetch is reported: started, then done with the body's size.
    let downloads = |ev: &[serde_json::Value], of: &str, phase: &str| -> Vec<serde_json::Value> {
        ev.iter()
            .filter(|e| e["event"] == "download" && e["url"] == of && e["phase"] == phase)
            .cloned()
            .collect()
    };
    assert!(!downloads(&ev, &url, "started").is_empty(), "{ev:?}");
    let done = downloads(&ev, &url, "done");
    assert!(!done.is_empty(), "{ev:?}");
    assert!(
        done.iter().all(|e| e["bytes"] == 10 && e["total"] == 10),
        "{done:?}"
    );
    let (code, out, all) = run_image(
        &root,
        "url:1",
        &[
            "sh".into(),
            "-c".into(),
            "cat /stat /dl/tool.txt /unpacked/pkg/data.txt; ls /packed".into(),
        ],
    );
    assert_eq!(code, 0, "{all}");
    assert_eq!(
        out,
        format!(
            "755 7:8 {LAST_MODIFIED_UNIX}\n600 0:0 {LAST_MODIFIED_UNIX}\nversion 1\n\
             from the archive\narchive.tar.gz\n"
        )
    );

    // Unchanged on the server: asked again with its ETag, answered 304, every step a hit.
    let before = server.seen().len();
    let ev = ok(&root.build_json(&["-t", "url:1", dir]));
    assert!(started(&ev).is_empty(), "ran: {:?}", started(&ev));
    assert!(!downloads(&ev, &url, "not_modified").is_empty(), "{ev:?}");
    assert!(downloads(&ev, &url, "done").is_empty(), "{ev:?}");
    let plain = root
        .strata()
        .args(["build", "--progress=plain", "-t", "url:1", dir])
        .output()
        .unwrap();
    assert!(
        text(&plain.stderr).contains(&format!(
            "#0 [internal] download {url}: not modified, the copy fetched before is used"
        )),
        "{}",
        text(&plain.stderr)
    );
    let again = server.seen();
    assert!(again.len() > before, "the URL is checked on every build");
    assert!(
        again[before..]
            .iter()
            .all(|s| s.path.starts_with('/') && s.if_none_match.is_some()),
        "{again:?}"
    );

    // Changed on the server: the old checksum no longer matches.
    write(served.path(), "files/tool.txt", "version 2\n");
    let out = root.build_json(&["-t", "url:2", dir]);
    assert!(!out.status.success());
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains(&format!(
            "digest mismatch {good}: {}",
            sha256(b"version 2\n")
        )),
        "{all}"
    );

    // With the new checksum the ADD steps run again and see the new content.
    write(
        ctx.path(),
        "Dockerfile",
        &dockerfile(&sha256(b"version 2\n")),
    );
    let ev = ok(&root.build_json(&["-t", "url:2", dir]));
    assert!(
        started(&ev).iter().any(|n| n.contains("ADD http")),
        "{:?}",
        started(&ev)
    );
    let (_, out, _) = run_image(&root, "url:2", &["cat".into(), "/plain".into()]);
    assert_eq!(out, "version 2\n");
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn builder_prune_removes_the_downloads_no_build_holds_and_the_context_caches() {
    let root = Root::with_busybox();
    let served = tempfile::tempdir().unwrap();
    write(served.path(), "tool.txt", "tool\n");
    let server = FileServer::start(served.path().to_path_buf());
    let url = server.url("tool.txt");
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM busybox\nADD {url} /tool\nCOPY a.txt /a\nRUN sleep 2\n"),
    );
    write(ctx.path(), "a.txt", "a\n");
    let dir = ctx.path().to_str().unwrap();
    let (downloads, contexts) = (
        root.path().join("builder-downloads"),
        root.path().join("builder-contexts"),
    );
    let prune = || {
        let out = root
            .strata()
            .args(["builder", "prune", "-f"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };

    // While a build runs (here its RUN step), it holds the download it fetched.
    let mut build = root
        .strata()
        .args(["build", "--progress=json", "-t", "pruned", dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(build.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "started" && event["name"].as_str().unwrap().contains("RUN sleep") {
            break;
        }
    }
    let (out, err) = prune();
    assert!(
        err.contains("1 download(s) in use by a running build were kept"),
        "{out}{err}"
    );
    lines.for_each(drop);
    assert!(build.wait().unwrap().success());
    assert_eq!(entries(&downloads).len(), 1);

    let stat_caches = entries(&contexts);
    assert_eq!(stat_caches.len(), 1, "{stat_caches:?}");
    // What killed builds leave: a half-written stat cache of a process that is gone (no pid is
    // this high), and one whose writer (this process) is alive.
    let dead = format!("{}.999999999.tmp", stat_caches[0]);
    let live = format!("{}.{}.tmp", stat_caches[0], std::process::id());
    write(&contexts, &dead, "partial");
    write(&contexts, &live, "partial");

    let (out, err) = prune();
    assert!(out.contains(&format!("download {url}\n")), "{out}");
    assert!(!err.contains("in use"), "{err}");
    assert!(entries(&downloads).is_empty());
    assert_eq!(
        entries(&contexts),
        [live],
        "stat caches and the dead writer's file go"
    );

    // The next build fetches the URL anew (nothing remembered to ask If-None-Match with).
    let before = server.seen().len();
    let ev = ok(&root.build_json(&["--no-cache", "-t", "pruned", dir]));
    assert!(
        started(&ev).iter().any(|n| n.contains("ADD http")),
        "{:?}",
        started(&ev)
    );
    let seen = server.seen();
    assert!(
        seen.len() > before && seen[before..].iter().all(|s| s.if_none_match.is_none()),
        "{seen:?}"
    );
    let (_, out, _) = run_image(&root, "pruned", &["cat".into(), "/tool".into()]);
    assert_eq!(out, "tool\n");
}

#[test]
fn add_url_offline_refuses_other_hosts_and_reports_http_errors() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nADD http://example.invalid/x.txt /x.txt\n",
    );
    let out = root
        .strata()
        .env("STRATA_OFFLINE", "1")
        .args(["build", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = text(&out.stderr);
    assert!(
        all.contains("STRATA_OFFLINE is set and example.invalid is not a loopback address"),
        "{all}"
    );

    let served = tempfile::tempdir().unwrap();
    let server = FileServer::start(served.path().to_path_buf());
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM busybox\nADD {} /x.txt\n", server.url("missing.txt")),
    );
    let out = root
        .strata()
        .env("STRATA_OFFLINE", "1")
        .args(["build", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid response status 404"),
        "{}",
        text(&out.stderr)
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn add_git_repository_is_keyed_by_commit_with_and_without_git_dir() {
    let root = Root::with_busybox();
    // A repository with a branch, served over dumb http from its bare clone.
    let work = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "--quiet", "-b", "main"]);
    write(work.path(), "README", "top\n");
    write(work.path(), "sub/inner.txt", "inner 1\n");
    git(work.path(), &["add", "."]);
    git(work.path(), &["commit", "--quiet", "-m", "one"]);
    let bare = served.path().join("repo.git");
    let publish = || {
        let _ = fs::remove_dir_all(&bare);
        git(
            served.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                work.path().to_str().unwrap(),
                "repo.git",
            ],
        );
        git(&bare, &["update-server-info"]);
    };
    publish();
    let server = FileServer::start(served.path().to_path_buf());
    let repo = server.url("repo.git");
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             ADD {repo}#main:sub /sub/\n\
             ADD --keep-git-dir=true {repo}#main /full/\n\
             ADD --exclude=sub {repo} /nosub/\n"
        ),
    );
    let dir = ctx.path().to_str().unwrap();
    ok(&root.build_json(&["-t", "git:1", dir]));
    let (code, out, all) = run_image(
        &root,
        "git:1",
        &[
            "sh".into(),
            "-c".into(),
            "cat /sub/inner.txt /full/README /full/sub/inner.txt; ls -a /sub; test -d /full/.git && echo has-git; ls /nosub".into(),
        ],
    );
    assert_eq!(code, 0, "{all}");
    assert_eq!(
        out,
        "inner 1\ntop\ninner 1\n.\n..\ninner.txt\nhas-git\nREADME\n"
    );

    // Same commit: hits. A new commit on the branch: both run again.
    let ev = ok(&root.build_json(&["-t", "git:1", dir]));
    assert!(started(&ev).is_empty(), "ran: {:?}", started(&ev));
    write(work.path(), "sub/inner.txt", "inner 2\n");
    git(work.path(), &["commit", "--quiet", "-am", "two"]);
    publish();
    let ev = ok(&root.build_json(&["-t", "git:2", dir]));
    assert_eq!(started(&ev).len(), 3, "{:?}", started(&ev));
    let (_, out, _) = run_image(&root, "git:2", &["cat".into(), "/sub/inner.txt".into()]);
    assert_eq!(out, "inner 2\n");
}

#[test]
fn an_excluded_file_is_not_part_of_the_key() {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nCOPY --exclude=*.log --exclude=tmp app /app/\nCOPY --parents ./app/./keep.txt /p/\n",
    );
    write(ctx.path(), "app/keep.txt", "keep\n");
    write(ctx.path(), "app/debug.log", "one\n");
    write(ctx.path(), "app/tmp/scratch", "one\n");
    let dir = ctx.path().to_str().unwrap();
    ok(&root.build_json(&["-t", "ex:1", dir]));
    write(ctx.path(), "app/debug.log", "two\n");
    write(ctx.path(), "app/tmp/scratch", "two\n");
    let ev = ok(&root.build_json(&["-t", "ex:1", dir]));
    assert!(started(&ev).is_empty(), "ran: {:?}", started(&ev));
    write(ctx.path(), "app/keep.txt", "changed\n");
    let ev = ok(&root.build_json(&["-t", "ex:2", dir]));
    assert_eq!(started(&ev).len(), 2, "{:?}", started(&ev));
    let (_, out, all) = run_image(
        &root,
        "ex:2",
        &[
            "sh".into(),
            "-c".into(),
            "ls -A /app; cat /p/keep.txt".into(),
        ],
    );
    assert_eq!(out, "keep.txt\nchanged\n", "{all}");
}
