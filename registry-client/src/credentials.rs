//! Registry credentials: where they are looked up, how `strata login` stores them, and the
//! `docker-credential-<name>` helper protocol.
//!
//! Files are searched in order and the first that knows the registry wins (see
//! [`CredentialStore::from_env`]). All of them use Docker's `config.json` format, which the
//! containers tools' `auth.json` is a subset of:
//!
//! ```json
//! { "auths": { "host:port": { "auth": "base64(user:password)" } },
//!   "credHelpers": { "host:port": "helper" }, "credsStore": "helper" }
//! ```
//!
//! Within a file a `credHelpers` entry for the registry comes first, then an `auths` entry (the
//! most specific `host/namespace/repository` key first, as containers' `auth.json` allows),
//! then `credsStore`.
//!
//! Secrets never reach a `Debug`, `Display` or error message: [`Credential`]'s `Debug` redacts
//! them and errors only name the registry, the file or the helper.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::config::{Env, config_dir_in, home_dir_in, process_env};
use crate::error::{Error, Result};
use crate::names::Registry;

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`; a helper's `<token>` user), traded for
    /// access tokens at the registry's token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The credential files to search, in order, and where helpers are found.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    files: Vec<PathBuf>,
    /// Directories to find `docker-credential-*` in; `None` means `$PATH`.
    helper_dirs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

impl CredentialStore {
    /// Searches exactly these files, in order, with helpers from `$PATH`.
    pub fn new(files: Vec<PathBuf>) -> Self {
        CredentialStore {
            files,
            helper_dirs: None,
        }
    }

    /// The usual search order:
    /// 1. the file `strata login` writes ([`login_file`]: `$REGISTRY_AUTH_FILE`, else
    ///    `$XDG_CONFIG_HOME/strata/auth.json`);
    /// 2. the containers tools' `$XDG_RUNTIME_DIR/containers/auth.json` and
    ///    `$XDG_CONFIG_HOME/containers/auth.json`;
    /// 3. Docker's `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn from_env() -> Self {
        CredentialStore::new(search_files(&process_env))
    }

    /// Finds `docker-credential-*` helpers in these directories instead of `$PATH`.
    pub fn with_helper_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.helper_dirs = Some(dirs);
        self
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The credential for `repository` (a path, or `None` for the registry as a whole) on
    /// `registry`, or `None` to go anonymous. Blocking: reads files and may run a helper.
    pub fn lookup(
        &self,
        registry: &Registry,
        repository: Option<&str>,
    ) -> Result<Option<Credential>> {
        for path in &self.files {
            let Some(file) = read_auth_file(path)? else {
                continue;
            };
            if let Some(found) = self.lookup_in(&file, path, registry, repository)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn lookup_in(
        &self,
        file: &AuthFile,
        path: &Path,
        registry: &Registry,
        repository: Option<&str>,
    ) -> Result<Option<Credential>> {
        let hosts = host_aliases(registry);
        let helper = file
            .cred_helpers
            .iter()
            .find(|(key, _)| hosts.contains(&normalize_key(key).as_str()))
            .map(|(_, helper)| helper);
        if let Some(helper) = helper {
            return self.run_helper(helper, registry);
        }
        let entries: BTreeMap<String, &AuthEntry> = file
            .auths
            .iter()
            .map(|(k, v)| (normalize_key(k), v))
            .collect();
        for key in candidate_keys(&hosts, repository) {
            if let Some(entry) = entries.get(&key) {
                return decode_entry(entry, path, registry).map(Some);
            }
        }
        match &file.creds_store {
            Some(store) if !store.is_empty() => self.run_helper(store, registry),
            _ => Ok(None),
        }
    }

    /// `docker-credential-<name> get`: the server URL on stdin, JSON on stdout.
    fn run_helper(&self, name: &str, registry: &Registry) -> Result<Option<Credential>> {
        let key = registry.credential_key();
        let fail = |why: String| Error::Credentials {
            key: key.to_string(),
            why,
        };
        let program = format!("docker-credential-{name}");
        let path = match &self.helper_dirs {
            Some(dirs) => dirs
                .iter()
                .map(|d| d.join(&program))
                .find(|p| p.is_file())
                .ok_or_else(|| fail(format!("{program} not found in {dirs:?}")))?,
            None => PathBuf::from(&program),
        };
        let mut child = Command::new(&path)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input is answered by its exit status.
            let _ = stdin.write_all(key.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|e| fail(format!("{program}: {e}")))?;
        if !output.status.success() {
            // The protocol's "not found" answer; anything else is an error. Stdout is not
            // quoted in errors: it is where a helper puts secrets.
            if String::from_utf8_lossy(&output.stdout).contains("credentials not found") {
                return Ok(None);
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr: String = stderr.trim().chars().take(200).collect();
            return Err(fail(format!(
                "{program} get failed ({}){}",
                output.status,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            )));
        }
        #[derive(Deserialize)]
        struct HelperAnswer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
            .map_err(|_| fail(format!("{program} get printed something that is not JSON")))?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == "<token>" {
            Credential::IdentityToken(answer.secret)
        } else {
            Credential::Basic {
                username: answer.username,
                password: answer.secret,
            }
        }))
    }
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::file(path, e)),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(AuthFile::default()));
    }
    // serde's message can quote the input, so only its position is kept.
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.to_path_buf(),
            why: format!(
                "not a credentials file (JSON error at line {}, column {})",
                e.line(),
                e.column()
            ),
        })
}

fn decode_entry(entry: &AuthEntry, path: &Path, registry: &Registry) -> Result<Credential> {
    let bad = |why: &str| Error::Credentials {
        key: registry.credential_key().to_string(),
        why: format!("{}: {why}", path.display()),
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Credential::IdentityToken(token.clone()));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not user:password"))?;
        return Ok(Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => Err(bad("entry has neither \"auth\" nor \"identitytoken\"")),
    }
}

/// `https://host/v1/` -> `host`; `host/ns/repo` stays (containers' per-repository keys).
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    match stripped {
        // A URL names a whole registry; its path is Docker's legacy `/v1/`.
        Some(rest) => rest.split('/').next().unwrap_or(rest).to_ascii_lowercase(),
        None => key.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// The names a registry's entries may be stored under.
fn host_aliases(registry: &Registry) -> Vec<&str> {
    let mut hosts = vec![registry.as_str()];
    if registry.endpoint() != registry.as_str() {
        hosts.push("index.docker.io");
        hosts.push(registry.endpoint());
    }
    hosts
}

/// `host/a/b/c`, `host/a/b`, `host/a`, `host` for every alias of the host.
fn candidate_keys(hosts: &[&str], repository: Option<&str>) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(repo) = repository {
        let parts: Vec<&str> = repo.split('/').collect();
        for n in (1..=parts.len()).rev() {
            for host in hosts {
                keys.push(format!("{host}/{}", parts[..n].join("/")));
            }
        }
    }
    keys.extend(hosts.iter().map(|h| h.to_string()));
    keys
}

/// The file `strata login` writes and `strata logout` edits: `$REGISTRY_AUTH_FILE` when set
/// (as the containers tools do), else `auth.json` in strata's config directory.
pub fn login_file() -> Option<PathBuf> {
    login_file_in(&process_env)
}

fn login_file_in(env: Env) -> Option<PathBuf> {
    match env("REGISTRY_AUTH_FILE") {
        Some(path) => Some(PathBuf::from(path)),
        None => config_dir_in(env).map(|d| d.join("auth.json")),
    }
}

/// The credential files [`CredentialStore::from_env`] searches, in order.
fn search_files(env: Env) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files.extend(login_file_in(env));
    if let Some(runtime) = env("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(runtime).join("containers/auth.json"));
    }
    if let Some(config) = config_dir_in(env).and_then(|d| d.parent().map(Path::to_path_buf)) {
        files.push(config.join("containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => files.extend(home_dir_in(env).map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// Stores `username`/`password` for `registry` in `path` (an `auths` entry with base64 `auth`),
/// keeping every other entry and key of the file. The file is replaced atomically and has mode
/// 0600; a missing parent directory is made with mode 0700.
pub fn save_login(path: &Path, registry: &Registry, username: &str, password: &str) -> Result<()> {
    let mut doc = read_json_object(path)?;
    let auths = auths_object(&mut doc, path)?;
    remove_registry_keys(auths, registry);
    let auth = STANDARD.encode(format!("{username}:{password}"));
    auths.insert(
        registry.credential_key().to_string(),
        serde_json::json!({ "auth": auth }),
    );
    write_private_json(path, &doc)
}

/// Removes every entry for `registry` from `path`; false when there was none.
pub fn remove_login(path: &Path, registry: &Registry) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = read_json_object(path)?;
    let removed = remove_registry_keys(auths_object(&mut doc, path)?, registry);
    if removed {
        write_private_json(path, &doc)?;
    }
    Ok(removed)
}

fn remove_registry_keys(
    auths: &mut serde_json::Map<String, serde_json::Value>,
    registry: &Registry,
) -> bool {
    let hosts = host_aliases(registry);
    let before = auths.len();
    auths.retain(|key, _| !hosts.contains(&normalize_key(key).as_str()));
    auths.len() != before
}

fn read_json_object(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(Error::file(path, e)),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(Error::Config {
            path: path.to_path_buf(),
            why: "not a JSON object; refusing to overwrite it".to_string(),
        }),
    }
}

fn auths_object<'a>(
    doc: &'a mut serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>> {
    doc.entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            why: "\"auths\" is not an object".to_string(),
        })
}

fn write_private_json(path: &Path, doc: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::file(dir, e))?;
    // NamedTempFile creates the file with mode 0600 before anything is written to it.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::file(dir, e))?;
    let mut text = serde_json::to_vec_pretty(doc).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    text.push(b'\n');
    tmp.write_all(&text)
        .and_then(|()| tmp.as_file().sync_all())
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
        })
        .map_err(|e| Error::file(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::file(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str) -> Registry {
        Registry::new(name).unwrap()
    }

    #[test]
    fn search_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let paths = |files: Vec<PathBuf>| -> Vec<String> {
            files.iter().map(|p| p.display().to_string()).collect()
        };
        let home_only = env(&[("HOME", "/h")]);
        assert_eq!(
            paths(search_files(&home_only)),
            [
                "/h/.config/strata/auth.json",
                "/h/.config/containers/auth.json",
                "/h/.docker/config.json"
            ]
        );
        assert_eq!(
            login_file_in(&home_only).unwrap(),
            Path::new("/h/.config/strata/auth.json")
        );
        let all = env(&[
            ("HOME", "/h"),
            ("REGISTRY_AUTH_FILE", "/a/auth.json"),
            ("XDG_RUNTIME_DIR", "/run/user/0"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("DOCKER_CONFIG", "/d"),
        ]);
        assert_eq!(
            paths(search_files(&all)),
            [
                "/a/auth.json",
                "/run/user/0/containers/auth.json",
                "/cfg/containers/auth.json",
                "/d/config.json"
            ]
        );
        assert!(search_files(&env(&[])).is_empty());
    }

    #[test]
    fn debug_redacts() {
        let c = Credential::Basic {
            username: "alice".into(),
            password: "hunter2-secret".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        let t = Credential::IdentityToken("refresh-secret".into());
        assert!(!format!("{t:?}").contains("refresh-secret"));
    }

    #[test]
    fn auths_lookup_and_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        let b64 = |s: &str| STANDARD.encode(s);
        std::fs::write(
            &first,
            serde_json::json!({"auths": {
                "reg.example:5000/team/app": {"auth": b64("repo-user:repo-pass")},
                "https://index.docker.io/v1/": {"auth": b64("hub-user:hub-pass")},
            }})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            &second,
            serde_json::json!({"auths": {
                "http://reg.example:5000": {"auth": b64("host-user:pa:ss")},
                "tok.example": {"identitytoken": "refresh"},
            }})
            .to_string(),
        )
        .unwrap();
        let store = CredentialStore::new(vec![dir.path().join("missing.json"), first, second]);
        let user = |r: &str, repo: Option<&str>| match store.lookup(&reg(r), repo).unwrap() {
            Some(Credential::Basic { username, password }) => format!("{username}/{password}"),
            Some(Credential::IdentityToken(t)) => format!("token/{t}"),
            None => "none".into(),
        };
        assert_eq!(
            user("reg.example:5000", Some("team/app")),
            "repo-user/repo-pass"
        );
        assert_eq!(
            user("reg.example:5000", Some("team/other")),
            "host-user/pa:ss"
        );
        assert_eq!(user("reg.example:5000", None), "host-user/pa:ss");
        assert_eq!(user("docker.io", Some("library/x")), "hub-user/hub-pass");
        assert_eq!(user("tok.example", None), "token/refresh");
        assert_eq!(user("other.example", None), "none");
    }

    #[test]
    fn bad_file_errors_do_not_quote_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {"r.example": {"auth": "c2VjcmV0LXB3 not base64"}}"#,
        )
        .unwrap();
        let err = CredentialStore::new(vec![path.clone()])
            .lookup(&reg("r.example"), None)
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("c2VjcmV0") && err.contains("config.json"),
            "{err}"
        );
        std::fs::write(
            &path,
            r#"{"auths": {"r.example": {"auth": "c2VjcmV0LXB3"}}}"#,
        )
        .unwrap();
        let err = CredentialStore::new(vec![path])
            .lookup(&reg("r.example"), None)
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("c2VjcmV0") && !err.contains("secret-pw"),
            "{err}"
        );
    }

    #[test]
    fn save_and_remove_keep_other_entries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/auth.json");
        save_login(&path, &reg("docker.io"), "u", "p").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        save_login(&path, &reg("reg.example:5000"), "a", "b").unwrap();
        save_login(&path, &reg("reg.example:5000"), "a2", "b2").unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["auths"].as_object().unwrap().len(), 2, "{doc}");
        let store = CredentialStore::new(vec![path.clone()]);
        assert_eq!(
            store.lookup(&reg("reg.example:5000"), None).unwrap(),
            Some(Credential::Basic {
                username: "a2".into(),
                password: "b2".into()
            })
        );
        assert!(remove_login(&path, &reg("index.docker.io")).unwrap());
        assert!(!remove_login(&path, &reg("docker.io")).unwrap());
        assert!(store.lookup(&reg("docker.io"), None).unwrap().is_none());
        assert!(
            store
                .lookup(&reg("reg.example:5000"), None)
                .unwrap()
                .is_some()
        );
    }
}
