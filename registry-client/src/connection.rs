//! One registry as the client talks to it: the HTTP client with its TLS roots, the scheme and
//! auth challenge found by pinging `/v2/`, credentials, cached tokens, and the request loop
//! (authorization, token renewal on 401, retries with backoff).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, Response};
use serde::Deserialize;
use strata_codec::Digest;
use url::Url;

use crate::auth::{Challenge, Scope, Token, basic_header, fetch_token, parse_challenge};
use crate::config::{ClientConfig, RegistryOptions, RetryPolicy, report};
use crate::credentials::Credential;
use crate::error::{Error, Result, retryable_status};
use crate::names::Registry;
use crate::progress::{ProgressEvent, ProgressFn};

/// How long the TLS try on a loopback or insecure registry may take before plain HTTP is
/// tried: a server that does not speak TLS may also never answer a TLS hello.
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request is for: named in errors, checked against the offline switch, and used to
/// pick credentials and token scopes.
pub(crate) struct Call<'a> {
    /// `GET manifest 127.0.0.1:5000/app:1`, for error messages.
    pub what: &'a str,
    /// The image this is needed for, named when offline forbids it.
    pub image: &'a str,
    /// The repository whose credentials to use (`None`: the registry's).
    pub repository: Option<&'a str>,
    pub scopes: &'a [Scope],
    /// The blob whose retries to report as progress.
    pub digest: Option<&'a Digest>,
}

/// The outcome of pinging the registry.
pub(crate) struct Endpoint {
    pub http: reqwest::Client,
    /// `https://host:port/` or `http://host:port/`.
    pub base: Url,
    challenge: Option<Challenge>,
}

pub(crate) struct Connection {
    pub registry: Registry,
    pub options: RegistryOptions,
    pub config: Arc<ClientConfig>,
    endpoint: tokio::sync::OnceCell<Endpoint>,
    /// Set for `strata login`'s check: use this credential, look up nothing.
    fixed_credential: Option<Option<Credential>>,
    credentials: Mutex<HashMap<String, Option<Credential>>>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Serialises token requests so concurrent uploads share one token per scope set.
    token_fetch: tokio::sync::Mutex<()>,
}

impl Connection {
    pub fn new(
        registry: Registry,
        config: Arc<ClientConfig>,
        fixed_credential: Option<Option<Credential>>,
    ) -> Self {
        Connection {
            options: config.options_for(&registry),
            registry,
            config,
            endpoint: tokio::sync::OnceCell::new(),
            fixed_credential,
            credentials: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_fetch: tokio::sync::Mutex::new(()),
        }
    }

    pub fn progress(&self) -> &Option<ProgressFn> {
        &self.config.progress
    }

    pub fn retrier<'a>(&'a self, digest: Option<&'a Digest>) -> Retrier<'a> {
        Retrier {
            policy: &self.config.retry,
            progress: &self.config.progress,
            digest,
            attempt: 0,
        }
    }

    /// Pings the registry once per connection (offline permitting).
    pub async fn endpoint(&self, call: &Call<'_>) -> Result<&Endpoint> {
        if self.config.offline && !self.registry.is_loopback() {
            return Err(Error::Offline {
                image: call.image.to_string(),
                registry: self.registry.to_string(),
            });
        }
        self.endpoint.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Endpoint> {
        let dirs = self.config.certs_dirs.clone();
        let registry = self.registry.clone();
        let certs = tokio::task::spawn_blocking(move || load_certificates(&dirs, &registry))
            .await
            .map_err(|e| Error::Io {
                what: "loading certificates".to_string(),
                source: std::io::Error::other(e),
            })??;
        let mut builder = reqwest::Client::builder()
            .user_agent(self.config.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120));
        if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        if self.registry.is_loopback() {
            // An HTTP(S)_PROXY from the environment cannot reach this machine's loopback.
            builder = builder.no_proxy();
        }
        if self.options.insecure {
            // As the containers tools and Docker treat insecure registries: TLS is still used
            // when offered, but its certificate is not checked.
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|source| Error::Transport {
            what: format!("setting up a client for {}", self.registry),
            source,
        })?;
        let host = self.registry.endpoint();
        let https = base_url("https", host)?;
        let what = format!("GET {https}v2/");
        if self.registry.is_loopback() || self.options.insecure {
            // One TLS try, then plain HTTP; a TLS error is the one worth reporting when the
            // plain try proves the server speaks TLS (Go answers plain HTTP with a 400).
            let probe = tokio::time::timeout(TLS_PROBE_TIMEOUT, ping(&http, &https, &what));
            let tls_error = match probe.await.unwrap_or_else(|_| {
                Err(Error::Protocol {
                    what: what.clone(),
                    why: format!("no TLS answer within {TLS_PROBE_TIMEOUT:?}"),
                })
            }) {
                Ok(challenge) => {
                    return Ok(Endpoint {
                        http,
                        base: https,
                        challenge,
                    });
                }
                Err(e) => e,
            };
            let plain = base_url("http", host)?;
            let what = format!("GET {plain}v2/");
            return match ping(&http, &plain, &what).await {
                Ok(challenge) => Ok(Endpoint {
                    http,
                    base: plain,
                    challenge,
                }),
                Err(Error::Status { status: 400, .. }) => Err(tls_error),
                Err(e) => Err(e),
            };
        }
        let mut retrier = self.retrier(None);
        loop {
            match ping(&http, &https, &what).await {
                Ok(challenge) => {
                    return Ok(Endpoint {
                        http,
                        base: https,
                        challenge,
                    });
                }
                Err(e) => retrier.pause(e, None).await?,
            }
        }
    }

    /// Sends a request whose body can be rebuilt, retrying transient failures.
    pub async fn send(
        &self,
        call: &Call<'_>,
        build: impl Fn(&reqwest::Client, &Url) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut retrier = self.retrier(call.digest);
        loop {
            let err = match self.exchange(call, &build, true).await {
                Ok(response) if retryable_status(response.status().as_u16()) => {
                    let retry_after = retry_after(response.headers());
                    let err = status_error(call.what, response).await;
                    retrier.pause(err, retry_after).await?;
                    continue;
                }
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            retrier.pause(err, None).await?;
        }
    }

    /// One request with authorization. A 401 means the token ran out or lacks a scope: with
    /// `renew`, the token is renewed and the request rebuilt and sent once more; without, the
    /// token is dropped and [`Error::Unauthorized`] returned for the caller to retry its way.
    pub async fn exchange(
        &self,
        call: &Call<'_>,
        build: &impl Fn(&reqwest::Client, &Url) -> Result<RequestBuilder>,
        renew: bool,
    ) -> Result<Response> {
        let endpoint = self.endpoint(call).await?;
        let mut renewed = false;
        loop {
            let mut request = build(&endpoint.http, &endpoint.base)?;
            if let Some(auth) = self.authorization(endpoint, call).await? {
                request = request.header(AUTHORIZATION, auth);
            }
            let response = request.send().await.map_err(|source| Error::Transport {
                what: call.what.to_string(),
                source,
            })?;
            if response.status().as_u16() != 401 {
                return Ok(response);
            }
            let bearer = matches!(endpoint.challenge, Some(Challenge::Bearer { .. }));
            if bearer {
                self.forget_token(call.scopes);
            }
            if bearer && renew && !renewed {
                renewed = true;
                continue;
            }
            let detail = match self.credential(call.repository).await? {
                None => format!("no credentials for {}", self.registry),
                Some(_) => registry_errors(response)
                    .await
                    .trim_start_matches(": ")
                    .into(),
            };
            return Err(Error::Unauthorized {
                what: call.what.to_string(),
                detail,
            });
        }
    }

    async fn authorization(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
    ) -> Result<Option<HeaderValue>> {
        match &endpoint.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => match self.credential(call.repository).await? {
                Some(Credential::Basic { username, password }) => {
                    basic_header(&username, &password).map(Some)
                }
                _ => Ok(None),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let key = scope_key(call.scopes);
                if let Some(token) = self.cached_token(&key) {
                    return token.header().map(Some);
                }
                let _one_at_a_time = self.token_fetch.lock().await;
                if let Some(token) = self.cached_token(&key) {
                    return token.header().map(Some);
                }
                let credential = self.credential(call.repository).await?;
                let token = fetch_token(
                    &endpoint.http,
                    realm,
                    service.as_deref(),
                    call.scopes,
                    credential.as_ref(),
                )
                .await?;
                let header = token.header()?;
                lock(&self.tokens).insert(key, token);
                Ok(Some(header))
            }
        }
    }

    fn cached_token(&self, key: &str) -> Option<Token> {
        lock(&self.tokens)
            .get(key)
            .filter(|t| t.expires > Instant::now())
            .cloned()
    }

    fn forget_token(&self, scopes: &[Scope]) {
        lock(&self.tokens).remove(&scope_key(scopes));
    }

    /// The credential for a repository, looked up once (on a blocking thread: it reads files
    /// and may run a helper).
    async fn credential(&self, repository: Option<&str>) -> Result<Option<Credential>> {
        if let Some(fixed) = &self.fixed_credential {
            return Ok(fixed.clone());
        }
        let key = repository.unwrap_or("").to_string();
        if let Some(found) = lock(&self.credentials).get(&key) {
            return Ok(found.clone());
        }
        let store = self.config.credentials.clone();
        let registry = self.registry.clone();
        let repo = repository.map(str::to_string);
        let found = tokio::task::spawn_blocking(move || store.lookup(&registry, repo.as_deref()))
            .await
            .map_err(|e| Error::Credentials {
                key: self.registry.credential_key().to_string(),
                why: e.to_string(),
            })??;
        lock(&self.credentials).insert(key, found.clone());
        Ok(found)
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain maps).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut list: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    list.sort_unstable();
    list.join(" ")
}

fn base_url(scheme: &str, host: &str) -> Result<Url> {
    Url::parse(&format!("{scheme}://{host}/")).map_err(|e| Error::InvalidName {
        name: host.to_string(),
        why: e.to_string(),
    })
}

/// `GET /v2/`: 200 means no auth, 401 names the challenge.
async fn ping(http: &reqwest::Client, base: &Url, what: &str) -> Result<Option<Challenge>> {
    let url = base.join("v2/").map_err(|e| Error::Protocol {
        what: what.to_string(),
        why: e.to_string(),
    })?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| Error::Transport {
            what: what.to_string(),
            source,
        })?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(None);
    }
    if status == 401 {
        return match parse_challenge(response.headers()) {
            Some(challenge) => Ok(Some(challenge)),
            None => Err(Error::Protocol {
                what: what.to_string(),
                why: "401 without a Basic or Bearer challenge".to_string(),
            }),
        };
    }
    Err(status_error(what, response).await)
}

/// CA certificates for `registry`: every `*.crt` in `DIR/HOST[:PORT]/` of each directory.
fn load_certificates(dirs: &[PathBuf], registry: &Registry) -> Result<Vec<reqwest::Certificate>> {
    let mut certs = Vec::new();
    for dir in dirs {
        let dir = dir.join(registry.as_str());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::file(&dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        paths.sort();
        for path in paths {
            let pem = std::fs::read(&path).map_err(|e| Error::file(&path, e))?;
            let bundle =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                    path: path.clone(),
                    why: format!("not PEM certificates: {e}"),
                })?;
            if bundle.is_empty() {
                return Err(Error::Config {
                    path,
                    why: "no certificate in it".to_string(),
                });
            }
            certs.extend(bundle);
        }
    }
    Ok(certs)
}

/// Waits between tries and decides when to give up.
pub(crate) struct Retrier<'a> {
    policy: &'a RetryPolicy,
    progress: &'a Option<ProgressFn>,
    digest: Option<&'a Digest>,
    attempt: u32,
}

impl Retrier<'_> {
    /// After a failed try: waits and returns `Ok` when `err` is worth another try and tries
    /// remain, else gives `err` back.
    pub async fn pause(&mut self, err: Error, retry_after: Option<Duration>) -> Result<()> {
        if !err.is_retryable() {
            return Err(err);
        }
        self.pause_always(err, retry_after).await
    }

    /// Starts counting tries afresh (after progress was made).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Like [`Retrier::pause`] for failures the caller knows to be worth another try.
    pub async fn pause_always(&mut self, err: Error, retry_after: Option<Duration>) -> Result<()> {
        self.attempt += 1;
        if self.attempt >= self.policy.attempts {
            return Err(err);
        }
        if let Some(digest) = self.digest {
            report(
                self.progress,
                ProgressEvent::Retrying {
                    digest: digest.clone(),
                    attempt: self.attempt,
                    reason: err.full_message(),
                },
            );
        }
        tokio::time::sleep(self.policy.backoff(self.attempt, retry_after)).await;
        Ok(())
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// The error for an unexpected status, with the registry's error codes and messages.
pub(crate) async fn status_error(what: &str, response: Response) -> Error {
    let status = response.status().as_u16();
    if status == 404 {
        return Error::NotFound {
            what: what.to_string(),
        };
    }
    Error::Status {
        what: what.to_string(),
        status,
        detail: registry_errors(response).await,
    }
}

/// `: CODE message; CODE message` from a distribution error document, or nothing.
async fn registry_errors(response: Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = read_limited(response, 64 << 10).await else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&body) {
        Ok(doc) if !doc.errors.is_empty() => {
            let items: Vec<String> = doc
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
                .collect();
            format!(": {}", items.join("; "))
        }
        _ => String::new(),
    }
}

/// A response body of at most `limit` bytes.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: usize,
) -> std::result::Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub(crate) enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}
