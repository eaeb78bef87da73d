//! Manifest and index documents: media types, parsing, and platform selection from an index.

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;
use strata_codec::Digest;
use strata_store::Platform;

use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests, as containerd sends it: both families of single
/// manifests and of indexes, then anything (some registries answer 404 to an Accept they cannot
/// satisfy instead of sending what they have).
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// Manifests are small; anything bigger than this is refused rather than buffered.
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A manifest or index exactly as the registry sent it, with its digest checked.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    /// The document's bytes: the digest is of these, so store them as they are.
    pub bytes: Bytes,
}

/// A parsed manifest document.
#[derive(Clone, Debug)]
pub enum ManifestDocument {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses the document, deciding between manifest and index by media type (the
    /// `Content-Type` the registry sent, then the document's own `mediaType`, then its shape).
    pub fn parse(&self) -> Result<ManifestDocument> {
        let bad = |why: String| Error::Protocol {
            what: format!("manifest {}", self.digest),
            why,
        };
        let probe: Probe = serde_json::from_slice(&self.bytes).map_err(|e| bad(e.to_string()))?;
        let media_type = document_media_type(&self.media_type, probe.media_type.as_deref());
        let is_index = match media_type {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(bad(format!("unsupported manifest media type {other}"))),
            None => probe.manifests.is_some(),
        };
        if is_index {
            let index: ImageIndex =
                serde_json::from_slice(&self.bytes).map_err(|e| bad(e.to_string()))?;
            Ok(ManifestDocument::Index(Box::new(index)))
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(&self.bytes).map_err(|e| bad(e.to_string()))?;
            Ok(ManifestDocument::Image(Box::new(manifest)))
        }
    }
}

/// The media type a document declares: its `mediaType` field, else the registry's content type
/// when it is one of ours (registries answer `application/json` or `text/plain` for some).
fn document_media_type<'a>(content_type: &'a str, declared: Option<&'a str>) -> Option<&'a str> {
    declared.filter(|t| !t.is_empty()).or_else(|| {
        let content_type = content_type.split(';').next().unwrap_or("").trim();
        [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .contains(&content_type)
        .then_some(content_type)
    })
}

/// The `Content-Type` to send a document with: its own `mediaType`, else OCI's by shape.
pub fn media_type_of(document: &[u8]) -> Result<String> {
    let probe: Probe = serde_json::from_slice(document).map_err(|e| Error::Protocol {
        what: "manifest to push".to_string(),
        why: e.to_string(),
    })?;
    Ok(match probe.media_type.filter(|t| !t.is_empty()) {
        Some(t) => t,
        None if probe.manifests.is_some() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    })
}

/// The platform an index entry declares; entries without one (attestations, artifacts) have
/// none, and neither do entries that are not manifests or indexes.
fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    if strata_store::media::kind(d.media_type()) == strata_store::media::Kind::Other {
        return None;
    }
    d.platform().as_ref().map(Platform::from_oci)
}

/// The entry of `index` to use on `wanted`, as containerd picks: an exact match first, then the
/// highest variant `wanted` can run (arm/v7 runs v6), earlier entries winning ties. Entries
/// without a platform (attestations, artifacts) never match.
pub fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<(Platform, &Descriptor)> = index
        .manifests()
        .iter()
        .filter_map(|d| Some((descriptor_platform(d)?, d)))
        .collect();
    let best = wanted.best_match(candidates.iter().map(|(p, _)| p))?;
    Some(candidates[best].1)
}

/// The platforms an index offers, for error messages.
pub fn available_platforms(index: &ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(descriptor_platform)
        .map(|p| p.to_string())
        .collect();
    if list.is_empty() {
        "no platforms".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_json() -> Bytes {
        Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.example.artifact+json","size":1,
             "digest":"sha256:6666666666666666666666666666666666666666666666666666666666666666",
             "platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
             "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
             "platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
             "digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",
             "platform":{"os":"linux","architecture":"arm","variant":"v6"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
             "digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333",
             "platform":{"os":"linux","architecture":"arm64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
             "digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444",
             "platform":{"os":"unknown","architecture":"unknown"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
             "digest":"sha256:5555555555555555555555555555555555555555555555555555555555555555",
             "platform":{"os":"linux","architecture":"arm","variant":"v5"}}]}"#,
        )
    }

    #[test]
    fn platform_selection() {
        let m = Manifest {
            digest: strata_codec::sha256_digest(&index_json()),
            media_type: "application/json".into(),
            bytes: index_json(),
        };
        let ManifestDocument::Index(index) = m.parse().unwrap() else {
            panic!("not an index")
        };
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).unwrap())
                .map(|d| d.digest().to_string()[7..8].to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("1"));
        assert_eq!(pick("linux/x86_64").as_deref(), Some("1"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("3"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("3"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("2"));
        // arm/v7 runs v6 and v5 and takes the highest; arm means arm/v7.
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm/v5").as_deref(), Some("5"));
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(
            available_platforms(&index),
            "linux/amd64, linux/arm/v6, linux/arm64, unknown/unknown, linux/arm/v5"
        );
    }

    #[test]
    fn media_types() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,
            "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"},"layers":[]}"#;
        assert_eq!(media_type_of(docker).unwrap(), DOCKER_MANIFEST);
        let m = Manifest {
            digest: strata_codec::sha256_digest(docker),
            media_type: "text/plain".into(),
            bytes: Bytes::from_static(docker),
        };
        assert!(matches!(m.parse().unwrap(), ManifestDocument::Image(_)));
        assert_eq!(media_type_of(br#"{"manifests":[]}"#).unwrap(), OCI_INDEX);
        assert_eq!(media_type_of(br#"{"layers":[]}"#).unwrap(), OCI_MANIFEST);
        assert!(media_type_of(b"not json").is_err());
        let odd = Manifest {
            digest: strata_codec::sha256_digest(b"{}"),
            media_type: "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            bytes: Bytes::from_static(b"{}"),
        };
        assert!(odd.parse().is_err());
    }
}
