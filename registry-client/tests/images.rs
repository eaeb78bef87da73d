//! `push_image` and `pull_image`, as the binary and the builder call them, between two stores
//! and a real registry on loopback.

mod common;

use std::sync::{Arc, Mutex};

use common::images::layer;
use common::{Auth, Registry, test_config};
use oci_spec::image::Descriptor;
use strata_codec::{Compression, EncoderOptions};
use strata_registry_client::{
    BlobOutcome, Client, Direction, Error, ProgressEvent, PushOptions, pull_image, push_image,
};
use strata_store::reference::parse_normalized_named;
use strata_store::{Platform, Store};

fn recording_client() -> (Client, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut config = test_config();
    let sink = events.clone();
    config.progress = Some(Arc::new(move |e: &ProgressEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    (Client::new(config), events)
}

/// A two-layer image for this machine in `store`, named `name`.
fn make_image(store: &Store, name: &str) {
    let lease = store.lease().unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (seed, size) in [("base", 200_000), ("top", 50_000)] {
        let (blob, _) = layer(&format!("{name}-{seed}"), size);
        let record = store
            .import_layer(
                &lease,
                &blob.bytes[..],
                Compression::Gzip,
                EncoderOptions::default(),
            )
            .unwrap();
        diff_ids.push(record.diff_id.to_string());
        layers.push(Descriptor::new(
            record.media_type.as_str().into(),
            record.size,
            record.digest,
        ));
    }
    let host = Platform::host();
    let config = serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    store
        .create_image(
            &lease,
            &config,
            &layers,
            &[parse_normalized_named(name).unwrap()],
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_pull_between_stores_with_progress_and_mounts() {
    let registry = Registry::start(Auth::None, None);
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let name = format!("{host}/lib/app:v1");
    make_image(&source, &name);
    let local = source.resolve(&name).unwrap();
    let reference = parse_normalized_named(&name).unwrap();

    let (client, events) = recording_client();
    let pushed = push_image(&source, &client, &name, &reference, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(&pushed.digest, local.manifest_descriptor.digest());
    assert_eq!(pushed.tag, "v1");
    {
        let events = events.lock().unwrap();
        for l in local.manifest.layers() {
            let queued = events.iter().position(|e| matches!(e, ProgressEvent::Queued { digest, direction: Direction::Upload, .. } if digest == l.digest()));
            let started = events.iter().position(
                |e| matches!(e, ProgressEvent::Started { digest, .. } if digest == l.digest()),
            );
            assert!(queued.unwrap() < started.unwrap());
            assert!(events.iter().any(|e| matches!(e, ProgressEvent::Finished { digest, outcome: BlobOutcome::Uploaded } if digest == l.digest())));
        }
    }

    // Into another store: named, the diffIDs recorded, the blobs' source remembered.
    let target = Store::open(dir.path().join("target")).unwrap();
    let (client, events) = recording_client();
    let pulled = pull_image(&target, &client, &reference, &Platform::host())
        .await
        .unwrap();
    assert!(pulled.updated);
    assert_eq!(&pulled.digest, local.manifest_descriptor.digest());
    assert_eq!(pulled.image.id(), local.id());
    assert_eq!(pulled.image.names, vec![reference.clone()]);
    for (l, diff_id) in local.manifest.layers().iter().zip(local.diff_ids()) {
        let records = target
            .layers_for_diff_id(&diff_id.parse().unwrap())
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].digest, *l.digest());
        assert_eq!(records[0].media_type, l.media_type().to_string());
    }
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(
                e,
                ProgressEvent::Finished {
                    outcome: BlobOutcome::Downloaded,
                    ..
                }
            ))
            .count(),
        3,
        "config and two layers"
    );

    // Again: nothing new, every layer found in the store.
    events.lock().unwrap().clear();
    let again = pull_image(&target, &client, &reference, &Platform::host())
        .await
        .unwrap();
    assert!(!again.updated);
    let skipped = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e,
                ProgressEvent::Finished {
                    outcome: BlobOutcome::AlreadyPresent,
                    ..
                }
            )
        })
        .count();
    assert_eq!(skipped, 2);

    // Pushed from the second store to another repository: mounted from where it was pulled.
    events.lock().unwrap().clear();
    let copy = parse_normalized_named(&format!("{host}/lib/copy:v1")).unwrap();
    push_image(&target, &client, &name, &copy, &PushOptions::default())
        .await
        .unwrap();
    let mounted = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Finished { outcome: BlobOutcome::Mounted { from }, .. } if from == "lib/app"))
        .count();
    assert_eq!(mounted, 3, "config and two layers");
}

#[tokio::test]
async fn offline_pull_names_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut config = test_config();
    config.offline = true;
    let client = Client::new(config);
    let reference = parse_normalized_named("registry.example.invalid/team/app:2").unwrap();
    let err = pull_image(&store, &client, &reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("registry.example.invalid/team/app:2")
    );
    assert!(store.entries().unwrap().is_empty());
}
