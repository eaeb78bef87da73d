//! Authentication against real registries: htpasswd basic auth behind TLS with a test CA,
//! token auth with a token server in the test, credentials from config files and helpers.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::images::{Blob, Image, noise};
use common::tokens::{ISSUER, Policy, SERVICE, TokenServer};
use common::{Auth, Registry, Tls, repo, test_config};
use strata_registry_client::{
    BlobOutcome, BlobSource, BlobUpload, Client, Credential, CredentialStore, Error, Reference,
    Registry as RegistryName, RegistryOptions,
};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pa55word";

fn auths_file(dir: &Path, host: &str, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("config.json");
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}

/// `certs.d/HOST:PORT/ca.crt` as Docker lays it out.
fn certs_dir(dir: &Path, host: &str, tls: &Tls) -> std::path::PathBuf {
    let certs = dir.join("certs.d");
    std::fs::create_dir_all(certs.join(host)).unwrap();
    std::fs::copy(&tls.ca_cert, certs.join(host).join("ca.crt")).unwrap();
    certs
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(PASSWORD), "secret leaked: {text}");
    assert!(
        !text.contains(&STANDARD.encode(format!("{USER}:{PASSWORD}"))),
        "secret leaked: {text}"
    );
}

#[tokio::test]
async fn basic_auth_over_tls_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::make(dir.path());
    let registry = Registry::start(
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        Some(&tls),
    );
    let host = registry.host();
    let mut config = test_config();
    config.certs_dirs = vec![
        dir.path().join("missing"),
        certs_dir(dir.path(), &host, &tls),
    ];
    config.credentials = CredentialStore::new(vec![auths_file(dir.path(), &host, USER, PASSWORD)]);
    assert_no_secret(&format!("{config:?}"));
    let client = Client::new(config.clone());
    let r = repo(&client, &host, "secure/app");
    let image = Image::new("tls", &[5000], "linux", "amd64");
    image.push(&r, "v1").await;
    let pulled = r
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap();
    assert_eq!(pulled.bytes, image.manifest.bytes);
    assert_no_secret(&format!("{client:?} {r:?}"));
    // The registry only speaks TLS: the requests above went over it, authenticated.
    assert!(
        registry
            .log()
            .contains("\"PUT /v2/secure/app/manifests/v1 HTTP/")
    );

    // Login check, right and wrong.
    let name = RegistryName::new(&host).unwrap();
    let right = Credential::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    client.check_login(&name, &right).await.unwrap();
    let wrong = Credential::Basic {
        username: USER.into(),
        password: "not-the-password".into(),
    };
    let err = client.check_login(&name, &wrong).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    // Without the CA the server is not trusted; without credentials access is denied.
    let mut untrusted = config.clone();
    untrusted.certs_dirs.clear();
    let err = repo(&Client::new(untrusted.clone()), &host, "secure/app")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert_no_secret(&format!("{err} {err:?}"));
    // Marked insecure, the same registry is used over TLS without checking its certificate.
    untrusted.registries.insert(
        host.clone(),
        RegistryOptions {
            insecure: true,
            ..Default::default()
        },
    );
    let pulled = repo(&Client::new(untrusted), &host, "secure/app")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap();
    assert_eq!(pulled.bytes, image.manifest.bytes);
    let mut anonymous = config.clone();
    anonymous.credentials = CredentialStore::new(vec![]);
    let err = repo(&Client::new(anonymous), &host, "secure/app")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("no credentials"), "{err}");
    let mut wrong_file = config;
    wrong_file.credentials = CredentialStore::new(vec![auths_file(
        dir.path(),
        &host,
        USER,
        "wrong-password-42",
    )]);
    let err = repo(&Client::new(wrong_file), &host, "secure/app")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("wrong-password-42"),
        "{err:?}"
    );
}

#[tokio::test]
async fn credentials_from_a_helper() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        None,
    );
    let host = registry.host();
    // The helper answers for our registry and says "not found" for anything else.
    let helpers = dir.path().join("bin");
    std::fs::create_dir(&helpers).unwrap();
    let helper = helpers.join("docker-credential-strata-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\n\
             if [ \"$server\" = \"{host}\" ]; then\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_json = dir.path().join("config.json");
    std::fs::write(
        &config_json,
        serde_json::json!({"credHelpers": {host.clone(): "strata-test"}, "credsStore": "strata-test"})
            .to_string(),
    )
    .unwrap();
    let store = CredentialStore::new(vec![config_json]).with_helper_dirs(vec![helpers]);
    // Other registries go to credsStore, which answers "not found": anonymous.
    let elsewhere = RegistryName::new("other.example").unwrap();
    assert_eq!(store.lookup(&elsewhere, None).unwrap(), None);

    let mut config = test_config();
    config.credentials = store;
    let client = Client::new(config);
    let r = repo(&client, &host, "helped");
    let image = Image::new("helper", &[3000], "linux", "amd64");
    image.push(&r, "v1").await;
    assert_eq!(
        r.resolve(&Reference::tag("v1").unwrap())
            .await
            .unwrap()
            .digest,
        image.manifest.digest
    );
}

#[tokio::test]
async fn a_failing_helper_is_an_error_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("docker-credential-broken");
    std::fs::write(
        &helper,
        "#!/bin/sh\necho '{\"Secret\":\"printed-secret\"}'\necho 'keyring locked' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_json = dir.path().join("config.json");
    std::fs::write(&config_json, r#"{"credsStore":"broken"}"#).unwrap();
    let store = CredentialStore::new(vec![config_json]).with_helper_dirs(vec![dir.path().into()]);
    let err = store
        .lookup(&RegistryName::new("reg.example").unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keyring locked") && !err.contains("printed-secret"),
        "{err}"
    );
}

async fn token_setup(dir: &Path, policy: Policy) -> (TokenServer, Registry) {
    let tokens = TokenServer::start(dir, policy).await;
    let registry = Registry::start(
        Auth::Token {
            realm: tokens.realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            cert: tokens.cert.clone(),
        },
        None,
    );
    (tokens, registry)
}

fn policy() -> Policy {
    Policy {
        user: USER.into(),
        password: PASSWORD.into(),
        refresh_token: "refresh-me-secret".into(),
        denied: HashSet::from(["secret/base".to_string()]),
        valid_for_secs: 300,
    }
}

#[tokio::test]
async fn token_auth_with_scopes_widened_for_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, registry) = token_setup(dir.path(), policy()).await;
    let host = registry.host();
    let mut config = test_config();
    config.credentials = CredentialStore::new(vec![auths_file(dir.path(), &host, USER, PASSWORD)]);
    let client = Client::new(config);

    let base = repo(&client, &host, "team/base");
    let image = Image::new("token", &[2500, 40_000], "linux", "amd64");
    image.push(&base, "v1").await;
    let issued = tokens.issued();
    assert!(
        issued
            .iter()
            .all(|i| i.granted && i.account.as_deref() == Some(USER))
    );
    assert!(
        issued
            .iter()
            .any(|i| i.scopes == ["repository:team/base:pull,push"]),
        "{issued:?}"
    );
    // Tokens are cached per scope: the three blobs and the manifest shared one.
    assert_eq!(issued.len(), 1, "{issued:?}");

    // A mount asks one token for push here and pull there.
    let app = repo(&client, &host, "team/app");
    let layer = &image.layers[1];
    let mounted = app
        .push_blob(&BlobUpload {
            mount_from: Some("team/base".into()),
            ..layer.upload()
        })
        .await
        .unwrap();
    assert_eq!(
        mounted,
        BlobOutcome::Mounted {
            from: "team/base".into()
        }
    );
    let issued = tokens.issued();
    let mut widened = issued.last().unwrap().scopes.clone();
    widened.sort();
    assert_eq!(
        widened,
        ["repository:team/app:pull,push", "repository:team/base:pull"]
    );

    // A source the token server will not let us read: the registry answers 202, we upload.
    let denied = app
        .push_blob(&BlobUpload {
            mount_from: Some("secret/base".into()),
            ..image.layers[0].upload()
        })
        .await
        .unwrap();
    assert_eq!(denied, BlobOutcome::Uploaded);

    // Pull with a pull-only token.
    let pulled = repo(&client, &host, "team/base")
        .fetch_blob_bytes(&layer.digest, layer.size())
        .await
        .unwrap();
    assert_eq!(pulled, layer.bytes);

    // Anonymous: the token server grants nothing and the registry refuses.
    let anonymous = Client::new(test_config());
    let err = repo(&anonymous, &host, "team/base")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    // Wrong password: the token server refuses.
    let mut wrong = test_config();
    wrong.credentials =
        CredentialStore::new(vec![auths_file(dir.path(), &host, USER, "nope-nope")]);
    let err = repo(&Client::new(wrong), &host, "team/base")
        .fetch_manifest(&Reference::tag("v1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("nope-nope"));

    // `strata login`'s check asks the token endpoint for a token without scope.
    let name = RegistryName::new(&host).unwrap();
    let right = Credential::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    client.check_login(&name, &right).await.unwrap();
    assert!(tokens.issued().last().unwrap().scopes.is_empty());
    let wrong = Credential::Basic {
        username: USER.into(),
        password: "bad-login-pw".into(),
    };
    let err = client.check_login(&name, &wrong).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("bad-login-pw"));
}

#[tokio::test]
async fn refresh_token_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, registry) = token_setup(dir.path(), policy()).await;
    let host = registry.host();
    let path = dir.path().join("auth.json");
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host.clone(): {"identitytoken": "refresh-me-secret"}}})
            .to_string(),
    )
    .unwrap();
    let mut config = test_config();
    config.credentials = CredentialStore::new(vec![path]);
    let client = Client::new(config);
    let r = repo(&client, &host, "refreshed");
    Image::new("refresh", &[1000], "linux", "amd64")
        .push(&r, "v1")
        .await;
    let issued = tokens.issued();
    assert!(
        issued.iter().all(|i| i.method == "POST" && i.granted),
        "{issued:?}"
    );
}

#[tokio::test]
async fn token_renewed_when_it_expires_during_a_long_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, registry) = token_setup(
        dir.path(),
        Policy {
            valid_for_secs: 2,
            ..policy()
        },
    )
    .await;
    let host = registry.host();
    let mut config = common::chunked_config(&host, 32 << 10);
    config.credentials = CredentialStore::new(vec![auths_file(dir.path(), &host, USER, PASSWORD)]);
    let client = Client::new(config);
    let r = repo(&client, &host, "slow");
    let blob = Blob::new(noise("slow", 8 * (32 << 10)));
    // A slow disk: each chunk takes 450 ms to open, so 8 chunks outlive a 2 s token.
    let data = blob.bytes.clone();
    let source = BlobSource::new(move |offset| {
        let rest = data.slice(offset as usize..);
        async move {
            tokio::time::sleep(Duration::from_millis(450)).await;
            Ok(std::io::Cursor::new(rest))
        }
    });
    let outcome = r
        .push_blob(&BlobUpload {
            source,
            ..blob.upload()
        })
        .await
        .unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    let push_tokens = tokens
        .issued()
        .iter()
        .filter(|i| i.scopes == ["repository:slow:pull,push"])
        .count();
    assert!(push_tokens >= 2, "the token was never renewed");
    assert!(
        registry
            .log()
            .lines()
            .any(|l| l.contains("\"PATCH /v2/slow/blobs/uploads/") && l.contains("\" 401 ")),
        "no PATCH was refused, so nothing was renewed mid-upload"
    );
    assert_eq!(
        r.fetch_blob_bytes(&blob.digest, blob.size()).await.unwrap(),
        blob.bytes
    );
}
