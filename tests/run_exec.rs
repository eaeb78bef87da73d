//! `strata exec`: a process that joins a running container's namespaces and cgroup, as the
//! container's user or another, with its own env and working directory.

mod run_support;
mod store_support;

use std::time::Duration;

use run_support::{Env, assert_terminal_follows_window_size, stdout};

#[test]
fn exec_joins_the_running_containers_namespaces_and_cgroup() {
    let env = Env::new();
    env.image("bb", &[]);
    let script = "echo marker > /tmp/marker; echo up; exec sleep 1000";
    env.ok(&[
        "run",
        "-d",
        "--name",
        "target",
        "--hostname",
        "inside",
        "-e",
        "FROM_RUN=1",
        "--memory",
        "64m",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    env.until("the container to start", Duration::from_secs(5), || {
        env.ok(&["logs", "target"]) == "up\n"
    });
    let init = env.inspect("target")["State"]["Pid"].as_i64().unwrap();
    let probe = "hostname; cat /tmp/marker; echo $FROM_RUN $EXTRA; pwd; id -u; \
                 ps -o pid,args | awk '$2 == \"sleep\" {print $1}'; grep :memory: /proc/self/cgroup; grep :memory: /proc/1/cgroup";
    let out = env.ok(&[
        "exec", "-e", "EXTRA=2", "-w", "/tmp", "target", "sh", "-c", probe,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    // uts, mount (the container's files), env, cwd, user, pid namespace (the container's
    // command is PID 2 under its init there).
    assert_eq!(
        &lines[..6],
        ["inside", "marker", "1 2", "/tmp", "0", "2"],
        "{out}"
    );
    // The container's memory cgroup: the exec'd process sees it as its init does (the root of
    // the container's cgroup namespace); a process outside it would see a `/..` path.
    assert_eq!(lines[6], lines[7], "{out}");
    assert!(lines[6].ends_with(":memory:/"), "{out}");
    let init_cgroup = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(init_cgroup.contains("/strata/"), "{init_cgroup}");
    // Another user, and exit codes pass through.
    assert_eq!(
        env.ok(&["exec", "-u", "65534", "target", "id", "-u"]),
        "65534\n"
    );
    let out = env.output(&["exec", "target", "sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42));
    let out = env.output(&["exec", "target", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(127));
    // stdin with -i.
    let mut child = env
        .cmd(&["exec", "-i", "target", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "piped in\n");
    // A terminal with -t (no stdin: its output is read back).
    let out = env.ok(&["exec", "-t", "target", "sh", "-c", "tty; echo $TERM"]);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.contains("xterm"), "{out:?}");
    // The container's own state is untouched; a stopped container refuses exec.
    assert_eq!(env.inspect("target")["State"]["Running"], true);
    env.ok(&["stop", "-t", "1", "target"]);
    let (_, err) = env.fails(&["exec", "target", "true"]);
    assert!(err.contains("is not running"), "{err}");
}

/// `strata exec -t` on a terminal: the exec'd terminal starts at our terminal's size and follows
/// when ours is resized, as with `docker exec -t`.
#[test]
fn a_terminal_exec_follows_the_callers_window_size() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["run", "-d", "--name", "target", "bb", "sleep", "1000"]);
    assert_terminal_follows_window_size(&env, &["exec", "-t", "target"]);
}
