//! Pull and push against a real anonymous `docker-registry` on loopback, cross-checked with
//! skopeo.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::images::{Blob, Image, index, write_layout};
use common::{Auth, Registry, repo, run, test_config};
use futures::StreamExt;
use strata_registry_client::{
    BlobOutcome, BlobUpload, Client, Direction, Error, ManifestDocument, ProgressEvent, Reference,
    Repository,
};
use strata_store::Platform;

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

fn inspect_raw(host: &str, image: &str) -> Vec<u8> {
    let out = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn tag(t: &str) -> Reference {
    Reference::tag(t).unwrap()
}

#[tokio::test]
async fn push_is_what_skopeo_sees_and_pull_matches() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let client = Client::new(test_config());
    let app = repo(&client, &host, "team/app");
    let image = Image::new("push", &[1000, 300_000], "linux", "amd64");
    image.push(&app, "v1").await;

    // skopeo reads back the same manifest bytes and blobs.
    assert_eq!(inspect_raw(&host, "team/app:v1"), image.manifest.bytes);
    let out = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/team/app:v1"))
        .arg(format!("oci:{}:v1", out.path().display())));
    for blob in image.blobs() {
        let copied = std::fs::read(out.path().join("blobs/sha256").join(blob.digest.digest()));
        assert_eq!(copied.unwrap(), blob.bytes, "{}", blob.digest);
    }

    // The client resolves and pulls it back.
    let head = app.resolve(&tag("v1")).await.unwrap();
    assert_eq!(head.digest, image.manifest.digest);
    assert_eq!(head.size, image.manifest.size());
    assert_eq!(
        head.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let resolved = app
        .fetch_image_manifest(&tag("v1"), &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert!(resolved.index.is_none());
    assert_eq!(resolved.manifest.bytes, image.manifest.bytes);
    let config = app
        .fetch_blob_bytes(&image.config.digest, image.config.size())
        .await
        .unwrap();
    assert_eq!(config, image.config.bytes);
    assert_eq!(
        app.blob_exists(&image.layers[1].digest).await.unwrap(),
        Some(image.layers[1].size())
    );
    let absent = Blob::new("never pushed");
    assert_eq!(app.blob_exists(&absent.digest).await.unwrap(), None);
    let missing = app.fetch_manifest(&tag("nope")).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");

    // The same blobs under a Docker schema 2 manifest: sent with its own media type, which
    // skopeo reports back and parses.
    let docker = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": strata_registry_client::DOCKER_MANIFEST,
        "config": image.config.descriptor("application/vnd.docker.container.image.v1+json"),
        "layers": image.layers.iter()
            .map(|l| l.descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip"))
            .collect::<Vec<_>>(),
    })
    .to_string();
    app.push_manifest(&tag("docker"), Bytes::from(docker.clone()), None)
        .await
        .unwrap();
    assert_eq!(inspect_raw(&host, "team/app:docker"), docker.as_bytes());
    let fetched = app.fetch_manifest(&tag("docker")).await.unwrap();
    assert_eq!(fetched.media_type, strata_registry_client::DOCKER_MANIFEST);
    let summary = run(skopeo()
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/team/app:docker")));
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["Digest"], fetched.digest.to_string());
    assert_eq!(summary["Layers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn pulls_what_skopeo_pushed_in_oci_and_docker_formats() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let image = Image::new("skopeo", &[2000, 200_000], "linux", "amd64");
    let layout = tempfile::tempdir().unwrap();
    write_layout(
        layout.path(),
        &image.blobs(),
        &image.manifest,
        "application/vnd.oci.image.manifest.v1+json",
        "v1",
    );
    let src = format!("oci:{}:v1", layout.path().display());
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", &src])
        .arg(format!("docker://{host}/oci:v1")));
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--format", "v2s2", &src])
        .arg(format!("docker://{host}/docker:v1")));

    let client = Client::new(test_config());
    let platform = Platform::host();
    for (name, media_type) in [
        ("oci", strata_registry_client::OCI_MANIFEST),
        ("docker", strata_registry_client::DOCKER_MANIFEST),
    ] {
        let r = repo(&client, &host, name);
        let resolved = r.fetch_image_manifest(&tag("v1"), &platform).await.unwrap();
        assert_eq!(resolved.manifest.media_type, media_type, "{name}");
        assert_eq!(
            resolved.manifest.bytes,
            inspect_raw(&host, &format!("{name}:v1"))
        );
        let layers = resolved.image.layers();
        assert_eq!(layers.len(), 2);
        // Three ways to download, same verified bytes.
        let (first, second) = (&layers[0], &layers[1]);
        let mut into = Vec::new();
        r.fetch_blob_into(first.digest(), Some(first.size()), &mut into)
            .await
            .unwrap();
        assert_eq!(into, image.layers[0].bytes);
        let blocking = r
            .fetch_blob_into_blocking(second.digest(), Some(second.size()), Vec::new())
            .await
            .unwrap();
        assert_eq!(blocking, image.layers[1].bytes);
        let mut stream = r.fetch_blob(second.digest(), Some(second.size())).unwrap();
        let mut streamed = Vec::new();
        while let Some(chunk) = stream.next().await {
            streamed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(streamed, image.layers[1].bytes);
    }
}

#[tokio::test]
async fn index_with_two_platforms() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let amd = Image::new("amd", &[1500], "linux", "amd64");
    let arm = Image::new("arm", &[1700], "linux", "arm64");
    let idx = index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let layout = tempfile::tempdir().unwrap();
    let mut blobs = amd.blobs();
    blobs.extend(arm.blobs());
    blobs.push(&amd.manifest);
    blobs.push(&arm.manifest);
    write_layout(
        layout.path(),
        &blobs,
        &idx,
        "application/vnd.oci.image.index.v1+json",
        "multi",
    );
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{host}/multi:v1")));

    let client = Client::new(test_config());
    let r = repo(&client, &host, "multi");
    for (platform, image) in [("linux/arm64", &arm), ("linux/amd64", &amd)] {
        let resolved = r
            .fetch_image_manifest(&tag("v1"), &Platform::parse(platform).unwrap())
            .await
            .unwrap();
        assert_eq!(
            resolved.manifest.digest, image.manifest.digest,
            "{platform}"
        );
        assert_eq!(resolved.index.unwrap().digest, idx.digest);
        assert_eq!(resolved.image.config().digest(), &image.config.digest);
    }
    let err = r
        .fetch_image_manifest(&tag("v1"), &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{msg}");
    assert!(msg.contains("linux/amd64, linux/arm64"), "{msg}");

    // The client pushes an index itself: images first, then the index, which skopeo reads back.
    let own = repo(&client, &host, "own-multi");
    amd.push(&own, "amd").await;
    arm.push(&own, "arm").await;
    let digest = own
        .push_manifest(&tag("v1"), idx.bytes.clone(), None)
        .await
        .unwrap();
    assert_eq!(digest, idx.digest);
    assert_eq!(inspect_raw(&host, "own-multi:v1"), idx.bytes);
    let fetched = own.fetch_manifest(&tag("v1")).await.unwrap();
    assert_eq!(
        fetched.media_type,
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(matches!(
        fetched.parse().unwrap(),
        ManifestDocument::Index(_)
    ));
}

#[tokio::test]
async fn mounts_and_head_skips_are_observed() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut config = test_config();
    let sink = events.clone();
    config.progress = Some(Arc::new(move |e: &ProgressEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    let client = Client::new(config);
    let base = repo(&client, &host, "base");
    let image = Image::new("mount", &[4000, 50_000], "linux", "amd64");
    image.push(&base, "v1").await;

    // Into another repository: every blob mounted, none uploaded.
    let derived = repo(&client, &host, "derived");
    let uploads: Vec<BlobUpload> = image
        .blobs()
        .iter()
        .map(|b| BlobUpload {
            mount_from: Some("base".to_string()),
            ..b.upload()
        })
        .collect();
    let before = registry.requests().len();
    let outcomes = derived.push_blobs(&uploads).await.unwrap();
    assert!(
        outcomes.iter().all(|o| *o
            == BlobOutcome::Mounted {
                from: "base".into()
            }),
        "{outcomes:?}"
    );
    let log = registry.requests()[before..].to_vec();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("POST /v2/derived/blobs/uploads/?")
                && l.contains("mount=")
                && l.contains("from=base"))
            .count(),
        3,
        "{log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.starts_with("PATCH") || l.starts_with("PUT")),
        "{log:#?}"
    );

    // Again: the HEAD finds every blob, nothing else is asked.
    let before = registry.requests().len();
    let outcomes = derived.push_blobs(&uploads).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == BlobOutcome::AlreadyPresent));
    let log = registry.requests()[before..].to_vec();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(
        log.iter()
            .all(|l| l.starts_with("HEAD /v2/derived/blobs/sha256:")),
        "{log:#?}"
    );

    // A mount from a repository that lacks the blob falls back to an upload.
    let fresh = Blob::new(common::images::noise("fallback", 10_000));
    let outcome = derived
        .push_blob(&BlobUpload {
            mount_from: Some("base".to_string()),
            ..fresh.upload()
        })
        .await
        .unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    assert_eq!(
        derived.blob_exists(&fresh.digest).await.unwrap(),
        Some(fresh.size())
    );

    let events = events.lock().unwrap();
    let finished = |outcome: BlobOutcome| {
        events
            .iter()
            .filter(|e| matches!(e, ProgressEvent::Finished { outcome: o, .. } if *o == outcome))
            .count()
    };
    assert_eq!(
        finished(BlobOutcome::Mounted {
            from: "base".into()
        }),
        3
    );
    assert_eq!(finished(BlobOutcome::AlreadyPresent), 3);
    assert!(events.iter().any(|e| matches!(e,
        ProgressEvent::Started { direction: Direction::Upload, size, digest }
            if *digest == fresh.digest && *size == fresh.size())));
    assert!(events.iter().any(|e| matches!(e,
        ProgressEvent::Transferred { digest, bytes } if *digest == fresh.digest && *bytes == fresh.size())));
}

#[tokio::test]
async fn chunked_upload_with_a_small_chunk_size() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let config = common::chunked_config(&host, 64 << 10);
    let client = Client::new(config);
    let r = repo(&client, &host, "chunked");
    let blob = Blob::new(common::images::noise("chunks", 300_000));
    let outcome = r.push_blob(&blob.upload()).await.unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    let patches = registry
        .requests()
        .iter()
        .filter(|l| l.starts_with("PATCH /v2/chunked/blobs/uploads/"))
        .count();
    assert_eq!(patches, 5, "300000 bytes in 64 KiB chunks");
    let back = r.fetch_blob_bytes(&blob.digest, blob.size()).await.unwrap();
    assert_eq!(back, blob.bytes);

    // A blob from a file, read again at each chunk's offset.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let data = common::images::noise("file", 150_000);
    std::fs::write(&path, &data).unwrap();
    let file_blob = Blob::new(data);
    let upload = BlobUpload {
        source: strata_registry_client::BlobSource::from_file(&path),
        ..file_blob.upload()
    };
    r.push_blob(&upload).await.unwrap();
    let back = r
        .fetch_blob_bytes(&file_blob.digest, file_blob.size())
        .await
        .unwrap();
    assert_eq!(back, file_blob.bytes);
}

#[tokio::test]
async fn a_wrong_source_is_refused_by_the_registry() {
    let registry = Registry::start(Auth::None, None);
    let client = Client::new(test_config());
    let r = repo(&client, &registry.host(), "wrong");
    let blob = Blob::new("the real content");
    let upload = BlobUpload {
        source: strata_registry_client::BlobSource::from_bytes(Bytes::from_static(
            b"other content!!!",
        )),
        ..blob.upload()
    };
    let err = r.push_blob(&upload).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err}");
    assert_eq!(r.blob_exists(&blob.digest).await.unwrap(), None);
}

#[tokio::test]
async fn offline_refuses_every_registry_but_loopback() {
    let mut config = test_config();
    config.offline = true;
    let client = Client::new(config);
    for (host, path, shown) in [
        (
            "registry.example:5000",
            "team/app",
            "registry.example:5000/team/app:1.0",
        ),
        (
            "docker.io",
            "library/busybox",
            "docker.io/library/busybox:1.0",
        ),
    ] {
        let r = client.repository(Repository::parse(host, path).unwrap());
        let err = r.fetch_manifest(&tag("1.0")).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Offline { .. }), "{msg}");
        assert!(msg.contains(shown), "{msg}");
        let blob = Blob::new("x");
        assert!(matches!(
            r.push_blob(&blob.upload()).await,
            Err(Error::Offline { .. })
        ));
        assert!(matches!(
            r.blob_exists(&blob.digest).await,
            Err(Error::Offline { .. })
        ));
    }
    // Loopback stays reachable offline.
    let registry = Registry::start(Auth::None, None);
    let r = repo(&client, &registry.host(), "local");
    assert!(matches!(
        r.fetch_manifest(&tag("1.0")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn uploads_run_concurrently_up_to_the_limit() {
    let registry = Registry::start(Auth::None, None);
    let in_flight = Arc::new(Mutex::new((0usize, 0usize))); // (now, most)
    let mut config = test_config();
    config.max_concurrent_uploads = 2;
    let counter = in_flight.clone();
    config.progress = Some(Arc::new(move |e: &ProgressEvent| {
        let mut c = counter.lock().unwrap();
        match e {
            ProgressEvent::Started { .. } => {
                c.0 += 1;
                c.1 = c.1.max(c.0);
            }
            ProgressEvent::Finished { .. } => c.0 -= 1,
            _ => {}
        }
    }));
    let client = Client::new(config);
    let r = repo(&client, &registry.host(), "parallel");
    let blobs: Vec<Blob> = (0..5)
        .map(|i| Blob::new(common::images::noise(&format!("p{i}"), 20_000)))
        .collect();
    // Slow sources, so uploads overlap whenever they may.
    let uploads: Vec<BlobUpload> = blobs
        .iter()
        .map(|b| {
            let data = b.bytes.clone();
            BlobUpload {
                source: strata_registry_client::BlobSource::new(move |offset| {
                    let rest = data.slice(offset as usize..);
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                        Ok(std::io::Cursor::new(rest))
                    }
                }),
                ..b.upload()
            }
        })
        .collect();
    let outcomes = r.push_blobs(&uploads).await.unwrap();
    assert_eq!(outcomes, vec![BlobOutcome::Uploaded; 5]);
    assert_eq!(*in_flight.lock().unwrap(), (0, 2));
    for b in &blobs {
        assert_eq!(r.blob_exists(&b.digest).await.unwrap(), Some(b.size()));
    }
}
