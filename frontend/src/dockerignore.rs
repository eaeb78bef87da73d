//! `.dockerignore` with Docker's semantics: moby's `patternmatcher` and `ignorefile`, not
//! gitignore.
//!
//! - [`read_patterns`] reads a file's lines as `ignorefile.ReadAll` does.
//! - [`Matcher::matches`] is `MatchesOrParentMatches`: a path is excluded when it or one of its
//!   parent directories matches; later patterns win; `!` re-includes.
//! - [`Matcher::decide_dir`] tells a context walk whether an excluded directory can be skipped
//!   without reading it, or must be descended because a `!` pattern may re-include something in it.
//! - [`ignore_file_names`] gives the file names to try, `<Dockerfile>.dockerignore` first.

use crate::error::{Error, ErrorKind};
use crate::golang::{clean_path, trim_space};

/// The error text of Go's `filepath.ErrBadPattern`.
const BAD_PATTERN: &str = "syntax error in pattern";

fn ignore_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Ignore, message)
}

/// The ignore files to look for, in order of preference: `<dockerfile_name>.dockerignore` (beside
/// the Dockerfile; `dockerfile_name` is its base name) wins over `.dockerignore` (at the root of
/// the context). The caller reads the first that exists.
pub fn ignore_file_names(dockerfile_name: &str) -> [String; 2] {
    let base = crate::golang::base_name(dockerfile_name);
    [format!("{base}.dockerignore"), ".dockerignore".to_string()]
}

/// Reads the patterns of a `.dockerignore` file as `ignorefile.ReadAll` does: BOM and comment
/// lines (`#` in the first column) dropped, blanks trimmed, empty lines skipped, paths cleaned,
/// a leading `/` removed, `! x` normalised to `!x`.
pub fn read_patterns(content: &str) -> Result<Vec<String>, Error> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    for line in content.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.len() > 65_535 {
            return Err(ignore_error(
                "error reading .dockerignore: bufio.Scanner: token too long",
            ));
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = trim_space(line).to_string();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = trim_space(&pattern[1..]).to_string();
        }
        if !pattern.is_empty() {
            pattern = clean_path(&pattern).into_owned();
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
        }
        if invert {
            pattern.insert(0, '!');
        }
        out.push(pattern);
    }
    Ok(out)
}

/// How a pattern is matched (moby's `matchType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// The cleaned pattern equals the path.
    Exact,
    /// `dir/**`: the path starts with `dir/`.
    Prefix,
    /// `**/name`: the path ends with `/name` or is `name`.
    Suffix,
    /// Anything else, through a regular expression.
    Regexp,
}

/// Compiles a cleaned pattern the way moby does: its match type and, for [`MatchType::Regexp`],
/// the Go regular expression (empty otherwise). `separator` is `/` (or `\` on Windows).
pub fn compile_pattern(pattern: &str, separator: char) -> (MatchType, String) {
    let esc_sl = if separator == '\\' {
        "\\\\".to_string()
    } else {
        separator.to_string()
    };
    let mut reg = String::from("^");
    let mut detected = MatchType::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let mut i = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        if ch == '*' {
            if chars.get(pos) == Some(&'*') {
                pos += 1;
                if chars.get(pos) == Some(&separator) {
                    pos += 1;
                }
                if pos >= chars.len() {
                    if detected == MatchType::Exact {
                        detected = MatchType::Prefix;
                    } else {
                        reg.push_str(".*");
                        detected = MatchType::Regexp;
                    }
                } else {
                    reg.push_str(&format!("(.*{esc_sl})?"));
                    detected = MatchType::Regexp;
                }
                if i == 0 {
                    detected = MatchType::Suffix;
                }
            } else {
                reg.push_str(&format!("[^{esc_sl}]*"));
                detected = MatchType::Regexp;
            }
        } else if ch == '?' {
            reg.push_str(&format!("[^{esc_sl}]"));
            detected = MatchType::Regexp;
        } else if ".+()|{}$".contains(ch) {
            reg.push('\\');
            reg.push(ch);
        } else if ch == '\\' {
            if separator == '\\' {
                reg.push_str(&esc_sl);
                i += 1;
                continue;
            }
            if let Some(&next) = chars.get(pos) {
                pos += 1;
                reg.push('\\');
                reg.push(next);
                detected = MatchType::Regexp;
            } else {
                reg.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            reg.push(ch);
            detected = MatchType::Regexp;
        } else {
            reg.push(ch);
        }
        i += 1;
    }
    if detected == MatchType::Regexp {
        reg.push('$');
        (detected, reg)
    } else {
        (detected, String::new())
    }
}

/// Rewrites a Go regular expression for Rust's `regex`, which gives `[`, `&&`, `--` and `~~`
/// meaning inside a character class where Go takes them literally.
fn go_regex_to_rust(go: &str) -> String {
    let mut out = String::with_capacity(go.len());
    let chars: Vec<char> = go.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&n) = chars.get(i + 1) {
                out.push(n);
            }
            i += 2;
            continue;
        }
        if !in_class {
            if c == '[' {
                in_class = true;
                class_start = i;
            }
            out.push(c);
            i += 1;
            continue;
        }
        let first_in_class =
            i == class_start + 1 || (i == class_start + 2 && chars[class_start + 1] == '^');
        match c {
            ']' if !first_in_class => {
                in_class = false;
                out.push(c);
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // A POSIX class `[:alpha:]` means the same in both.
                out.push(c);
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                out.push_str("\\-");
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    dirs: Vec<String>,
    match_type: MatchType,
    regex: Option<regex::Regex>,
    /// The regular expression did not compile (Go then reports `ErrBadPattern` on every match).
    broken: bool,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` (re-include) pattern.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> Result<bool, Error> {
        if self.broken {
            return Err(ignore_error(BAD_PATTERN));
        }
        Ok(match self.match_type {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Regexp => self.regex.as_ref().is_some_and(|re| re.is_match(path)),
        })
    }
}

/// A compiled list of `.dockerignore` patterns (moby's `PatternMatcher`).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Compiles `patterns` (as [`read_patterns`] returns them): blank patterns are skipped, a
    /// lone `!` and malformed globs are errors, as in moby.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, Error> {
        let mut out = Vec::new();
        for p in patterns {
            let p = trim_space(p.as_ref());
            if p.is_empty() {
                continue;
            }
            let mut p = clean_path(p).into_owned();
            let mut exclusion = false;
            if p.starts_with('!') {
                if p.len() == 1 {
                    return Err(ignore_error("illegal exclusion pattern: \"!\""));
                }
                exclusion = true;
                p.remove(0);
            }
            if let Err(e) = go_filepath_match(&p, ".") {
                return Err(ignore_error(e));
            }
            let (match_type, reg) = compile_pattern(&p, '/');
            let (regex, broken) = if match_type == MatchType::Regexp {
                match regex::Regex::new(&go_regex_to_rust(&reg)) {
                    Ok(re) => (Some(re), false),
                    Err(_) => (None, true),
                }
            } else {
                (None, false)
            };
            out.push(Pattern {
                dirs: p.split('/').map(str::to_string).collect(),
                cleaned: p,
                exclusion,
                match_type,
                regex,
                broken,
            });
        }
        Ok(Matcher { patterns: out })
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exclusion.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded: it or a parent
    /// directory matches, the last matching pattern deciding (moby's `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> Result<bool, Error> {
        let file = clean_path(path);
        if file == "." {
            // moby: "Don't let them exclude everything, kind of silly."
            return Ok(false);
        }
        let parent = parent_dir(&file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&file)?;
            if !hit && parent != "." {
                for i in 0..parent_dirs.len() {
                    if pattern
                        .matches(&parent_dirs[..=i].join("/"))
                        .unwrap_or(false)
                    {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// [`Matcher::matches`] for a path whose parent directory is known not to match (a walk
    /// decides each directory before reading it). Without `!` patterns no pattern matches that
    /// parent or its parents, so only the path itself is checked; otherwise this is `matches`.
    pub fn matches_in_unmatched_dir(&self, path: &str) -> Result<bool, Error> {
        if self.has_exclusions() {
            return self.matches(path);
        }
        let file = clean_path(path);
        if file == "." {
            return Ok(false);
        }
        for pattern in &self.patterns {
            if pattern.matches(&file)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// moby's deprecated `Matches`, which checks the path and only the one parent directory
    /// with as many components as the pattern. Kept because conformance vectors pin the glob
    /// syntax through it; use [`Matcher::matches`] for `.dockerignore`.
    pub fn matches_single_parent(&self, path: &str) -> Result<bool, Error> {
        let file = clean_path(path);
        if file == "." {
            return Ok(false);
        }
        let file = &*file;
        let parent = parent_dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(file)?;
            if !hit && parent != "." && pattern.dirs.len() <= parent_dirs.len() {
                hit = pattern
                    .matches(&parent_dirs[..pattern.dirs.len()].join("/"))
                    .unwrap_or(false);
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// What a context walk should do with directory `dir` (relative, `/`-separated).
    pub fn decide_dir(&self, dir: &str) -> Result<DirDecision, Error> {
        if !self.matches(dir)? {
            return Ok(DirDecision::Include);
        }
        let dir = clean_path(dir);
        let dir_parts: Vec<&str> = dir.split('/').collect();
        let reincluded = self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| may_match_below(&p.dirs, &dir_parts));
        Ok(if reincluded {
            DirDecision::ExcludeButDescend
        } else {
            DirDecision::Exclude
        })
    }
}

/// What to do with a directory during a context walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirDecision {
    /// Not excluded: send it and walk into it.
    Include,
    /// Excluded, and nothing inside can be re-included: skip it without reading it.
    Exclude,
    /// Excluded, but a `!` pattern may re-include something inside: do not send the directory
    /// entry itself, walk into it and decide each entry with [`Matcher::matches`].
    ExcludeButDescend,
}

/// Whether a pattern with components `pattern` may match a path strictly below `dir`
/// (conservative: `**` anywhere in the shared prefix counts as "may").
fn may_match_below(pattern: &[String], dir: &[&str]) -> bool {
    for (i, d) in dir.iter().enumerate() {
        let Some(p) = pattern.get(i) else {
            return false;
        };
        if p.contains("**") {
            return true;
        }
        if !go_filepath_match(p, d).unwrap_or(false) {
            return false;
        }
    }
    pattern.len() > dir.len()
}

fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        None => ".".to_string(),
        Some(0) => "/".to_string(),
        Some(i) => clean_path(&path[..i]).into_owned(),
    }
}

/// Go's `filepath.Match` (Unix): `*`, `?`, `[...]` with `^` negation and ranges, `\` escapes.
/// Reports `ErrBadPattern` for malformed patterns even when the name does not match.
pub(crate) fn go_filepath_match(pattern: &str, name: &str) -> Result<bool, &'static str> {
    let mut pattern = pattern;
    let mut name = name;
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains('/'));
        }
        let (t, ok, err) = match_chunk(chunk, name);
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if let Some(e) = err {
            return Err(e);
        }
        if star {
            let bytes = name.as_bytes();
            let mut i = 0;
            while i < bytes.len() && bytes[i] != b'/' {
                if name.is_char_boundary(i + 1) {
                    let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                    if ok {
                        if pattern.is_empty() && !t.is_empty() {
                            i += 1;
                            continue;
                        }
                        name = t;
                        continue 'outer;
                    }
                    if let Some(e) = err {
                        return Err(e);
                    }
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if let (_, _, Some(e)) = match_chunk(chunk, "") {
                return Err(e);
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let mut star = false;
    let mut pattern = pattern;
    while let Some(rest) = pattern.strip_prefix('*') {
        pattern = rest;
        star = true;
    }
    let bytes = pattern.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Returns `(rest of s, matched, error)`.
fn match_chunk<'a>(chunk: &str, s: &'a str) -> (&'a str, bool, Option<&'static str>) {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        let c = chunk.as_bytes()[0];
        match c {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let ch = s.chars().next().unwrap_or('\0');
                    r = ch;
                    s = &s[ch.len_utf8()..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if chunk.starts_with('^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.starts_with(']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = match get_esc(chunk) {
                        Ok(v) => v,
                        Err(e) => return ("", false, Some(e)),
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.starts_with('-') {
                        match get_esc(&chunk[1..]) {
                            Ok((h, rest)) => {
                                hi = h;
                                chunk = rest;
                            }
                            Err(e) => return ("", false, Some(e)),
                        }
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    let ch = s.chars().next().unwrap_or('\0');
                    if ch == '/' {
                        failed = true;
                    }
                    s = &s[ch.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return ("", false, Some(BAD_PATTERN));
                    }
                }
                let pc = chunk.chars().next().unwrap_or('\0');
                if !failed {
                    let sc = s.chars().next().unwrap_or('\0');
                    if pc != sc {
                        failed = true;
                    }
                    s = &s[sc.len_utf8()..];
                }
                chunk = &chunk[pc.len_utf8()..];
            }
        }
    }
    if failed {
        return ("", false, None);
    }
    (s, true, None)
}

fn get_esc(chunk: &str) -> Result<(char, &str), &'static str> {
    if chunk.is_empty() || chunk.starts_with('-') || chunk.starts_with(']') {
        return Err(BAD_PATTERN);
    }
    let mut chunk = chunk;
    if let Some(rest) = chunk.strip_prefix('\\') {
        chunk = rest;
        if chunk.is_empty() {
            return Err(BAD_PATTERN);
        }
    }
    let r = chunk.chars().next().unwrap_or('\0');
    let rest = &chunk[r.len_utf8()..];
    if rest.is_empty() {
        return Err(BAD_PATTERN);
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_exclusion_reincludes() {
        let m = Matcher::new(&["docs", "!docs/README.md"]).unwrap();
        assert!(m.matches("docs/a.md").unwrap());
        assert!(!m.matches("docs/README.md").unwrap());
        assert_eq!(
            m.decide_dir("docs").unwrap(),
            DirDecision::ExcludeButDescend
        );
        let m = Matcher::new(&["build", "!src"]).unwrap();
        assert_eq!(m.decide_dir("build").unwrap(), DirDecision::Exclude);
        assert_eq!(m.decide_dir("src").unwrap(), DirDecision::Include);
        let m = Matcher::new(&["*", "!**/*.go"]).unwrap();
        assert_eq!(
            m.decide_dir("vendor").unwrap(),
            DirDecision::ExcludeButDescend
        );
        assert!(!m.matches("vendor/x/main.go").unwrap());
    }

    #[test]
    fn unmatched_dir_shortcut_agrees_with_matches() {
        let paths = [
            "a",
            "a/b",
            "a/b/c.go",
            "src/x.txt",
            "src/node_modules",
            "x/y/z/file.md",
            ".git",
            "dir/.hidden",
            "b.log",
        ];
        let pattern_sets: [&[&str]; 6] = [
            &["node_modules"],
            &["*.log", "**/*.md", "src/*"],
            &["a/b", "x/*/z"],
            &["**/.*", "dir"],
            &["docs", "!docs/README.md", "*.go"],
            &[],
        ];
        for patterns in pattern_sets {
            let m = Matcher::new(patterns).unwrap();
            for path in paths {
                // The shortcut's promise: the parent directory does not match.
                let parent = parent_dir(path);
                if parent != "." && m.matches(&parent).unwrap() {
                    continue;
                }
                assert_eq!(
                    m.matches_in_unmatched_dir(path).unwrap(),
                    m.matches(path).unwrap(),
                    "{path} with {patterns:?}"
                );
            }
        }
    }

    #[test]
    fn glob_match_like_go() {
        assert_eq!(go_filepath_match("a*", "abc"), Ok(true));
        assert_eq!(go_filepath_match("a*/b", "a/c/b"), Ok(false));
        assert_eq!(go_filepath_match("[a-", "a"), Err(BAD_PATTERN));
        assert_eq!(go_filepath_match("[]a]", "]"), Err(BAD_PATTERN));
        assert_eq!(go_filepath_match("a[", "x"), Err(BAD_PATTERN));
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        assert_eq!(
            ignore_file_names("build/app.Dockerfile"),
            [
                "app.Dockerfile.dockerignore".to_string(),
                ".dockerignore".to_string()
            ]
        );
    }
}
