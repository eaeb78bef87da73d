//! A build step's snapshot and an extracted base layer's are volatile (never synced) and trusted
//! only in the boot that wrote them. A crash and reboot are simulated as they look on disk
//! afterwards: another boot id in the base's and the first RUN's snapshots, the base's busybox
//! empty and most of the RUN's files gone. Builds, `strata run` and a container made before the
//! "reboot" must all see the complete files, unpacked again from the layer blobs.

mod build_support;

use std::fs;
use std::path::{Path, PathBuf};

use build_support::{Root, cached, ok, run_image, text, write};
use strata_snapshotter::{chain_ids, chain_snapshot_id};
use strata_store::Digest;

const FIRST: &str = "FROM busybox
RUN mkdir /data && for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > /data/f$i; done
RUN echo second > /second
";

const LISTING: &str = "ls /data | tr '\\n' ' '";

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// The snapshot directories of an image's layer stack, base first.
fn snapshot_dirs(root: &Root, reference: &str) -> Vec<PathBuf> {
    let image = root.store().resolve(reference).unwrap();
    let diff_ids: Vec<Digest> = image
        .diff_ids()
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
    chain_ids(&diff_ids)
        .iter()
        .map(|c| root.path().join("snapshots/s").join(chain_snapshot_id(c)))
        .collect()
}

/// What a reboot makes of a volatile snapshot: its boot is not this one.
fn from_another_boot(snapshot: &Path) {
    let info = snapshot.join("info");
    let text = fs::read_to_string(&info).unwrap();
    assert!(text.contains(&format!("boot={}\n", boot_id())), "{text}");
    fs::write(
        &info,
        text.replace(&boot_id(), "00000000-0000-4000-8000-000000000000"),
    )
    .unwrap();
}

fn complete_listing() -> String {
    let mut names: Vec<String> = (1..=10).map(|i| format!("f{i}")).collect();
    names.sort();
    names.iter().map(|n| format!("{n} ")).collect()
}

/// A store where `volatile:one` (FIRST) was built and a container `before` made from it,
/// then the machine crashed and rebooted. Returns the context directory too.
fn after_a_crash() -> (Root, tempfile::TempDir) {
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", FIRST);
    ok(&root.build_json(&["-t", "volatile:one", ctx.path().to_str().unwrap()]));
    let snapshots = snapshot_dirs(&root, "volatile:one");
    let [base, first_run, second_run] = &snapshots[..] else {
        panic!("{snapshots:?}")
    };
    // The base image's snapshot (extracted) and the RUN steps' are all volatile.
    for snapshot in [base, first_run, second_run] {
        let info = fs::read_to_string(snapshot.join("info")).unwrap();
        assert!(info.contains(&format!("boot={}", boot_id())), "{info}");
    }
    // Its writable snapshot sits on the RUN snapshots.
    let created = root
        .strata()
        .args([
            "create",
            "--name",
            "before",
            "--network",
            "none",
            "volatile:one",
        ])
        .args(["sh", "-c", LISTING])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    // The power loss: the base's busybox (every command) is left empty, as delayed allocation
    // leaves a file never written back, and the first RUN lost most of its files.
    from_another_boot(base);
    fs::File::create(base.join("fs/bin/busybox")).unwrap();
    from_another_boot(first_run);
    for i in 3..=10 {
        fs::remove_file(first_run.join(format!("fs/data/f{i}"))).unwrap();
    }
    (root, ctx)
}

#[test]
fn a_build_on_top_mounts_the_whole_chain_again() {
    let (root, ctx) = after_a_crash();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{FIRST}RUN {LISTING} > /listing\n"),
    );
    let events = ok(&root.build_json(&["-t", "volatile:two", ctx.path().to_str().unwrap()]));
    assert_eq!(cached(&events).len(), 2, "the two RUN steps are cache hits");
    let (code, out, all) = run_image(&root, "volatile:two", &["cat".into(), "/listing".into()]);
    assert_eq!(
        (code, out.as_str()),
        (0, complete_listing().as_str()),
        "{all}"
    );
}

#[test]
fn strata_run_unpacks_the_image_again() {
    let (root, _ctx) = after_a_crash();
    let (code, out, all) = run_image(
        &root,
        "volatile:one",
        &["sh".into(), "-c".into(), LISTING.into()],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, complete_listing().as_str()),
        "{all}"
    );
}

#[test]
fn a_container_made_before_starts_on_the_whole_chain() {
    let (root, _ctx) = after_a_crash();
    let started = root
        .strata()
        .args(["start", "-a", "before"])
        .output()
        .unwrap();
    assert_eq!(
        (started.status.code(), text(&started.stdout)),
        (Some(0), complete_listing()),
        "{}",
        text(&started.stderr)
    );
    let removed = root.strata().args(["rm", "before"]).output().unwrap();
    assert!(removed.status.success(), "{}", text(&removed.stderr));
}
