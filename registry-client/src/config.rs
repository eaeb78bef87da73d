//! How the client behaves: offline switch, per-registry options, certificate directories,
//! retries, concurrency and progress.
//!
//! Per-registry options live in `registries.json` in strata's config directory
//! (`$XDG_CONFIG_HOME/strata`, else `~/.config/strata`):
//!
//! ```json
//! { "registries": { "registry.internal:5000": { "insecure": true, "chunk_size": 8388608 } } }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::credentials::CredentialStore;
use crate::error::{Error, Result};
use crate::names::Registry;
use crate::progress::ProgressFn;

/// Options for one registry, keyed by its name as written in references (`host[:port]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryOptions {
    /// Accept any TLS certificate from the registry, and speak plain HTTP when it does not
    /// speak TLS (plain HTTP is always allowed for loopback).
    #[serde(default)]
    pub insecure: bool,
    /// Upload blobs in PATCH requests of this many bytes instead of one PUT. Some registries
    /// (and proxies in front of them) cap request sizes.
    #[serde(default)]
    pub chunk_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistriesFile {
    #[serde(default)]
    registries: BTreeMap<String, RegistryOptions>,
}

/// Retries of requests that failed in a way that may pass: dropped connections, timeouts, 408,
/// 429 and 5xx. Waits double from `initial_backoff` up to `max_backoff`; a `Retry-After` from
/// the registry is honoured up to `max_backoff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one request in all (1 = no retry).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (`attempt` counts from 1).
    pub(crate) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        retry_after.unwrap_or(exp).min(self.max_backoff)
    }
}

/// Everything a [`crate::Client`] needs to know; [`ClientConfig::from_env`] builds the usual one.
#[derive(Clone)]
pub struct ClientConfig {
    /// Refuse every registry that is not on loopback, naming the image that was needed.
    pub offline: bool,
    pub credentials: CredentialStore,
    /// Per-registry options by registry name (`host[:port]`).
    pub registries: BTreeMap<String, RegistryOptions>,
    /// Directories holding `HOST[:PORT]/*.crt` CA certificates, searched in order.
    pub certs_dirs: Vec<PathBuf>,
    pub retry: RetryPolicy,
    /// Blob uploads in flight at once ([`crate::RepositoryClient::push_blobs`], [`crate::push_image`]).
    pub max_concurrent_uploads: usize,
    /// Layer downloads in flight at once in [`crate::pull_image`].
    pub max_concurrent_downloads: usize,
    /// Receives per-blob progress; called from the tasks doing the transfer, so it must be quick.
    pub progress: Option<ProgressFn>,
    pub user_agent: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("offline", &self.offline)
            .field("credentials", &self.credentials)
            .field("registries", &self.registries)
            .field("certs_dirs", &self.certs_dirs)
            .field("retry", &self.retry)
            .field("max_concurrent_uploads", &self.max_concurrent_uploads)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// A config that reads nothing from the environment: online, no credentials, no options,
    /// no certificate directories. Tests and embedders start here.
    pub fn empty() -> Self {
        ClientConfig {
            offline: false,
            credentials: CredentialStore::new(Vec::new()),
            registries: BTreeMap::new(),
            certs_dirs: Vec::new(),
            retry: RetryPolicy::default(),
            max_concurrent_uploads: 3,
            max_concurrent_downloads: 3,
            progress: None,
            user_agent: concat!("strata/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// The usual config: `STRATA_OFFLINE`, credentials from the usual files
    /// ([`CredentialStore::from_env`]), `registries.json` and `certs.d` in strata's config
    /// directory, then `/etc/containers/certs.d` and `/etc/docker/certs.d`.
    pub fn from_env() -> Result<Self> {
        let mut config = ClientConfig::empty();
        config.offline = offline_from_env();
        config.credentials = CredentialStore::from_env();
        let mut certs_dirs = Vec::new();
        if let Some(dir) = config_dir() {
            config.registries = load_registries_file(&dir.join("registries.json"))?;
            certs_dirs.push(dir.join("certs.d"));
        }
        certs_dirs.push(PathBuf::from("/etc/containers/certs.d"));
        certs_dirs.push(PathBuf::from("/etc/docker/certs.d"));
        config.certs_dirs = certs_dirs;
        Ok(config)
    }

    /// The options for `registry` (defaults when it has none).
    pub fn options_for(&self, registry: &Registry) -> RegistryOptions {
        self.registries
            .get(registry.as_str())
            .cloned()
            .unwrap_or_default()
    }
}

/// `STRATA_OFFLINE` set to anything but empty, `0` or `false`.
pub fn offline_from_env() -> bool {
    std::env::var_os("STRATA_OFFLINE")
        .is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// An environment lookup (empty values count as unset). The search orders take one so tests
/// can check them without touching the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

pub(crate) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// strata's config directory: `$XDG_CONFIG_HOME/strata`, else `$HOME/.config/strata`.
pub fn config_dir() -> Option<PathBuf> {
    config_dir_in(&process_env)
}

pub(crate) fn config_dir_in(env: Env) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir_in(env).map(|h| h.join(".config")))?;
    Some(base.join("strata"))
}

pub(crate) fn home_dir_in(env: Env) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// Reads `registries.json`; a missing file means no options.
pub fn load_registries_file(path: &Path) -> Result<BTreeMap<String, RegistryOptions>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::file(path, e)),
    };
    let file: RegistriesFile = serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    for (name, options) in &file.registries {
        Registry::new(name).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        if options.chunk_size == Some(0) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                why: format!("{name}: chunk_size must be positive"),
            });
        }
    }
    Ok(file.registries)
}

/// Sends `event` to the progress callback, if there is one.
pub(crate) fn report(progress: &Option<ProgressFn>, event: crate::progress::ProgressEvent) {
    if let Some(f) = progress {
        f(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.json");
        assert!(load_registries_file(&path).unwrap().is_empty());
        std::fs::write(
            &path,
            r#"{"registries":{"reg.internal:5000":{"insecure":true,"chunk_size":1024}}}"#,
        )
        .unwrap();
        let map = load_registries_file(&path).unwrap();
        assert_eq!(
            map["reg.internal:5000"],
            RegistryOptions {
                insecure: true,
                chunk_size: Some(1024)
            }
        );
        std::fs::write(&path, r#"{"registries":{"reg":{"insecur":true}}}"#).unwrap();
        assert!(load_registries_file(&path).is_err());
        std::fs::write(&path, r#"{"registries":{"bad host":{}}}"#).unwrap();
        assert!(load_registries_file(&path).is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(1, None), Duration::from_millis(100));
        assert_eq!(p.backoff(2, None), Duration::from_millis(200));
        assert_eq!(p.backoff(3, None), Duration::from_millis(350));
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_millis(350)
        );
    }
}
