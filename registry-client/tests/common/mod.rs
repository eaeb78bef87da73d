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

use strata_registry_client::{
    Client, ClientConfig, RegistryOptions, Repository, RepositoryClient, RetryPolicy,
};

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

/// [`test_config`] with uploads to `host` in chunks of `chunk_size` bytes.
pub fn chunked_config(host: &str, chunk_size: u64) -> ClientConfig {
    let mut config = test_config();
    config.registries.insert(
        host.to_string(),
        RegistryOptions {
            chunk_size: Some(chunk_size),
            ..Default::default()
        },
    );
    config
}

/// Reads an HTTP request head: the bytes read so far and where the head ends. `None` at end
/// of stream or when the peer does not speak HTTP (a TLS hello), after which servers hang up.
pub async fn read_request_head(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_uppercase() {
            return Ok(None);
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some((buf, i + 4)));
        }
    }
}

pub fn repo(client: &Client, host: &str, path: &str) -> RepositoryClient {
    client.repository(Repository::parse(host, path).unwrap())
}
