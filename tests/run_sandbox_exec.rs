//! The runtime's join mode (`Sandbox::exec`), which `strata exec` is built on: a process started
//! in a running container's namespaces and cgroup, with its own stdio, user and status.

mod runtime_support;

use std::io::Read;
use std::os::fd::AsFd;

use runtime_support::{Rootfs, STRATA};
use strata_runtime::spec::{Limits, set_limits};
use strata_runtime::{Sandbox, StdioSet};

#[test]
fn exec_joins_a_running_container() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("echo inside > /tmp/mark; exec sleep 100");
    set_limits(
        &mut spec,
        &Limits {
            pids: Some(64),
            ..Limits::default()
        },
    );
    let sandbox = Sandbox::new(STRATA);
    let container = sandbox.spawn(&spec, StdioSet::piped()).unwrap();
    let init = container.pidfd().unwrap();

    let mut probe = rootfs.spec(
        "until test -e /tmp/mark; do sleep 0.01; done; hostname; cat /tmp/mark; echo $$; \
         cat /sys/fs/cgroup/pids/pids.max; id -u; grep :pids: /proc/self/cgroup; exit 5",
    );
    let mut process = probe.process().clone().unwrap();
    let mut user = process.user().clone();
    user.set_uid(1000);
    user.set_gid(1000);
    process.set_user(user);
    probe.set_process(Some(process));
    let mut exec = sandbox
        .exec(init.as_fd(), &probe, StdioSet::piped())
        .unwrap();
    let mut out = String::new();
    exec.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let exit = exec.wait().unwrap();
    assert_eq!(exit.status.code, 5, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // The container's hostname and files; a pid of the container's pid namespace (init is 1,
    // its command 2); the container's pids cgroup and its limit; the requested user.
    assert_eq!(lines[0], "sandbox");
    assert_eq!(lines[1], "inside");
    let pid: i32 = lines[2].parse().unwrap();
    assert!(
        pid > 2 && pid < 100,
        "pid in the container's namespace: {pid}"
    );
    assert_eq!(lines[3], "64");
    assert_eq!(lines[4], "1000");
    // In the container's pids cgroup: the root of its cgroup namespace (outside it would read
    // as a `/..` path).
    assert!(lines[5].ends_with(":pids:/"), "{out}");

    // A terminal.
    let mut tty = rootfs.spec("tty");
    let mut process = tty.process().clone().unwrap();
    process.set_terminal(Some(true));
    tty.set_process(Some(process));
    let mut exec = sandbox.exec(init.as_fd(), &tty, StdioSet::piped()).unwrap();
    let mut pty = exec.pty.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = pty.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(exec.wait().unwrap().status.code, 0);
    assert!(String::from_utf8_lossy(&seen).starts_with("/dev/pts/"));

    // An executable that is not there: Docker's 127 and message.
    let missing = rootfs.spec("x");
    let mut process = missing.process().clone().unwrap();
    process.set_args(Some(vec!["/no/such".into()]));
    let mut missing = missing;
    missing.set_process(Some(process));
    let exit = sandbox
        .exec(init.as_fd(), &missing, StdioSet::piped())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(exit.status.code, 127);
    assert!(exit.exec_error.unwrap().contains("no such file"));
    drop(container);
}
