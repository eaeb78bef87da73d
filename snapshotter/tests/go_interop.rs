//! Interop with Go: the layer tar is byte for byte what Go's archive/tar writes through
//! containerd's layer writer for the same tree, and Go's gzip and tar readers read our layers.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use strata_snapshotter::{Compression, Diff, EncoderOptions, LayerOptions, write_layer};

/// Builds `tests/go/layertool.go` once per test binary (Go caches the build).
fn layertool() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_layertool).clone()
}

fn build_layertool() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("layertool");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/layertool.go");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env(
            "GOCACHE",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
        )
        .env("GO111MODULE", "off")
        .status()
        .expect("go is installed by .ci/setup");
    assert!(status.success());
    out
}

fn layer(
    dir: &std::path::Path,
    compression: Compression,
) -> (Vec<u8>, strata_snapshotter::LayerDescriptor) {
    let options = LayerOptions {
        compression,
        encoder: EncoderOptions {
            level: None,
            threads: 2,
        },
        source_date_epoch: None,
    };
    let mut out = Vec::new();
    let desc = write_layer(&Diff::directory(dir), &options, &mut out).unwrap();
    (out, desc)
}

#[test]
fn tar_bytes_match_go_archive_tar_as_containerd_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    common::rich_tree(tmp.path());
    let go = Command::new(layertool())
        .arg("write")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        go.status.success(),
        "{}",
        String::from_utf8_lossy(&go.stderr)
    );
    let (ours, _) = layer(tmp.path(), Compression::None);
    if ours != go.stdout {
        let at = ours
            .iter()
            .zip(&go.stdout)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let block = at / 512 * 512;
        panic!(
            "first difference at byte {at} (block {block}): ours {:?} go {:?}",
            String::from_utf8_lossy(&ours[block..(block + 512).min(ours.len())]),
            String::from_utf8_lossy(&go.stdout[block..(block + 512).min(go.stdout.len())]),
        );
    }
}

#[test]
fn go_reads_our_parallel_gzip_layers() {
    let tmp = tempfile::tempdir().unwrap();
    common::rich_tree(tmp.path());
    let (blob, desc) = layer(tmp.path(), Compression::Gzip);
    let mut child = Command::new(layertool())
        .arg("read")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &blob).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let entries = common::describe(tmp.path()).len();
    assert_eq!(text.trim(), format!("{entries} {}", desc.diff_id));
}
