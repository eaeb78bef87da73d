//! `WWW-Authenticate` challenges, token scopes and the token endpoint (Docker's token protocol
//! and the OAuth2 refresh-token grant).

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;

use crate::credentials::Credential;
use crate::error::{Error, Result};

/// How a registry asked to be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The challenge to answer from a 401's `WWW-Authenticate` headers: Bearer when offered, else
/// Basic; `None` when there is none we understand.
pub(crate) fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(value) = value.to_str() else { continue };
        for (scheme, params) in parse_header(value) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                if let Some(realm) = get("realm") {
                    return Some(Challenge::Bearer {
                        realm,
                        service: get("service"),
                    });
                }
            } else if scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

type Params = Vec<(String, String)>;

/// Splits `Scheme k=v, k="v", Scheme2 k=v` into challenges (RFC 7235, leniently).
fn parse_header(value: &str) -> Vec<(String, Params)> {
    let mut out: Vec<(String, Params)> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        if token.is_empty() {
            break;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            // A parameter of the current challenge.
            let (value, remaining) = parse_value(value_part.trim_start());
            if let Some((_, params)) = out.last_mut() {
                params.push((token.to_string(), value));
            }
            rest = remaining;
        } else {
            out.push((token.to_string(), Vec::new()));
            rest = after;
        }
    }
    out
}

fn parse_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find(',').unwrap_or(s.len());
        (s[..end].trim().to_string(), &s[end..])
    }
}

/// An access a token is asked for: `repository:NAME:pull` or `repository:NAME:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Scope(String);

impl Scope {
    pub(crate) fn pull(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull"))
    }

    pub(crate) fn push(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull,push"))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A bearer token; `Debug` keeps it out of logs.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub(crate) fn header(&self) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value)).map_err(|_| {
            Error::Protocol {
                what: "token endpoint".to_string(),
                why: "the token is not a valid header value".to_string(),
            }
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

pub(crate) fn basic_header(username: &str, password: &str) -> Result<HeaderValue> {
    let encoded = STANDARD.encode(format!("{username}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| Error::Credentials {
            key: username.to_string(),
            why: "the credential cannot be sent in a header".to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens without `expires_in` last 60 seconds (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens are renewed this long before they expire, so none runs out in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Asks the token endpoint `realm` for a token covering `scopes`: with a refresh token, the
/// OAuth2 `refresh_token` grant (POST); otherwise Docker's GET with optional basic auth.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[Scope],
    credential: Option<&Credential>,
) -> Result<Token> {
    let what = format!("token from {realm}");
    let mut url = url::Url::parse(realm).map_err(|e| Error::Protocol {
        what: what.clone(),
        why: format!("bad realm: {e}"),
    })?;
    let request = match credential {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh)
                .append_pair("client_id", "strata");
            if let Some(service) = service {
                form.append_pair("service", service);
            }
            let scope: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
            if !scope.is_empty() {
                form.append_pair("scope", &scope.join(" "));
            }
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.finish())
        }
        basic => {
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = service {
                    query.append_pair("service", service);
                }
                for scope in scopes {
                    query.append_pair("scope", scope.as_str());
                }
                if let Some(Credential::Basic { username, .. }) = basic {
                    query.append_pair("account", username);
                }
            }
            let request = http.get(url);
            match basic {
                Some(Credential::Basic { username, password }) => {
                    request.header(AUTHORIZATION, basic_header(username, password)?)
                }
                _ => request,
            }
        }
    };
    let response = request.send().await.map_err(|source| Error::Transport {
        what: what.clone(),
        source: source.without_url(),
    })?;
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        return Err(Error::Unauthorized {
            what,
            detail: format!("the token endpoint answered {status}"),
        });
    }
    if !(200..300).contains(&status) {
        // The body is not quoted: a token endpoint's answers are not for logs.
        return Err(Error::Status {
            what,
            status,
            detail: String::new(),
        });
    }
    let body = response.bytes().await.map_err(|source| Error::Transport {
        what: what.clone(),
        source: source.without_url(),
    })?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| Error::Protocol {
        what: what.clone(),
        why: "the answer is not a token document".to_string(),
    })?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Error::Protocol {
            what,
            why: "the answer has no token".to_string(),
        })?;
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
    Ok(Token {
        value,
        expires: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(values: &[&str]) -> Option<Challenge> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        parse_challenge(&h)
    }

    #[test]
    fn challenges() {
        assert_eq!(
            challenge(&[
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#
            ]),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into())
            })
        );
        assert_eq!(
            challenge(&[r#"Basic realm="Registry Realm""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(
            challenge(&[r#"Basic realm="x", Bearer realm="https://a/t\"q""#]),
            Some(Challenge::Bearer {
                realm: "https://a/t\"q".into(),
                service: None
            })
        );
        assert_eq!(
            challenge(&["Basic realm=x", "bearer Realm=https://a/t, service=s"]),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(challenge(&["Negotiate"]), None);
        assert_eq!(challenge(&["Bearer service=x"]), None);
        assert_eq!(
            challenge(&[r#"Bearer realm="unterminated"#]),
            Some(Challenge::Bearer {
                realm: "unterminated".into(),
                service: None
            })
        );
        assert_eq!(challenge(&[]), None);
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token {
            value: "secret-token".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("secret"));
        assert!(t.header().unwrap().is_sensitive());
        assert!(basic_header("u", "p").unwrap().is_sensitive());
    }
}
