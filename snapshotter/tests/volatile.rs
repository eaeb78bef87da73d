//! Volatile snapshots: mounted with overlay's `volatile`, trusted only in the boot that wrote
//! them. A crash after a reboot is simulated the way it looks on disk: another boot id in the
//! snapshot's info.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use strata_snapshotter::{Diff, Driver, Error, LayerOptions, Snapshotter, State, write_layer};

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// A committed snapshot with one file, from a plain directory.
fn base(sn: &Snapshotter, id: &str, parent: Option<&str>) {
    let dir = sn.root().join(format!("import-{id}"));
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(id), id).unwrap();
    sn.import_directory(id, parent, &dir).unwrap();
}

/// The overlay mount options the kernel reports for the mount at `target`.
fn mount_options(target: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mounted", target.display()));
    let (_, after) = line.split_once(" - ").unwrap();
    after
        .split(' ')
        .nth(2)
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Whether the kernel reports a mount as volatile (`fsync=volatile` since 6.x, `volatile` before).
fn is_volatile(target: &Path) -> bool {
    mount_options(target)
        .iter()
        .any(|o| o == "volatile" || o == "fsync=volatile")
}

/// What a reboot after a crash makes of a volatile snapshot: its boot is not this one.
fn from_another_boot(sn: &Snapshotter, id: &str) {
    let path = sn.root().join("s").join(id).join("info");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("boot={}\n", boot_id())), "{text}");
    let other = "00000000-0000-4000-8000-000000000000";
    fs::write(&path, text.replace(&boot_id(), other)).unwrap();
}

fn snapshot_dir(sn: &Snapshotter, id: &str) -> PathBuf {
    sn.root().join("s").join(id)
}

#[test]
fn a_volatile_snapshot_is_mounted_volatile_and_keeps_its_boot_when_committed() {
    let tmp = tempfile::tempdir().unwrap();
    for legacy in [false, true] {
        let mut sn =
            Snapshotter::with_driver(tmp.path().join(format!("legacy-{legacy}")), Driver::Overlay)
                .unwrap();
        if legacy {
            sn.use_legacy_mounts();
        }
        base(&sn, "base", None);
        let info = sn.prepare_volatile("step", Some("base")).unwrap();
        assert_eq!(info.boot_id.as_deref(), Some(boot_id().as_str()));
        assert_eq!(sn.info("step").unwrap(), info);

        let mount = sn.mount("step").unwrap();
        assert!(is_volatile(mount.path()));
        fs::write(mount.path().join("new"), "new").unwrap();
        mount.unmount().unwrap();
        let incompat = snapshot_dir(&sn, "step").join("work/work/incompat/volatile");
        assert!(incompat.exists(), "overlay marks its work directory");
        // Overlay refuses that work directory until the mark is gone: mount does that.
        let again = sn.mount("step").unwrap();
        assert_eq!(fs::read(again.path().join("new")).unwrap(), b"new");
        assert_eq!(fs::read(again.path().join("base")).unwrap(), b"base");
        drop(again);

        let committed = sn.commit("step", "done").unwrap();
        assert_eq!(committed.state, State::Committed);
        assert_eq!(committed.boot_id.as_deref(), Some(boot_id().as_str()));
        assert_eq!(sn.info("done").unwrap(), committed);
        assert!(!snapshot_dir(&sn, "done").join("work").exists());
        let view = sn.view("done").unwrap();
        assert_eq!(fs::read(view.path().join("new")).unwrap(), b"new");
        drop(view);

        // An ordinary snapshot: no mark, no option.
        let info = sn.prepare("plain", Some("done")).unwrap();
        assert_eq!(info.boot_id, None);
        let mount = sn.mount("plain").unwrap();
        assert!(!is_volatile(mount.path()));
        drop(mount);
        assert_eq!(sn.commit("plain", "plain-done").unwrap().boot_id, None);

        // Removing an active snapshot after a volatile mount leaves nothing behind.
        sn.prepare_volatile("dropped", Some("base")).unwrap();
        drop(sn.mount("dropped").unwrap());
        sn.remove("dropped").unwrap();
        assert!(!snapshot_dir(&sn, "dropped").exists());
        assert_eq!(fs::read_dir(sn.root().join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn the_copy_driver_records_the_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Copy).unwrap();
    base(&sn, "base", None);
    sn.prepare_volatile("step", Some("base")).unwrap();
    let mount = sn.mount("step").unwrap();
    fs::write(mount.path().join("new"), "new").unwrap();
    drop(mount);
    let committed = sn.commit("step", "done").unwrap();
    assert_eq!(committed.boot_id.as_deref(), Some(boot_id().as_str()));
    from_another_boot(&sn, "done");
    assert!(matches!(sn.info("done"), Err(Error::NotFound(_))));
    assert!(!snapshot_dir(&sn, "done").exists());
}

#[test]
fn a_snapshot_of_another_boot_reads_as_absent_and_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    base(&sn, "base", None);
    sn.prepare_volatile("step", Some("base")).unwrap();
    let mount = sn.mount("step").unwrap();
    fs::write(mount.path().join("made-by-step"), "x").unwrap();
    drop(mount);
    sn.commit("step", "run").unwrap();
    // A durable snapshot on top of it (a container's writable layer, a COPY result).
    base(&sn, "child", Some("run"));
    from_another_boot(&sn, "run");

    assert!(matches!(sn.info("run"), Err(Error::NotFound(_))));
    assert!(!snapshot_dir(&sn, "run").exists());
    assert_eq!(fs::read_dir(sn.root().join("tmp")).unwrap().count(), 0);
    let listed: Vec<_> = sn.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, ["base", "child"]);
    // The child itself is trusted, but its chain is broken until the parent is made again.
    assert_eq!(sn.info("child").unwrap().parent.as_deref(), Some("run"));
    assert!(matches!(sn.view("child"), Err(Error::NotFound(id)) if id == "run"));
    assert!(matches!(
        sn.prepare("next", Some("run")),
        Err(Error::NotFound(_))
    ));

    // Made again under the same id (from its layer, in real life), the chain is whole.
    base(&sn, "run", Some("base"));
    let view = sn.view("child").unwrap();
    for name in ["base", "run", "child"] {
        assert!(view.path().join(name).exists(), "{name}");
    }
    drop(view);
}

#[test]
fn an_extracted_layer_is_volatile_and_extracted_again_after_a_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path().join("sn"), Driver::Overlay).unwrap();
    let content = tmp.path().join("content");
    fs::create_dir(&content).unwrap();
    fs::write(content.join("file"), "from the layer").unwrap();
    let mut blob = Vec::new();
    let layer = write_layer(
        &Diff::directory(&content),
        &LayerOptions::default(),
        &mut blob,
    )
    .unwrap();
    let extract = || sn.ensure_layer("layer", None, &layer.diff_id, || Ok(&blob[..]));

    assert!(extract().unwrap(), "extracted the first time");
    let info = sn.info("layer").unwrap();
    assert_eq!(info.boot_id.as_deref(), Some(boot_id().as_str()));
    assert!(!extract().unwrap(), "there already in this boot");

    // A power loss left the file empty; after the reboot the layer is extracted again.
    from_another_boot(&sn, "layer");
    fs::write(snapshot_dir(&sn, "layer").join("fs/file"), "").unwrap();
    assert!(extract().unwrap(), "extracted again");
    assert_eq!(
        fs::read_to_string(snapshot_dir(&sn, "layer").join("fs/file")).unwrap(),
        "from the layer"
    );
}

#[test]
fn an_empty_info_is_a_volatile_snapshot_lost_in_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    base(&sn, "base", None);
    sn.prepare_volatile("step", Some("base")).unwrap();
    sn.commit("step", "run").unwrap();
    // Delayed allocation after a power loss: the file is there, its content never was.
    fs::write(snapshot_dir(&sn, "run").join("info"), "").unwrap();
    assert!(matches!(sn.info("run"), Err(Error::NotFound(_))));
    assert!(!snapshot_dir(&sn, "run").exists());

    // A durable snapshot's info is synced before it appears: anything wrong with it is an
    // error, and its files stay.
    fs::write(snapshot_dir(&sn, "base").join("info"), "state=unknown\n").unwrap();
    assert!(
        sn.info("base")
            .is_err_and(|e| e.to_string().contains("malformed"))
    );
    assert!(snapshot_dir(&sn, "base").join("fs/base").exists());
}

#[test]
fn every_reader_and_writer_passes_over_a_stale_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    base(&sn, "base", None);
    let stale = |id: &str| {
        sn.prepare_volatile(id, Some("base")).unwrap();
        drop(sn.mount(id).unwrap());
        sn.commit(id, &format!("{id}-done")).unwrap();
        from_another_boot(&sn, &format!("{id}-done"));
    };
    // A step run again commits under the id of its stale snapshot.
    stale("a");
    sn.prepare_volatile("again", Some("base")).unwrap();
    assert!(sn.commit("again", "a-done").is_ok());
    assert!(sn.info("a-done").is_ok());
    // Extracting and preparing take its place too.
    stale("b");
    base(&sn, "b-done", Some("base"));
    assert_eq!(sn.info("b-done").unwrap().boot_id, None);
    stale("c");
    sn.prepare("c-done", Some("base")).unwrap();
    assert_eq!(sn.info("c-done").unwrap().state, State::Active);
    stale("d");
    assert!(matches!(sn.mount("d-done"), Err(Error::NotFound(_))));
    stale("e");
    assert!(matches!(sn.remove("e-done"), Err(Error::NotFound(_))));
    assert!(!snapshot_dir(&sn, "e-done").exists());
    // Stale active snapshots go too.
    sn.prepare_volatile("active", Some("base")).unwrap();
    from_another_boot(&sn, "active");
    assert!(matches!(sn.mount("active"), Err(Error::NotFound(_))));
    assert!(!snapshot_dir(&sn, "active").exists());
}

#[test]
fn openers_removing_the_same_stale_snapshots_at_once_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let sn = Snapshotter::with_driver(tmp.path(), Driver::Overlay).unwrap();
    base(&sn, "base", None);
    let ids: Vec<String> = (0..20).map(|n| format!("stale-{n}")).collect();
    for id in &ids {
        sn.prepare_volatile("step", Some("base")).unwrap();
        sn.commit("step", id).unwrap();
        from_another_boot(&sn, id);
    }
    let openers = 4;
    let barrier = Arc::new(Barrier::new(openers));
    let threads: Vec<_> = (0..openers)
        .map(|n| {
            let (root, ids, barrier) = (tmp.path().to_path_buf(), ids.clone(), barrier.clone());
            std::thread::spawn(move || {
                let sn = Snapshotter::with_driver(root, Driver::Overlay).unwrap();
                barrier.wait();
                // Half read each snapshot, half list them all.
                if n % 2 == 0 {
                    for id in &ids {
                        assert!(matches!(sn.info(id), Err(Error::NotFound(_))), "{id}");
                    }
                } else {
                    let listed: Vec<_> = sn.list().unwrap().into_iter().map(|s| s.id).collect();
                    assert_eq!(listed, ["base"]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for id in &ids {
        assert!(!snapshot_dir(&sn, id).exists());
    }
    assert_eq!(fs::read_dir(sn.root().join("tmp")).unwrap().count(), 0);
}
