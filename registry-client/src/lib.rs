//! An OCI distribution API v2 client: auth, pull, push, cross-repository mounts, retries.
//!
//! Addressing is by plain values ([`Registry`], [`Repository`], [`Reference`]); the binary
//! converts the store's parsed image references into these. Start with a [`Client`]
//! ([`Client::from_env`] reads the offline switch, credentials, `registries.json` and
//! `certs.d`), then [`Client::repository`] gives a [`RepositoryClient`] with the operations.
//!
//! Guarantees callers rely on:
//! - Nothing but loopback registries is contacted when [`ClientConfig::offline`] is set; the
//!   error names the image that was needed.
//! - Downloaded blobs and manifests are verified against their digest (and size) as they
//!   stream; a download that ends cleanly delivered exactly the expected bytes.
//! - Transient failures (dropped connections, 408, 429, 5xx) are retried with backoff;
//!   downloads resume with `Range`, chunked uploads from the registry's offset.
//! - Secrets (passwords, tokens) appear in no `Debug` output and no error message.

mod auth;
mod blob;
mod client;
mod config;
mod connection;
mod credentials;
mod error;
mod manifest;
mod names;
mod progress;
mod pull;
mod push;
mod repository;
mod sources;

pub use blob::{BlobReader, BlobSource, BlobStream, BlobUpload};
pub use client::Client;
pub use config::{
    ClientConfig, RegistryOptions, RetryPolicy, config_dir, load_registries_file, offline_from_env,
};
pub use credentials::{Credential, CredentialStore, login_file, remove_login, save_login};
pub use error::{Error, Result};
pub use manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Manifest, ManifestDocument, OCI_INDEX, OCI_MANIFEST,
    available_platforms, media_type_of, select_platform,
};
pub use names::{Reference, Registry, Repository};
pub use progress::{BlobOutcome, Direction, ProgressEvent, ProgressFn};
pub use pull::{PulledImage, pull_image};
pub use push::{ManifestFormat, PushOptions, PushedImage, push_image};
pub use repository::{ManifestHead, RepositoryClient, ResolvedImage};
