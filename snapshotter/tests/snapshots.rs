//! Snapshots: overlay and copy drivers, deep chains, commits, diffs, cleanup.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_snapshotter::{
    Compression, Driver, EncoderOptions, Error, ExtractOptions, LayerOptions, Snapshotter, State,
    WhiteoutMode, extract_layer,
};

fn layer_options() -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        encoder: EncoderOptions {
            level: None,
            threads: 2,
        },
        source_date_epoch: None,
    }
}

/// A base snapshot with a little of everything, from a plain directory.
fn base(sn: &Snapshotter, id: &str) {
    let dir = sn.root().join(format!("import-{id}"));
    fs::create_dir(&dir).unwrap();
    fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/conf.d/a"), "a").unwrap();
    fs::write(dir.join("etc/conf.d/b"), "b").unwrap();
    fs::create_dir_all(dir.join("var/cache/x")).unwrap();
    fs::write(dir.join("var/cache/x/blob"), "cached").unwrap();
    fs::write(dir.join("var/keep"), "keep").unwrap();
    fs::write(dir.join("tool"), "tool").unwrap();
    fs::write(dir.join("to-delete"), "bye").unwrap();
    for p in common::describe(&dir).keys() {
        common::set_mtime(&dir.join(p), 1_600_000_000);
    }
    sn.import_directory(id, None, &dir).unwrap();
}

/// The same changes a RUN step might make, with fixed times so both drivers agree.
fn run_step(root: &Path) {
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    fs::remove_file(root.join("to-delete")).unwrap();
    fs::remove_dir_all(root.join("var/cache")).unwrap();
    // Replace a directory: overlay marks the new one opaque.
    fs::remove_dir_all(root.join("etc/conf.d")).unwrap();
    fs::create_dir(root.join("etc/conf.d")).unwrap();
    fs::write(root.join("etc/conf.d/c"), "c").unwrap();
    fs::set_permissions(root.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/app"), "app").unwrap();
    fs::hard_link(root.join("usr/bin/app"), root.join("usr/bin/app2")).unwrap();
    std::os::unix::fs::symlink("app", root.join("usr/bin/app-link")).unwrap();
    for p in [
        "",
        "etc",
        "etc/passwd",
        "etc/conf.d",
        "etc/conf.d/c",
        "var",
        "tool",
        "usr",
        "usr/bin",
        "usr/bin/app",
        "usr/bin/app-link",
    ] {
        common::set_mtime(&root.join(p), 1_700_000_000);
    }
}

fn step_layer(driver: Driver, dir: &Path) -> (Vec<u8>, Snapshotter) {
    let sn = Snapshotter::with_driver(dir, driver).unwrap();
    base(&sn, "base");
    sn.prepare("step", Some("base")).unwrap();
    {
        let mount = sn.mount("step").unwrap();
        run_step(mount.path());
    }
    let committed = sn.commit("step", "after").unwrap();
    assert_eq!(committed.state, State::Committed);
    assert_eq!(committed.parent.as_deref(), Some("base"));
    let mut blob = Vec::new();
    sn.write_layer("after", &layer_options(), &mut blob)
        .unwrap();
    (blob, sn)
}

fn entry_names(blob: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    for e in archive.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    names
}

#[test]
fn overlay_and_copy_write_the_same_layer_for_the_same_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (overlay, _) = step_layer(Driver::Overlay, &tmp.path().join("overlay"));
    let (copy, _) = step_layer(Driver::Copy, &tmp.path().join("copy"));
    let names = entry_names(&overlay);
    assert_eq!(names, entry_names(&copy));
    assert!(overlay == copy, "layers differ");
    assert_eq!(
        names,
        [
            "etc/",
            "etc/conf.d/",
            "etc/conf.d/.wh.a",
            "etc/conf.d/.wh.b",
            "etc/conf.d/c",
            "etc/passwd",
            ".wh.to-delete",
            "tool",
            "usr/",
            "usr/bin/",
            "usr/bin/app",
            "usr/bin/app-link",
            "usr/bin/app2",
            "var/",
            "var/.wh.cache",
        ]
    );
}

#[test]
fn applying_the_layer_to_the_parent_gives_the_merged_view() {
    let tmp = tempfile::tempdir().unwrap();
    let (blob, sn) = step_layer(Driver::Overlay, &tmp.path().join("sn"));
    let flat = tmp.path().join("flat");
    fs::create_dir(&flat).unwrap();
    let apply = ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        max_uncompressed_size: None,
    };
    let mut base_blob = Vec::new();
    sn.write_layer("base", &layer_options(), &mut base_blob)
        .unwrap();
    extract_layer(&base_blob[..], &flat, &apply).unwrap();
    extract_layer(&blob[..], &flat, &apply).unwrap();
    let view = sn.view("after").unwrap();
    let merged = common::describe(view.path());
    let got = common::describe(&flat);
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, node) in &merged {
        assert_eq!(node, &got[path], "{path}");
    }
    assert!(!merged.contains_key("var/cache"));
    assert!(!merged.contains_key("etc/conf.d/a"));
}

#[test]
fn extracted_layers_stack_with_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path().join("sn"), Driver::Overlay).unwrap();
    let (_, lower_layer) = step_layer(Driver::Overlay, &tmp.path().join("src"));
    let mut base_blob = Vec::new();
    lower_layer
        .write_layer("base", &layer_options(), &mut base_blob)
        .unwrap();
    let mut step_blob = Vec::new();
    lower_layer
        .write_layer("after", &layer_options(), &mut step_blob)
        .unwrap();

    let (_, base) = sn.extract_layer("l1", None, &base_blob[..], None).unwrap();
    let (info, step) = sn
        .extract_layer("l2", Some("l1"), &step_blob[..], None)
        .unwrap();
    assert_eq!(info.parent.as_deref(), Some("l1"));
    assert_eq!(base.compression, Compression::Gzip);
    // Deletions are stored as overlay whiteouts so the snapshot stacks as a lower directory.
    let whiteout = fs::symlink_metadata(sn.fs_path("l2").join("var/cache")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));

    let view = sn.view("l2").unwrap();
    let want = lower_layer.view("after").unwrap();
    let (a, b) = (common::describe(view.path()), common::describe(want.path()));
    assert_eq!(a, b);

    // Written back out, the extracted snapshot gives the very same layer.
    let mut again = Vec::new();
    let desc = sn.write_layer("l2", &layer_options(), &mut again).unwrap();
    assert_eq!(desc.diff_id, step.diff_id);
    assert!(again == step_blob);
}

#[test]
fn opaque_marker_is_extracted_as_the_overlay_xattr() {
    let tmp = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    builder.append_data(&mut dir, "opaque/", &[][..]).unwrap();
    let mut marker = tar::Header::new_ustar();
    marker.set_size(0);
    builder
        .append_data(&mut marker, "opaque/.wh..wh..opq", &[][..])
        .unwrap();
    let layer = builder.into_inner().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    sn.extract_layer("o", None, &layer[..], None).unwrap();
    let value = common::get_xattr(&sn.fs_path("o").join("opaque"), b"trusted.overlay.opaque");
    assert_eq!(value.as_deref(), Some(&b"y"[..]));
    assert!(!sn.fs_path("o").join("opaque/.wh..wh..opq").exists());
}

fn deep_chain(sn: &Snapshotter, depth: usize) {
    let mut parent: Option<String> = None;
    for i in 0..depth {
        let id = format!("layer-with-a-long-identifier-to-make-paths-long-{i:04}");
        let dir = sn.root().join(format!("in-{i}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(format!("file-{i}")), i.to_string()).unwrap();
        sn.import_directory(&id, parent.as_deref(), &dir).unwrap();
        parent = Some(id);
    }
    sn.prepare("top", parent.as_deref()).unwrap();
    let mount = sn.mount("top").unwrap();
    for i in 0..depth {
        assert_eq!(
            fs::read_to_string(mount.path().join(format!("file-{i}"))).unwrap(),
            i.to_string()
        );
    }
    fs::write(mount.path().join("written"), "on top").unwrap();
    drop(mount);
    assert_eq!(
        fs::read_to_string(sn.fs_path("top").join("written")).unwrap(),
        "on top"
    );
}

#[test]
fn a_chain_of_150_layers_mounts_with_the_new_mount_api() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    // 150 lower paths of ~120 bytes: far past the 4 KiB of a mount(2) option string.
    assert!(
        150 * sn
            .fs_path("layer-with-a-long-identifier-to-make-paths-long-0000")
            .as_os_str()
            .len()
            > 4096
    );
    deep_chain(&sn, 150);
}

#[test]
fn a_chain_of_150_layers_mounts_with_short_paths_on_the_legacy_api() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    sn.use_legacy_mounts();
    deep_chain(&sn, 150);
}

#[test]
fn lifecycle_states_and_removal() {
    let tmp = tempfile::tempdir().unwrap();
    for driver in [Driver::Overlay, Driver::Copy] {
        let sn = Snapshotter::with_driver(tmp.path().join(format!("{driver:?}")), driver).unwrap();
        base(&sn, "base");
        assert!(matches!(
            sn.prepare("base", None),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(sn.prepare("../x", None), Err(Error::InvalidId(_))));
        assert!(matches!(
            sn.prepare("x", Some("nope")),
            Err(Error::NotFound(_))
        ));
        sn.prepare("work", Some("base")).unwrap();
        assert!(matches!(
            sn.prepare("x", Some("work")),
            Err(Error::WrongState { .. })
        ));
        let mount = sn.mount("work").unwrap();
        if driver == Driver::Overlay {
            assert!(matches!(
                sn.commit("work", "done"),
                Err(Error::WrongState { .. })
            ));
        }
        drop(mount);
        sn.commit("work", "done").unwrap();
        let listed: Vec<_> = sn
            .list()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        assert_eq!(
            listed,
            [
                ("base".to_string(), State::Committed),
                ("done".to_string(), State::Committed)
            ]
        );
        assert!(matches!(sn.remove("base"), Err(Error::HasChildren { .. })));
        sn.remove("done").unwrap();
        sn.remove("base").unwrap();
        assert!(sn.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(sn.root().join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn cleanup_unmounts_and_removes_what_a_killed_process_left() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    base(&sn, "base");
    sn.prepare("step", Some("base")).unwrap();
    // A process killed mid-step never drops its guard.
    std::mem::forget(sn.mount("step").unwrap());
    let merged = sn.root().join("s/step/merged");
    assert!(merged.join("etc/passwd").exists());
    // A dead process's half-made snapshot (pid 0 never runs a strata).
    fs::create_dir_all(sn.root().join("tmp/0-1-2/fs")).unwrap();
    // Another command that is still running (pid 1 always is) keeps its mount and temporaries.
    sn.prepare("other", Some("base")).unwrap();
    let other = sn.mount("other").unwrap();
    fs::write(sn.root().join("s/other/mount-pid"), "1").unwrap();
    fs::create_dir_all(sn.root().join("tmp/1-1-2/fs")).unwrap();

    let report = sn.cleanup().unwrap();
    assert_eq!(report.unmounted, vec![merged.clone()]);
    assert_eq!(
        report.removed_temporaries,
        vec![sn.root().join("tmp/0-1-2")]
    );
    assert!(!merged.join("etc/passwd").exists());
    assert!(other.path().join("etc/passwd").exists());
    assert!(sn.root().join("tmp/1-1-2/fs").exists());
    sn.commit("step", "after").unwrap();
}

#[test]
fn open_picks_overlay_here_honours_strata_snapshotter_and_remembers_the_driver() {
    let tmp = tempfile::tempdir().unwrap();
    // The only test that reads the variable; it sets it for its own child process.
    if std::env::var("STRATA_SNAPSHOTTER_CHILD").is_ok() {
        return;
    }
    let sn = Snapshotter::open(tmp.path().join("auto")).unwrap();
    assert_eq!(sn.driver(), Driver::Overlay);
    let forced = tmp.path().join("forced");
    let child = |driver: &str, expect: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "forced_driver_child", "--nocapture"])
            .env("STRATA_SNAPSHOTTER", driver)
            .env("STRATA_TEST_ROOT", &forced)
            .env("STRATA_TEST_EXPECT", expect)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}"
        );
    };
    child("copy", "copy");
    // Without the variable, a later process keeps the driver the root was made with...
    assert_eq!(Snapshotter::open(&forced).unwrap().driver(), Driver::Copy);
    // ...and asking for the other one while copy snapshots exist is refused.
    child("overlay", "mismatch");
}

#[test]
fn forced_driver_child() {
    // Runs for real only as the child of the test above, which sets these variables.
    let (Ok(root), Ok(expect)) = (
        std::env::var("STRATA_TEST_ROOT"),
        std::env::var("STRATA_TEST_EXPECT"),
    ) else {
        return;
    };
    match expect.as_str() {
        "copy" => {
            let sn = Snapshotter::open(root).unwrap();
            assert_eq!(sn.driver(), Driver::Copy);
            sn.prepare("work", None).unwrap();
            sn.commit("work", "made-by-copy").unwrap();
        }
        _ => match Snapshotter::open(root) {
            Err(strata_snapshotter::Error::DriverMismatch {
                recorded,
                requested,
                ..
            }) => {
                assert_eq!((recorded, requested), (Driver::Copy, Driver::Overlay));
            }
            other => panic!(
                "expected a driver mismatch, got {:?}",
                other.map(|s| s.driver())
            ),
        },
    }
}

#[test]
fn many_opening_a_new_root_at_once_all_succeed() {
    // Every opener of a new root records the driver; they used to share one temporary file, and
    // whoever renamed it second failed ("renaming to .../driver: No such file or directory").
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let root = tmp.path().join(format!("root{round}"));
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    barrier.wait();
                    let sn = Snapshotter::open(&root).unwrap();
                    assert_eq!(sn.driver(), Driver::Overlay);
                });
            }
        });
        assert_eq!(
            std::fs::read_to_string(root.join("driver")).unwrap(),
            "overlay"
        );
    }
}

/// `docker diff`'s changes of an active snapshot: the same for both drivers (an overlay upper
/// directory with whiteouts and an opaque directory, a whole copied tree), a directory with
/// changes below it changed, in a fixed order; skipped paths hide what is below them.
#[test]
fn docker_changes_agree_for_both_drivers() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = [
        "C /etc",
        "C /etc/conf.d",
        "D /etc/conf.d/a",
        "D /etc/conf.d/b",
        "A /etc/conf.d/c",
        "C /etc/passwd",
        "D /to-delete",
        "C /tool",
        "A /usr",
        "A /usr/bin",
        "A /usr/bin/app",
        "A /usr/bin/app-link",
        "A /usr/bin/app2",
        "C /var",
        "D /var/cache",
    ];
    for driver in [Driver::Overlay, Driver::Copy] {
        let sn = Snapshotter::with_driver(tmp.path().join(format!("{driver:?}")), driver).unwrap();
        base(&sn, "base");
        sn.prepare("step", Some("base")).unwrap();
        let mount = sn.mount("step").unwrap();
        run_step(mount.path());
        let text = |skip: &dyn Fn(&Path) -> bool| -> Vec<String> {
            sn.docker_changes("step", skip)
                .unwrap()
                .iter()
                .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
                .collect()
        };
        // While mounted (a running container) and after.
        assert_eq!(text(&|_| false), expected, "{driver:?}");
        drop(mount);
        assert_eq!(text(&|_| false), expected, "{driver:?}");
        let without_usr: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|c| !c.contains("/usr"))
            .collect();
        assert_eq!(text(&|p| p == Path::new("usr")), without_usr, "{driver:?}");
    }
}
