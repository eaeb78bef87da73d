//! The local image store.
//!
//! A content store laid out as an OCI image layout (blobs by digest, `index.json` naming images),
//! a redb database for what the layout cannot hold, image references as distribution/reference
//! parses them, platforms, garbage collection, and the archive formats (docker-archive, OCI)
//! others read. See [`Store`] for the layout on disk and the locking discipline.

mod archive;
mod content;
mod error;
mod gc;
mod image;
mod layer;
mod layout;
mod lock;
pub mod media;
pub mod meta;
mod platform;
pub mod reference;
mod store;

pub use archive::{ArchiveFormat, LoadedImage};
pub use content::{BlobInfo, BlobReader, BlobWriter, MAX_JSON_SIZE, canonical_json};
pub use error::{Result, StoreError};
pub use gc::{GcOptions, GcReport, ImagePrune};
pub use image::{Image, Removal};
pub use layout::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, IndexEntry};
pub use lock::Lease;
pub use meta::{LayerRecord, MetaRead, MetaWrite, SnapshotHolder};
pub use platform::{InvalidPlatform, Platform, go_arch};
pub use reference::{Reference, ReferenceError};
pub use store::{Store, default_root};

/// The metadata database crate, for other crates' tables (see [`meta`]).
pub use redb;
/// Digests as everywhere in strata.
pub use strata_codec::Digest;
