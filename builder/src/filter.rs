//! What `COPY --exclude` and `COPY --parents` select below a source, as fsutil's copier does
//! with BuildKit's include and exclude patterns: paths are relative to the source being copied
//! (the source itself is never filtered), patterns have `.dockerignore` syntax and a directory
//! that matches decides for everything below it.

use strata_frontend::dockerignore::{DirDecision, Matcher};

use crate::remote::Remote;
use crate::source::{SourceRoot, has_wildcards, join};

/// The COPY/ADD flags that change what is copied and how it is stacked.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyFlags {
    /// `--link`: the layer is made on an empty tree and its key leaves out its parent.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// ADD's URLs and git repositories (the other sources are local).
    pub remotes: Vec<Remote>,
}

impl CopyFlags {
    /// What one source as written copies: the path the copy starts from (as `normalize` makes
    /// it relative to the source root; `None` from it means outside the root) and the filter
    /// below it. With `--parents` a source without wildcards must exist.
    pub fn selection(
        &self,
        src: &str,
        normalize: impl Fn(&str) -> Option<String>,
        view: &SourceRoot<'_>,
    ) -> Result<(String, Option<CopyFilter>), String> {
        let outside = || format!("forbidden path outside the build context: {src}");
        if !self.parents {
            let rel = normalize(src).ok_or_else(outside)?;
            return Ok((rel, CopyFilter::new(&[], &self.excludes)?));
        }
        let (base, pattern) = split_parents(src);
        let base = normalize(&base).ok_or_else(outside)?;
        if pattern.split('/').any(|c| c == "..") {
            return Err(outside());
        }
        if !pattern.is_empty() && !has_wildcards(&pattern) {
            let path = join(&base, &pattern);
            if view.resolve(&path).map_err(|e| e.to_string())?.is_none() {
                return Err(format!(
                    "file not found in build context or excluded by .dockerignore: \
                     stat {path}: file does not exist"
                ));
            }
        }
        let include: Vec<String> = if pattern.is_empty() {
            Vec::new()
        } else {
            vec![pattern]
        };
        Ok((base, CopyFilter::new(&include, &self.excludes)?))
    }
}

/// The include (`--parents`) and exclude (`--exclude`) patterns of one copy.
#[derive(Debug)]
pub(crate) struct CopyFilter {
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

/// What to do with one entry below a filtered source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Copy it (a directory: with everything not filtered below it).
    Copy,
    /// Leave it (a directory: and everything below it) out.
    Skip,
    /// A directory that is not selected itself but may hold selected entries: it is made only
    /// when something below it is copied.
    Descend,
}

impl CopyFilter {
    /// `None` when there is nothing to filter.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Option<CopyFilter>, String> {
        if include.is_empty() && exclude.is_empty() {
            return Ok(None);
        }
        let matcher = |patterns: &[String]| -> Result<Option<Matcher>, String> {
            if patterns.is_empty() {
                return Ok(None);
            }
            Matcher::new(patterns)
                .map(Some)
                .map_err(|e| format!("invalid pattern: {e}"))
        };
        Ok(Some(CopyFilter {
            include: matcher(include)?,
            exclude: matcher(exclude)?,
        }))
    }

    /// The decision for `path` (relative to the source being copied, never empty).
    pub fn decide(&self, path: &str, is_dir: bool) -> Decision {
        let mut decision = Decision::Copy;
        if let Some(include) = &self.include
            && !include.matches(path).unwrap_or(false)
        {
            if !is_dir {
                return Decision::Skip;
            }
            decision = Decision::Descend;
        }
        if let Some(exclude) = &self.exclude
            && exclude.matches(path).unwrap_or(false)
        {
            if is_dir && exclude.decide_dir(path).ok() == Some(DirDecision::ExcludeButDescend) {
                return Decision::Descend;
            }
            return Decision::Skip;
        }
        decision
    }
}

/// `--parents`: splits a source at its `/./` pivot (BuildKit 1.7+) into the directory the copy
/// starts from and the pattern of what it keeps below it, parents included. Without a pivot
/// the copy starts at the root and keeps the whole path.
pub(crate) fn split_parents(src: &str) -> (String, String) {
    let (base, pattern) = match src.split_once("/./") {
        Some((base, pattern)) => (base.to_string(), pattern.to_string()),
        None => (String::new(), src.to_string()),
    };
    let clean = |p: &str| -> String {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/")
    };
    (clean(&base), clean(&pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn excludes_and_reincludes() {
        let f = CopyFilter::new(&[], &strings(&["*.txt", "skip", "logs", "!logs/keep"]))
            .unwrap()
            .unwrap();
        assert_eq!(f.decide("a.txt", false), Decision::Skip);
        assert_eq!(f.decide("d/a.txt", false), Decision::Copy);
        assert_eq!(f.decide("skip", true), Decision::Skip);
        assert_eq!(f.decide("logs", true), Decision::Descend);
        assert_eq!(f.decide("logs/keep", false), Decision::Copy);
        assert_eq!(f.decide("logs/other", false), Decision::Skip);
        assert!(CopyFilter::new(&[], &[]).unwrap().is_none());
    }

    #[test]
    fn includes_keep_parents() {
        let f = CopyFilter::new(&strings(&["*/sub/*.go"]), &strings(&["x/**"]))
            .unwrap()
            .unwrap();
        assert_eq!(f.decide("a", true), Decision::Descend);
        assert_eq!(f.decide("a/sub", true), Decision::Descend);
        assert_eq!(f.decide("a/sub/m.go", false), Decision::Copy);
        assert_eq!(f.decide("a/sub/m.c", false), Decision::Skip);
        assert_eq!(f.decide("x/sub/m.go", false), Decision::Skip);
    }

    #[test]
    fn parents_pivot() {
        assert_eq!(split_parents("a/./b/c.txt"), ("a".into(), "b/c.txt".into()));
        assert_eq!(split_parents("./x/y"), (String::new(), "x/y".into()));
        assert_eq!(split_parents("/x/*.txt"), (String::new(), "x/*.txt".into()));
    }
}
