//! Layers out and back in: round trips, determinism, interop with gunzip and GNU tar.

mod common;

use std::fs;
use std::path::Path;

use strata_snapshotter::{
    Compression, Diff, EncoderOptions, ExtractOptions, LayerOptions, WhiteoutMode, extract_layer,
    write_layer,
};

fn options(compression: Compression, threads: usize) -> LayerOptions {
    LayerOptions {
        compression,
        encoder: EncoderOptions {
            level: None,
            threads,
        },
        source_date_epoch: None,
    }
}

fn layer_of(dir: &Path, opts: &LayerOptions) -> (Vec<u8>, strata_snapshotter::LayerDescriptor) {
    let mut out = Vec::new();
    let desc = write_layer(&Diff::directory(dir), opts, &mut out).unwrap();
    (out, desc)
}

#[test]
fn round_trip_keeps_every_kind_of_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    common::rich_tree(&src);
    let (blob, desc) = layer_of(&src, &options(Compression::Gzip, 2));
    assert_eq!(desc.size, blob.len() as u64);
    assert_eq!(desc.digest, strata_codec::sha256_digest(&blob));

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let extracted = extract_layer(
        &blob[..],
        &dst,
        &ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            max_uncompressed_size: None,
        },
    )
    .unwrap();
    assert_eq!(extracted.diff_id, desc.diff_id);
    assert_eq!(extracted.compression, Compression::Gzip);
    assert_eq!(extracted.compressed_size, desc.size);
    assert_eq!(extracted.uncompressed_size, desc.uncompressed_size);

    let (want, got) = (common::describe(&src), common::describe(&dst));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, node) in &want {
        assert_eq!(node, &got[path], "{path}");
    }
    assert!(
        want["ping"]
            .xattrs
            .iter()
            .any(|(k, _)| k == b"security.capability")
    );
    assert_eq!(want["setuid"].mode, 0o4755);
    assert!(want["hard-a"].link_group.is_some());
}

#[test]
fn same_bytes_for_any_thread_count_and_compression_independent_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    common::rich_tree(tmp.path());
    let mut diff_ids = Vec::new();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (reference, desc) = layer_of(tmp.path(), &options(compression, 1));
        for threads in [2, 4] {
            let (blob, _) = layer_of(tmp.path(), &options(compression, threads));
            assert!(
                blob == reference,
                "{compression:?} with {threads} threads differs"
            );
        }
        diff_ids.push(desc.diff_id);
    }
    assert!(diff_ids.iter().all(|d| d == &diff_ids[0]));
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("new"), "x").unwrap();
    fs::write(tmp.path().join("old"), "y").unwrap();
    common::set_mtime(&tmp.path().join("new"), 2_000_000_000);
    common::set_mtime(&tmp.path().join("old"), 1_000);
    let mut opts = options(Compression::None, 1);
    opts.source_date_epoch = Some(1_500_000_000);
    let (blob, _) = layer_of(tmp.path(), &opts);
    let mut archive = tar::Archive::new(&blob[..]);
    let times: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        times,
        vec![
            ("new".to_string(), 1_500_000_000),
            ("old".to_string(), 1_000)
        ]
    );
}

#[test]
fn gnu_tar_and_gunzip_read_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    common::rich_tree(&src);
    let (blob, _) = layer_of(&src, &options(Compression::Gzip, 2));
    let blob_path = tmp.path().join("layer.tar.gz");
    fs::write(&blob_path, &blob).unwrap();
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let status = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xzpf"])
        .arg(&blob_path)
        .arg("-C")
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    let (want, got) = (common::describe(&src), common::describe(&dst));
    for (path, node) in &want {
        // GNU tar sets directory mtimes as it goes too; compare everything else.
        let mut node = node.clone();
        let mut other = got[path].clone();
        if node.kind == "dir" {
            node.mtime = 0;
            other.mtime = 0;
        }
        assert_eq!(node, other, "{path}");
    }
}

#[test]
fn applied_whiteouts_delete_and_never_create() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path();
    fs::create_dir_all(target.join("keep/old")).unwrap();
    fs::write(target.join("keep/old/file"), "old").unwrap();
    fs::write(target.join("gone"), "x").unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for name in [".wh.gone", "missing/dir/.wh.x", "keep/.wh..wh..opq"] {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, &[][..]).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    builder
        .append_data(&mut h, "keep/new", &b"new"[..])
        .unwrap();
    let layer = builder.into_inner().unwrap();
    let options = ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        max_uncompressed_size: None,
    };
    extract_layer(&layer[..], target, &options).unwrap();
    let left: Vec<String> = common::describe(target).into_keys().collect();
    assert_eq!(left, ["keep", "keep/new"]);
}

/// A destination that fails once `room` bytes are written.
struct FailingWriter {
    room: usize,
}

impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("disk full"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_destination_stops_the_whole_pipeline_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    common::rich_tree(tmp.path());
    for compression in [Compression::None, Compression::Gzip] {
        let err = write_layer(
            &Diff::directory(tmp.path()),
            &options(compression, 2),
            FailingWriter { room: 10_000 },
        )
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
