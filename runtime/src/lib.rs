//! The namespace sandbox.
//!
//! Runs one process in a root filesystem, isolated as Docker isolates it, from an OCI runtime spec.
