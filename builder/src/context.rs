//! The build context: one walk that never enters excluded directories, file contents hashed on
//! demand (several threads) and remembered by (device, inode, size, mtime, ctime) in the store's
//! database, so an unchanged context costs a stat walk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use strata_codec::HashingWriter;
use strata_frontend::dockerignore::{DirDecision, Matcher};

use crate::error::{BuildError, Result};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl Kind {
    pub(crate) fn of(ft: fs::FileType) -> Kind {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Socket => "socket",
        }
    }
}

/// One entry of the context (after `.dockerignore`).
#[derive(Debug)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub rdev: u64,
    /// Hard links to the file.
    pub nlink: u64,
    /// A symlink's target.
    pub link: Option<String>,
    stat: StatKey,
    /// sha256 hex of a file's content, once read (or vouched for by the stat cache).
    hash: OnceLock<String>,
}

/// What the stat cache compares: a file whose key is unchanged has unchanged content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    fn of(m: &fs::Metadata) -> StatKey {
        StatKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// The remembered hashes of a context: relative path -> (stat key, sha256 hex).
#[derive(Debug, Default, Clone)]
pub(crate) struct StatCache {
    entries: HashMap<String, (StatKey, String)>,
}

const STAT_CACHE_MAGIC: &[u8] = b"strata-statcache-1\n";

impl StatCache {
    pub(crate) fn decode(bytes: &[u8]) -> StatCache {
        let mut out = StatCache::default();
        let Some(mut rest) = bytes.strip_prefix(STAT_CACHE_MAGIC) else {
            return out;
        };
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if rest.len() < n {
                return None;
            }
            let (a, b) = rest.split_at(n);
            *rest = b;
            Some(a)
        }
        fn u64_of(rest: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
        }
        while !rest.is_empty() {
            let parsed = (|| {
                let len = u64_of(&mut rest)? as usize;
                let path = std::str::from_utf8(take(&mut rest, len)?).ok()?.to_string();
                let key = StatKey {
                    dev: u64_of(&mut rest)?,
                    ino: u64_of(&mut rest)?,
                    size: u64_of(&mut rest)?,
                    mtime_ns: u64_of(&mut rest)? as i64,
                    ctime_ns: u64_of(&mut rest)? as i64,
                };
                let hash = std::str::from_utf8(take(&mut rest, 64)?).ok()?.to_string();
                Some((path, key, hash))
            })();
            match parsed {
                Some((path, key, hash)) => {
                    out.entries.insert(path, (key, hash));
                }
                // A damaged record: what was read so far is still good; the rest is rehashed.
                None => break,
            }
        }
        out
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = STAT_CACHE_MAGIC.to_vec();
        let mut paths: Vec<&String> = self.entries.keys().collect();
        paths.sort();
        for p in paths {
            let (k, h) = &self.entries[p];
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p.as_bytes());
            for v in [k.dev, k.ino, k.size, k.mtime_ns as u64, k.ctime_ns as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(h.as_bytes());
        }
        out
    }
}

/// The walked context.
#[derive(Debug)]
pub(crate) struct Context {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
    children: HashMap<String, Vec<String>>,
    /// Excluded directories kept only because a `!` pattern might have re-included something
    /// below them, with nothing re-included.
    hollow: HashSet<String>,
    previous: StatCache,
    hashed: AtomicUsize,
    hashed_bytes: AtomicU64,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Context {
    /// An empty context (`strata build -` with a Dockerfile on stdin).
    pub(crate) fn empty() -> Context {
        Context {
            root: PathBuf::from("/nonexistent-context"),
            entries: BTreeMap::new(),
            children: HashMap::new(),
            hollow: HashSet::new(),
            previous: StatCache::default(),
            hashed: AtomicUsize::new(0),
            hashed_bytes: AtomicU64::new(0),
        }
    }

    /// Walks `root` once, leaving out what `matcher` excludes; excluded directories are never
    /// read unless a `!` pattern may re-include something below them, and such a directory
    /// stays only as the parent of what was re-included.
    pub(crate) fn walk(root: &Path, matcher: &Matcher, previous: StatCache) -> Result<Context> {
        let mut ctx = Context {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
            children: HashMap::new(),
            hollow: HashSet::new(),
            previous,
            hashed: AtomicUsize::new(0),
            hashed_bytes: AtomicU64::new(0),
        };
        ctx.walk_dir("", root, matcher)?;
        Ok(ctx)
    }

    /// Walks one directory; returns whether anything in it was kept.
    fn walk_dir(&mut self, rel: &str, host: &Path, matcher: &Matcher) -> Result<bool> {
        let err = |error| BuildError::Context {
            path: host.to_path_buf(),
            error,
        };
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(host)
            .map_err(err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(err)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut kept = Vec::new();
        for name in names {
            let Some(name_str) = name.to_str() else {
                return Err(BuildError::Context {
                    path: host.join(&name),
                    error: io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
                });
            };
            let child_rel = join(rel, name_str);
            let child_host = host.join(&name);
            let meta = fs::symlink_metadata(&child_host).map_err(|error| BuildError::Context {
                path: child_host.clone(),
                error,
            })?;
            let kind = Kind::of(meta.file_type());
            let pattern_err = |e: strata_frontend::Error| BuildError::Context {
                path: root_file(&self.root),
                error: io::Error::new(io::ErrorKind::InvalidInput, e.message().to_string()),
            };
            if kind == Kind::Dir {
                match matcher.decide_dir(&child_rel).map_err(pattern_err)? {
                    DirDecision::Include => {
                        self.insert(&child_rel, kind, &meta, None);
                        self.walk_dir(&child_rel, &child_host, matcher)?;
                        kept.push(name_str.to_string());
                    }
                    DirDecision::ExcludeButDescend if may_reinclude(matcher, &child_rel) => {
                        // BuildKit sends the directory even when nothing inside is re-included.
                        let any = self.walk_dir(&child_rel, &child_host, matcher)?;
                        self.insert(&child_rel, kind, &meta, None);
                        if !any {
                            self.hollow.insert(child_rel.clone());
                        }
                        kept.push(name_str.to_string());
                    }
                    DirDecision::Exclude | DirDecision::ExcludeButDescend => {}
                }
                continue;
            }
            if kind == Kind::Socket || matcher.matches(&child_rel).map_err(pattern_err)? {
                continue;
            }
            let link = if kind == Kind::Symlink {
                let target = fs::read_link(&child_host).map_err(|error| BuildError::Context {
                    path: child_host.clone(),
                    error,
                })?;
                Some(String::from_utf8_lossy(target.as_os_str().as_bytes()).into_owned())
            } else {
                None
            };
            self.insert(&child_rel, kind, &meta, link);
            kept.push(name_str.to_string());
        }
        let any = !kept.is_empty();
        self.children.insert(rel.to_string(), kept);
        Ok(any)
    }

    fn insert(&mut self, rel: &str, kind: Kind, meta: &fs::Metadata, link: Option<String>) {
        self.entries.insert(
            rel.to_string(),
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                rdev: meta.rdev(),
                nlink: meta.nlink(),
                link,
                stat: StatKey::of(meta),
                hash: OnceLock::new(),
            },
        );
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn entry(&self, rel: &str) -> Option<&Entry> {
        if rel.is_empty() {
            return None;
        }
        self.entries.get(rel)
    }

    /// Whether `rel` is an excluded directory with nothing re-included below it. Copying its
    /// parent makes it (empty, as BuildKit sends it); naming it as a source fails, as it does
    /// with Docker's classic builder and Buildah, for which it is not in the context.
    pub(crate) fn is_hollow(&self, rel: &str) -> bool {
        self.hollow.contains(rel)
    }

    /// Names in directory `rel` ("" for the root), sorted.
    pub(crate) fn children(&self, rel: &str) -> &[String] {
        self.children.get(rel).map_or(&[], Vec::as_slice)
    }

    /// Every entry strictly below directory `rel`, in path order.
    pub(crate) fn below<'a>(&'a self, rel: &str) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    pub(crate) fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// The content hash of file `rel` (hashed by [`Context::hash_files`] before).
    pub(crate) fn hash(&self, rel: &str) -> Option<&str> {
        self.entries.get(rel)?.hash.get().map(String::as_str)
    }

    /// Makes sure every regular file in `rels` has its hash: from the stat cache when its
    /// (device, inode, size, mtime, ctime) are unchanged, else by reading it, on `threads` threads.
    pub(crate) fn hash_files(&self, rels: &[&str], threads: usize) -> Result<()> {
        let todo: Vec<&str> = rels
            .iter()
            .copied()
            .filter(|r| {
                let Some(e) = self.entries.get(*r) else {
                    return false;
                };
                if e.kind != Kind::File || e.hash.get().is_some() {
                    return false;
                }
                match self.previous.entries.get(*r) {
                    Some((key, hash)) if *key == e.stat => {
                        let _ = e.hash.set(hash.clone());
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        let threads = threads.clamp(1, todo.len());
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(rel) = todo.get(i) else {
                                return Ok(());
                            };
                            self.hash_one(rel)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or(Err(BuildError::Cancelled)))
                .collect()
        });
        results.into_iter().collect()
    }

    fn hash_one(&self, rel: &str) -> Result<()> {
        let path = self.host_path(rel);
        let err = |error| BuildError::Context {
            path: path.clone(),
            error,
        };
        let mut file = File::open(&path).map_err(err)?;
        let mut w = HashingWriter::new(io::sink());
        let n = io::copy(&mut file, &mut w).map_err(err)?;
        let (_, digest, _) = w.finish();
        self.hashed.fetch_add(1, Ordering::Relaxed);
        self.hashed_bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(e) = self.entries.get(rel) {
            let _ = e.hash.set(digest.digest().to_string());
        }
        Ok(())
    }

    /// (files read, bytes read) so far.
    pub(crate) fn hash_stats(&self) -> (usize, u64) {
        (
            self.hashed.load(Ordering::Relaxed),
            self.hashed_bytes.load(Ordering::Relaxed),
        )
    }

    /// Whether `rel`'s content differs from what the last build of this context saw (new files
    /// count as changed).
    pub(crate) fn changed_since_last_build(&self, rel: &str) -> bool {
        match (self.previous.entries.get(rel), self.hash(rel)) {
            (Some((_, old)), Some(new)) => old != new,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// Paths the last build of this context had below `rel` (or at it) that are gone now.
    pub(crate) fn removed_since_last_build(&self, rel: &str) -> Vec<String> {
        let prefix = format!("{rel}/");
        let mut out: Vec<String> = self
            .previous
            .entries
            .keys()
            .filter(|p| {
                (rel.is_empty() || *p == rel || p.starts_with(&prefix))
                    && !self.entries.contains_key(*p)
            })
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The stat cache to remember after this build, or `None` when it would not change.
    pub(crate) fn updated_stat_cache(&self) -> Option<StatCache> {
        let mut next = StatCache::default();
        for (rel, e) in &self.entries {
            if e.kind != Kind::File {
                continue;
            }
            if let Some(h) = e.hash.get() {
                next.entries.insert(rel.clone(), (e.stat, h.clone()));
            } else if let Some(old) = self.previous.entries.get(rel) {
                // Not needed this time: keep what we knew; the stat check guards its use.
                next.entries.insert(rel.clone(), old.clone());
            }
        }
        let same = next.entries.len() == self.previous.entries.len()
            && next
                .entries
                .iter()
                .all(|(k, v)| self.previous.entries.get(k) == Some(v));
        (!same).then_some(next)
    }
}

/// fsutil's walker enters an excluded directory only when some `!` pattern starts with the
/// directory's path, literally (`!*/x` does not re-include `d/x`): what BuildKit sends.
fn may_reinclude(matcher: &Matcher, dir: &str) -> bool {
    let dir_slash = format!("{dir}/");
    matcher
        .patterns()
        .iter()
        .any(|p| p.is_exclusion() && format!("{}/", p.as_str()).starts_with(&dir_slash))
}

fn root_file(root: &Path) -> PathBuf {
    root.join(".dockerignore")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        Matcher::new(patterns).unwrap()
    }

    #[test]
    fn walk_filters_and_keeps_parents_of_reincluded_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("skip/deep")).unwrap();
        fs::write(root.join("a/b/keep.txt"), "x").unwrap();
        fs::write(root.join("a/drop.txt"), "y").unwrap();
        fs::write(root.join("skip/deep/f"), "z").unwrap();
        fs::write(root.join("top"), "t").unwrap();
        let ctx = Context::walk(
            root,
            &matcher(&["a", "!a/b/keep.txt", "skip"]),
            StatCache::default(),
        )
        .unwrap();
        let paths: Vec<&String> = ctx.entries.keys().collect();
        assert_eq!(paths, ["a", "a/b", "a/b/keep.txt", "top"]);
        assert_eq!(ctx.children(""), ["a", "top"]);
    }

    #[test]
    fn stat_cache_round_trip_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("f"), "hello").unwrap();
        let ctx = Context::walk(root, &matcher(&[]), StatCache::default()).unwrap();
        ctx.hash_files(&["f"], 2).unwrap();
        assert_eq!(ctx.hash_stats().0, 1);
        assert!(ctx.changed_since_last_build("f"));
        let cache = StatCache::decode(&ctx.updated_stat_cache().unwrap().encode());
        let again = Context::walk(root, &matcher(&[]), cache).unwrap();
        again.hash_files(&["f"], 2).unwrap();
        assert_eq!(again.hash_stats().0, 0, "the stat cache vouches for f");
        assert_eq!(again.hash("f"), ctx.hash("f"));
        assert!(!again.changed_since_last_build("f"));
        assert!(again.updated_stat_cache().is_none());
    }
}
