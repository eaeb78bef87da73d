//! The build context: one walk that never enters excluded directories, file contents hashed on
//! demand (several threads) and remembered by (device, inode, size, mtime, ctime) in the store's
//! database, so an unchanged context costs a stat walk.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use strata_codec::HashingWriter;
use strata_frontend::dockerignore::Matcher;

use crate::error::{BuildError, Result};

mod stat_cache;
mod walk;

pub(crate) use stat_cache::StatCache;

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
    /// sha256 of a file's content, once read (or vouched for by the stat cache).
    hash: OnceLock<HexHash>,
    /// A file's record in the stat cache of the last build, if it had one.
    previous: Option<usize>,
}

impl Entry {
    /// The content hash (lowercase sha256 hex) of a file, once [`Context::hash_files`] has it.
    pub(crate) fn content_hash(&self) -> Option<&str> {
        self.hash.get().map(HexHash::as_str)
    }
}

/// A sha256 as 64 lowercase hex digits, kept inline: a context has one per file, and the stat
/// cache as many again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HexHash([u8; 64]);

impl HexHash {
    /// `hex` when it is 64 lowercase hex digits.
    fn parse(hex: &[u8]) -> Option<HexHash> {
        let bytes: [u8; 64] = hex.try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(HexHash(bytes))
    }

    fn as_str(&self) -> &str {
        // Only `parse` makes one, from ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for HexHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// The key of `st`; `dev` as `std` reports it (`makedev` of the statx major and minor).
    fn of(st: &rustix::fs::Statx) -> StatKey {
        let ns = |t: &rustix::fs::StatxTimestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        StatKey {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime_ns: ns(&st.stx_mtime),
            ctime_ns: ns(&st.stx_ctime),
        }
    }
}

/// The walked context.
#[derive(Debug)]
pub(crate) struct Context {
    root: PathBuf,
    /// Every entry by relative path, sorted by path (bytes): looked up by binary search.
    entries: Vec<(String, Box<Entry>)>,
    /// Excluded directories kept only because a `!` pattern might have re-included something
    /// below them, with nothing re-included.
    hollow: HashSet<String>,
    previous: StatCache,
    hashed: AtomicUsize,
    hashed_bytes: AtomicU64,
}

impl Context {
    /// An empty context (`strata build -` with a Dockerfile on stdin).
    pub(crate) fn empty() -> Context {
        Context {
            root: PathBuf::from("/nonexistent-context"),
            entries: Vec::new(),
            hollow: HashSet::new(),
            previous: StatCache::default(),
            hashed: AtomicUsize::new(0),
            hashed_bytes: AtomicU64::new(0),
        }
    }

    /// Walks `root` once on `threads` threads, leaving out what `matcher` excludes; excluded
    /// directories are never read unless a `!` pattern may re-include something below them, and
    /// such a directory stays only as the parent of what was re-included. `previous` reads the
    /// last build's stat cache, on a thread of its own while the walk goes (reading and decoding
    /// megabytes would otherwise be a tenth of a no-op rebuild, with a core idle).
    pub(crate) fn walk(
        root: &Path,
        matcher: &Matcher,
        previous: impl FnOnce() -> Result<StatCache> + Send,
        threads: usize,
    ) -> Result<Context> {
        let (listings, previous) = std::thread::scope(|s| {
            let previous = s.spawn(previous);
            let listings = walk::list_tree(root, matcher, threads);
            let previous = previous
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (listings, previous)
        });
        let (mut listings, previous) = (listings?, previous?);
        let mut ctx = Context {
            root: root.to_path_buf(),
            entries: Vec::new(),
            hollow: HashSet::new(),
            previous,
            hashed: AtomicUsize::new(0),
            hashed_bytes: AtomicU64::new(0),
        };
        // Sized once: 20,000 entries moved into a growing vector touched twice the memory.
        ctx.entries
            .reserve_exact(listings.values().map(Vec::len).sum());
        ctx.keep_dir("", &mut listings);
        // Depth-first order is path order but where a name sorts below '/' ("a.b" before
        // "a/x"): nearly sorted, which the stable sort takes in about one pass.
        ctx.entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        ctx.join_previous();
        Ok(ctx)
    }

    /// Pairs each file with its record in the last build's stat cache (both are in path
    /// order: one pass, no lookups); the record's hash is the file's when its (device, inode,
    /// size, mtime, ctime) are unchanged.
    fn join_previous(&mut self) {
        let previous = &self.previous;
        let mut records = previous.records().iter().enumerate().peekable();
        for (rel, e) in &mut self.entries {
            if e.kind != Kind::File {
                continue;
            }
            let rel = rel.as_bytes();
            while records
                .next_if(|(_, r)| previous.path_bytes(r) < rel)
                .is_some()
            {}
            let Some((i, r)) = records.next_if(|(_, r)| previous.path_bytes(r) == rel) else {
                continue;
            };
            e.previous = Some(i);
            if r.key == e.stat {
                e.hash = OnceLock::from(previous.hash(r));
            }
        }
    }

    /// Records what the walk found in directory `rel`, recursively; returns whether anything
    /// in it was kept.
    fn keep_dir(&mut self, rel: &str, listings: &mut HashMap<String, Vec<walk::Found>>) -> bool {
        let found = listings.remove(rel).unwrap_or_default();
        let any = !found.is_empty();
        for f in found {
            match f.walk {
                walk::Walk::Into => {
                    self.entries.push((f.rel.clone(), f.entry));
                    self.keep_dir(&f.rel, listings);
                }
                walk::Walk::IntoExcluded => {
                    // BuildKit sends the directory even when nothing inside is re-included.
                    if !self.keep_dir(&f.rel, listings) {
                        self.hollow.insert(f.rel.clone());
                    }
                    self.entries.push((f.rel, f.entry));
                }
                walk::Walk::Leaf => self.entries.push((f.rel, f.entry)),
            }
        }
        any
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
        self.find(rel)
    }

    fn find(&self, rel: &str) -> Option<&Entry> {
        Some(self.at(self.position(rel)?)?.1)
    }

    /// Where `rel` is among the entries: an index for [`Context::at`], which a step keeps
    /// instead of a copy of each path it reads.
    pub(crate) fn position(&self, rel: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|(p, _)| p.as_str().cmp(rel))
            .ok()
    }

    /// The path and entry at `index` (from [`Context::position`] or [`Context::below`]).
    pub(crate) fn at(&self, index: usize) -> Option<(&str, &Entry)> {
        self.entries.get(index).map(|(p, e)| (p.as_str(), &**e))
    }

    /// Whether `rel` is an excluded directory with nothing re-included below it. Copying its
    /// parent makes it (empty, as BuildKit sends it); naming it as a source fails, as it does
    /// with Docker's classic builder and Buildah, for which it is not in the context.
    pub(crate) fn is_hollow(&self, rel: &str) -> bool {
        self.hollow.contains(rel)
    }

    /// Names in directory `rel` ("" for the root), sorted. Read from the sorted entries, skipping
    /// each subdirectory's subtree with a binary search: paths below `d/` all sort between `d/`
    /// and `d0` (`'0'` follows `'/'`).
    pub(crate) fn children(&self, rel: &str) -> Vec<String> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let mut names = Vec::new();
        let mut at = self.entries.partition_point(|(p, _)| *p < prefix);
        while let Some(below) = self
            .entries
            .get(at)
            .and_then(|(p, _)| p.strip_prefix(&prefix))
        {
            match below.find('/') {
                None => {
                    names.push(below.to_string());
                    at += 1;
                }
                Some(slash) => {
                    let subtree_end = format!("{prefix}{}0", &below[..slash]);
                    at += self.entries[at..].partition_point(|(p, _)| *p < subtree_end);
                }
            }
        }
        names
    }

    /// Every entry strictly below directory `rel`, in path order, with its position.
    pub(crate) fn below<'a>(
        &'a self,
        rel: &str,
    ) -> impl Iterator<Item = (usize, &'a str, &'a Entry)> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let start = self.entries.partition_point(|(p, _)| *p < prefix);
        self.entries[start..]
            .iter()
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .enumerate()
            .map(move |(i, (k, e))| (start + i, k.as_str(), &**e))
    }

    pub(crate) fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Makes sure every regular file of `files` (entries of this context) has its hash: the
    /// stat cache vouched for the unchanged ones during the walk, the others are read, on
    /// `threads` threads.
    pub(crate) fn hash_files<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a str, &'a Entry)>,
        threads: usize,
    ) -> Result<()> {
        let todo: Vec<(&str, &Entry)> = files
            .into_iter()
            .filter(|(_, e)| e.kind == Kind::File && e.hash.get().is_none())
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
                            let Some((rel, entry)) = todo.get(i) else {
                                return Ok(());
                            };
                            self.hash_one(rel, entry)?;
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

    fn hash_one(&self, rel: &str, entry: &Entry) -> Result<()> {
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
        if let Some(hash) = HexHash::parse(digest.digest().as_bytes()) {
            let _ = entry.hash.set(hash);
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
        let Some(e) = self.find(rel) else {
            return false;
        };
        let old = e
            .previous
            .and_then(|i| self.previous.records().get(i))
            .map(|r| self.previous.hash(r));
        match (old, e.hash.get()) {
            (Some(old), Some(new)) => old != *new,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// Paths the last build of this context had below `rel` (or at it) that are gone now.
    pub(crate) fn removed_since_last_build(&self, rel: &str) -> Vec<String> {
        let prefix = format!("{rel}/");
        self.previous
            .records()
            .iter()
            .map(|r| self.previous.path(r))
            .filter(|p| {
                (rel.is_empty() || *p == rel || p.starts_with(&prefix)) && self.find(p).is_none()
            })
            .map(str::to_string)
            .collect()
    }

    /// The stat cache to remember after this build, or `None` when it would not change.
    pub(crate) fn updated_stat_cache(&self) -> Option<StatCache> {
        let previous = &self.previous;
        // A file's fresh hash, else (not needed this time) what we knew: the stat check guards
        // its use.
        let remembered = |e: &Entry| -> Option<(StatKey, HexHash)> {
            match e.hash.get() {
                Some(hash) => Some((e.stat, *hash)),
                None => {
                    let r = previous.records().get(e.previous?)?;
                    Some((r.key, previous.hash(r)))
                }
            }
        };
        let files = || {
            self.entries
                .iter()
                .filter(|(_, e)| e.kind == Kind::File)
                .map(|(p, e)| (p, &**e))
        };
        // Unchanged (the usual rebuild) is checked without writing the new cache.
        let mut remembered_count = 0;
        let same = files().all(|(_, e)| match remembered(e) {
            Some((key, hash)) => {
                remembered_count += 1;
                e.previous
                    .and_then(|i| previous.records().get(i))
                    .is_some_and(|r| r.key == key && previous.hash(r) == hash)
            }
            None => true,
        }) && remembered_count == previous.records().len();
        if same {
            return None;
        }
        let mut encoder = stat_cache::Encoder::new();
        for (rel, e) in files() {
            if let Some((key, hash)) = remembered(e) {
                encoder.push(rel, &key, &hash);
            }
        }
        Some(encoder.finish())
    }
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
            || Ok(StatCache::default()),
            2,
        )
        .unwrap();
        let paths: Vec<&String> = ctx.entries.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/keep.txt", "top"]);
        assert_eq!(ctx.children(""), ["a", "top"]);
        assert_eq!(ctx.children("a"), ["b"]);
        assert_eq!(ctx.children("a/b"), ["keep.txt"]);
    }

    #[test]
    fn children_are_read_from_the_sorted_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // "d.x" and "d-y" sort between "d" and "d/..." ('-' and '.' come before '/'), "d0"
        // right after "d/...".
        for d in ["d/e/f", "d/g", "d.x", "d0/h"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["d-y", "d/e/f/1", "d/e/2", "d/3", "d.x/4", "d0/h/5", "z"] {
            fs::write(root.join(f), "").unwrap();
        }
        let ctx = Context::walk(root, &matcher(&[]), || Ok(StatCache::default()), 2).unwrap();
        assert_eq!(ctx.children(""), ["d", "d-y", "d.x", "d0", "z"]);
        assert_eq!(ctx.children("d"), ["3", "e", "g"]);
        assert_eq!(ctx.children("d/e"), ["2", "f"]);
        assert_eq!(ctx.children("d/g"), Vec::<String>::new());
        assert_eq!(ctx.children("d0"), ["h"]);
        assert_eq!(ctx.children("missing"), Vec::<String>::new());
    }

    /// Hashes the files `rels` of `ctx`, as a COPY selecting them does.
    fn hash(ctx: &Context, rels: &[&str]) {
        let files: Vec<(&str, &Entry)> = rels.iter().map(|r| (*r, ctx.entry(r).unwrap())).collect();
        ctx.hash_files(files, 2).unwrap();
    }

    /// (path, hash) of every record of `cache`.
    fn records(cache: &StatCache) -> Vec<(String, String)> {
        cache
            .records()
            .iter()
            .map(|r| {
                let hash = cache.hash(r);
                (cache.path(r).to_string(), hash.as_str().to_string())
            })
            .collect()
    }

    #[test]
    fn stat_cache_round_trip_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("f"), "hello").unwrap();
        let ctx = Context::walk(root, &matcher(&[]), || Ok(StatCache::default()), 2).unwrap();
        hash(&ctx, &["f"]);
        assert_eq!(ctx.hash_stats().0, 1);
        assert!(ctx.changed_since_last_build("f"));
        let cache = StatCache::decode(ctx.updated_stat_cache().unwrap().as_bytes().to_vec());
        let again = Context::walk(root, &matcher(&[]), || Ok(cache), 2).unwrap();
        hash(&again, &["f"]);
        assert_eq!(again.hash_stats().0, 0, "the stat cache vouches for f");
        assert_eq!(
            again.entry("f").unwrap().content_hash(),
            ctx.entry("f").unwrap().content_hash()
        );
        assert!(!again.changed_since_last_build("f"));
        assert!(again.updated_stat_cache().is_none());
    }

    #[test]
    fn stat_cache_follows_changes_and_keeps_what_was_not_needed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a", "b", "c", "e"] {
            fs::write(root.join(f), f).unwrap();
        }
        let walk = |cache: &StatCache| {
            Context::walk(root, &matcher(&[]), || Ok(cache.clone()), 2).unwrap()
        };
        let first = walk(&StatCache::default());
        hash(&first, &["a", "b", "c", "e"]);
        let cache = first.updated_stat_cache().unwrap();
        let before = records(&cache);
        assert_eq!(before.len(), 4);

        // Nothing read this time: what was known is kept, so nothing changes.
        let idle = walk(&cache);
        hash(&idle, &["a"]);
        assert!(idle.updated_stat_cache().is_none());

        // b edited, c removed, d added, e edited but not needed: b and d are read and
        // remembered, e keeps its old record (its stat key guards it).
        fs::write(root.join("b"), "b2").unwrap();
        fs::remove_file(root.join("c")).unwrap();
        fs::write(root.join("d"), "d").unwrap();
        fs::write(root.join("e"), "e2").unwrap();
        let next = walk(&cache);
        hash(&next, &["a", "b", "d"]);
        assert_eq!(next.hash_stats().0, 2, "b and d are read, a is vouched for");
        assert!(next.changed_since_last_build("b") && next.changed_since_last_build("d"));
        assert!(!next.changed_since_last_build("a"));
        assert_eq!(next.removed_since_last_build(""), ["c"]);
        assert!(next.removed_since_last_build("b").is_empty());
        let after = records(&next.updated_stat_cache().unwrap());
        let paths: Vec<&str> = after.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a", "b", "d", "e"]);
        assert_eq!(after[0], before[0]);
        assert_eq!(after[1].1, next.entry("b").unwrap().content_hash().unwrap());
        assert_ne!(after[1], before[1]);
        assert_eq!(after[3], before[3]);

        // e's old record is not trusted for e's new content.
        let last = walk(&StatCache::decode(
            next.updated_stat_cache().unwrap().as_bytes().to_vec(),
        ));
        hash(&last, &["e"]);
        assert_eq!(last.hash_stats().0, 1);
        assert!(last.changed_since_last_build("e"));
    }

    #[test]
    fn damaged_stat_cache_keeps_the_records_before_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a"), "a").unwrap();
        fs::write(root.join("b"), "b").unwrap();
        let ctx = Context::walk(root, &matcher(&[]), || Ok(StatCache::default()), 1).unwrap();
        hash(&ctx, &["a", "b"]);
        let mut bytes = ctx.updated_stat_cache().unwrap().as_bytes().to_vec();
        // The last byte of b's hash is no hex digit.
        let last = bytes.len() - 1;
        bytes[last] = b'!';
        let decoded = records(&StatCache::decode(bytes));
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].0, "a");
        assert!(
            StatCache::decode(b"not a stat cache".to_vec())
                .records()
                .is_empty()
        );
    }
}
