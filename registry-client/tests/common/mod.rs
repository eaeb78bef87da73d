//! Test harness: the real `docker-registry` on 127.0.0.1 (`registry.rs`), a token server
//! that signs JWTs the registry trusts, OCI layouts for skopeo, and a fault-injecting proxy. Everything started here stops when its guard drops.

#![allow(dead_code)] // each test binary uses part of the harness

pub mod faults;
pub mod images;
mod registry;
pub mod tokens;

use std::time::Duration;

#[allow(unused_imports)] // each test binary uses part of the harness
pub use registry::{Auth, Registry, Tls, run};

use strata_registry_client::{Client, ClientConfig, Repository, RepositoryClient, RetryPolicy};

/// A client config with fast retries and nothing from the environment (no credentials, no
/// certs); offline stays on as the cargo config sets it, which loopback ignores.
pub fn test_config() -> ClientConfig {
    let mut config = ClientConfig::empty();
    config.offline = strata_registry_client::offline_from_env();
    config.retry = RetryPolicy {
        attempts: 6,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    config
}

pub fn repo(client: &Client, host: &str, path: &str) -> RepositoryClient {
    client.repository(Repository::parse(host, path).unwrap())
}
