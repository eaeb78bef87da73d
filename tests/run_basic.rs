//! `strata run` in the foreground: output, exit codes, Docker's command/env/user/workdir rules,
//! the errors that leave nothing behind, `create` + `start -a`, restart policies, inspect.

mod run_support;
mod store_support;

use std::time::Duration;

use run_support::{Env, assert_terminal_follows_window_size, stderr, stdout};

#[test]
fn run_rm_prints_output_and_passes_exit_codes_through() {
    let env = Env::new();
    env.image("bb", &[]);
    assert_eq!(env.ok(&["run", "--rm", "bb", "echo", "hello"]), "hello\n");
    let out = env.output(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // Killed by a signal: 128 + n, as a shell reports it.
    let out = env.output(&["run", "--rm", "bb", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137));
    // A command that does not exist: Docker's 127 and message.
    let (code, err) = env.fails(&["run", "--rm", "bb", "no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    // Options end at the image: the rest belongs to the command.
    assert_eq!(env.ok(&["run", "--rm", "bb", "echo", "-n", "--rm"]), "--rm");
    // --rm left nothing.
    assert_eq!(env.all_ids(), Vec::<String>::new());
    let snapshots: Vec<String> = std::fs::read_dir(env.path().join("snapshots/s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        snapshots.iter().all(|s| s.starts_with("sha256-")),
        "only the image's layer snapshot stays: {snapshots:?}"
    );
    // The input reaches the command with -i.
    let mut child = env
        .cmd(&["run", "--rm", "-i", "bb", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "SHOUT\n");
}

#[test]
fn command_env_user_and_workdir_combine_as_in_docker() {
    let env = Env::new();
    env.image(
        "app",
        &[
            r#"ENTRYPOINT ["/bin/echo", "entry"]"#,
            r#"CMD ["default"]"#,
            "ENV GREETING=hi PATH=/usr/bin:/bin",
            "WORKDIR /tmp",
        ],
    );
    assert_eq!(env.ok(&["run", "--rm", "app"]), "entry default\n");
    assert_eq!(env.ok(&["run", "--rm", "app", "given"]), "entry given\n");
    // --entrypoint drops the image's CMD.
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "pwd", "app"]),
        "/tmp\n"
    );
    let script = "echo $GREETING $EXTRA $FROM_FILE $HOSTNAME; pwd; id -u; cat /etc/hostname";
    let env_file = env.path().with_file_name("env.list");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=file\n\n").unwrap();
    let out = env.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "",
        "-e",
        "EXTRA=x",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/etc",
        "-u",
        "65534:65534",
        "--hostname",
        "box",
        "app",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out, "hi x file box\n/etc\n65534\nbox\n");
    // Without --hostname the host name is the short ID.
    let id = env.ok(&["create", "app"]).trim().to_string();
    let config = env.inspect(&id);
    assert_eq!(config["Config"]["Hostname"], id[..12]);
    assert_eq!(config["Path"], "/bin/echo");
    assert_eq!(config["Args"], serde_json::json!(["entry", "default"]));
    assert_eq!(config["State"]["Status"], "created");
    let (_, err) = env.fails(&["run", "--rm", "--entrypoint", "", "app"]);
    assert!(err.contains("no command specified"), "{err}");
}

#[test]
fn errors_are_clear_and_leave_nothing_half_created() {
    let env = Env::new();
    env.image("bb", &[]);
    let (code, err) = env.fails(&["run", "--rm", "not-there"]);
    assert_eq!(code, 125);
    assert!(
        // Docker's words, then why the pull could not happen (the tests run offline).
        err.contains("Unable to find image 'not-there:latest' locally")
            && err.contains("docker.io/library/not-there:latest")
            && err.contains("STRATA_OFFLINE"),
        "{err}"
    );
    env.ok(&["create", "--name", "taken", "bb"]);
    let (code, err) = env.fails(&["run", "--name", "taken", "bb", "true"]);
    assert_eq!(code, 125);
    assert!(
        err.contains(r#"The container name "/taken" is already in use by container"#),
        "{err}"
    );
    let (_, err) = env.fails(&["run", "--rm", "-v", "/no/such/dir:/data", "bb", "true"]);
    assert!(
        err.contains("bind source path does not exist: /no/such/dir"),
        "{err}"
    );
    let (_, err) = env.fails(&["run", "--rm", "--name", "x", "bb", "true"]);
    assert!(err.contains("Invalid container name (x)"), "{err}");
    let (_, err) = env.fails(&["run", "--rm", "--restart", "always", "bb", "true"]);
    assert!(
        err.contains("Conflicting options: --restart and --rm"),
        "{err}"
    );
    // Only the container made on purpose exists, and no volume was left behind.
    assert_eq!(env.all_ids().len(), 1);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
    // Names and ID prefixes resolve; an unknown one is Docker's message.
    let id = env.all_ids().remove(0);
    for name in ["taken", &id[..12], &id[..5], &id] {
        assert_eq!(env.inspect(name)["Id"], id.as_str());
    }
    let (_, err) = env.fails(&["rm", "nobody"]);
    assert!(err.contains("No such container: nobody"), "{err}");
    let (_, err) = env.fails(&["inspect", "nobody"]);
    assert!(err.contains("No such image: nobody"), "{err}");
    let (_, err) = env.fails(&["inspect", "--type", "container", "bb"]);
    assert!(err.contains("No such container: bb"), "{err}");
    // The image is in use: rmi needs -f.
    let (_, err) = env.fails(&["rmi", "bb"]);
    assert!(err.contains("must be forced"), "{err}");
    // inspect without --type finds images too.
    let image: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["inspect", "bb"])).unwrap();
    assert!(image[0]["RootFS"]["Layers"].is_array());
}

#[test]
fn create_start_attach_and_restart_policies() {
    let env = Env::new();
    env.image("bb", &[]);
    let id = env
        .ok(&[
            "create",
            "--name",
            "later",
            "bb",
            "sh",
            "-c",
            "echo started; exit 4",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let out = env.output(&["start", "-a", "later"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "started\n");
    let state = env.inspect("later")["State"].clone();
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 4);
    // The log kept what the attached run printed.
    assert_eq!(env.ok(&["logs", "later"]), "started\n");

    // on-failure:2 restarts twice, then gives up.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo attempt; exit 1",
    ]);
    assert_eq!(env.ok(&["wait", "flaky"]).trim(), "1");
    env.until("the restarts", Duration::from_secs(10), || {
        let c = env.inspect("flaky");
        c["State"]["Status"] == "exited" && c["RestartCount"] == 2
    });
    assert_eq!(env.ok(&["logs", "flaky"]), "attempt\nattempt\nattempt\n");
}

#[test]
fn inspect_and_ps_have_dockers_shape() {
    let env = Env::new();
    env.image("bb", &["EXPOSE 9000", r#"CMD ["sh"]"#]);
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "shaped",
            "-l",
            "team=a",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--read-only",
            "--tmpfs",
            "/scratch",
            "bb",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo read-only; touch /scratch/y && echo tmpfs-ok; sleep 30",
        ])
        .trim()
        .to_string();
    env.until("the output", Duration::from_secs(5), || {
        env.ok(&["logs", "shaped"]) == "read-only\ntmpfs-ok\n"
    });
    let c = env.inspect("shaped");
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/shaped");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["PidsLimit"], 50);
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(c["Config"]["Labels"]["team"], "a");
    assert!(
        c["LogPath"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{id}-json.log"))
    );
    assert!(c["Image"].as_str().unwrap().starts_with("sha256:"));
    let ps = env.ok(&["ps"]);
    let mut lines = ps.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("CONTAINER ID   IMAGE     COMMAND"),
        "{ps}"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[..12]), "{ps}");
    assert!(row.contains("\"sh -c touch /x 2>/d…\""), "{ps}");
    assert!(row.contains("Up "), "{ps}");
    assert!(row.contains("9000/tcp"), "{ps}");
    assert!(row.ends_with("shaped"), "{ps}");
    let json: serde_json::Value =
        serde_json::from_str(env.ok(&["ps", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["ID"], &id[..12]);
    assert_eq!(json["Names"], "shaped");
    assert_eq!(json["State"], "running");
    assert_eq!(json["Labels"], "team=a");
    assert_eq!(env.ok(&["ps", "-q"]).trim(), &id[..12]);
    env.ok(&["kill", "shaped"]);
    assert_eq!(env.ok(&["wait", "shaped"]).trim(), "137");
    assert_eq!(env.ok(&["ps", "-q"]), "");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
}

/// `strata run -t` on a terminal: the container's terminal starts at our terminal's size and
/// follows when ours is resized (SIGWINCH), as with `docker run -t`.
#[test]
fn a_terminal_run_follows_the_callers_window_size() {
    let env = Env::new();
    env.image("bb", &[]);
    assert_terminal_follows_window_size(&env, &["run", "--rm", "-t", "bb"]);
}

/// `--cap-add`/`--cap-drop` over Docker's default set (the effective set as the kernel shows
/// it, and what it allows), `--add-host` in /etc/hosts, both in inspect; mistakes refused at
/// create.
#[test]
fn capabilities_and_extra_hosts() {
    let env = Env::new();
    env.image("bb", &[]);
    let cap_eff = |flags: &[&str]| -> String {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        args.extend(["bb", "sh", "-c", "grep CapEff /proc/self/status"]);
        env.ok(&args)
            .trim()
            .trim_start_matches("CapEff:")
            .trim()
            .to_string()
    };
    // Docker's defaults, as its containers show them.
    assert_eq!(cap_eff(&[]), "00000000a80425fb");
    assert_eq!(cap_eff(&["--cap-add", "net_admin"]), "00000000a80435fb");
    assert_eq!(cap_eff(&["--cap-drop", "CAP_CHOWN"]), "00000000a80425fa");
    assert_eq!(cap_eff(&["--cap-drop", "all"]), "0000000000000000");
    assert_eq!(
        cap_eff(&["--cap-drop", "ALL", "--cap-add", "KILL"]),
        "0000000000000020"
    );
    // What the set allows: an interface's MTU needs NET_ADMIN.
    let (_, err) = env.fails(&[
        "run", "--rm", "bb", "ip", "link", "set", "lo", "mtu", "1000",
    ]);
    assert!(err.contains("not permitted"), "{err}");
    env.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "bb",
        "ip",
        "link",
        "set",
        "lo",
        "mtu",
        "1000",
    ]);
    // The seccomp profile follows the set: with SYS_ADMIN, mount(2) is allowed too.
    let mount = "mkdir /m && mount -t tmpfs none /m && echo mounted";
    let (_, err) = env.fails(&["run", "--rm", "bb", "sh", "-c", mount]);
    assert!(err.contains("permission denied"), "{err}");
    // runc reads the spec's profile, which must follow the set too.
    for runtime in [&[][..], &["--runtime", "runc"][..]] {
        let mut args = vec!["run", "--rm", "--cap-add", "SYS_ADMIN"];
        args.extend(runtime);
        args.extend(["bb", "sh", "-c", mount]);
        assert_eq!(env.ok(&args), "mounted\n", "{runtime:?}");
    }
    let hosts = env.ok(&[
        "run",
        "--name",
        "hosts",
        "--add-host",
        "db:10.0.0.5",
        "--add-host",
        "v6:::1",
        "--cap-add",
        "SYS_TIME",
        "bb",
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.ends_with("10.0.0.5\tdb\n::1\tv6\n"), "{hosts}");
    let host_config = env.inspect("hosts")["HostConfig"].clone();
    assert_eq!(
        host_config["ExtraHosts"],
        serde_json::json!(["db:10.0.0.5", "v6:::1"])
    );
    assert_eq!(host_config["CapAdd"], serde_json::json!(["SYS_TIME"]));
    assert_eq!(host_config["CapDrop"], serde_json::Value::Null);
    let before = env.all_ids();
    let (code, err) = env.fails(&["create", "--cap-add", "BOGUS", "bb"]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown capability: \"CAP_BOGUS\""), "{err}");
    let (_, err) = env.fails(&["create", "--add-host", "nohost", "bb"]);
    assert!(err.contains("--add-host"), "{err}");
    assert_eq!(env.all_ids(), before, "nothing created");
}

/// `--ulimit`, `--sysctl` (the container's namespaces only: the host's values stay) and
/// `--shm-size`, as the container sees them and as inspect shows them.
#[test]
fn ulimits_sysctls_and_shm_size() {
    let env = Env::new();
    env.image("bb", &[]);
    let host_somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let out = env.ok(&[
        "run",
        "--name",
        "tuned",
        "--ulimit",
        "nofile=1000:2000",
        "--ulimit",
        "nproc=77",
        "--sysctl",
        "net.core.somaxconn=999",
        "--sysctl",
        "kernel.shmmni=1234",
        "--shm-size",
        "100m",
        "bb",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -u; cat /proc/sys/net/core/somaxconn \
         /proc/sys/kernel/shmmni; grep -o 'size=[0-9a-z]*' /proc/self/mountinfo | sort -u",
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.by_ref().take(5).collect::<Vec<_>>(),
        ["1000", "2000", "77", "999", "1234"]
    );
    assert!(lines.any(|l| l == "size=102400k"), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap(),
        host_somaxconn
    );
    let host_config = env.inspect("tuned")["HostConfig"].clone();
    assert_eq!(
        host_config["Ulimits"][0],
        serde_json::json!({"Name": "nofile", "Hard": 2000, "Soft": 1000})
    );
    assert_eq!(host_config["Sysctls"]["kernel.shmmni"], "1234");
    assert_eq!(host_config["ShmSize"], 100 * 1024 * 1024);
    for (flags, message) in [
        (
            &["--network", "host", "--sysctl", "net.core.somaxconn=1"][..],
            "is not allowed",
        ),
        (&["--sysctl", "kernel.hostname=x"][..], "is not allowed"),
        (
            &["--ulimit", "nofile=5:1"][..],
            "must be less than or equal",
        ),
        (&["--ulimit", "files=5"][..], "unknown ulimit type"),
    ] {
        let mut args = vec!["create"];
        args.extend(flags);
        args.push("bb");
        let (code, err) = env.fails(&args);
        assert_eq!(code, 125, "{flags:?}");
        assert!(err.contains(message), "{flags:?}: {err}");
    }
}

/// `--group-add`: gids and names of the image's /etc/group join the user's groups; an unknown
/// name is an error that names the flag.
#[test]
fn group_add() {
    let env = Env::new();
    env.image("bb", &[]);
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "--group-add",
            "1234",
            "--group-add",
            "root",
            "bb",
            "id",
            "-G"
        ]),
        "0 1234\n"
    );
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-u",
            "1000",
            "--group-add",
            "55",
            "bb",
            "id",
            "-G"
        ]),
        "0 55\n"
    );
    let (code, err) = env.fails(&["run", "--rm", "--group-add", "nosuch", "bb", "true"]);
    assert_eq!(code, 125);
    assert!(
        err.contains("--group-add: unable to find group nosuch"),
        "{err}"
    );
}

/// `--format` Go templates, as scripts use them with Docker: inspect, ps (with `table`) and
/// images; a template strata cannot do is an error, not a wrong line.
#[test]
fn format_templates() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&[
        "run", "-d", "--name", "fmt", "-l", "tier=web", "bb", "sleep", "60",
    ]);
    let pid = env.inspect("fmt")["State"]["Pid"].to_string();
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            r#"{{.State.Pid}} {{.Name}} {{json .Config.Labels}} {{index .Config.Labels "tier"}}"#,
            "fmt"
        ]),
        format!("{pid} /fmt {{\"tier\":\"web\"}} web\n")
    );
    assert_eq!(
        env.ok(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Status}}",
            "fmt"
        ]),
        "running\n"
    );
    assert_eq!(
        env.ok(&["ps", "--format", r"{{.Names}}\t{{.Labels}}"]),
        "fmt\ttier=web\n"
    );
    let table = env.ok(&["ps", "--format", r"table {{.ID}}\t{{.Names}}"]);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["CONTAINER", "ID", "NAMES"]
    );
    assert!(lines.next().unwrap().ends_with("fmt"), "{table}");
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "bb:latest\n"
    );
    let id = env.ok(&["image", "inspect", "-f", "{{.Id}}", "bb"]);
    assert!(id.starts_with("sha256:") && id.len() == 72, "{id}");
    let (_, err) = env.fails(&["inspect", "-f", "{{range .Mounts}}{{end}}", "fmt"]);
    assert!(err.contains("\"range\" is not supported"), "{err}");
    env.ok(&["rm", "-f", "fmt"]);
}

/// `info`: counts and the machine, with Docker's field names for `--format`.
#[test]
fn info_counts_and_formats() {
    let env = Env::new();
    env.image("bb", &[]);
    env.ok(&["tag", "bb", "bb:other"]);
    env.ok(&["create", "bb", "true"]);
    assert_eq!(
        env.ok(&[
            "info",
            "--format",
            "{{.Containers}} {{.ContainersRunning}} {{.Images}} {{.OSType}}"
        ]),
        "1 0 1 linux\n"
    );
    let text = env.ok(&["system", "info"]);
    assert!(text.starts_with("Containers: 1\n Running: 0\n"), "{text}");
    assert!(text.contains("\nStorage Driver: overlay\n"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(json["DockerRootDir"], env.path().display().to_string());
}
