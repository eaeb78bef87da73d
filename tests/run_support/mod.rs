//! Helpers for the container tests: a store root with busybox images (made by `strata import`,
//! no registry), running strata, reading its output, and a guard that force-removes every
//! container of the root (killing their monitors) when a test ends, passed or not.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::store_support::{Root, busybox_tar};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A store root whose containers are removed when it drops.
pub struct Env {
    pub root: Root,
}

impl Env {
    pub fn new() -> Env {
        Env { root: Root::new() }
    }

    pub fn path(&self) -> PathBuf {
        self.root.path()
    }

    /// `strata ARGS` with this root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(STRATA);
        c.env("STRATA_ROOT", self.path()).args(args);
        c
    }

    /// Runs strata; returns its output whatever the status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs strata, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs strata, which must fail; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "strata {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Imports busybox as `name` with `--change` instructions (CMD ["sh"] when none).
    pub fn image(&self, name: &str, changes: &[&str]) {
        let tar = busybox_tar().to_str().unwrap().to_string();
        let mut args = vec!["import".to_string(), tar, name.to_string()];
        let changes = if changes.is_empty() {
            &[r#"CMD ["sh"]"#][..]
        } else {
            changes
        };
        for c in changes {
            args.push("--change".into());
            args.push(c.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// `strata inspect` of one container as JSON.
    pub fn inspect(&self, container: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", "--type", "container", container]);
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        list.remove(0)
    }

    /// The container's state file, as the monitor writes it.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let path = self.path().join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Waits until `check` holds (polling), or panics after `limit`.
    pub fn until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every container ID of the root.
    pub fn all_ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let dir = self.path().join("containers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.len() != 64 {
                continue;
            }
            let _ = Command::new(STRATA)
                .env("STRATA_ROOT", self.path())
                .args(["rm", "-f", "-v", &id])
                .output();
            // A monitor that would not go: kill it.
            if let Ok(state) = std::fs::read(entry.path().join("state.json"))
                && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&state)
                && let Some(pid) = state["monitor_pid"].as_i64()
                && pid > 0
                && is_monitor(pid as i32, &id)
            {
                // SAFETY: kill(2) of a monitor process of this test's root.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        unmount_under(&self.path());
    }
}

fn is_monitor(pid: i32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(id))
}

/// Unmounts whatever is still mounted under `root` (deepest first), so the directory can go.
pub fn unmount_under(root: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

/// The text of an output's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of an output's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A terminal strata runs on (its stdin, stdout and stderr), and what strata writes to it, read
/// as it comes.
pub struct Terminal {
    master: std::os::fd::OwnedFd,
    slave: Option<std::os::fd::OwnedFd>,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: String,
}

fn window(rows: u16, cols: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Terminal {
    /// A terminal of `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Terminal {
        use std::io::Read;
        let pty = nix::pty::openpty(Some(&window(rows, cols)), None).unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Ends with EIO once nothing has the terminal open any more.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            master: pty.master,
            slave: Some(pty.slave),
            output,
            seen: String::new(),
        }
    }

    /// Starts `cmd` on the terminal; the terminal's own end of it is closed then, so that reading
    /// ends when `cmd` is done with it.
    pub fn spawn(&mut self, cmd: &mut Command) -> std::process::Child {
        let slave = self.slave.take().unwrap();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap()
    }

    /// Waits (20 s at most) until the terminal has shown `text`.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("{text:?} never came; the terminal showed {:?}", self.seen),
            }
        }
    }

    /// Everything the terminal has shown so far.
    pub fn seen(&self) -> &str {
        &self.seen
    }

    /// Resizes the terminal and tells `pid` with SIGWINCH, as a terminal tells its foreground
    /// process (which a process spawned by a test is not).
    pub fn resize(&self, rows: u16, cols: u16, pid: u32) {
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
        let rc = unsafe {
            libc::ioctl(
                self.master.as_raw_fd(),
                libc::TIOCSWINSZ,
                &window(rows, cols),
            )
        };
        assert_eq!(rc, 0);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .unwrap();
    }
}

/// Runs strata with `args` (a `run -t` or `exec -t` up to the image or container) on a terminal
/// of 24 x 80 running `stty size; sleep 3; stty size`, resizes the terminal to 33 x 77 between
/// the two, and checks that the command saw both: its terminal starts at ours (consoleSize) and
/// follows it.
pub fn assert_terminal_follows_window_size(env: &Env, args: &[&str]) {
    let mut terminal = Terminal::new(24, 80);
    let script = ["sh", "-c", "stty size; sleep 3; stty size"];
    let mut child = terminal.spawn(&mut env.cmd(&[args, &script[..]].concat()));
    terminal.wait_for("24 80");
    terminal.resize(33, 77, child.id());
    terminal.wait_for("33 77");
    assert_eq!(terminal.seen(), "24 80\r\n33 77\r\n");
    assert!(child.wait().unwrap().success());
}
