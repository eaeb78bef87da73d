//! Snapshots and layers.
//!
//! Overlayfs (and copying) snapshots for RUN steps, diffs to deterministic OCI layer tars with
//! streaming hashing and parallel compression, and safe extraction of layers into directories.
