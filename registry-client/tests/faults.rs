//! Pulls and pushes through a proxy that drops connections, answers 503 and 429, and corrupts
//! bytes: they finish with the right content or fail cleanly.

mod common;

use common::faults::{Fault, FaultProxy, Rule};
use common::images::{Blob, Image, noise};
use common::{Auth, Registry, repo, test_config};
use futures::StreamExt;
use strata_registry_client::{BlobOutcome, Client, Error, Reference};

fn tag(t: &str) -> Reference {
    Reference::tag(t).unwrap()
}

/// A registry with `image` pushed directly, and a client going through a proxy.
async fn setup(image: &Image) -> (Registry, FaultProxy, Client) {
    let registry = Registry::start(Auth::None, None);
    let direct = Client::new(test_config());
    image
        .push(&repo(&direct, &registry.host(), "app"), "v1")
        .await;
    let proxy = FaultProxy::start(registry.addr, Vec::new()).await;
    (registry, proxy, Client::new(test_config()))
}

#[tokio::test]
async fn pull_survives_drops_and_busy_answers() {
    let image = Image::new("pull-faults", &[3000, 400_000], "linux", "amd64");
    let (_registry, proxy, client) = setup(&image).await;
    let big = &image.layers[1];
    proxy.set_rules(vec![
        Rule::new("GET", "/manifests/v1", Fault::Status(503)),
        Rule::new("GET", "/manifests/sha256:", Fault::CorruptResponseByte(10)),
        Rule::new("HEAD", "/manifests/", Fault::Status(429)),
        // More breaks than the retry policy's tries: each comes after progress, so none is fatal.
        Rule::new("GET", big.digest.as_ref(), Fault::DropResponseAfter(50_000)).times(7),
        Rule::new("GET", image.config.digest.as_ref(), Fault::Status(502)),
    ]);
    let r = repo(&client, &proxy.host(), "app");
    let head = r.resolve(&tag("v1")).await.unwrap();
    assert_eq!(head.digest, image.manifest.digest);
    let manifest = r.fetch_manifest(&tag("v1")).await.unwrap();
    assert_eq!(manifest.bytes, image.manifest.bytes);
    let by_digest = r
        .fetch_manifest(&Reference::Digest(image.manifest.digest.clone()))
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, image.manifest.bytes);
    let config = r
        .fetch_blob_bytes(&image.config.digest, image.config.size())
        .await
        .unwrap();
    assert_eq!(config, image.config.bytes);
    // Dropped seven times mid-blob: resumed with Range each time.
    let layer = r
        .fetch_blob_into_blocking(&big.digest, Some(big.size()), Vec::new())
        .await
        .unwrap();
    assert_eq!(layer, big.bytes);
    let applied = proxy.applied();
    assert_eq!(applied.len(), 11, "every fault fired: {applied:#?}");
}

#[tokio::test]
async fn a_corrupted_byte_fails_the_blob_and_nothing_is_accepted() {
    let image = Image::new("corrupt", &[300_000], "linux", "amd64");
    let (_registry, proxy, client) = setup(&image).await;
    let layer = &image.layers[0];
    let r = repo(&client, &proxy.host(), "app");

    // Into a writer: an error, and the writer never got the whole blob.
    proxy.set_rules(vec![Rule::new(
        "GET",
        "/blobs/",
        Fault::CorruptResponseByte(123_456),
    )]);
    let mut written = Vec::new();
    let err = r
        .fetch_blob_into(&layer.digest, Some(layer.size()), &mut written)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!((written.len() as u64) < layer.size());

    // As a stream: the last item is the error, the chunks before it are not the whole blob.
    proxy.set_rules(vec![Rule::new(
        "GET",
        "/blobs/",
        Fault::CorruptResponseByte(5),
    )]);
    let mut stream = r.fetch_blob(&layer.digest, Some(layer.size())).unwrap();
    let mut got = 0u64;
    let mut last = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => got += chunk.len() as u64,
            Err(e) => last = Some(e),
        }
    }
    assert!(matches!(last, Some(Error::Corrupt { .. })), "{last:?}");
    assert!(got < layer.size());

    // Into a blocking writer: same.
    proxy.set_rules(vec![Rule::new(
        "GET",
        "/blobs/",
        Fault::CorruptResponseByte(299_999),
    )]);
    let err = r
        .fetch_blob_into_blocking(&layer.digest, Some(layer.size()), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // A registry sending more than the descriptor says is cut off at once.
    proxy.set_rules(vec![]);
    let err = r
        .fetch_blob_into(&layer.digest, Some(layer.size() - 1), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(proxy.applied().len(), 3);
}

#[tokio::test]
async fn push_survives_drops_and_busy_answers() {
    let registry = Registry::start(Auth::None, None);
    let proxy = FaultProxy::start(registry.addr, Vec::new()).await;
    let client = Client::new(test_config());
    let r = repo(&client, &proxy.host(), "pushed");
    let image = Image::new("push-faults", &[2000, 250_000], "linux", "amd64");
    let big = &image.layers[1];
    proxy.set_rules(vec![
        Rule::new("POST", "/blobs/uploads/", Fault::Status(503)),
        Rule::new("HEAD", "/blobs/", Fault::Status(429)),
        Rule::new("PUT", big.digest.digest(), Fault::DropRequestAfter(100_000)),
        Rule::new("PUT", "/manifests/", Fault::Status(500)),
    ]);
    image.push(&r, "v1").await;
    assert_eq!(proxy.applied().len(), 4, "{:#?}", proxy.applied());
    // Everything arrived intact: read it back directly.
    let direct = repo(&Client::new(test_config()), &registry.host(), "pushed");
    for blob in image.blobs() {
        let back = direct
            .fetch_blob_bytes(&blob.digest, blob.size())
            .await
            .unwrap();
        assert_eq!(back, blob.bytes);
    }
    let manifest = direct.fetch_manifest(&tag("v1")).await.unwrap();
    assert_eq!(manifest.bytes, image.manifest.bytes);
}

#[tokio::test]
async fn chunked_push_resumes_from_the_registry_offset() {
    let registry = Registry::start(Auth::None, None);
    let proxy = FaultProxy::start(registry.addr, Vec::new()).await;
    let config = common::chunked_config(&proxy.host(), 64 << 10);
    let client = Client::new(config);
    let r = repo(&client, &proxy.host(), "resumed");
    let blob = Blob::new(noise("resume", 5 * (64 << 10) + 123));
    proxy.set_rules(vec![
        // The third chunk breaks off half way, the fourth is refused once.
        Rule::new("PATCH", "/blobs/uploads/", Fault::DropRequestAfter(30_000)).skip(2),
        Rule::new("PATCH", "/blobs/uploads/", Fault::Status(503)).skip(3),
        Rule::new("PUT", "/blobs/uploads/", Fault::Status(502)),
    ]);
    let outcome = r.push_blob(&blob.upload()).await.unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    assert_eq!(proxy.applied().len(), 3, "{:#?}", proxy.applied());
    let log = proxy.log.lock().unwrap().clone();
    let count = |prefix: &str| log.iter().filter(|l| l.starts_with(prefix)).count();
    // distribution cannot resume after a PATCH that broke off half way (its upload state no
    // longer matches the data it kept: the status GET answers 404), so that starts a second
    // upload; after the refused PATCH the status GET gives the offset and the upload resumes.
    assert_eq!(count("POST /v2/resumed/blobs/uploads/"), 2, "{log:#?}");
    assert_eq!(count("GET /v2/resumed/blobs/uploads/"), 2, "{log:#?}");
    assert_eq!(count("PATCH /v2/resumed/blobs/uploads/"), 3 + 7, "{log:#?}");
    let back = repo(&Client::new(test_config()), &registry.host(), "resumed")
        .fetch_blob_bytes(&blob.digest, blob.size())
        .await
        .unwrap();
    assert_eq!(back, blob.bytes);
}

#[tokio::test]
async fn persistent_failures_fail_cleanly() {
    let image = Image::new("persistent", &[1000], "linux", "amd64");
    let (_registry, proxy, client) = setup(&image).await;
    proxy.set_rules(vec![
        Rule::new("GET", "/manifests/", Fault::Status(503)).times(100),
    ]);
    let r = repo(&client, &proxy.host(), "app");
    let err = r.fetch_manifest(&tag("v1")).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 503, .. }), "{err}");
    // One try per attempt the policy allows, then the error.
    assert_eq!(proxy.applied().len(), test_config().retry.attempts as usize);
}

#[tokio::test]
async fn a_loopback_server_that_ignores_tls_gets_plain_http_after_a_while() {
    // Answers HTTP, but never a TLS hello: the TLS try must give up, not hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let status = if head.starts_with(b"GET /v2/ ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let client = Client::new(test_config());
    let r = repo(&client, &addr.to_string(), "app");
    let started = std::time::Instant::now();
    let blob = Blob::new("x");
    assert_eq!(r.blob_exists(&blob.digest).await.unwrap(), None);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    server.abort();
}
