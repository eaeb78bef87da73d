//! The same spec under strata's sandbox and under runc gives the same result.

mod runtime_support;

use std::process::Command;

use runtime_support::{Rootfs, STRATA};

const SCRIPT: &str = "id; hostname; \
    grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
    ls /dev | sort | tr '\\n' ' '; echo; \
    tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
    wc -c < /proc/keys; ls /sys/firmware | wc -l; \
    touch /proc/sys/kernel/x 2>/dev/null || echo proc-sys-read-only; \
    unshare -U true 2>/dev/null || echo unshare-refused; \
    ulimit -n; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; cat /etc/passwd | head -1; exit 7";

fn run_bundle(bundle: &std::path::Path, runtime: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(STRATA);
    cmd.args(["debug", "run-bundle"]);
    if let Some(runtime) = runtime {
        cmd.args([
            "--runtime",
            runtime,
            "--id",
            &format!("strata-runc-test-{}", std::process::id()),
        ]);
    }
    let out = cmd.arg(bundle).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_spec_gives_the_same_result_under_runc() {
    let rootfs = Rootfs::new();
    let bundle = tempfile::tempdir().unwrap();
    let spec = rootfs.spec(SCRIPT);
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let (strata_code, strata_out, strata_err) = run_bundle(bundle.path(), None);
    let (runc_code, runc_out, runc_err) = run_bundle(bundle.path(), Some("runc"));
    assert_eq!(strata_code, 7, "{strata_err}");
    assert_eq!(runc_code, 7, "{runc_err}");
    assert_eq!(
        strata_out, runc_out,
        "strata stderr: {strata_err}\nrunc stderr: {runc_err}"
    );
    // The comparison covers something: Docker's capabilities, seccomp on, only lo.
    assert!(
        strata_out.contains("CapEff:\t00000000a80425fb\n"),
        "{strata_out}"
    );
    assert!(strata_out.contains("Seccomp:\t2\n"));
    assert!(
        strata_out.contains("\nlo\n0\n0\nproc-sys-read-only\nunshare-refused\n"),
        "{strata_out}"
    );
}
