//! Addressing without a parsed image reference: a registry host, a repository path and a tag or
//! digest as plain values. The binary converts the store's reference type into these.

use std::fmt;
use std::net::IpAddr;

use strata_codec::Digest;

use crate::error::{Error, Result};

/// The name Docker Hub is known by in image references.
const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The key Docker Hub's credentials are stored under in `config.json` and `auth.json`.
const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

/// A registry as named in an image reference: `host[:port]` (`docker.io`, `127.0.0.1:5000`,
/// `[::1]:5000`, `registry.example`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry(String);

impl Registry {
    /// Validates `host[:port]`. `index.docker.io` is folded into `docker.io`.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |why: &str| Error::InvalidName {
            name: name.to_string(),
            why: why.to_string(),
        };
        let (host, port) = split_host_port(name).ok_or_else(|| invalid("not host[:port]"))?;
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return Err(invalid("bad port"));
        }
        let is_ip = host.parse::<IpAddr>().is_ok();
        let is_dns = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !is_ip && !is_dns {
            return Err(invalid("bad host name"));
        }
        if name.eq_ignore_ascii_case("index.docker.io") {
            return Ok(Registry(DOCKER_HUB.to_string()));
        }
        Ok(Registry(name.to_ascii_lowercase()))
    }

    /// The name as written in image references (`docker.io`, `127.0.0.1:5000`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host[:port]` to connect to: Docker Hub's API lives on another host than its name.
    pub fn endpoint(&self) -> &str {
        if self.0 == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.0
        }
    }

    /// The key credentials for this registry are stored under (Docker's and containers' files).
    pub fn credential_key(&self) -> &str {
        if self.0 == DOCKER_HUB {
            DOCKER_HUB_CREDENTIAL_KEY
        } else {
            &self.0
        }
    }

    /// The host without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        match split_host_port(&self.0) {
            Some((host, _)) => host,
            None => &self.0,
        }
    }

    /// `localhost`, `127.0.0.0/8` and `::1`: reachable without a network, so allowed offline and
    /// spoken to over plain HTTP when they do not speak TLS.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `host[:port]` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(name: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if name.matches(':').count() > 1 {
        return None; // IPv6 addresses need brackets, as in URLs
    }
    match name.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((name, None)),
    }
}

/// A repository on a registry: `127.0.0.1:5000` + `team/app`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    registry: Registry,
    path: String,
}

impl Repository {
    /// Validates the repository path as distribution does: lowercase components of
    /// `[a-z0-9]` separated by `.`, `_`, `__` or dashes, joined by `/`. Docker Hub's implicit
    /// `library/` prefix is the caller's business (the store's reference parser adds it).
    pub fn new(registry: Registry, path: &str) -> Result<Self> {
        let valid = !path.is_empty() && path.len() <= 255 && path.split('/').all(valid_component);
        if !valid {
            return Err(Error::InvalidName {
                name: path.to_string(),
                why: "not a repository path (lowercase [a-z0-9._-] components joined by '/')"
                    .to_string(),
            });
        }
        Ok(Repository {
            registry,
            path: path.to_string(),
        })
    }

    /// Parses `host[:port]` and a path in one go.
    pub fn parse(registry: &str, path: &str) -> Result<Self> {
        Repository::new(Registry::new(registry)?, path)
    }

    /// The repository an image reference names. The reference must be normalised
    /// ([`strata_store::reference::parse_normalized_named`]), so that it has a registry and
    /// Docker Hub's `library/` prefix.
    pub fn of(reference: &strata_store::Reference) -> Result<Self> {
        if reference.domain().is_empty() {
            return Err(Error::InvalidName {
                name: reference.to_string(),
                why: "the reference names no registry".to_string(),
            });
        }
        Repository::parse(reference.domain(), reference.path())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: one '.', one or two '_', or any run of '-'; never mixed.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// What to fetch from a repository: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub fn tag(tag: &str) -> Result<Self> {
        let b = tag.as_bytes();
        let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        let valid = !b.is_empty()
            && b.len() <= 128
            && word(&b[0])
            && b[1..].iter().all(|c| word(c) || *c == b'.' || *c == b'-');
        if !valid {
            return Err(Error::InvalidName {
                name: tag.to_string(),
                why: "not a tag".to_string(),
            });
        }
        Ok(Reference::Tag(tag.to_string()))
    }

    /// What an image reference asks for: its digest when it has one (a tag beside a digest is
    /// ignored, as Docker does), else its tag, else `latest`.
    pub fn of(reference: &strata_store::Reference) -> Result<Self> {
        if reference.digest().is_some() {
            return match reference.oci_digest() {
                Some(d) => Ok(Reference::Digest(d)),
                None => Err(Error::InvalidName {
                    name: reference.to_string(),
                    why: "unsupported digest".to_string(),
                }),
            };
        }
        Reference::tag(reference.tag().unwrap_or("latest"))
    }

    /// The path segment used in `/v2/<name>/manifests/<reference>`.
    pub fn as_path_segment(&self) -> String {
        match self {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    /// `:tag` or `@sha256:...`, ready to append to a repository name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

impl From<Digest> for Reference {
    fn from(d: Digest) -> Self {
        Reference::Digest(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries() {
        let hub = Registry::new("docker.io").unwrap();
        assert_eq!(hub.endpoint(), "registry-1.docker.io");
        assert_eq!(hub.credential_key(), "https://index.docker.io/v1/");
        assert_eq!(Registry::new("index.docker.io").unwrap(), hub);
        assert!(!hub.is_loopback());

        for loopback in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "[::1]",
        ] {
            let r = Registry::new(loopback).unwrap();
            assert!(r.is_loopback(), "{loopback}");
            assert_eq!(r.endpoint(), loopback);
        }
        assert_eq!(Registry::new("[::1]:5000").unwrap().host(), "::1");
        assert!(!Registry::new("10.0.0.1:5000").unwrap().is_loopback());
        assert!(!Registry::new("localhost.example").unwrap().is_loopback());
        for bad in [
            "",
            "a b",
            "host:port",
            "host:99999",
            "-a.example",
            "a..b",
            "[::1",
            "::1",
        ] {
            assert!(Registry::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_paths() {
        let reg = Registry::new("127.0.0.1:5000").unwrap();
        for good in [
            "app", "team/app", "a/b/c", "a.b", "a_b", "a__b", "a---b", "0",
        ] {
            Repository::new(reg.clone(), good).unwrap();
        }
        for bad in [
            "", "App", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a._b", "a:b",
        ] {
            assert!(Repository::new(reg.clone(), bad).is_err(), "{bad}");
        }
        let repo = Repository::parse("127.0.0.1:5000", "team/app").unwrap();
        assert_eq!(repo.to_string(), "127.0.0.1:5000/team/app");
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::tag("v1.0-rc_1").unwrap().to_string(),
            ":v1.0-rc_1"
        );
        assert!(Reference::tag(".x").is_err());
        assert!(Reference::tag(&"a".repeat(129)).is_err());
        let d = strata_codec::sha256_digest(b"x");
        assert_eq!(Reference::from(d.clone()).to_string(), format!("@{d}"));

        let named = |s: &str| strata_store::reference::parse_normalized_named(s).unwrap();
        let busybox = named("busybox");
        assert_eq!(
            Repository::of(&busybox).unwrap().to_string(),
            "docker.io/library/busybox"
        );
        assert_eq!(
            Reference::of(&busybox).unwrap(),
            Reference::Tag("latest".into())
        );
        let pinned = named(&format!("127.0.0.1:5000/a/b:v2@{d}"));
        assert_eq!(
            Repository::of(&pinned).unwrap().to_string(),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(Reference::of(&pinned).unwrap(), Reference::Digest(d));
        let bare = strata_store::Reference::parse("app:v1").unwrap();
        assert!(Repository::of(&bare).is_err());
    }
}
