//! Hostile archives: each one fails cleanly (or is resolved inside the root), writes nothing
//! outside the target and leaves no half-made snapshot behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use strata_snapshotter::{Driver, Error, Snapshotter};

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

fn victim_bytes(s: &Scene) -> Vec<u8> {
    s.victim.as_os_str().as_encoded_bytes().to_vec()
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
    let secret = [&victim_bytes(&s)[..], b"/secret"].concat();
    let via_dotdot = b"../../../../../../../../../../../../etc/passwd";
    for link in [&secret[..], &via_dotdot[..]] {
        let err = s.refused(&archive(&[entry(b"hl", b'1', link, b"")]));
        assert!(matches!(err, Error::BadEntry { .. }), "{err}");
    }
    // Through a symlink the archive made: the symlink resolves inside the root.
    let err = s.refused(&archive(&[
        entry(b"link", b'2', &victim_bytes(&s), b""),
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
        entry(b"link", b'2', &victim_bytes(&s), b""),
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
    let secret = [&victim_bytes(&s)[..], b"/secret"].concat();
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
