//! Media types: OCI and Docker schema 2 names for the same things, and what a document references.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// What a descriptor points at, as far as walking images goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest (OCI or Docker schema 2).
    Manifest,
    /// An image index or Docker manifest list.
    Index,
    /// Anything else: configs, layers, artifacts' blobs.
    Other,
}

/// The [`Kind`] of a media type.
pub fn kind(media_type: &MediaType) -> Kind {
    match media_type {
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageIndex => Kind::Index,
        MediaType::Other(s) if s == DOCKER_MANIFEST => Kind::Manifest,
        MediaType::Other(s) if s == DOCKER_MANIFEST_LIST => Kind::Index,
        _ => Kind::Other,
    }
}

/// Whether a config media type is an image config (OCI or Docker).
pub fn is_image_config(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageConfig => true,
        MediaType::Other(s) => s == DOCKER_CONFIG,
        _ => false,
    }
}

/// The blobs a manifest references: config, layers and subject.
pub fn manifest_children(m: &ImageManifest) -> Vec<Descriptor> {
    let mut out = vec![m.config().clone()];
    out.extend(m.layers().iter().cloned());
    out.extend(m.subject().iter().cloned());
    out
}

/// The blobs an index references: its manifests and subject.
pub fn index_children(i: &ImageIndex) -> Vec<Descriptor> {
    let mut out = i.manifests().clone();
    out.extend(i.subject().iter().cloned());
    out
}
