//! A small token server for `auth: token` registries: Docker's GET token protocol with basic
//! auth and the OAuth2 refresh-token POST, answering with RS256 JWTs signed by openssl whose
//! certificate (sent in `x5c`) the registry trusts through `rootcertbundle`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::run;

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";

/// What the server grants.
#[derive(Clone)]
pub struct Policy {
    pub user: String,
    pub password: String,
    /// Accepted by the refresh-token grant.
    pub refresh_token: String,
    /// Repositories nobody gets any access to.
    pub denied: HashSet<String>,
    /// How long tokens are good for at the registry, in seconds (the registry allows 60 s of
    /// leeway past `exp`, which this takes off). Clients are always told 300.
    pub valid_for_secs: i64,
}

/// One token request as the server saw it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub method: String,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub granted: bool,
}

pub struct TokenServer {
    pub realm: String,
    pub cert: PathBuf,
    pub issued: Arc<Mutex<Vec<Issued>>>,
    pub policy: Arc<Mutex<Policy>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Signer {
    key: PathBuf,
    x5c: String,
}

impl TokenServer {
    pub async fn start(dir: &Path, policy: Policy) -> TokenServer {
        let key = dir.join("jwt.key");
        let cert = dir.join("jwt.crt");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=strata test token signer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let signer = Arc::new(Signer {
            key,
            x5c: STANDARD.encode(der),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(Mutex::new(Vec::new()));
        let policy = Arc::new(Mutex::new(policy));
        let task = {
            let issued = issued.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (signer, issued, policy) = (signer.clone(), issued.clone(), policy.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, &signer, &issued, &policy).await;
                    });
                }
            })
        };
        TokenServer {
            realm,
            cert,
            issued,
            policy,
            task,
        }
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.issued.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    signer: &Signer,
    issued: &Mutex<Vec<Issued>>,
    policy: &Mutex<Policy>,
) -> std::io::Result<()> {
    let Some((buf, head_end)) = super::read_request_head(&mut stream).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut authorization = None;
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_string()),
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params: Vec<(String, String)> = if method == "POST" {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    };
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let policy = policy.lock().unwrap().clone();
    let scopes: Vec<String> = if method == "POST" {
        get("scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default()
    } else {
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect()
    };
    // Who is asking: a valid refresh token or basic credentials; anonymous otherwise.
    let (authenticated, refused) = if method == "POST" {
        let ok = get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(policy.refresh_token.as_str());
        (ok, !ok)
    } else {
        match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
        {
            Some(b64) => {
                let expected = STANDARD.encode(format!("{}:{}", policy.user, policy.password));
                let ok = b64 == expected;
                (ok, !ok)
            }
            None => (false, false),
        }
    };
    issued.lock().unwrap().push(Issued {
        method: method.clone(),
        account: get("account"),
        scopes: scopes.clone(),
        granted: authenticated,
    });
    if refused {
        let msg = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return stream.write_all(msg).await;
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter(|_| authenticated)
        .filter_map(|scope| {
            let mut it = scope.splitn(3, ':');
            let (kind, name, actions) = (it.next()?, it.next()?, it.next()?);
            if policy.denied.contains(name) {
                return None;
            }
            Some(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": policy.user, "aud": SERVICE,
        "exp": now + policy.valid_for_secs - 60, "nbf": now - 1, "iat": now,
        "jti": format!("{now}-{}", rand_suffix()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(&signer.key, signing_input.as_bytes()).await;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let field = if method == "POST" {
        "access_token"
    } else {
        "token"
    };
    let body = serde_json::json!({ field: token, "expires_in": 300 }).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn sign(key: &Path, input: &[u8]) -> Vec<u8> {
    let mut child = tokio::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    out.stdout
}
