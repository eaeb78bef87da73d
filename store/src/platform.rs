//! Platforms (`linux/amd64`, `linux/arm64/v8`) as OCI indexes and image configs name them: Go's
//! GOOS/GOARCH names, normalised as containerd's `platforms` package does.

use std::fmt;
use std::str::FromStr;

/// An operating system, CPU architecture and optional variant, in OCI (Go) spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A platform string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
pub struct InvalidPlatform(pub String);

impl Platform {
    /// Builds and normalises a platform (`x86_64` -> `amd64`, `arm64/v8` -> `arm64`, ...).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let (architecture, variant) = normalize_arch(
            &architecture.to_ascii_lowercase(),
            variant.map(str::to_ascii_lowercase).as_deref(),
        );
        Platform {
            os: if os == "macos" { "darwin".into() } else { os },
            architecture,
            variant,
        }
    }

    /// The platform this process runs on, in OCI names (Rust's `x86_64` is OCI's `amd64`).
    pub fn host() -> Platform {
        Platform::new(std::env::consts::OS, go_arch(std::env::consts::ARCH), None)
    }

    /// Parses `os/arch[/variant]`, or a bare `arch` (the host OS then), as `--platform` accepts.
    pub fn parse(s: &str) -> Result<Platform, InvalidPlatform> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !parts.iter().all(valid) {
            return Err(InvalidPlatform(s.to_string()));
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new(std::env::consts::OS, arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(InvalidPlatform(s.to_string())),
        }
    }

    /// Whether an image built for `image` runs here: same OS and architecture, and a variant this
    /// platform can run (amd64 `v3` runs `v2` and `v1`; arm `v7` runs `v6` and `v5`).
    pub fn can_run(&self, image: &Platform) -> bool {
        if self.os != image.os || self.architecture != image.architecture {
            return false;
        }
        match (&self.variant, &image.variant) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => {
                mine == theirs
                    || matches!(
                        (variant_level(mine), variant_level(theirs)),
                        (Some(m), Some(t)) if t <= m
                    )
            }
        }
    }

    /// Among `candidates`, the index of the best one this platform runs: an exact match first,
    /// then the highest compatible variant.
    pub fn best_match<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a Platform>,
    ) -> Option<usize> {
        candidates
            .into_iter()
            .enumerate()
            .filter(|(_, c)| self.can_run(c))
            .max_by_key(|(i, c)| {
                let exact = *c == self;
                let level = c.variant.as_deref().and_then(variant_level).unwrap_or(0);
                // Earlier entries win ties, as in an index's order.
                (exact, level, std::cmp::Reverse(*i))
            })
            .map(|(i, _)| i)
    }

    /// The OCI descriptor platform for this one.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.architecture.as_str().into());
        p.set_variant(self.variant.clone());
        p
    }

    /// The platform an OCI descriptor names.
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }
}

/// Rust's name for an architecture (`std::env::consts::ARCH`) as Go's GOARCH spells it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" => "mips64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let v = variant.map(str::to_string);
    let (a, v) = match arch {
        "i386" | "i686" | "x86" => ("386", None),
        "x86_64" | "x86-64" | "amd64" => ("amd64", v.filter(|v| v != "v1")),
        "aarch64" | "arm64" => (
            "arm64",
            match v.as_deref() {
                Some("8") | Some("v8") | Some("8.0") | Some("v8.0") | None => None,
                _ => v,
            },
        ),
        "armhf" => ("arm", Some("v7".to_string())),
        "armel" => ("arm", Some("v6".to_string())),
        "arm" => (
            "arm",
            match v.as_deref() {
                None | Some("7") => Some("v7".to_string()),
                Some("5") | Some("6") | Some("8") => v.map(|v| format!("v{v}")),
                _ => v,
            },
        ),
        other => return (other.to_string(), v),
    };
    (a.to_string(), v)
}

fn variant_level(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.split('.').next()?.parse().ok()
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p = Platform::parse("linux/amd64/v3").unwrap();
        assert_eq!(p.to_string(), "linux/amd64/v3");
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux//amd64").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("").is_err());
    }

    #[test]
    fn host_uses_go_names() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert_ne!(h.architecture, "x86_64");
        assert_ne!(h.architecture, "aarch64");
    }

    #[test]
    fn matching_prefers_exact_then_highest_variant() {
        let host = Platform::parse("linux/amd64/v3").unwrap();
        let c = [
            Platform::parse("linux/arm64").unwrap(),
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/amd64/v2").unwrap(),
            Platform::parse("linux/amd64/v4").unwrap(),
        ];
        assert_eq!(host.best_match(&c), Some(2));
        assert!(!Platform::parse("linux/amd64").unwrap().can_run(&c[2]));
        assert_eq!(
            Platform::parse("linux/arm64").unwrap().best_match(&c),
            Some(0)
        );
        assert_eq!(
            Platform::parse("windows/amd64").unwrap().best_match(&c),
            None
        );
    }
}
