//! ADD's remote sources: files over http(s) and git repositories.
//!
//! A URL is fetched while the build is planned, because its step key is the content's digest
//! (BuildKit's http source): an unchanged file on the server is a cache hit even though it was
//! asked for again. Downloads are kept under the store (`builder-downloads/<sha256 of the URL>`)
//! with the server's ETag, which is sent back as `If-None-Match`, so an unchanged file is not
//! transferred twice. A build holds the download's slot (see `slots`) from the fetch until it
//! ends, so `strata builder prune` ([`prune_downloads`]) removes only what no build uses. A git
//! source is resolved to a commit while planning (`git ls-remote`), which is its key, and checked
//! out only when its step runs.
//!
//! `STRATA_OFFLINE` is about registries; remote sources on loopback are always allowed, others
//! are refused while it is set.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use strata_codec::HashingWriter;
use strata_frontend::eval::ExpandedAdd;
use time::macros::format_description;

use crate::copy::{CopyOptions, copy_path};
use crate::progress::{DownloadPhase, Event, ProgressSink};
use crate::slots::{self, SlotPrune};
use crate::source::SourceRoot;

/// What kind of remote source an ADD source is (BuildKit's `isHTTPSource` / `isGitURL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    Http,
    Git,
}

/// Whether `src` is a remote source, and which.
pub(crate) fn classify(src: &str) -> Option<RemoteKind> {
    if src.starts_with("git@") || src.starts_with("git://") || src.starts_with("ssh://") {
        return Some(RemoteKind::Git);
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let without_fragment = src.split('#').next().unwrap_or(src);
        let path = without_fragment
            .split('?')
            .next()
            .unwrap_or(without_fragment);
        if path.ends_with(".git") || path.ends_with(".git/") {
            return Some(RemoteKind::Git);
        }
        return Some(RemoteKind::Http);
    }
    None
}

/// A remote source of an ADD, as planned.
#[derive(Debug, Clone)]
pub(crate) enum Remote {
    /// A file over http(s), already downloaded; unpacked only with `--unpack=true`.
    Url { download: Download, unpack: bool },
    /// A repository at a commit, checked out when the step runs.
    Git {
        source: GitSource,
        keep_git_dir: bool,
    },
}

/// Where downloads are kept, under the store's root.
pub(crate) const DOWNLOADS_DIR: &str = "builder-downloads";

/// How often a running download is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A downloaded file: `dir` holds it, alone, under `name`.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    /// The shared lock on the download's slot, which keeps prune away while this lives.
    _hold: Arc<File>,
    pub url: String,
    pub dir: PathBuf,
    pub name: String,
    /// `sha256:...` of the content.
    pub digest: String,
    /// The file's mtime (from `Last-Modified`, else the epoch, as BuildKit).
    pub mtime: i64,
}

/// What is remembered of a URL between builds.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    /// For `builder prune`'s report (absent in what older versions wrote).
    #[serde(default)]
    url: String,
    etag: Option<String>,
    name: String,
    digest: String,
    mtime: i64,
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

/// Refuses a non-loopback host while `STRATA_OFFLINE` is set.
pub(crate) fn check_offline(url: &str, host: &str) -> Result<(), String> {
    let offline = std::env::var("STRATA_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if offline && !loopback {
        return Err(format!(
            "cannot fetch {url}: STRATA_OFFLINE is set and {host} is not a loopback address"
        ));
    }
    Ok(())
}

/// The file name BuildKit gives a download: `Content-Disposition`'s filename, else the last
/// component of the URL's path, else `index`.
fn file_name(url: &str, disposition: Option<&str>) -> String {
    if let Some(d) = disposition {
        for part in d.split(';') {
            if let Some(v) = part.trim().strip_prefix("filename=") {
                let v = v.trim_matches('"');
                let base = v.rsplit('/').next().unwrap_or(v);
                if !base.is_empty() && base != "." && base != ".." {
                    return base.to_string();
                }
            }
        }
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let path = path.split_once('/').map_or("", |(_, p)| p);
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "index".to_string(),
    }
}

/// Parses an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`) to Unix seconds.
fn http_date(s: &str) -> Option<i64> {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Fetches `url` into the download cache under `cache_root` (or reuses the cached copy when
/// the server answers 304 to its ETag) and checks `checksum` (`sha256:...`).
pub(crate) fn fetch_url(
    cache_root: &Path,
    url: &str,
    checksum: Option<&str>,
    progress: &dyn ProgressSink,
) -> Result<Download, String> {
    check_offline(url, host_of(url))?;
    let slot = cache_root.join(strata_codec::sha256_digest(url.as_bytes()).digest());
    let hold = slots::hold(&slot, FlockOperation::LockShared)
        .map_err(|e| format!("opening {}: {e}", slot.display()))?;
    let meta_path = slot.join("meta.json");
    let remembered: Option<Remembered> = fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|r: &Remembered| content_dir(&slot, &r.digest).join(&r.name).is_file());
    // No overall deadline (the blocking client's default is 30 s, too short for big files).
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut request = client.get(url);
    if let Some(etag) = remembered.as_ref().and_then(|r| r.etag.as_deref()) {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let started = Instant::now();
    let report = |phase, bytes, total| {
        progress.event(Event::Download {
            url: url.to_string(),
            phase,
            bytes,
            total,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    };
    report(DownloadPhase::Started, 0, None);
    let mut response = request.send().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let known = match remembered {
        Some(r) if status == reqwest::StatusCode::NOT_MODIFIED => {
            report(DownloadPhase::NotModified, 0, None);
            r
        }
        _ if !status.is_success() => {
            return Err(format!(
                "{url}: invalid response status {}",
                status.as_u16()
            ));
        }
        _ => {
            let header = |name: reqwest::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let etag = header(reqwest::header::ETAG);
            let name = file_name(url, header(reqwest::header::CONTENT_DISPOSITION).as_deref());
            let mtime = header(reqwest::header::LAST_MODIFIED)
                .and_then(|v| http_date(&v))
                .unwrap_or(0);
            static NEXT_DOWNLOAD: AtomicU64 = AtomicU64::new(0);
            let tmp = TempDir(slot.join(format!(
                ".download-{}-{}",
                std::process::id(),
                NEXT_DOWNLOAD.fetch_add(1, Ordering::Relaxed)
            )));
            let _ = fs::remove_dir_all(&tmp.0);
            fs::create_dir(&tmp.0).map_err(|e| format!("{url}: {e}"))?;
            let path = tmp.0.join(&name);
            let file = File::create(&path).map_err(|e| format!("{url}: {e}"))?;
            let mut writer = HashingWriter::new(file);
            let total = response.content_length();
            let bytes = copy_body(&mut response, &mut writer, |bytes| {
                report(DownloadPhase::Running, bytes, total)
            })
            .map_err(|e| format!("{url}: {e}"))?;
            report(DownloadPhase::Done, bytes, total);
            let (mut file, digest, _) = writer.finish();
            file.flush().map_err(|e| format!("{url}: {e}"))?;
            drop(file);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{url}: {e}"))?;
            let t = filetime_of(mtime);
            set_mtime(&path, t).map_err(|e| format!("{url}: {e}"))?;
            let digest = digest.to_string();
            let dest = content_dir(&slot, &digest);
            if !dest.join(&name).is_file() {
                let _ = fs::remove_dir_all(&dest);
                fs::rename(&tmp.0, &dest).map_err(|e| format!("{url}: {e}"))?;
            }
            let known = Remembered {
                url: url.to_string(),
                etag,
                name,
                digest,
                mtime,
            };
            let json = serde_json::to_vec(&known).map_err(|e| e.to_string())?;
            let tmp_meta = tmp.0.with_extension("meta");
            fs::write(&tmp_meta, json)
                .and_then(|_| fs::rename(&tmp_meta, &meta_path))
                .map_err(|e| format!("{url}: {e}"))?;
            known
        }
    };
    if let Some(expected) = checksum
        && expected != known.digest
    {
        return Err(format!("digest mismatch {expected}: {}", known.digest));
    }
    Ok(Download {
        _hold: Arc::new(hold),
        url: url.to_string(),
        dir: content_dir(&slot, &known.digest),
        name: known.name,
        digest: known.digest,
        mtime: known.mtime,
    })
}

/// Removes every download no running build holds; the report names each by its URL.
pub fn prune_downloads(store_root: &Path) -> io::Result<SlotPrune> {
    slots::prune(&store_root.join(DOWNLOADS_DIR), |slot| {
        fs::read(slot.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Remembered>(&b).ok())
            .map(|r| r.url)
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| slot.display().to_string())
    })
}

/// A directory removed on drop (unless renamed away first).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn content_dir(slot: &Path, digest: &str) -> PathBuf {
    slot.join(digest.replace(':', "-"))
}

/// Copies a response body, calling `running` with the bytes so far about every second.
fn copy_body(from: &mut impl Read, to: &mut impl Write, running: impl Fn(u64)) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut reported) = (0u64, Instant::now());
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        bytes += n as u64;
        if reported.elapsed() >= PROGRESS_EVERY {
            running(bytes);
            reported = Instant::now();
        }
    }
}

fn filetime_of(secs: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

fn set_mtime(path: &Path, t: rustix::fs::Timespec) -> io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )?;
    Ok(())
}

/// A git source: `url[#ref][:subdir]`, resolved to a commit.
#[derive(Debug, Clone)]
pub(crate) struct GitSource {
    /// The repository as git is given it.
    pub remote: String,
    /// The ref asked for (`HEAD` when none).
    pub reference: String,
    /// The directory inside the repository to copy (`""`: all of it).
    pub subdir: String,
    /// The commit `reference` names now.
    pub commit: String,
}

/// Splits BuildKit's git source syntax: `url#ref:subdir` (both parts optional).
fn parse_git(src: &str) -> (String, String, String) {
    let (remote, fragment) = match src.split_once('#') {
        Some((r, f)) => (r.to_string(), f),
        None => (src.to_string(), ""),
    };
    let (reference, subdir) = match fragment.split_once(':') {
        Some((r, s)) => (r, s),
        None => (fragment, ""),
    };
    let subdir = subdir
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    let reference = if reference.is_empty() {
        "HEAD".to_string()
    } else {
        reference.to_string()
    };
    (remote, reference, subdir)
}

fn git_host(remote: &str) -> String {
    match remote.strip_prefix("git@") {
        // scp-like syntax: git@host:path
        Some(rest) => rest.split(':').next().unwrap_or(rest).to_string(),
        None => host_of(remote).to_string(),
    }
}

fn git(args: &[&str], dir: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running git (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Resolves a git source to the commit its ref names now.
pub(crate) fn resolve_git(src: &str) -> Result<GitSource, String> {
    let (remote, reference, subdir) = parse_git(src);
    check_offline(src, &git_host(&remote))?;
    let commit = if is_commit(&reference) {
        reference.clone()
    } else {
        let listing = git(&["ls-remote", "--", &remote, &reference], None)
            .map_err(|e| format!("{src}: {e}"))?;
        let wanted = [
            reference.clone(),
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}^{{}}"),
            format!("refs/tags/{reference}"),
        ];
        let lines: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
        wanted
            .iter()
            .find_map(|w| lines.iter().find(|(_, name)| name == w).map(|(c, _)| c))
            .map(|c| c.to_string())
            .ok_or_else(|| format!("{src}: no ref {reference} in the repository"))?
    };
    Ok(GitSource {
        remote,
        reference,
        subdir,
        commit,
    })
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks out `source` into `dir` (empty); with `keep_git_dir` the repository's `.git` stays,
/// with `origin` pointing at the remote and the ref checked out as BuildKit leaves it.
/// Returns the path of the tree to copy (`subdir` inside `dir`).
pub(crate) fn checkout_git(
    source: &GitSource,
    dir: &Path,
    keep_git_dir: bool,
) -> Result<PathBuf, String> {
    let err = |e: String| format!("{}: {e}", source.remote);
    git(&["init", "--quiet"], Some(dir)).map_err(err)?;
    git(
        &["remote", "add", "origin", "--", &source.remote],
        Some(dir),
    )
    .map_err(err)?;
    // Not shallow: git's dumb http transport cannot do that. A commit asked for by its id is
    // looked for in every branch (not every server lets a client fetch an id).
    let mut fetch = vec!["fetch", "--quiet", "--no-tags", "origin"];
    if !is_commit(&source.reference) {
        fetch.extend(["--", source.reference.as_str()]);
    }
    git(&fetch, Some(dir)).map_err(err)?;
    git(
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            &source.commit,
        ],
        Some(dir),
    )
    .map_err(err)?;
    if !keep_git_dir {
        fs::remove_dir_all(dir.join(".git")).map_err(|e| err(e.to_string()))?;
    }
    let tree = if source.subdir.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(&source.subdir)
    };
    if !tree.is_dir() {
        return Err(err(format!(
            "no directory {} at {}",
            source.subdir, source.commit
        )));
    }
    Ok(tree)
}

/// Splits an ADD's sources into local ones and remote ones (fetching URLs and resolving git
/// refs now), with what the step's key covers of each remote: the content digest, file name and
/// mtime of a download, the commit of a repository.
#[allow(clippy::type_complexity)]
pub(crate) fn plan_sources(
    add: &ExpandedAdd,
    downloads: &Path,
    progress: &dyn ProgressSink,
) -> Result<(Vec<String>, Vec<Remote>, Vec<(String, String)>), String> {
    let (mut local, mut remotes, mut keyed) = (Vec::new(), Vec::new(), Vec::new());
    if add.checksum.is_some() {
        if add.sources.len() != 1 {
            return Err("checksum can't be specified for multiple sources".into());
        }
        if classify(&add.sources[0]) != Some(RemoteKind::Http) {
            return Err("checksum can't be specified for non-HTTP(S) sources".into());
        }
    }
    for src in &add.sources {
        match classify(src) {
            None => local.push(src.clone()),
            Some(RemoteKind::Http) => {
                let download = fetch_url(downloads, src, add.checksum.as_deref(), progress)?;
                keyed.push((
                    format!("url {src}"),
                    format!("{} {} {}", download.digest, download.name, download.mtime),
                ));
                remotes.push(Remote::Url {
                    download,
                    unpack: add.unpack == Some(true),
                });
            }
            Some(RemoteKind::Git) => {
                let source = resolve_git(src)?;
                keyed.push((
                    format!("git {src}"),
                    format!("{} keep-git-dir={}", source.commit, add.keep_git_dir),
                ));
                remotes.push(Remote::Git {
                    source,
                    keep_git_dir: add.keep_git_dir,
                });
            }
        }
    }
    Ok((local, remotes, keyed))
}

/// Copies the remote sources of an ADD to `dest` under `root` (after its local sources): a
/// download as a file named after it, a repository's tree as a directory's contents.
pub(crate) fn copy_remotes(
    remotes: &[Remote],
    scratch: &Path,
    root: &Path,
    dest: &str,
    options: &CopyOptions<'_>,
) -> Result<(), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch_dir = || -> Result<TempDir, String> {
        let dir = TempDir(scratch.join(format!(
            "{}-remote-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
        Ok(dir)
    };
    for remote in remotes {
        match remote {
            Remote::Url { download, unpack } => {
                let unpack_dir = if *unpack { Some(scratch_dir()?) } else { None };
                let options = CopyOptions {
                    unpack_into: unpack_dir.as_ref().map(|d| d.0.as_path()),
                    ..*options
                };
                let src = SourceRoot::Dir(download.dir.clone());
                copy_path(&src, &download.name, root, dest, &options)
                    .map_err(|e| format!("{}: {e}", download.url))?;
            }
            Remote::Git {
                source,
                keep_git_dir,
            } => {
                let dir = scratch_dir()?;
                let tree = checkout_git(source, &dir.0, *keep_git_dir)?;
                let options = CopyOptions {
                    unpack_into: None,
                    ..*options
                };
                copy_path(&SourceRoot::Dir(tree), "", root, dest, &options)
                    .map_err(|e| format!("{}: {e}", source.remote))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("https://h/x.tar.gz"), Some(RemoteKind::Http));
        assert_eq!(classify("http://h/repo.git#main"), Some(RemoteKind::Git));
        assert_eq!(classify("git@github.com:o/r.git"), Some(RemoteKind::Git));
        assert_eq!(classify("local/file"), None);
    }

    #[test]
    fn names_hosts_and_dates() {
        assert_eq!(file_name("http://h:8/a/b.txt?x=1", None), "b.txt");
        assert_eq!(file_name("http://h/", None), "index");
        assert_eq!(
            file_name("http://h/dl", Some("attachment; filename=\"r.tgz\"")),
            "r.tgz"
        );
        assert_eq!(host_of("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(host_of("https://[::1]:9/x"), "::1");
        assert_eq!(git_host("git@example.com:o/r.git"), "example.com");
        assert_eq!(http_date("Wed, 21 Oct 2015 07:28:00 GMT"), Some(1445412480));
        assert_eq!(
            parse_git("http://h/r.git#v1:sub/dir"),
            ("http://h/r.git".into(), "v1".into(), "sub/dir".into())
        );
        assert_eq!(parse_git("http://h/r.git").1, "HEAD");
    }
}
