//! Detached containers: their monitor outlives the starting process, `logs -f` follows them,
//! `stop` honours STOPSIGNAL and `-t`, and a killed monitor leaves a state `ps`/`rm` clean up.

mod run_support;
mod store_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use run_support::Env;

/// A command that prints a line every 50 ms.
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done";

#[test]
fn detached_logs_follow_then_stop_honours_stopsignal_and_timeout() {
    let env = Env::new();
    env.image(
        "sig",
        &[
            "STOPSIGNAL SIGUSR1",
            r#"CMD ["sh", "-c", "trap 'echo got usr1; exit 3' USR1; echo ready; while true; do sleep 0.05; done"]"#,
        ],
    );
    let id = env
        .ok(&["run", "-d", "--name", "svc", "sig"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    // logs -f streams what the container writes and ends when it stops.
    let mut follow = env
        .cmd(&["logs", "-f", "svc"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // STOPSIGNAL: the trap ends the container at once, far within the default 10 s.
    let started = Instant::now();
    assert_eq!(env.ok(&["stop", "svc"]).trim(), "svc");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(lines.next().unwrap().unwrap(), "got usr1");
    assert!(lines.next().is_none(), "logs -f ends with the container");
    assert!(follow.wait().unwrap().success());
    let state = env.inspect("svc")["State"].clone();
    assert_eq!(
        (state["Status"].as_str(), state["ExitCode"].as_i64()),
        (Some("exited"), Some(3))
    );
    assert_eq!(env.ok(&["wait", "svc"]).trim(), "3");

    // A command that ignores the stop signal is killed after -t seconds.
    env.image("plain", &[]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "plain",
        "sh",
        "-c",
        "trap '' TERM; echo up; while true; do sleep 0.05; done",
    ]);
    env.until("the container to start", Duration::from_secs(5), || {
        env.ok(&["logs", "stubborn"]) == "up\n"
    });
    let started = Instant::now();
    env.ok(&["stop", "-t", "1", "stubborn"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "stop -t 1 took {took:?}"
    );
    assert_eq!(env.inspect("stubborn")["State"]["ExitCode"], 137);

    // rm removes the containers, their snapshots and their log.
    let (_, err) = env.fails(&["stop", "nobody"]);
    assert!(err.contains("No such container"), "{err}");
    env.ok(&["rm", "svc", "stubborn"]);
    assert!(env.all_ids().is_empty());
    assert!(!env.path().join("containers").join(&id).exists());
    assert!(
        !env.path()
            .join(format!("snapshots/s/container-{id}"))
            .exists()
    );
}

#[test]
fn a_container_outlives_its_starter_and_later_commands_see_it() {
    let env = Env::new();
    env.image("bb", &[]);
    // The starter runs in its own process group, which is killed whole once it returned.
    let starter = env
        .cmd(&["run", "-d", "--name", "lasting", "bb", "sh", "-c", TICKER])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let group = starter.id() as i32;
    let starter = starter.wait_with_output().unwrap();
    assert!(starter.status.success());
    // SAFETY: kill(2) of the starter's process group (nothing of the container is in it).
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let id = String::from_utf8(starter.stdout)
        .unwrap()
        .trim()
        .to_string();
    let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap() as i32;
    let status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("PPid:") && !l.ends_with(&format!("\t{}", std::process::id()))),
        "the monitor is not a child of the test"
    );
    std::thread::sleep(Duration::from_millis(300));
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("lasting") && ps.contains("Up "), "{ps}");
    let logs = env.ok(&["logs", "--tail", "2", "-t", "lasting"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(lines[1].contains("Z tick "), "{logs}");
    // The log file is Docker's json-file format.
    let raw =
        std::fs::read_to_string(env.path().join(format!("containers/{id}/{id}-json.log"))).unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "tick 0\n");
    assert_eq!(first["stream"], "stdout");
    // restart gives the same container a new run.
    let before = env.inspect("lasting")["State"]["Pid"].clone();
    env.ok(&["restart", "-t", "0", "lasting"]);
    let after = env.inspect("lasting");
    assert_eq!(after["State"]["Running"], true);
    assert_ne!(after["State"]["Pid"], before);
    env.ok(&["rm", "-f", "lasting"]);
    // -d -i keeps stdin open: a shell waiting for input stays up (and -t gives it a terminal).
    env.ok(&["run", "-d", "-i", "--name", "shell", "bb", "sh"]);
    env.ok(&["run", "-d", "-i", "-t", "--name", "term", "bb", "sh"]);
    std::thread::sleep(Duration::from_millis(300));
    for name in ["shell", "term"] {
        assert_eq!(env.inspect(name)["State"]["Running"], true, "{name}");
    }
}

#[test]
fn a_killed_monitor_leaves_a_state_ps_and_rm_clean_up() {
    let env = Env::new();
    env.image("bb", &[]);
    let id = env
        .ok(&["run", "-d", "--name", "orphan", "bb", "sleep", "1000"])
        .trim()
        .to_string();
    let state = env.state(&id);
    let monitor = state["monitor_pid"].as_i64().unwrap() as i32;
    let init = state["pid"].as_i64().unwrap() as i32;
    let rootfs = state["rootfs"].as_str().unwrap().to_string();
    // SAFETY: kill(2) of the monitor this test started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
    // The container dies with its monitor (the sandbox helper sees the control socket close).
    env.until("the container to die", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{init}")).exists()
    });
    // state.json still says running; ps corrects it and unmounts the rootfs.
    assert_eq!(env.state(&id)["status"], "running");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    let state = env.inspect("orphan")["State"].clone();
    assert_eq!(state["Running"], false);
    assert!(
        state["Error"].as_str().unwrap().contains("monitor"),
        "{state}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&rootfs), "the rootfs is still mounted");
    // It can run again, and be removed.
    env.ok(&["start", "orphan"]);
    assert_eq!(env.inspect("orphan")["State"]["Running"], true);
    env.ok(&["kill", "orphan"]);
    env.ok(&["wait", "orphan"]);
    env.ok(&["rm", "orphan"]);
    assert!(env.all_ids().is_empty());
}

/// `rename`, running or not: the new name finds the container (logs, stop), the old one
/// nothing; a taken or the same name is refused as Docker words it.
#[test]
fn rename_a_running_and_a_stopped_container() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["run", "-d", "--name", "first", "bb", "sh", "-c", TICKER]);
    env.ok(&["create", "--name", "other", "bb", "true"]);
    env.ok(&["rename", "first", "renamed"]);
    let (_, err) = env.fails(&["logs", "first"]);
    assert!(err.contains("No such container: first"), "{err}");
    env.until("a log line", Duration::from_secs(10), || {
        env.ok(&["logs", "renamed"]).contains("tick 0")
    });
    assert!(env.ok(&["ps"]).contains("renamed"));
    let (_, err) = env.fails(&["rename", "renamed", "other"]);
    assert!(
        err.contains("The container name \"/other\" is already in use"),
        "{err}"
    );
    let (_, err) = env.fails(&["rename", "renamed", "renamed"]);
    assert!(err.contains("same name as its current name"), "{err}");
    env.ok(&["container", "rename", "other", "second"]);
    env.ok(&["stop", "-t", "0", "renamed"]);
    env.ok(&["rm", "renamed", "second"]);
}

/// `top`: the host's `ps` rows of the container's processes alone, the command whole; a stopped
/// container has none to show.
#[test]
fn top_lists_the_container_processes() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "bb",
        "sh",
        "-c",
        "sleep 61 & sleep 62",
    ]);
    let mut shown = String::new();
    env.until("both sleeps", Duration::from_secs(10), || {
        shown = env.ok(&["top", "busy"]);
        shown.contains("sleep 61") && shown.contains("sleep 62")
    });
    let mut lines = shown.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    // The container's init, and the two sleeps: nothing of the host.
    assert_eq!(lines.count(), 3, "{shown}");
    let narrow = env.ok(&["container", "top", "busy", "-o", "pid,args"]);
    assert!(narrow.starts_with("PID "), "{narrow}");
    assert!(narrow.lines().any(|l| l.ends_with("sleep 62")), "{narrow}");
    env.ok(&["stop", "-t", "0", "busy"]);
    let (_, err) = env.fails(&["top", "busy"]);
    assert!(err.contains("is not running"), "{err}");
}

/// `ps --filter`, as dockerd reads it: one key's values are alternatives, keys all hold,
/// `status` looks at stopped containers too.
#[test]
fn ps_filters() {
    let env = Env::new();
    env.image("bb", &[]);
    env.image("other", &["LABEL kind=other"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "web-1",
        "-l",
        "tier=front",
        "bb",
        "sleep",
        "60",
    ]);
    env.ok(&["run", "--name", "job-ok", "-l", "tier=batch", "bb", "true"]);
    env.fails(&[
        "run",
        "--name",
        "job-bad",
        "-l",
        "tier=batch",
        "bb",
        "sh",
        "-c",
        "exit 3",
    ]);
    env.ok(&["create", "--name", "fresh", "other", "true"]);
    let listed = |all: bool, filters: &[&str]| -> Vec<String> {
        let mut args = vec!["ps", "--format", "json"];
        if all {
            args.push("-a");
        }
        for f in filters {
            args.extend(["--filter", f]);
        }
        let mut names: Vec<String> = env
            .ok(&args)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Names"].to_string())
            .map(|n| n.trim_matches('"').to_string())
            .collect();
        names.sort();
        names
    };
    let names = |filters: &[&str]| listed(false, filters);
    let all = |filters: &[&str]| listed(true, filters);
    assert_eq!(names(&[]), ["web-1"]);
    assert_eq!(names(&["status=exited"]), ["job-bad", "job-ok"]);
    assert_eq!(
        names(&["status=exited", "status=created"]),
        ["fresh", "job-bad", "job-ok"]
    );
    assert_eq!(names(&["status=exited", "exited=3"]), ["job-bad"]);
    assert!(names(&["label=tier=batch"]).is_empty(), "without -a");
    assert_eq!(all(&["label=tier=batch", "name=ok$"]), ["job-ok"]);
    assert_eq!(all(&["label=tier"]), ["job-bad", "job-ok", "web-1"]);
    assert_eq!(all(&["name=^/job"]), ["job-bad", "job-ok"]);
    assert_eq!(all(&["ancestor=other"]), ["fresh"]);
    let id = env.inspect("fresh")["Id"].as_str().unwrap().to_string();
    assert_eq!(all(&[&format!("id={}", &id[..8])]), ["fresh"]);
    let (_, err) = env.fails(&["ps", "--filter", "colour=red"]);
    assert!(err.contains("invalid filter 'colour'"), "{err}");
    env.ok(&["rm", "-f", "web-1"]);
}

/// `logs --since/--until` with the times `logs -t` shows, and a duration.
#[test]
fn logs_since_and_until() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["run", "-d", "--name", "ticker", "bb", "sh", "-c", TICKER]);
    env.until("five ticks", Duration::from_secs(10), || {
        env.ok(&["logs", "ticker"]).lines().count() >= 5
    });
    let stamped = env.ok(&["logs", "-t", "ticker"]);
    let times: Vec<&str> = stamped
        .lines()
        .map(|l| l.split_once(' ').unwrap().0)
        .collect();
    let since = env.ok(&["logs", "--since", times[2], "ticker"]);
    assert!(since.starts_with("tick 2\n"), "{since}");
    let until = env.ok(&["logs", "--until", times[1], "ticker"]);
    assert_eq!(until, "tick 0\ntick 1\n");
    let window = env.ok(&["logs", "--since", times[1], "--until", times[3], "ticker"]);
    assert_eq!(window, "tick 1\ntick 2\ntick 3\n");
    assert!(
        env.ok(&["logs", "--since", "1h", "ticker"])
            .starts_with("tick 0\n")
    );
    assert_eq!(env.ok(&["logs", "--until", "1h", "ticker"]), "");
    // -f stops at --until (a second from now, in Unix seconds).
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(1);
    let soon = format!("{}.{:09}", soon.as_secs(), soon.subsec_nanos());
    let followed = env.ok(&["logs", "-f", "--until", &soon, "ticker"]);
    assert!(followed.starts_with("tick 0\n"), "{followed}");
    assert!(
        followed.lines().count() > times.len(),
        "it followed: {followed}"
    );
    let (_, err) = env.fails(&["logs", "--since", "yesterday", "ticker"]);
    assert!(err.contains("invalid time \"yesterday\""), "{err}");
    env.ok(&["rm", "-f", "ticker"]);
}

/// `--stop-timeout`: `stop` without `-t` waits that long (not Docker's default 10 s) before
/// SIGKILL; inspect shows it in Config, as Docker does.
#[test]
fn stop_timeout_of_the_container() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "bb",
        "sh",
        "-c",
        "trap '' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    env.until("the trap", Duration::from_secs(10), || {
        env.ok(&["logs", "stubborn"]) == "up\n"
    });
    assert_eq!(env.inspect("stubborn")["Config"]["StopTimeout"], 1);
    let started = std::time::Instant::now();
    env.ok(&["stop", "stubborn"]);
    // The default would be 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.inspect("stubborn")["State"]["ExitCode"], 137);
    env.ok(&["rm", "stubborn"]);
}

/// `stats --no-stream`: a busy container uses CPU, a limited one shows its limit, processes are
/// counted; a stopped one reads as zero, as Docker shows it.
#[test]
fn stats_of_running_containers() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--memory",
        "64m",
        "bb",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    env.ok(&["run", "-d", "--name", "idle", "bb", "sleep", "60"]);
    env.ok(&["create", "--name", "stopped", "bb", "true"]);
    let out = env.ok(&["stats", "--no-stream", "--format", "json"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["Name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .clone()
    };
    assert_eq!(rows.len(), 2, "running ones only: {out}");
    let percent = |v: &serde_json::Value| -> f64 {
        v.as_str().unwrap().trim_end_matches('%').parse().unwrap()
    };
    let busy = row("busy");
    assert!(percent(&busy["CPUPerc"]) > 5.0, "{busy}");
    assert!(
        busy["MemUsage"].as_str().unwrap().ends_with(" / 64MiB"),
        "{busy}"
    );
    // The container's init and its command.
    assert_eq!(busy["PIDs"], "2");
    let idle = row("idle");
    assert!(percent(&idle["CPUPerc"]) < 5.0, "{idle}");
    assert_eq!(idle["NetIO"], "0B / 0B", "a private network has only lo");
    let table = env.ok(&["stats", "--no-stream", "-a"]);
    assert!(table.starts_with("CONTAINER ID "), "{table}");
    let stopped = table.lines().find(|l| l.contains("stopped")).unwrap();
    assert!(stopped.contains("0.00%"), "{stopped}");
    env.ok(&["rm", "-f", "busy", "idle", "stopped"]);
}
