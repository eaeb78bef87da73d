//! Crash safety and concurrency of the store through the real binary: strata processes killed
//! with SIGKILL at random points of `load` and `import` leave a store the next command uses
//! without repair, and concurrent `tag`/`import`/`rmi` loops lose nothing.

mod store_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use store_support::{Root, busybox_tar, check_consistent};

/// The busybox rootfs plus 16 MiB of incompressible data, so import and load take long enough
/// to be killed in the middle.
fn big_rootfs(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("big.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut busybox = tar::Archive::new(std::fs::File::open(busybox_tar()).unwrap());
    for entry in busybox.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        b.append(&header, &mut entry).unwrap();
    }
    let mut rng = rand::rng();
    for i in 0..4 {
        let mut data = vec![0u8; 4 << 20];
        rng.fill(&mut data[..]);
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("data/blob{i}")).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
    path
}

#[test]
fn sigkill_during_load_and_import_leaves_a_usable_store() {
    let tmp = tempfile::tempdir().unwrap();
    let big = big_rootfs(tmp.path());
    // An archive to load, made by a store of its own.
    let src = Root::new();
    src.strata()
        .args(["import", big.to_str().unwrap(), "big:src"])
        .assert()
        .success();
    let archive = tmp.path().join("big-archive.tar");
    src.strata()
        .args(["save", "-o", archive.to_str().unwrap(), "big:src"])
        .assert()
        .success();

    // How long each takes here, so the kills land inside the runs on any machine.
    let scratch = Root::new();
    let timed = |args: &[&str]| {
        let start = Instant::now();
        scratch.strata().args(args).assert().success();
        start.elapsed().as_millis() as u64
    };
    let load_ms = timed(&["load", "-i", archive.to_str().unwrap()]);
    let import_ms = timed(&["import", big.to_str().unwrap(), "timed"]);

    let root = Root::new();
    root.import_busybox("survivor");
    let ingest_files = || {
        std::fs::read_dir(root.path().join("ingest"))
            .unwrap()
            .count()
    };
    // Each run is killed at a random moment of its measured duration, or completes. Runs go on
    // until enough of them were killed, and enough of those while writing a blob (a temporary
    // file left in `ingest/`), so a fast or slow moment of the machine cannot make the test
    // pass without killing anything mid-way.
    let mut rng = rand::rng();
    let (mut killed, mut killed_writing) = (0, 0);
    for i in 0..64 {
        if killed >= 6 && killed_writing >= 2 {
            break;
        }
        let mut cmd = root.strata_process();
        let duration = if i % 2 == 0 {
            cmd.args(["load", "-i", archive.to_str().unwrap()]);
            load_ms
        } else {
            cmd.args(["import", big.to_str().unwrap(), &format!("imported:{i}")]);
            import_ms
        };
        let leftovers = ingest_files();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..duration.max(1))));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        if ingest_files() > leftovers {
            killed_writing += 1;
        }
        // The next commands work without any repair step, and everything named is whole.
        root.strata().arg("images").assert().success();
        check_consistent(&root.path());
        assert!(root.store().resolve("survivor").is_ok());
    }
    assert!(
        killed >= 6 && killed_writing >= 2,
        "of 64 runs {killed} were killed, {killed_writing} of them while writing a blob"
    );

    // Completed runs work, and collection clears what the killed ones left behind.
    root.strata()
        .args(["load", "-i", archive.to_str().unwrap()])
        .assert()
        .success();
    root.strata()
        .args(["import", big.to_str().unwrap(), "imported:final"])
        .assert()
        .success();
    root.strata()
        .args(["image", "prune", "-f"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_dir(root.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );
    check_consistent(&root.path());
    for name in ["survivor", "big:src", "imported:final"] {
        assert!(root.store().resolve(name).is_ok(), "{name}");
    }
}

#[test]
fn concurrent_tag_import_rmi_loops_lose_nothing() {
    let root = Root::new();
    let base = root.import_busybox("base");
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let strata = |args: Vec<String>| {
        let out = std::process::Command::new(&bin)
            .env("STRATA_ROOT", root.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tar = busybox_tar().to_str().unwrap().to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..4 {
                strata(vec![
                    "import".into(),
                    tar.clone(),
                    format!("loop-import:{i}"),
                    "-m".into(),
                    format!("{i}"),
                ]);
            }
        });
        s.spawn(|| {
            for i in 0..12 {
                strata(vec!["tag".into(), base.clone(), format!("loop-tag:{i}")]);
            }
        });
        s.spawn(|| {
            for i in 0..8 {
                strata(vec!["tag".into(), "base".into(), format!("loop-rmi:{i}")]);
                strata(vec!["rmi".into(), format!("loop-rmi:{i}")]);
            }
        });
    });
    let store = root.store();
    for i in 0..4 {
        assert!(
            store.resolve(&format!("loop-import:{i}")).is_ok(),
            "loop-import:{i} lost"
        );
    }
    for i in 0..12 {
        assert_eq!(
            store
                .resolve(&format!("loop-tag:{i}"))
                .unwrap()
                .id()
                .to_string(),
            base
        );
    }
    for i in 0..8 {
        assert!(
            store.resolve(&format!("loop-rmi:{i}")).is_err(),
            "loop-rmi:{i} came back"
        );
    }
    // base + 4 imports + 12 tags.
    assert_eq!(check_consistent(&root.path()), 17);
}
