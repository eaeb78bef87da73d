//! What COPY and ADD read from: the filtered build context (by its index), or a directory (a
//! mounted view of a stage or an image, heredoc files). Paths are relative, `/`-separated;
//! symlinks are followed inside the root only, as BuildKit's `fs.RootPath` does.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::context::{Context, Kind};

/// Most symlinks followed resolving one path (the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// The metadata COPY needs of a source entry.
#[derive(Debug, Clone)]
pub(crate) struct SrcEntry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub link: Option<String>,
    /// (device, inode) when the file has other hard links.
    pub hardlink_id: Option<(u64, u64)>,
    pub mtime: (i64, i64),
}

/// A tree COPY reads.
pub(crate) enum SourceRoot<'a> {
    /// The build context as walked (after `.dockerignore`); owners read as 0:0 as the Docker
    /// client sends them.
    Context(&'a Context),
    /// A directory, everything in it visible.
    Dir(PathBuf),
}

fn split(rel: &str) -> impl DoubleEndedIterator<Item = &str> {
    rel.split('/').filter(|c| !c.is_empty() && *c != ".")
}

impl SourceRoot<'_> {
    /// Host path of `rel` (no symlinks followed).
    pub fn host(&self, rel: &str) -> PathBuf {
        match self {
            SourceRoot::Context(c) => c.host_path(rel),
            SourceRoot::Dir(d) if rel.is_empty() => d.clone(),
            SourceRoot::Dir(d) => d.join(rel),
        }
    }

    /// `lstat` of `rel` ("" is the root, always a directory).
    pub fn lstat(&self, rel: &str) -> io::Result<Option<SrcEntry>> {
        match self {
            SourceRoot::Context(c) => {
                if rel.is_empty() {
                    return Ok(Some(dir_entry(fs::symlink_metadata(c.root()).ok())));
                }
                let Some(e) = c.entry(rel) else {
                    return Ok(None);
                };
                let meta = fs::symlink_metadata(c.host_path(rel))?;
                Ok(Some(SrcEntry {
                    kind: e.kind,
                    mode: e.mode,
                    uid: 0,
                    gid: 0,
                    rdev: e.rdev,
                    link: e.link.clone(),
                    hardlink_id: (e.kind == Kind::File && meta.nlink() > 1)
                        .then(|| (meta.dev(), meta.ino())),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                }))
            }
            SourceRoot::Dir(d) => {
                let path = if rel.is_empty() {
                    d.clone()
                } else {
                    d.join(rel)
                };
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let kind = Kind::of(meta.file_type());
                let link = if kind == Kind::Symlink {
                    Some(
                        String::from_utf8_lossy(fs::read_link(&path)?.as_os_str().as_bytes())
                            .into_owned(),
                    )
                } else {
                    None
                };
                Ok(Some(SrcEntry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    rdev: meta.rdev(),
                    link,
                    hardlink_id: (kind == Kind::File && meta.nlink() > 1)
                        .then(|| (meta.dev(), meta.ino())),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                }))
            }
        }
    }

    /// Names in directory `rel`, sorted.
    pub fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        match self {
            SourceRoot::Context(c) => Ok(c.children(rel)),
            SourceRoot::Dir(_) => {
                let mut names: Vec<String> = fs::read_dir(self.host(rel))?
                    .map(|e| e.map(|e| String::from_utf8_lossy(e.file_name().as_bytes()).into()))
                    .collect::<io::Result<_>>()?;
                names.sort();
                Ok(names)
            }
        }
    }

    /// Resolves `path` inside the root, following every symlink (the last component's too);
    /// `..` never leaves the root. Returns the resolved relative path and its entry, or `None`
    /// when something on the way does not exist.
    pub fn resolve(&self, path: &str) -> io::Result<Option<(String, SrcEntry)>> {
        let mut resolved: Vec<String> = Vec::new();
        let mut todo: Vec<String> = split(path).rev().map(str::to_string).collect();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(name);
            let rel = resolved.join("/");
            let Some(entry) = self.lstat(&rel)? else {
                return Ok(None);
            };
            if entry.kind == Kind::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {path}"
                    )));
                }
                resolved.pop();
                let target = entry.link.unwrap_or_default();
                if target.starts_with('/') {
                    resolved.clear();
                }
                todo.extend(split(&target).rev().map(str::to_string));
            } else if entry.kind != Kind::Dir && !todo.is_empty() {
                // A file in the middle of the path.
                return Ok(None);
            }
        }
        let rel = resolved.join("/");
        match self.lstat(&rel)? {
            Some(e) => Ok(Some((rel, e))),
            None => Ok(None),
        }
    }

    /// BuildKit's `ResolveWildcards`: the part of `src` before the first component with a
    /// wildcard is resolved, the rest is matched (Go's `filepath.Match`, so `*` never crosses a
    /// `/`) against every path below it in lexical order; a matching directory is not entered.
    /// Without wildcards: `src` itself. Paths are returned unresolved (their last symlink not
    /// followed) so that COPY names the result after the match.
    pub fn expand(&self, src: &str) -> io::Result<Vec<String>> {
        let parts: Vec<&str> = split(src).collect();
        let Some(first_wild) = parts.iter().position(|p| has_wildcards(p)) else {
            return Ok(vec![parts.join("/")]);
        };
        let prefix = parts[..first_wild].join("/");
        let pattern = parts[first_wild..].join("/");
        let base = if prefix.is_empty() {
            String::new()
        } else {
            match self.resolve(&prefix)? {
                Some((rel, e)) if e.kind == Kind::Dir => rel,
                _ => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        self.match_below(&base, "", &pattern, &mut out)?;
        Ok(out)
    }

    fn match_below(
        &self,
        base: &str,
        rel: &str,
        pattern: &str,
        out: &mut Vec<String>,
    ) -> io::Result<()> {
        let dir = join(base, rel);
        for name in self.list(&dir)? {
            let child = join(rel, &name);
            let full = join(base, &child);
            let is_dir = self.lstat(&full)?.is_some_and(|e| e.kind == Kind::Dir);
            if go_match(pattern, &child).map_err(io::Error::other)? {
                out.push(full);
            } else if is_dir {
                self.match_below(base, &child, pattern, out)?;
            }
        }
        Ok(())
    }
}

fn dir_entry(meta: Option<fs::Metadata>) -> SrcEntry {
    SrcEntry {
        kind: Kind::Dir,
        mode: meta.as_ref().map_or(0o755, |m| m.mode() & 0o7777),
        uid: 0,
        gid: 0,
        rdev: 0,
        link: None,
        hardlink_id: None,
        mtime: meta.map_or((0, 0), |m| (m.mtime(), m.mtime_nsec())),
    }
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{name}"),
    }
}

/// Whether a path component has an unescaped `*`, `?` or `[` (fsutil's `containsWildcards`).
pub(crate) fn has_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `filepath.Match` on Unix: `*` (any run of non-`/`), `?` (one non-`/` character),
/// `[...]` classes with ranges and `^` negation, `\` escapes. A malformed pattern is an error.
pub(crate) fn go_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate once: Go reports a bad pattern even when the name does not match.
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(bad(pattern));
                }
                i += 2;
            }
            '[' => i = class_end(&p, i).ok_or_else(|| bad(pattern))? + 1,
            _ => i += 1,
        }
    }
    Ok(match_here(&p, &n))
}

fn bad(pattern: &str) -> String {
    format!("syntax error in pattern {pattern:?}")
}

/// The index of the `]` closing the class that opens at `start`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            return Some(i);
        }
        first = false;
        // One bound, maybe a range.
        i = bound_end(p, i)?;
        if p.get(i) == Some(&'-') {
            i = bound_end(p, i + 1)?;
        }
    }
}

fn bound_end(p: &[char], i: usize) -> Option<usize> {
    match p.get(i)? {
        '\\' => p.get(i + 1).map(|_| i + 2),
        '-' | ']' => None,
        _ => Some(i + 1),
    }
}

fn bound(p: &[char], i: usize) -> (char, usize) {
    if p[i] == '\\' {
        (p[i + 1], i + 2)
    } else {
        (p[i], i + 1)
    }
}

fn class_matches(p: &[char], start: usize, end: usize, c: char) -> bool {
    let mut i = start + 1;
    let negate = p[i] == '^';
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < end {
        let (lo, next) = bound(p, i);
        i = next;
        let mut hi = lo;
        if i < end && p[i] == '-' {
            let (h, next) = bound(p, i + 1);
            hi = h;
            i = next;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
    hit != negate
}

fn match_here(p: &[char], n: &[char]) -> bool {
    if p.is_empty() {
        return n.is_empty();
    }
    match p[0] {
        '*' => {
            let rest = &p[1..];
            for k in 0..=n.len() {
                if match_here(rest, &n[k..]) {
                    return true;
                }
                if k < n.len() && n[k] == '/' {
                    break;
                }
            }
            false
        }
        '?' => !n.is_empty() && n[0] != '/' && match_here(&p[1..], &n[1..]),
        '[' => {
            let Some(end) = class_end(p, 0) else {
                return false;
            };
            !n.is_empty()
                && n[0] != '/'
                && class_matches(p, 0, end, n[0])
                && match_here(&p[end + 1..], &n[1..])
        }
        '\\' => p.len() > 1 && !n.is_empty() && n[0] == p[1] && match_here(&p[2..], &n[1..]),
        c => !n.is_empty() && n[0] == c && match_here(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_semantics() {
        assert!(go_match("*.txt", "a.txt").unwrap());
        assert!(!go_match("*.txt", "d/a.txt").unwrap());
        assert!(go_match("*/sub/*.txt", "x/sub/a.txt").unwrap());
        assert!(go_match("**/sub/*.txt", "x/sub/a.txt").unwrap());
        assert!(!go_match("**/sub/*.txt", "x/y/sub/a.txt").unwrap());
        assert!(go_match("[[]xyz]", "[xyz]").unwrap());
        assert!(go_match("n?pe", "nope").unwrap());
        assert!(go_match("[^a-c]x", "dx").unwrap());
        assert!(!go_match("[^a-c]x", "bx").unwrap());
        assert!(go_match("a\\*b", "a*b").unwrap());
        assert!(!go_match("a\\*b", "axb").unwrap());
        assert!(go_match("[", "a").is_err());
        assert!(go_match("a[", "b").is_err());
        assert!(go_match("", "").unwrap());
        assert!(has_wildcards("a*"));
        assert!(!has_wildcards("a\\*"));
    }

    #[test]
    fn resolve_follows_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        fs::write(root.join("real/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../real/sub/f", root.join("rel")).unwrap();
        let src = SourceRoot::Dir(root.to_path_buf());
        assert_eq!(src.resolve("abs/sub/f").unwrap().unwrap().0, "real/sub/f");
        assert_eq!(src.resolve("rel").unwrap().unwrap().0, "real/sub/f");
        assert!(src.resolve("missing/x").unwrap().is_none());
        assert_eq!(src.expand("real/*/f").unwrap(), ["real/sub/f"]);
        assert_eq!(src.expand("re*").unwrap(), ["real", "rel"]);
    }
}
