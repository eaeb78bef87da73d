//! Whether a string is an image reference `distribution/reference.ParseNormalizedNamed` accepts.
//!
//! The linter's `InvalidDefaultArgInFrom` only needs that yes/no answer. The store crate has the
//! full reference type, but the frontend depends on no other strata crate, so the grammar is
//! restated here (the same regular expressions, tested against the same upstream tables).

use std::sync::OnceLock;

use regex::Regex;

/// `NameTotalLengthMax`: the longest name (domain and path) a reference may have.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

fn reference_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let alphanumeric = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let path_component = format!("{alphanumeric}(?:{separator}{alphanumeric})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
        let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
        let host = format!("(?:{domain_name}|{ipv6})");
        let domain = format!("{host}(?::[0-9]+)?");
        let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
        // Go's `\w` is ASCII; the `regex` crate's Unicode one is wrong here and slow to compile.
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        let pattern = format!("^({name})(?::{tag})?(?:@({digest}))?$");
        Regex::new(&pattern).unwrap_or_else(|e| unreachable!("reference grammar: {e}"))
    })
}

/// go-digest's `Digest.Validate` for the algorithms it registers.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `splitDockerDomain`: the registry part and the rest, with Docker Hub's defaults applied.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_string();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    (domain, remainder)
}

/// Whether `ParseNormalizedNamed(s)` succeeds.
pub(crate) fn is_normalized_named(s: &str) -> bool {
    let is_image_id = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_image_id {
        return false;
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote_name = remainder.split(':').next().unwrap_or(&remainder);
    if remote_name.to_lowercase() != remote_name {
        return false;
    }
    let full = format!("{domain}/{remainder}");
    let Some(caps) = reference_regex().captures(&full) else {
        return false;
    };
    let name_ok = caps
        .get(1)
        .is_some_and(|n| n.as_str().len() <= NAME_TOTAL_LENGTH_MAX);
    let digest_ok = caps.get(2).is_none_or(|d| valid_digest(d.as_str()));
    name_ok && digest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_seen_in_from_lines() {
        for ok in [
            "scratch",
            "busybox",
            "busybox:latest",
            "busybox:stable-musl",
            "docker.io/library/alpine:3.20",
            "localhost:5000/app",
            "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(is_normalized_named(ok), "{ok}");
        }
        for bad in [
            "",
            "busybox:",
            ":latest",
            "Busybox",
            "busy box",
            "alpine@sha256:00",
            "-alpine",
            "busybox:caf\u{e9}",
        ] {
            assert!(!is_normalized_named(bad), "{bad}");
        }
    }
}
