//! The local image store.
//!
//! A content store laid out as an OCI image layout, image names, image references as
//! distribution/reference parses them, and the archive formats (docker-archive, OCI) others read.
