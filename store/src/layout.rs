//! `index.json` of the store's OCI layout: which manifests are images and what they are called.
//!
//! Each name is one entry whose `org.opencontainers.image.ref.name` is the full normalised
//! reference (`docker.io/library/busybox:latest`), with `io.containerd.image.name` set to the same
//! string. skopeo's `oci:` transport matches `ref.name` exactly, so every name also gets alias
//! entries for its familiar forms (`busybox:latest`, and `busybox` for `:latest`), marked as
//! aliases by a `io.containerd.image.name` that differs from their `ref.name`. Untagged
//! ("dangling") images are entries without a name. The aliases are a rendering detail: strata
//! reads only the primary entries.

use std::collections::{HashMap, HashSet};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::error::{Result, StoreError};
use crate::reference::{Reference, parse_docker_ref};

/// The OCI annotation naming an image in a layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker 25+ archives') annotation with the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// One image of the store: a manifest (or index) and its name, if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// The full normalised name; `None` for an untagged image.
    pub name: Option<Reference>,
    /// The manifest or index, without the naming annotations.
    pub target: Descriptor,
}

/// Reads the entries of a layout's index, skipping alias entries.
pub fn entries_from_index(index: &ImageIndex) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for d in index.manifests() {
        let annotations = d.annotations().clone().unwrap_or_default();
        let ref_name = annotations.get(ANNOTATION_REF_NAME);
        let image_name = annotations.get(ANNOTATION_IMAGE_NAME);
        if let (Some(r), Some(i)) = (ref_name, image_name)
            && r != i
        {
            continue;
        }
        let name = image_name
            .or(ref_name)
            .and_then(|s| parse_docker_ref(s).ok());
        out.push(IndexEntry {
            name,
            target: strip_name_annotations(d),
        });
    }
    out
}

/// A descriptor without the naming annotations (`None` when nothing else is left).
pub fn strip_name_annotations(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    let rest: HashMap<String, String> = d
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != ANNOTATION_REF_NAME && k != ANNOTATION_IMAGE_NAME)
        .collect();
    d.set_annotations((!rest.is_empty()).then_some(rest));
    d
}

/// A descriptor carrying `name` in both naming annotations.
pub fn named_descriptor(target: &Descriptor, ref_name: &str, image_name: &str) -> Descriptor {
    let mut d = target.clone();
    let mut annotations = d.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
    annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), image_name.to_string());
    d.set_annotations(Some(annotations));
    d
}

/// The familiar forms skopeo users type for `name`, other than the full name itself.
fn aliases(name: &Reference) -> Vec<String> {
    let full = name.to_string();
    let mut out = Vec::new();
    let familiar = name.familiar_string();
    if familiar != full {
        out.push(familiar);
    }
    if name.tag() == Some("latest") && name.digest().is_none() {
        out.push(name.familiar_name());
    }
    out
}

/// Builds the index for `entries`, with alias entries for familiar names.
pub fn index_from_entries(entries: &[IndexEntry], with_aliases: bool) -> Result<ImageIndex> {
    let primaries: HashSet<String> = entries
        .iter()
        .filter_map(|e| e.name.as_ref().map(|n| n.to_string()))
        .collect();
    // An alias two names would claim, or that is some image's full name, is left out: skopeo
    // refuses a ref.name that matches two entries.
    let mut alias_count: HashMap<String, usize> = HashMap::new();
    if with_aliases {
        for n in entries.iter().filter_map(|e| e.name.as_ref()) {
            for a in aliases(n) {
                *alias_count.entry(a).or_default() += 1;
            }
        }
    }
    let mut manifests = Vec::new();
    for e in entries {
        let Some(name) = &e.name else {
            manifests.push(e.target.clone());
            continue;
        };
        let full = name.to_string();
        manifests.push(named_descriptor(&e.target, &full, &full));
        if with_aliases {
            for a in aliases(name) {
                if alias_count.get(&a) == Some(&1) && !primaries.contains(&a) {
                    manifests.push(named_descriptor(&e.target, &a, &full));
                }
            }
        }
    }
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| StoreError::Invalid(format!("building index.json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::parse_docker_ref;

    fn desc(n: u8) -> Descriptor {
        Descriptor::new(
            MediaType::ImageManifest,
            10,
            strata_codec::sha256_digest(&[n]),
        )
    }

    #[test]
    fn aliases_are_written_and_ignored_on_read() {
        let entries = vec![
            IndexEntry {
                name: Some(parse_docker_ref("busybox").unwrap()),
                target: desc(1),
            },
            IndexEntry {
                name: Some(parse_docker_ref("localhost:5000/a/b:v1").unwrap()),
                target: desc(2),
            },
            IndexEntry {
                name: None,
                target: desc(3),
            },
        ];
        let index = index_from_entries(&entries, true).unwrap();
        let names: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.annotations().as_ref()?.get(ANNOTATION_REF_NAME).cloned())
            .collect();
        assert_eq!(
            names,
            [
                "docker.io/library/busybox:latest",
                "busybox:latest",
                "busybox",
                "localhost:5000/a/b:v1"
            ]
        );
        assert_eq!(entries_from_index(&index), entries);
    }
}
