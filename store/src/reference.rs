//! Image references, parsed and normalised exactly as distribution/reference (v0.6) does.
//!
//! `busybox` -> `docker.io/library/busybox:latest`; `localhost:5000/a/b@sha256:...`; image IDs (64 hex
//! digits) are not names. The grammar is the upstream one, written as the same regular expressions:
//! Go's regexp and the `regex` crate both use leftmost-first semantics, so they match alike.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The registry a familiar name belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The longest repository path (`NameTotalLengthMax` upstream).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a reference. The variants are distribution/reference's (and go-digest's)
/// error values; [`ReferenceError::ident`] gives their Go names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid tag format")]
    TagInvalidFormat,
    #[error("invalid digest format")]
    DigestInvalidFormat,
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("repository name must be canonical")]
    NameNotCanonical,
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RemoteNameUppercase(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    NameIsIdentifier(String),
}

impl ReferenceError {
    /// The Go identifier of the upstream error value (`ErrReferenceInvalidFormat`, ...), or `None`
    /// for the errors upstream builds with `fmt.Errorf`.
    pub fn ident(&self) -> Option<&'static str> {
        Some(match self {
            ReferenceError::InvalidFormat => "ErrReferenceInvalidFormat",
            ReferenceError::TagInvalidFormat => "ErrTagInvalidFormat",
            ReferenceError::DigestInvalidFormat => "ErrDigestInvalidFormat",
            ReferenceError::NameContainsUppercase => "ErrNameContainsUppercase",
            ReferenceError::NameEmpty => "ErrNameEmpty",
            ReferenceError::NameTooLong => "ErrNameTooLong",
            ReferenceError::NameNotCanonical => "ErrNameNotCanonical",
            ReferenceError::DigestInvalidLength => "ErrDigestInvalidLength",
            ReferenceError::DigestUnsupported => "ErrDigestUnsupported",
            ReferenceError::RemoteNameUppercase(_) | ReferenceError::NameIsIdentifier(_) => {
                return None;
            }
        })
    }
}

mod grammar {
    pub const ALPHANUMERIC: &str = "[a-z0-9]+";
    pub const SEPARATOR: &str = "(?:[._]|__|[-]+)";
    pub const DOMAIN_NAME_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    pub const OPTIONAL_PORT: &str = "(?::[0-9]+)?";
    /// Go's `\w` is ASCII (`[0-9A-Za-z_]`); the `regex` crate's is Unicode, which would accept
    /// tags upstream refuses and takes ~60 ms to compile with the `{0,127}` repetition.
    pub const TAG: &str = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    pub const DIGEST: &str =
        "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
    pub const IPV6: &str = r"\[(?:[a-fA-F0-9:]+)\]";

    pub fn path_component() -> String {
        format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*")
    }
    pub fn domain_and_port() -> String {
        let domain_name = format!(r"{DOMAIN_NAME_COMPONENT}(?:\.{DOMAIN_NAME_COMPONENT})*");
        format!("(?:{domain_name}|{IPV6}){OPTIONAL_PORT}")
    }
    pub fn remote_name() -> String {
        let pc = path_component();
        format!("{pc}(?:/{pc})*")
    }
    pub fn name() -> String {
        format!("(?:{}/)?{}", domain_and_port(), remote_name())
    }
}

fn regex(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(r) => r,
        Err(e) => unreachable!("reference grammar regex {pattern} is invalid: {e}"),
    }
}

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "^({})(?::({}))?(?:@({}))?$",
        grammar::name(),
        grammar::TAG,
        grammar::DIGEST
    ))
});
static ANCHORED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "^(?:({})/)?({})$",
        grammar::domain_and_port(),
        grammar::remote_name()
    ))
});
static ANCHORED_TAG: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^{}$", grammar::TAG)));
static ANCHORED_DIGEST: LazyLock<Regex> =
    LazyLock::new(|| regex(&format!("^{}$", grammar::DIGEST)));
static ANCHORED_IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| regex("^[a-f0-9]{64}$"));

/// Whether `s` is a full image ID without its `sha256:` prefix (64 lowercase hex digits).
pub fn is_identifier(s: &str) -> bool {
    ANCHORED_IDENTIFIER.is_match(s)
}

/// go-digest's `Parse`: `algorithm:encoded`, with the length checked for the algorithms it knows.
fn validate_digest(s: &str) -> Result<(), ReferenceError> {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return Err(ReferenceError::DigestInvalidFormat);
    };
    if algorithm.is_empty() || encoded.is_empty() {
        return Err(ReferenceError::DigestInvalidFormat);
    }
    let (len, valid_hex): (usize, fn(char) -> bool) = match algorithm {
        "sha256" => (64, |c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "sha384" => (96, |c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "sha512" => (128, |c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        other => {
            let algorithm_ok = other
                .split(['+', '.', '_', '-'])
                .all(|c| c.chars().next().is_some_and(|f| f.is_ascii_lowercase()))
                && other
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
            return Err(if algorithm_ok {
                ReferenceError::DigestUnsupported
            } else {
                ReferenceError::DigestInvalidFormat
            });
        }
    };
    if encoded.len() != len {
        return Err(ReferenceError::DigestInvalidLength);
    }
    if !encoded.chars().all(valid_hex) {
        return Err(ReferenceError::DigestInvalidFormat);
    }
    Ok(())
}

/// A parsed image reference: a repository name with an optional tag and digest.
///
/// Built by [`Reference::parse`] (as written) or [`parse_normalized_named`] (with Docker's
/// defaults filled in); `Display` gives `name[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// distribution/reference's `Parse`: the reference exactly as written, not normalised.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let Some(caps) = REFERENCE.captures(s) else {
            if s.is_empty() {
                return Err(ReferenceError::NameEmpty);
            }
            if REFERENCE.is_match(&s.to_lowercase()) {
                return Err(ReferenceError::NameContainsUppercase);
            }
            return Err(ReferenceError::InvalidFormat);
        };
        let name = caps.get(1).map_or("", |m| m.as_str());
        let (domain, path) = split_name(name);
        if path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = caps.get(3).map(|m| m.as_str().to_string());
        if let Some(d) = &digest {
            validate_digest(d)?;
        }
        if path.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        Ok(Reference {
            domain: domain.to_string(),
            path: path.to_string(),
            tag: caps.get(2).map(|m| m.as_str().to_string()),
            digest,
        })
    }

    /// The repository name: `domain/path`, or `path` where there is no domain.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The registry part (`docker.io`, `localhost:5000`), empty when none was written.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest as written (`sha256:...`); see [`Reference::oci_digest`] for a typed one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The digest as an OCI digest, when there is one that oci-spec accepts.
    pub fn oci_digest(&self) -> Option<strata_codec::Digest> {
        self.digest.as_deref().and_then(|d| d.parse().ok())
    }

    /// The familiar repository name Docker shows: `busybox` for `docker.io/library/busybox`,
    /// `user/app` for `docker.io/user/app`, other registries unchanged.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The familiar name with its tag and digest (`busybox:latest`).
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_and_digest(&mut s);
        s
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
    }

    /// This name with `tag` (upstream `WithTag`; a digest is kept).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !ANCHORED_TAG.is_match(tag) {
            return Err(ReferenceError::TagInvalidFormat);
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// This name with `digest` (upstream `WithDigest`; only the format is checked, a tag is kept).
    pub fn with_digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        if !ANCHORED_DIGEST.is_match(digest) {
            return Err(ReferenceError::DigestInvalidFormat);
        }
        Ok(Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }

    /// The bare repository name, without tag or digest.
    pub fn without_tag_or_digest(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }

    /// Upstream `TagNameOnly`: adds `:latest` when there is neither tag nor digest.
    pub fn tag_name_only(&self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            Reference {
                tag: Some(DEFAULT_TAG.to_string()),
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_tag_and_digest(&mut s);
        f.write_str(&s)
    }
}

/// Splits a matched name into domain and path as upstream's anchored name regexp does.
fn split_name(name: &str) -> (&str, &str) {
    match ANCHORED_NAME.captures(name) {
        Some(c) => (
            c.get(1).map_or("", |m| m.as_str()),
            c.get(2).map_or("", |m| m.as_str()),
        ),
        None => ("", name),
    }
}

/// Upstream `WithName`: a repository name alone (no tag, no digest).
pub fn with_name(name: &str) -> Result<Reference, ReferenceError> {
    let Some(c) = ANCHORED_NAME.captures(name) else {
        return Err(ReferenceError::InvalidFormat);
    };
    let path = c.get(2).map_or("", |m| m.as_str());
    if path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong);
    }
    Ok(Reference {
        domain: c.get(1).map_or("", |m| m.as_str()).to_string(),
        path: path.to_string(),
        tag: None,
        digest: None,
    })
}

/// Upstream `splitDockerDomain`: the domain Docker assumes, and the rest.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i)
            if name[..i].contains(['.', ':'])
                || &name[..i] == "localhost"
                || name[..i].to_lowercase() != name[..i] =>
        {
            (name[..i].to_string(), name[i + 1..].to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// Upstream `ParseNormalizedNamed`: a name as a user types it, with Docker's defaults filled in
/// (`busybox` -> `docker.io/library/busybox`). No tag is added; see [`Reference::tag_name_only`].
pub fn parse_normalized_named(s: &str) -> Result<Reference, ReferenceError> {
    if is_identifier(s) {
        return Err(ReferenceError::NameIsIdentifier(s.to_string()));
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote_name = match remainder.find(':') {
        Some(i) => &remainder[..i],
        None => &remainder[..],
    };
    if remote_name.to_lowercase() != remote_name {
        return Err(ReferenceError::RemoteNameUppercase(remote_name.to_string()));
    }
    Reference::parse(&format!("{domain}/{remainder}"))
}

/// Upstream `ParseNamed`: a name that must already be in its full, normalised form.
pub fn parse_named(s: &str) -> Result<Reference, ReferenceError> {
    let named = parse_normalized_named(s)?;
    if named.to_string() != s {
        return Err(ReferenceError::NameNotCanonical);
    }
    Ok(named)
}

/// Upstream `ParseDockerRef`: normalised, `:latest` added, and a tag dropped when a digest is set.
pub fn parse_docker_ref(s: &str) -> Result<Reference, ReferenceError> {
    let named = parse_normalized_named(s)?;
    if named.digest.is_some() {
        return Ok(Reference { tag: None, ..named });
    }
    Ok(named.tag_name_only())
}

/// What [`parse_any`] found: a name, or a bare digest (an image ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyReference {
    Named(Reference),
    /// `sha256:<hex>`, from either a 64-hex identifier or a digest string.
    Digest(String),
}

impl fmt::Display for AnyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyReference::Named(r) => r.fmt(f),
            AnyReference::Digest(d) => f.write_str(d),
        }
    }
}

/// Upstream `ParseAnyReference`: a 64-hex ID or a digest is an ID, anything else a normalised name.
pub fn parse_any(s: &str) -> Result<AnyReference, ReferenceError> {
    if is_identifier(s) {
        return Ok(AnyReference::Digest(format!("sha256:{s}")));
    }
    if validate_digest(s).is_ok() {
        return Ok(AnyReference::Digest(s.to_string()));
    }
    parse_normalized_named(s).map(AnyReference::Named)
}

/// Upstream `FamiliarMatch`: Go's `path.Match(pattern, familiar string)`, or against the familiar
/// name (no tag or digest) when that fails. A malformed pattern matches nothing.
pub fn familiar_match(pattern: &str, reference: &AnyReference) -> bool {
    match reference {
        AnyReference::Named(r) => {
            path_match(pattern, &r.familiar_string()).unwrap_or(false)
                || path_match(pattern, &r.familiar_name()).unwrap_or(false)
        }
        AnyReference::Digest(d) => path_match(pattern, d).unwrap_or(false),
    }
}

/// Go's `path.Match`: `*` and `?` never match `/`; `[...]` classes with `^` negation and ranges;
/// `\` escapes. `None` for a malformed pattern.
pub fn path_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> Option<bool> {
    let (mut pi, mut ni) = (0, 0);
    // Backtracking point for the last `*`: (pattern index after it, name index it resumes at).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    let (matched, next) = match_class(p, pi, n.get(ni).copied())?;
                    if matched {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' => {
                    let c = *p.get(pi + 1)?;
                    if ni < n.len() && n[ni] == c {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                }
                c if c != '?' && ni < n.len() && n[ni] == c => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Some(true);
        }
        // Mismatch: let the last star swallow one more character (never a '/').
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => {
                // Go reports a malformed pattern even on mismatch: check the rest of it.
                validate_pattern(&p[pi.min(p.len())..])?;
                return Some(false);
            }
        }
    }
}

fn validate_pattern(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, next) = match_class(p, i, Some('\0'))?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Some(())
}

/// Matches the class starting at `p[start] == '['` against `c`; returns (matched, index after `]`).
fn match_class(p: &[char], start: usize, c: Option<char>) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = class_char(p, &mut i)?;
        let hi = if p.get(i) == Some(&'-') {
            i += 1;
            class_char(p, &mut i)?
        } else {
            lo
        };
        if let Some(c) = c
            && lo <= c
            && c <= hi
        {
            matched = true;
        }
    }
    Some((c.is_some() && matched != negated, i))
}

/// One character of a class (Go's `getEsc`): an unescaped `-` or `]` here is a malformed pattern.
fn class_char(p: &[char], i: &mut usize) -> Option<char> {
    match *p.get(*i)? {
        '-' | ']' => None,
        '\\' => {
            let e = *p.get(*i + 1)?;
            *i += 2;
            Some(e)
        }
        c => {
            *i += 1;
            Some(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_familiar_names() {
        let r = parse_docker_ref("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_string(), "busybox:latest");
        let r = parse_normalized_named("localhost:5000/a/b@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "a/b");
        assert!(r.tag().is_none());
        assert!(r.oci_digest().is_some());
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        assert!(parse_normalized_named("-foo").is_err());
        assert!(parse_normalized_named("Busybox").is_err());
        assert!(with_name("busybox").unwrap().with_tag("-foo").is_err());
        // Go's `\w` is ASCII only.
        assert!(with_name("busybox").unwrap().with_tag("caf\u{e9}").is_err());
        assert!(parse_normalized_named("busybox:\u{e9}t\u{e9}").is_err());
        assert!(with_name("busybox").unwrap().with_digest("foo").is_err());
        assert_eq!(Reference::parse("").unwrap_err(), ReferenceError::NameEmpty);
    }

    #[test]
    fn tag_and_digest_together() {
        let s = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let r = parse_normalized_named(s).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/{s}"));
        assert_eq!(r.familiar_string(), s);
        assert!(r.tag().is_some() && r.digest().is_some());
    }

    #[test]
    fn go_path_match() {
        assert_eq!(path_match("a*", "abc"), Some(true));
        assert_eq!(path_match("a*", "a/b"), Some(false));
        assert_eq!(path_match("a/*/c", "a/b/c"), Some(true));
        assert_eq!(path_match("[^a]b", "cb"), Some(true));
        assert_eq!(path_match("[^a]b", "ab"), Some(false));
        assert_eq!(path_match("[a-c]", "b"), Some(true));
        assert_eq!(path_match("[", "a"), None);
        assert_eq!(path_match("a\\*", "a*"), Some(true));
    }

    /// Strings made of what references are made of: mostly shaped like one (domain, path
    /// components, tag, digest, any of them in upper case or missing), some shapeless.
    fn reference_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let shaped = (
            proptest::option::of(prop_oneof![
                proptest::sample::select(vec!["docker.io/", "index.docker.io/", "localhost/"])
                    .prop_map(String::from),
                "[a-zA-Z0-9.-]{1,12}(:[0-9]{1,5})?/",
            ]),
            "(library/)?[a-z0-9]{1,6}([._-]{1,2}[a-z0-9]{1,4}){0,2}(/[a-z0-9]{1,6}){0,3}",
            proptest::option::of(":[A-Za-z0-9_.-]{1,12}"),
            proptest::option::of("@sha256:[0-9a-f]{64}"),
        )
            .prop_map(|(domain, path, tag, digest)| {
                [domain, Some(path), tag, digest]
                    .into_iter()
                    .flatten()
                    .collect()
            });
        prop_oneof![3 => shaped, 1 => "[a-zA-Z0-9._:/@-]{0,48}"]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// What parses prints back to itself, in full and familiar form: the store keys images
        /// by the printed form, and users see the familiar one.
        #[test]
        fn a_parsed_name_reparses_from_its_printed_forms(s in reference_like()) {
            if let Ok(r) = parse_normalized_named(&s) {
                let full = r.to_string();
                proptest::prop_assert_eq!(&parse_normalized_named(&full).unwrap(), &r);
                proptest::prop_assert_eq!(&parse_named(&full).unwrap(), &r);
                // As upstream, Docker Hub's `docker.io/a.b/c` is shown as `a.b/c`, which reads
                // back as registry `a.b`: the familiar form is ambiguous there.
                let first = r.path().split('/').next().unwrap_or_default();
                let hub_path_like_a_domain = r.domain() == DEFAULT_DOMAIN
                    && (first.contains(['.', ':']) || first == "localhost");
                if !hub_path_like_a_domain {
                    let familiar = parse_normalized_named(&r.familiar_string()).unwrap();
                    proptest::prop_assert_eq!(&familiar, &r);
                }
                let named = AnyReference::Named(r.clone());
                proptest::prop_assert!(familiar_match(&r.familiar_string(), &named));
            }
        }

        /// Nothing panics on any input.
        #[test]
        fn any_input_is_an_answer_or_an_error(s in proptest::prelude::any::<String>(), p in reference_like()) {
            for input in [&s, &p] {
                let _ = Reference::parse(input);
                let _ = parse_docker_ref(input);
                let _ = parse_named(input);
                let _ = with_name(input);
                if let Ok(any) = parse_any(input) {
                    let _ = familiar_match(&s, &any);
                }
                let _ = path_match(input, &p);
            }
        }
    }
}
