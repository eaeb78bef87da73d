//! The store's API as the builder and registry client use it: blobs, layers by diffID, images,
//! names, GC roots, snapshot holds, leases and concurrent use.

use std::io::{Read, Write};
use std::sync::Arc;

use oci_spec::image::Descriptor;
use serde_json::json;
use strata_codec::{Compression, EncoderOptions, sha256_digest};
use strata_store::reference::parse_docker_ref;
use strata_store::{GcOptions, ImagePrune, SnapshotHolder, Store, StoreError};

fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.into_inner().unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    (tmp, store)
}

/// Imports a one-layer image named `name` whose single file has `content`.
fn image(store: &Store, name: Option<&str>, content: &[u8]) -> strata_store::Image {
    let lease = store.lease().unwrap();
    let layer = store
        .import_layer(
            &lease,
            &tar_with("f", content)[..],
            Compression::Gzip,
            EncoderOptions::default(),
        )
        .unwrap();
    let config = json!({
        "architecture": strata_store::Platform::host().architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
    });
    let desc = Descriptor::new(layer.media_type.as_str().into(), layer.size, layer.digest);
    let names: Vec<_> = name
        .map(|n| parse_docker_ref(n).unwrap())
        .into_iter()
        .collect();
    store
        .create_image(&lease, &config, &[desc], &names)
        .unwrap()
}

fn blob_files(store: &Store) -> usize {
    std::fs::read_dir(store.layout_dir().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn blobs_appear_whole_or_not_at_all() {
    let (_tmp, store) = new_store();
    let lease = store.lease().unwrap();
    let mut w = store.blob_writer(&lease).unwrap();
    w.write_all(b"partial").unwrap();
    assert_eq!(blob_files(&store), 0, "an uncommitted blob is visible");
    drop(w);
    assert_eq!(
        std::fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .count(),
        0
    );

    let wrong = sha256_digest(b"something else");
    let mut w = store.blob_writer_expecting(&lease, &wrong, None).unwrap();
    w.write_all(b"content").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::Invalid(_))));
    let mut w = store
        .blob_writer_expecting(&lease, &sha256_digest(b"content"), Some(3))
        .unwrap();
    assert!(
        w.write_all(b"content").is_err(),
        "writing past the expected size must fail"
    );
    assert_eq!(blob_files(&store), 0);

    let info = store.put_blob(&lease, b"content").unwrap();
    assert_eq!(info.digest, sha256_digest(b"content"));
    assert!(store.has_blob(&info.digest));
    assert_eq!(store.read_blob(&info.digest).unwrap(), b"content");
    // A corrupted blob fails verification when read.
    std::fs::write(store.blob_path(&info.digest), b"CONTENT").unwrap();
    let mut r = store.open_blob(&info.digest).unwrap();
    assert!(r.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn layers_are_found_by_diff_id() {
    let (_tmp, store) = new_store();
    let lease = store.lease().unwrap();
    let tar = tar_with("a", b"hello");
    // Compressed input is decompressed first: the diffID is the plain tar's.
    let mut xz =
        strata_codec::Encoder::new(Vec::new(), Compression::Xz, EncoderOptions::default()).unwrap();
    xz.write_all(&tar).unwrap();
    let xz = xz.finish().unwrap();
    let rec = store
        .import_layer(
            &lease,
            &xz[..],
            Compression::Gzip,
            EncoderOptions::default(),
        )
        .unwrap();
    assert_eq!(rec.diff_id, sha256_digest(&tar));
    assert_eq!(rec.uncompressed_size, Some(tar.len() as u64));
    assert_eq!(
        rec.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let found = store.layers_for_diff_id(&rec.diff_id).unwrap();
    assert_eq!(found, vec![rec.clone()]);
    // Not a tar: refused, nothing stored.
    let before = blob_files(&store);
    assert!(
        store
            .import_layer(
                &lease,
                &b"not a tarball at all, certainly not 512 bytes"[..],
                Compression::Gzip,
                EncoderOptions::default()
            )
            .is_err()
    );
    assert_eq!(blob_files(&store), before);
}

#[test]
fn names_resolve_and_move() {
    let (_tmp, store) = new_store();
    let a = image(&store, Some("app"), b"one");
    let id = a.id().clone();
    for r in [
        "app".to_string(),
        "app:latest".into(),
        "docker.io/library/app:latest".into(),
        id.to_string(),
        id.digest().to_string(),
        id.digest()[..12].to_string(),
        format!("app@{}", a.manifest_descriptor.digest()),
    ] {
        assert_eq!(store.resolve(&r).unwrap().id(), &id, "{r}");
    }
    assert!(matches!(
        store.resolve("nothing"),
        Err(StoreError::ImageNotFound(_))
    ));
    // A new image taking the name leaves the old one untagged.
    let b = image(&store, Some("app"), b"two");
    assert_eq!(store.resolve("app").unwrap().id(), b.id());
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().any(|e| e.name.is_none()));
    store
        .tag(id.as_ref(), &parse_docker_ref("old:v1").unwrap())
        .unwrap();
    assert_eq!(store.resolve("old:v1").unwrap().id(), &id);
    assert_eq!(
        store.entries().unwrap().len(),
        2,
        "tagging replaced the untagged entry"
    );
    // rmi by ID of an image with two names needs force.
    store
        .tag("old:v1", &parse_docker_ref("old:v2").unwrap())
        .unwrap();
    assert!(matches!(
        store.remove_image(id.as_ref(), false),
        Err(StoreError::Conflict(_))
    ));
    let r = store.remove_image("old:v1", false).unwrap();
    assert_eq!(r.untagged.len(), 1);
    assert!(r.deleted.is_empty());
    let r = store.remove_image("old:v2", false).unwrap();
    assert_eq!(r.deleted, vec![id]);
}

#[test]
fn gc_keeps_what_is_reachable_and_reports_unheld_snapshots() {
    let (_tmp, store) = new_store();
    let kept = image(&store, Some("kept"), b"kept");
    let doomed = image(&store, None, b"doomed");
    let cached = image(&store, None, b"cached");
    let layer = doomed.manifest.layers()[0].digest().clone();
    store
        .write_meta(|m| {
            m.add_root("cache:key1", cached.manifest_descriptor.digest())?;
            m.hold_snapshot("snap-doomed", &SnapshotHolder::Blob(layer.clone()))?;
            m.hold_snapshot("snap-named", &SnapshotHolder::Named("container:c1".into()))?;
            m.hold_snapshot(
                "snap-released",
                &SnapshotHolder::Named("container:c2".into()),
            )?;
            m.release_snapshot(
                "snap-released",
                &SnapshotHolder::Named("container:c2".into()),
            )
        })
        .unwrap();
    // Leftovers of a killed writer.
    std::fs::write(store.root().join("ingest/blob-leftover"), b"junk").unwrap();

    // A running lease keeps try_gc away.
    let lease = store.lease().unwrap();
    assert!(
        store
            .try_gc(&GcOptions::default(), &mut |_| Ok(()))
            .unwrap()
            .is_none()
    );
    drop(lease);

    let mut deleted = Vec::new();
    let options = GcOptions {
        images: ImagePrune::Dangling,
        build_cache: false,
    };
    let report = store
        .gc(&options, &mut |s| {
            deleted.push(s.to_string());
            Ok(())
        })
        .unwrap();
    deleted.sort();
    assert_eq!(deleted, ["snap-doomed", "snap-released"]);
    assert_eq!(
        report.removed_images.len(),
        2,
        "both untagged images are pruned"
    );
    assert!(!store.has_blob(&layer));
    assert!(store.resolve("kept").is_ok());
    for d in [
        kept.manifest_descriptor.digest(),
        kept.id(),
        kept.manifest.layers()[0].digest(),
    ] {
        assert!(store.has_blob(d));
    }
    // The cache root kept its blobs although its image entry was pruned.
    assert!(store.has_blob(cached.manifest.layers()[0].digest()));
    assert_eq!(
        std::fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .count(),
        0
    );
    let known = store.read_meta(|m| m.snapshots()).unwrap();
    assert_eq!(known, ["snap-named"]);
    assert!(store.read_meta(|m| m.layer(&layer)).unwrap().is_none());

    // Dropping the build cache frees its blobs.
    let options = GcOptions {
        images: ImagePrune::None,
        build_cache: true,
    };
    store.gc(&options, &mut |_| Ok(())).unwrap();
    assert!(!store.has_blob(cached.manifest.layers()[0].digest()));
    assert!(store.has_blob(kept.manifest.layers()[0].digest()));
}

#[test]
fn gc_removes_a_whole_unheld_chain_even_when_parents_come_first() {
    let (_tmp, store) = new_store();
    // Ids sort parent-first, the order the store offers them in; the callback refuses a
    // parent while its child exists, as the snapshotter does.
    let chain = ["a-base", "b-middle", "c-top"];
    store
        .write_meta(|m| {
            for id in chain {
                m.hold_snapshot(id, &SnapshotHolder::Named("container:gone".into()))?;
                m.release_snapshot(id, &SnapshotHolder::Named("container:gone".into()))?;
            }
            Ok(())
        })
        .unwrap();
    let mut alive: Vec<&str> = chain.to_vec();
    let report = store
        .gc(&GcOptions::default(), &mut |s| {
            let pos = alive.iter().position(|a| *a == s).unwrap();
            if pos + 1 != alive.len() {
                return Err(StoreError::Invalid(format!("{s} has children")));
            }
            alive.pop();
            Ok(())
        })
        .unwrap();
    assert!(alive.is_empty(), "left behind: {alive:?}");
    assert_eq!(report.removed_snapshots, ["c-top", "b-middle", "a-base"]);
    assert!(store.read_meta(|m| m.snapshots()).unwrap().is_empty());
}

#[test]
fn threads_share_the_store_without_losing_updates() {
    let (_tmp, store) = new_store();
    let base = image(&store, Some("base"), b"base");
    let store = Arc::new(store);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = Arc::clone(&store);
            let id = base.id().to_string();
            std::thread::spawn(move || {
                for i in 0..8 {
                    store
                        .tag(&id, &parse_docker_ref(&format!("t{t}:v{i}")).unwrap())
                        .unwrap();
                    store
                        .write_meta(|m| m.add_root(&format!("holder{t}"), &sha256_digest(&[t, i])))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let named = store
        .entries()
        .unwrap()
        .iter()
        .filter(|e| e.name.is_some())
        .count();
    assert_eq!(named, 1 + 6 * 8);
    assert_eq!(store.read_meta(|m| m.roots()).unwrap().len(), 6 * 8);
}

#[test]
fn docker_schema2_manifests_and_manifest_lists_resolve_by_platform() {
    let (_tmp, store) = new_store();
    let lease = store.lease().unwrap();
    let host = strata_store::Platform::host();
    let mut platform_manifests = Vec::new();
    for (arch, content) in [
        ("riscv64", &b"other"[..]),
        (host.architecture.as_str(), &b"mine"[..]),
    ] {
        let layer = store.put_blob(&lease, &tar_with("f", content)).unwrap();
        let config = json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]}});
        let config = store
            .put_blob(&lease, config.to_string().as_bytes())
            .unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config.digest.to_string(), "size": config.size},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "digest": layer.digest.to_string(), "size": layer.size}],
        });
        let m = store
            .put_blob(&lease, manifest.to_string().as_bytes())
            .unwrap();
        platform_manifests.push((arch.to_string(), m, config.digest));
    }
    let list = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": platform_manifests.iter().map(|(arch, m, _)| json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": m.digest.to_string(), "size": m.size,
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    let list = store.put_blob(&lease, list.to_string().as_bytes()).unwrap();
    let target =
        list.descriptor("application/vnd.docker.distribution.manifest.list.v2+json".into());
    store
        .add_image(&target, &[parse_docker_ref("multi:v1").unwrap()])
        .unwrap();
    drop(lease);

    let image = store.resolve("multi:v1").unwrap();
    assert_eq!(
        image.id(),
        &platform_manifests[1].2,
        "the host's manifest is chosen"
    );
    assert_eq!(image.platform().architecture, host.architecture);
    let other = store
        .resolve_for(
            "multi:v1",
            &strata_store::Platform::parse("linux/riscv64").unwrap(),
        )
        .unwrap();
    assert_eq!(other.id(), &platform_manifests[0].2);
    assert!(
        store
            .resolve_for(
                "multi:v1",
                &strata_store::Platform::parse("linux/s390x").unwrap()
            )
            .is_err()
    );
    // Collection keeps every platform's blobs: the references were recorded from the list.
    store.gc(&GcOptions::default(), &mut |_| Ok(())).unwrap();
    for (_, m, config) in &platform_manifests {
        assert!(store.has_blob(&m.digest) && store.has_blob(config));
    }
}

#[test]
fn rmi_by_name_spares_other_manifests_of_the_same_config() {
    let (_tmp, store) = new_store();
    let a = image(&store, Some("a"), b"same");
    let mut twin = a.manifest.clone();
    twin.set_annotations(Some([("note".to_string(), "twin".to_string())].into()));
    let lease = store.lease().unwrap();
    let twin = store
        .put_json(&lease, oci_spec::image::MediaType::ImageManifest, &twin)
        .unwrap();
    store
        .add_image(&twin, &[parse_docker_ref("twin").unwrap()])
        .unwrap();
    drop(lease);
    assert_eq!(store.resolve("twin").unwrap().id(), a.id());
    let removal = store.remove_image("a", false).unwrap();
    assert_eq!(removal.untagged, [parse_docker_ref("a").unwrap()]);
    assert!(store.resolve("twin").is_ok());
    assert!(store.resolve("a").is_err());
    // By ID, both go (forced: two names).
    store
        .tag("twin", &parse_docker_ref("twin2").unwrap())
        .unwrap();
    assert!(store.remove_image(a.id().as_ref(), false).is_err());
    store.remove_image(a.id().as_ref(), true).unwrap();
    assert!(store.entries().unwrap().is_empty());
}
