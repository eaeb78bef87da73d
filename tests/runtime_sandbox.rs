//! The sandbox's isolation, security and process properties, each shown by a real process in a
//! busybox rootfs.

mod runtime_support;

use std::io::{BufRead, BufReader};
use std::path::Path;

use runtime_support::{Rootfs, STRATA, run, status_field};
use strata_runtime::spec::{self, Limits, oci};
use strata_runtime::user::resolve_user;
use strata_runtime::{Sandbox, StdioSet};

/// Docker's default capability set as /proc/<pid>/status shows it.
const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
fn fresh_pid_uts_and_mount_namespaces() {
    let rootfs = Rootfs::new();
    let out = run(&rootfs.spec(
        "echo pid=$$ ppid=$PPID; hostname; ls /proc | grep -c '^[0-9]*$'; \
         readlink /proc/1/exe 2>/dev/null || echo init-hidden; cat /proc/mounts",
    ));
    assert!(out.exit.status.success(), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    // The command is the child of the sandbox's init (PID 1).
    assert_eq!(lines.next(), Some("pid=2 ppid=1"));
    assert_eq!(lines.next(), Some("sandbox"));
    // init, sh, ls, grep: no host processes.
    let processes: usize = lines.next().unwrap().parse().unwrap();
    assert!(processes <= 4, "{processes} processes visible");
    // init runs the host's strata binary: not even root inside may look at it.
    assert_eq!(lines.next(), Some("init-hidden"));
    let mounts: Vec<&str> = lines.collect();
    assert!(
        mounts
            .iter()
            .all(|m| !m.contains("/work") && !m.contains(rootfs.path().to_str().unwrap())),
        "{mounts:?}"
    );
    assert!(mounts.iter().any(|m| m.starts_with("proc /proc proc")));
    assert!(mounts.iter().any(|m| m.starts_with("sysfs /sys sysfs ro")));
}

#[test]
fn default_capabilities_and_no_new_privs_only_when_asked() {
    let rootfs = Rootfs::new();
    let script = "cat /proc/self/status";
    let out = run(&rootfs.spec(script));
    assert_eq!(status_field(&out.stdout, "CapEff"), DOCKER_CAPS);
    assert_eq!(status_field(&out.stdout, "CapBnd"), DOCKER_CAPS);
    assert_eq!(status_field(&out.stdout, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "0");
    // Docker's default profile: one filter, plus the one that makes clone3 fail with ENOSYS.
    assert_eq!(status_field(&out.stdout, "Seccomp"), "2");

    let mut spec = rootfs.spec(script);
    let mut process = spec.process().clone().unwrap();
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));
    let out = run(&spec);
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "1");
}

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *name, long rc) { printf("%s=%d\n", name, rc < 0 ? errno : 0); }
int main(void) {
    report("keyctl", syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0));
    report("unshare", unshare(CLONE_NEWUSER));
    report("mount", mount("none", "/tmp", "tmpfs", 0, 0));
    report("vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    report("getpid", getpid());
    return 0;
}
"#;

#[test]
fn seccomp_blocks_what_docker_blocks() {
    let rootfs = Rootfs::new();
    rootfs.compile("probe", PROBE);
    let out = run(&rootfs.spec("probe"));
    assert!(out.exit.status.success(), "{}", out.stderr);
    let eperm = libc::EPERM.to_string();
    for name in [
        "keyctl",
        "kexec_load",
        "open_by_handle_at",
        "unshare",
        "mount",
        "vsock",
    ] {
        let line = format!("{name}={eperm}");
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{name}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains(&format!("clone3={}", libc::ENOSYS)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("getpid=0"));

    // Without the profile, the same process can join a keyring and make a user namespace: the
    // EPERMs above come from the filter, not from missing capabilities.
    let mut spec = rootfs.spec("probe");
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(None);
    spec.set_linux(Some(linux));
    let out = run(&spec);
    assert!(out.stdout.contains("keyctl=0"), "{}", out.stdout);
    assert!(out.stdout.contains("unshare=0"), "{}", out.stdout);
}

#[test]
fn users_by_name_and_number_with_supplementary_groups() {
    let rootfs = Rootfs::new();
    let script = "id; echo HOME=$HOME; grep CapEff /proc/self/status";
    let mut spec = rootfs.spec(script);
    spec::set_user(&mut spec, &resolve_user(rootfs.path(), "alice").unwrap());
    let out = run(&spec);
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("uid=1000(alice) gid=1000(alice) groups=10(wheel),29(audio)")
    );
    assert_eq!(lines.next(), Some("HOME=/home/alice"));
    // moby: a non-root user starts without effective capabilities.
    assert_eq!(lines.next(), Some("CapEff:\t0000000000000000"));

    let mut spec = rootfs.spec(script);
    spec::set_user(&mut spec, &resolve_user(rootfs.path(), "1000:10").unwrap());
    let out = run(&spec);
    // An explicit group replaces the supplementary groups (busybox `id` then prints none).
    assert!(
        out.stdout.starts_with("uid=1000(alice) gid=10(wheel)\n"),
        "{}",
        out.stdout
    );

    let mut spec = rootfs.spec(script);
    spec::set_user(&mut spec, &resolve_user(rootfs.path(), "4242").unwrap());
    let out = run(&spec);
    assert!(
        out.stdout.starts_with("uid=4242 gid=0(root)"),
        "{}",
        out.stdout
    );
}

#[test]
fn exit_codes_signals_and_missing_executables() {
    let rootfs = Rootfs::new();
    let out = run(&rootfs.spec("exit 42"));
    assert_eq!((out.exit.status.code, out.exit.status.signal), (42, None));

    let out = run(&rootfs.spec("kill -9 $$"));
    assert_eq!(
        (out.exit.status.code, out.exit.status.signal),
        (137, Some(9))
    );

    let mut spec = rootfs.spec("");
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["no-such-command".into()]));
    spec.set_process(Some(process.clone()));
    let out = run(&spec);
    assert_eq!(out.exit.status.code, 127);
    assert_eq!(
        out.exit.exec_error.as_deref(),
        Some("exec: \"no-such-command\": executable file not found in $PATH")
    );

    process.set_args(Some(vec!["/etc/passwd".into()]));
    spec.set_process(Some(process));
    let out = run(&spec);
    assert_eq!(out.exit.status.code, 126);
    assert_eq!(
        out.exit.exec_error.as_deref(),
        Some("exec: \"/etc/passwd\": permission denied")
    );
}

#[test]
fn init_reaps_orphaned_zombies() {
    let rootfs = Rootfs::new();
    // The inner shell exits at once, orphaning its `usleep`: init adopts it. Once it has exited
    // it is a zombie (state Z) until init reaps it, which takes a moment on a busy machine; wait
    // up to 5 s for it to be gone. Without reaping it stays a zombie and the test fails.
    let out = run(&rootfs.spec(
        "sh -c 'usleep 100000 &'; \
         for i in $(seq 100); do \
           s=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == \"(usleep)\" {print $3}'); \
           [ -z \"$s\" ] && break; usleep 50000; \
         done; echo \"orphan=[$s]\"",
    ));
    assert!(out.exit.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "orphan=[]\n", "{}", out.stderr);
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let rootfs = Rootfs::new();
    let spec = rootfs
        .spec("trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.05; done");
    let mut container = Sandbox::new(STRATA)
        .spawn(&spec, StdioSet::piped())
        .unwrap();
    let mut stdout = BufReader::new(container.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(container.pid() > 1);
    container.signal(libc::SIGTERM).unwrap();
    let exit = container.wait().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got TERM\n");
    assert_eq!(exit.status.code, 3);
}

#[test]
fn dropping_a_container_kills_it_and_its_cgroup() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("echo ready; sleep 60");
    spec::set_limits(
        &mut spec,
        &Limits {
            pids: Some(50),
            ..Default::default()
        },
    );
    let mut container = Sandbox::new(STRATA)
        .spawn(&spec, StdioSet::piped())
        .unwrap();
    let mut stdout = BufReader::new(container.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = container.pid();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let pids_path = cgroup
        .lines()
        .find_map(|l| {
            l.strip_prefix("8:pids:")
                .or(l.split_once(":pids:").map(|x| x.1))
        })
        .unwrap()
        .to_string();
    let dir = Path::new("/sys/fs/cgroup/pids").join(pids_path.trim_start_matches('/'));
    assert!(dir.exists(), "{}", dir.display());
    drop(container);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} still alive"
    );
    assert!(!dir.exists(), "cgroup {} left behind", dir.display());
}

#[test]
fn memory_limit_ends_the_process_as_oom() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("tail /dev/zero");
    let limit = 32 << 20;
    spec::set_limits(
        &mut spec,
        &Limits {
            memory: Some(limit),
            memory_swap: Some(limit),
            ..Default::default()
        },
    );
    let out = run(&spec);
    assert_eq!(
        out.exit.status.signal,
        Some(libc::SIGKILL),
        "{:?} {}",
        out.exit,
        out.stderr
    );
    assert!(out.exit.oom_killed);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("(for i in $(seq 40); do sleep 2 & done); n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n");
    spec::set_limits(
        &mut spec,
        &Limits {
            pids: Some(12),
            ..Default::default()
        },
    );
    let out = run(&spec);
    assert!(out.stderr.contains("can't fork"), "{}", out.stderr);
    let processes: usize = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{:?} {}", out.stdout, out.stderr));
    assert!(processes <= 12, "{processes} processes");
}

#[test]
fn rlimits_above_the_hard_limit_are_clamped_with_a_warning() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("ulimit -n; ulimit -Hn");
    let mut process = spec.process().clone().unwrap();
    let huge = oci_rlimit(u64::MAX / 2);
    process.set_rlimits(Some(vec![huge]));
    spec.set_process(Some(process));
    let out = run(&spec);
    assert!(out.exit.status.success(), "{}", out.stderr);
    // Up to nr_open with CAP_SYS_RESOURCE, else up to our own hard limit.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = u64::from_str_radix(status_field(&status, "CapEff"), 16).unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    let limit = if cap_eff & (1 << CAP_SYS_RESOURCE) != 0 {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .to_string()
    } else {
        let mut own = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) into a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
        own.rlim_max.to_string()
    };
    assert_eq!(
        out.stdout,
        format!("{limit}\n{limit}\n"),
        "{:?}",
        out.exit.warnings
    );
    assert!(
        out.exit
            .warnings
            .iter()
            .any(|w| w.contains("RLIMIT_NOFILE") && w.contains("clamped")),
        "{:?}",
        out.exit.warnings
    );
}

fn oci_rlimit(value: u64) -> oci::PosixRlimit {
    oci::PosixRlimitBuilder::default()
        .typ(oci::PosixRlimitType::RlimitNofile)
        .soft(value)
        .hard(value)
        .build()
        .unwrap()
}

#[test]
fn masked_and_read_only_paths() {
    let rootfs = Rootfs::new();
    let out = run(&rootfs.spec(
        "wc -c < /proc/keys; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname && echo writable; touch /newfile && echo rootfs-writable",
    ));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["0", "0", "rootfs-writable"], "{}", out.stderr);
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
}

#[test]
fn mounts_binds_tmpfs_and_generated_etc_files_leave_no_stubs() {
    let rootfs = Rootfs::new();
    std::fs::remove_dir_all(rootfs.path().join("tmp")).unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello"), "from the host\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut spec = rootfs.spec(
        "cat /data/hello; echo x > /data/new || echo ro-bind; echo y > /scratch/f && echo tmpfs-ok; cat /etc/hosts /etc/hostname; grep -c nameserver /etc/resolv.conf",
    );
    spec::add_bind(&mut spec, data.path(), Path::new("/data"), true);
    spec::add_tmpfs(&mut spec, Path::new("/scratch"), &["size=1m"]);
    let files = strata_runtime::etc::EtcFiles {
        hostname: "sandbox".into(),
        extra_hosts: vec![("db".into(), "10.1.2.3".parse().unwrap())],
        network: spec::Network::Private,
        hostname_file: true,
        readonly: true,
    };
    strata_runtime::etc::mount_etc_files(&mut spec, state.path(), &files).unwrap();
    let out = run(&spec);
    let expected = "from the host\nro-bind\ntmpfs-ok\n127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb\nsandbox\n";
    assert!(
        out.stdout.starts_with(expected),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    // The mount points made for /data, /scratch and the /etc files are gone, /etc itself stays.
    for gone in [
        "data",
        "scratch",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ] {
        assert!(
            !rootfs.path().join(gone).exists(),
            "{gone} left in the rootfs"
        );
    }
    assert!(!data.path().join("new").exists());
    // The working directory is created when missing, as runc does.
    let mut spec = rootfs.spec("pwd");
    let mut process = spec.process().clone().unwrap();
    process.set_cwd("/work/dir".into());
    spec.set_process(Some(process));
    assert_eq!(run(&spec).stdout, "/work/dir\n");
    assert!(rootfs.path().join("work/dir").is_dir());
}

#[test]
fn terminal_gives_the_command_a_controlling_pty() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec("tty; echo done");
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    let mut container = Sandbox::new(STRATA)
        .spawn(&spec, StdioSet::inherit())
        .unwrap();
    let mut pty = container.pty.take().expect("pty master");
    let exit = container.wait().unwrap();
    assert!(exit.status.success());
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Reading a pty master whose slave closed ends with EIO.
    while let Ok(n) = std::io::Read::read(&mut pty, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&out), "/dev/pts/0\r\ndone\r\n");
}

/// An overlay mount (the snapshotter's RUN setup), unmounted on drop.
struct Overlay {
    merged: std::path::PathBuf,
    _dirs: tempfile::TempDir,
}

impl Overlay {
    fn new(lower: &Path) -> (Self, std::path::PathBuf) {
        let dirs = tempfile::tempdir().unwrap();
        let (upper, work, merged) = (
            dirs.path().join("upper"),
            dirs.path().join("work"),
            dirs.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success());
        (
            Overlay {
                merged,
                _dirs: dirs,
            },
            upper,
        )
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.merged)
            .status();
    }
}

#[test]
fn a_run_step_over_an_overlay_leaves_only_the_commands_changes() {
    use std::os::unix::fs::MetadataExt;
    let lower = Rootfs::new();
    for d in ["proc", "dev", "sys"] {
        std::fs::create_dir(lower.path().join(d)).unwrap();
    }
    let (overlay, upper) = Overlay::new(lower.path());
    let context = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut spec = spec::default_spec(&overlay.merged, vec!["sh".into(), "-c".into(), "echo hi > /hello; mkdir -p /var/cache; ls /src >/dev/null; cat /etc/hosts /etc/resolv.conf >/dev/null".into()]);
    spec::add_bind(&mut spec, context.path(), Path::new("/src"), true);
    let files = strata_runtime::etc::EtcFiles {
        hostname: "buildkitsandbox".into(),
        extra_hosts: Vec::new(),
        network: spec::Network::Private,
        hostname_file: false,
        readonly: true,
    };
    strata_runtime::etc::mount_etc_files(&mut spec, state.path(), &files).unwrap();
    let out = run(&spec);
    assert!(out.exit.status.success(), "{}", out.stderr);

    let mut changes: Vec<String> = walk(&upper);
    changes.sort();
    // /etc was copied up to hold the mount points; it is back to the lower directory's state.
    assert_eq!(changes, ["etc", "hello", "var", "var/cache"]);
    let (up, low) = (
        std::fs::metadata(upper.join("etc")).unwrap(),
        std::fs::metadata(lower.path().join("etc")).unwrap(),
    );
    assert_eq!(
        (up.mtime(), up.mtime_nsec()),
        (low.mtime(), low.mtime_nsec())
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(
                path.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

#[test]
fn cpu_memory_and_pids_limits_reach_the_containers_cgroup() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec(
        "cd /sys/fs/cgroup; cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares \
         memory/memory.limit_in_bytes pids/pids.max; grep -c . pids/cgroup.procs",
    );
    let limits = Limits {
        memory: Some(64 << 20),
        pids: Some(100),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        ..Default::default()
    };
    spec::set_limits(&mut spec, &limits);
    let out = run(&spec);
    // The cgroup namespace shows the container's own cgroup as the root of each hierarchy, with
    // init and the command (the shell execs its last command, grep) in it.
    assert_eq!(
        out.stdout, "50000\n100000\n512\n67108864\n100\n2\n",
        "{}",
        out.stderr
    );
}
