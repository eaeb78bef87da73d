//! The open-file limit a build runs under. strata raises its soft limit to the hard one at start,
//! as dockerd and buildkitd do: a RUN step sees soft equal to hard (as under BuildKit), and the
//! layer writer, which holds a descriptor per level of a tree, writes a tree deeper than the
//! common soft limit of 1,024.

mod build_support;

use std::os::unix::process::CommandExt;

use build_support::{Root, ok, run_image, write};

const DEPTH: usize = 1_200;
const SOFT: libc::rlim_t = 1024;

#[test]
fn a_build_under_a_soft_limit_of_1024_gets_the_hard_limit_and_writes_a_deep_tree() {
    // The hard limit is the caller's (raising it needs CAP_SYS_RESOURCE, which a container's root
    // may lack); it must leave room for the tree, or the test would prove nothing.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) into a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
    let hard = own.rlim_max;
    assert!(
        hard >= 4 * DEPTH as libc::rlim_t,
        "this test needs a hard open-file limit of at least {} (`ulimit -Hn` is {hard})",
        4 * DEPTH
    );
    let root = Root::with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM busybox
RUN ulimit -n > /soft && ulimit -Hn > /hard
RUN p=/deep; for i in $(seq 1 {DEPTH}); do p=$p/d; done; mkdir -p $p && echo bottom > $p/f
"
        ),
    );
    let mut build = root.strata();
    build.args([
        "build",
        "--progress=json",
        "-t",
        "deep",
        ctx.path().to_str().unwrap(),
    ]);
    // SAFETY: setrlimit(2) is async-signal-safe; the closure touches nothing else.
    unsafe {
        build.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: SOFT,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    ok(&build.output().unwrap());

    let shell = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let (code, out, all) = run_image(&root, "deep", &shell("cat /soft /hard"));
    assert_eq!(code, 0, "{all}");
    assert_eq!(out, format!("{hard}\n{hard}\n"), "the RUN step's limits");

    let (code, out, all) = run_image(&root, "deep", &shell("find /deep -name f | xargs cat"));
    assert_eq!(code, 0, "{all}");
    assert_eq!(out, "bottom\n", "{all}");
    let (_, out, _) = run_image(&root, "deep", &shell("find /deep -type d | wc -l"));
    assert_eq!(
        out.trim(),
        (DEPTH + 1).to_string(),
        "/deep and its {DEPTH} levels"
    );
}
