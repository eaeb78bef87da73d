//! Hostile archives: each one fails cleanly (or is resolved inside the root), writes nothing
//! outside the target and leaves no half-made snapshot behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_snapshotter::{Driver, Error, ExtractOptions, Snapshotter, WhiteoutMode};

/// One raw tar entry; names are written as given (the `tar` crate refuses `..`).
fn entry(name: &[u8], kind: u8, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    if kind == b'3' {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Scene {
    _tmp: tempfile::TempDir,
    sn: Snapshotter,
    victim: std::path::PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("secret"), "untouched").unwrap();
    let sn = Snapshotter::with_driver(tmp.path().join("sn"), Driver::Overlay).unwrap();
    Scene {
        _tmp: tmp,
        sn,
        victim,
    }
}

impl Scene {
    fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.victim)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"]);
        assert_eq!(
            fs::read_to_string(self.victim.join("secret")).unwrap(),
            "untouched"
        );
    }

    fn assert_nothing_left(&self) {
        for dir in ["s", "tmp", "m"] {
            let left: Vec<_> = fs::read_dir(self.sn.root().join(dir)).unwrap().collect();
            assert!(left.is_empty(), "{dir}/ holds {left:?}");
        }
    }

    /// Extraction must fail; returns the error for a look at its kind and message.
    fn refused(&self, layer: &[u8]) -> Error {
        let err = self
            .sn
            .extract_layer("x", None, layer, Some(16 << 20))
            .unwrap_err();
        self.assert_untouched();
        self.assert_nothing_left();
        err
    }
}

fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

#[test]
fn dot_dot_escapes_are_refused() {
    let s = scene();
    for name in [
        &b"../escape"[..],
        b"a/../../escape",
        b"./../../../../../../tmp/escape",
    ] {
        let err = s.refused(&archive(&[entry(name, b'0', b"", b"boom")]));
        assert!(matches!(err, Error::BadEntry { .. }), "{err}");
        assert!(err.to_string().contains("climbs out"), "{err}");
    }
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let s = scene();
    let secret = [&path_bytes(&s.victim)[..], b"/secret"].concat();
    let via_dotdot = b"../../../../../../../../../../../../etc/passwd";
    for link in [&secret[..], &via_dotdot[..]] {
        let err = s.refused(&archive(&[entry(b"hl", b'1', link, b"")]));
        assert!(matches!(err, Error::BadEntry { .. }), "{err}");
    }
    // Through a symlink the archive made: the symlink resolves inside the root.
    let err = s.refused(&archive(&[
        entry(b"link", b'2', &path_bytes(&s.victim), b""),
        entry(b"hl", b'1', b"link/secret", b""),
    ]));
    assert!(matches!(err, Error::BadEntry { .. }), "{err}");
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let s = scene();
    // A symlink to the victim's absolute path, then a file below it: the symlink is resolved
    // as if the root were `/`, where no such directory exists.
    let err = s.refused(&archive(&[
        entry(b"link", b'2', &path_bytes(&s.victim), b""),
        entry(b"link/pwned", b'0', b"", b"boom"),
    ]));
    assert!(
        matches!(err, Error::Extract { .. } | Error::BadEntry { .. }),
        "{err}"
    );

    // A relative symlink climbing out lands at the root instead.
    let layer = archive(&[
        entry(b"up", b'2', b"../../../../../../../..", b""),
        entry(b"up/landed", b'0', b"", b"inside"),
        entry(b"/abs/file", b'0', b"", b"absolute"),
    ]);
    s.sn.extract_layer("ok", None, &layer[..], None).unwrap();
    s.assert_untouched();
    let fs_dir = s.sn.fs_path("ok");
    assert_eq!(fs::read_to_string(fs_dir.join("landed")).unwrap(), "inside");
    assert_eq!(
        fs::read_to_string(fs_dir.join("abs/file")).unwrap(),
        "absolute"
    );
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let s = scene();
    let secret = [&path_bytes(&s.victim)[..], b"/secret"].concat();
    let layer = archive(&[
        entry(b"trap", b'2', &secret, b""),
        entry(b"trap", b'0', b"", b"overwritten?"),
    ]);
    s.sn.extract_layer("ok", None, &layer[..], None).unwrap();
    s.assert_untouched();
    let trap = s.sn.fs_path("ok").join("trap");
    assert!(fs::symlink_metadata(&trap).unwrap().is_file());
}

#[test]
fn device_nodes_without_the_right_to_make_them_are_refused() {
    let s = scene();
    let layer = archive(&[entry(b"dev/null", b'3', b"", b"")]);
    // Capabilities are per thread: drop CAP_MKNOD in a thread of our own, as a non-root
    // extraction would lack it.
    let err = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut caps = rustix::thread::capabilities(None).unwrap();
                caps.effective -= rustix::thread::CapabilitySet::MKNOD;
                rustix::thread::set_capabilities(None, caps).unwrap();
                s.sn.extract_layer("x", None, &layer[..], None).unwrap_err()
            })
            .join()
            .unwrap()
    });
    s.assert_untouched();
    s.assert_nothing_left();
    assert!(err.to_string().contains("not permitted"), "{err}");
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let s = scene();
    let zeros = vec![0u8; 64 << 20];
    let layer = gzip(&archive(&[entry(b"bomb", b'0', b"", &zeros)]));
    assert!(layer.len() < 1 << 20, "the bomb is small: {}", layer.len());
    let err = s.refused(&layer);
    assert!(
        matches!(err, Error::TooLarge { limit } if limit == 16 << 20),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_streams_fail() {
    let s = scene();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let plain = archive(&[entry(b"a", b'0', b"", &data), entry(b"b", b'0', b"", b"b")]);
    let layer = gzip(&plain);

    let err = s.refused(&layer[..layer.len() / 2]);
    assert!(matches!(err, Error::Read(_)), "{err}");

    let mut corrupt = layer.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corrupt[mid + 1] ^= 0x55;
    s.refused(&corrupt);

    // A gzip stream intact but for its CRC.
    let mut bad_crc = layer.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    s.refused(&bad_crc);

    // An uncompressed tar cut inside an entry, and one with a broken header checksum.
    s.refused(&plain[..1000]);
    let mut bad_header = plain.clone();
    bad_header[10] ^= 1;
    s.refused(&bad_header);
}

#[test]
fn extraction_into_a_plain_directory_stays_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    let layer = archive(&[
        entry(b"up", b'2', b"/", b""),
        entry(b"up/etc/x", b'0', b"", b"x"),
    ]);
    strata_snapshotter::extract_layer(&layer[..], &target, &Default::default()).unwrap();
    assert_eq!(fs::read_to_string(target.join("etc/x")).unwrap(), "x");
    assert!(!Path::new("/etc/x").exists() || fs::read_to_string("/etc/x").unwrap() != "x");
}

/// What a generated archive entry is: (type flag, name, link name).
type GenEntry = (u8, Vec<u8>, Vec<u8>);

/// Names built from parts that have hurt extractors: `..`, `.`, whiteouts, a name the victim
/// directory holds, leading `/` and `./`.
fn hostile_name() -> impl Strategy<Value = Vec<u8>> {
    let part = prop::sample::select(vec![
        "a",
        "b",
        "up",
        "abs",
        "..",
        ".",
        "secret",
        ".wh.a",
        ".wh.up",
        ".wh.secret",
        ".wh..wh..opq",
    ]);
    let lead = prop::sample::select(vec!["", "/", "./"]);
    (lead, prop::collection::vec(part, 1..4))
        .prop_map(|(lead, parts)| format!("{lead}{}", parts.join("/")).into_bytes())
}

/// Link targets: archive names, the victim by absolute path, and `..` chains of any depth to
/// it (the target directory sits beside the victim).
fn hostile_link(victim: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let secret = [&victim[..], b"/secret"].concat();
    prop_oneof![
        hostile_name(),
        prop::sample::select(vec![victim, secret, b"/".to_vec()]),
        (0usize..6, any::<bool>()).prop_map(|(depth, file)| {
            let tail = if file { "victim/secret" } else { "victim" };
            format!("{}{tail}", "../".repeat(depth)).into_bytes()
        }),
    ]
}

fn hostile_entries(victim: Vec<u8>) -> impl Strategy<Value = Vec<GenEntry>> {
    let kind = prop::sample::select(vec![b'0', b'5', b'2', b'1']);
    prop::collection::vec((kind, hostile_name(), hostile_link(victim)), 1..8)
}

/// A temporary directory holding `victim/secret` and an empty `target/`.
fn victim_beside_target() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (victim, target) = (tmp.path().join("victim"), tmp.path().join("target"));
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("secret"), "untouched").unwrap();
    fs::create_dir(&target).unwrap();
    (tmp, victim, target)
}

fn assert_only_target_changed(tmp: &Path, victim: &Path) {
    let mut names: Vec<_> = fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["target", "victim"]);
    let names: Vec<_> = fs::read_dir(victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secret"]);
    let secret = victim.join("secret");
    assert!(fs::symlink_metadata(&secret).unwrap().is_file());
    assert_eq!(fs::read_to_string(&secret).unwrap(), "untouched");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any sequence of such entries, extracted either way (whiteouts stored, or applied to a
    /// directory whose lower layers hold symlinks out of it), succeeds or fails without writing,
    /// linking or deleting anything outside the target.
    #[test]
    fn generated_hostile_archives_stay_inside_the_target(
        // The victim's absolute path is known per case only: a placeholder stands for it.
        generated in hostile_entries(b"@VICTIM".to_vec()),
        apply in any::<bool>(),
    ) {
        let (tmp, victim, target) = victim_beside_target();
        let victim_path = path_bytes(&victim);
        let entries: Vec<Vec<u8>> = generated
            .iter()
            .map(|(kind, name, link)| {
                let link = replace_placeholder(link, &victim_path);
                entry(name, *kind, &link, if *kind == b'0' { b"boom" } else { b"" })
            })
            .collect();
        let whiteouts = if apply {
            // What lower layers left: plain files and symlinks pointing out, by both kinds
            // of path.
            fs::create_dir(target.join("a")).unwrap();
            fs::write(target.join("a/b"), "lower").unwrap();
            std::os::unix::fs::symlink("../victim", target.join("up")).unwrap();
            std::os::unix::fs::symlink(&victim, target.join("abs")).unwrap();
            WhiteoutMode::Apply
        } else {
            WhiteoutMode::Overlay
        };
        let options = ExtractOptions { whiteouts, max_uncompressed_size: None };
        // Either outcome is fine; what it touched is the property.
        let _ = strata_snapshotter::extract_layer(&archive(&entries)[..], &target, &options);
        assert_only_target_changed(tmp.path(), &victim);
    }
}

fn replace_placeholder(link: &[u8], victim: &[u8]) -> Vec<u8> {
    match link.strip_prefix(b"@VICTIM") {
        Some(rest) => [victim, rest].concat(),
        None => link.to_vec(),
    }
}
