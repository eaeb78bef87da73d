//! An OCI distribution API v2 client: auth, pull, push, cross-repository mounts, retries.
