//! RUN: one command in the runtime sandbox over the mounted step snapshot, as BuildKit runs it:
//! hostname `buildkitsandbox`, `/etc/hosts` and `/etc/resolv.conf` bind-mounted read-only from
//! generated files (never written into the rootfs), the stage's user, environment and working
//! directory (created, owned by the user, when missing).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_runtime::etc::{EtcFiles, mount_etc_files};
use strata_runtime::rootpath::resolve_in_root;
use strata_runtime::spec::{self, Network};
use strata_runtime::{Sandbox, StdioSet};

use crate::copy::mkdir_all;
use crate::error::{IoContext, Result};
use crate::mounts::SandboxMount;
use crate::progress::Stream;

/// Lines of output kept for the error message of a failing command.
const TAIL_LINES: usize = 20;

/// Where a heredoc script is mounted for `RUN <<EOF` with a `#!` line (BuildKit's `/dev/pipes`).
pub(crate) const PIPES_DIR: &str = "/dev/pipes";

/// What to run.
pub(crate) struct RunSpec<'a> {
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// `USER` (empty: root).
    pub user: &'a str,
    /// Absolute working directory.
    pub workdir: &'a str,
    pub network: Network,
    /// A heredoc script to mount read-only at `/dev/pipes/<name>`: (name, content).
    pub script: Option<(String, String)>,
    /// A scratch directory for generated files.
    pub state_dir: &'a Path,
    /// `RUN --mount`s, parents before children.
    pub mounts: &'a [SandboxMount],
}

/// How it ended.
pub(crate) struct RunOutcome {
    pub success: bool,
    /// `exit code: N`, or why it could not start.
    pub status: String,
    pub tail: Vec<String>,
}

/// Runs the command, sending each output line to `log`.
pub(crate) fn run(
    sandbox: &Sandbox,
    rs: &RunSpec<'_>,
    log: &(dyn Fn(Stream, String) + Sync),
) -> Result<RunOutcome> {
    let user = strata_runtime::user::resolve_user(rs.rootfs, rs.user).map_err(|e| {
        crate::error::BuildError::Io {
            context: format!("resolving USER {:?}", rs.user),
            error: std::io::Error::other(e.to_string()),
        }
    })?;
    let mut spec = spec::default_spec(rs.rootfs, rs.args.clone());
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_env(Some(rs.env.clone()));
    process.set_cwd(PathBuf::from(rs.workdir));
    spec.set_process(Some(process));
    spec::set_user(&mut spec, &user);
    spec::set_network(&mut spec, rs.network);
    mount_etc_files(
        &mut spec,
        &rs.state_dir.join("etc"),
        &EtcFiles {
            hostname: "buildkitsandbox".into(),
            extra_hosts: Vec::new(),
            network: rs.network,
            hostname_file: false,
            readonly: true,
        },
    )
    .ctx(|| "writing /etc/hosts and /etc/resolv.conf for the step".into())?;
    if let Some((name, content)) = &rs.script {
        let path = rs.state_dir.join("script");
        std::fs::write(&path, content).ctx(|| "writing the heredoc script".into())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .ctx(|| "writing the heredoc script".into())?;
        spec::add_bind(&mut spec, &path, &Path::new(PIPES_DIR).join(name), true);
    }
    for m in rs.mounts {
        match m {
            SandboxMount::Bind {
                source,
                target,
                read_only,
            } => spec::add_bind(&mut spec, source, Path::new(target), *read_only),
            SandboxMount::Tmpfs { target, size } => {
                let size = size.map(|s| format!("size={s}"));
                let options: Vec<&str> = size.iter().map(String::as_str).collect();
                spec::add_tmpfs(&mut spec, Path::new(target), &options);
            }
        }
    }
    // BuildKit creates a missing working directory, owned by the user.
    let cwd = resolve_in_root(rs.rootfs, Path::new(rs.workdir))
        .ctx(|| format!("resolving the working directory {}", rs.workdir))?;
    if !cwd.exists() {
        mkdir_all(rs.rootfs, &cwd, Some((user.uid, user.gid)))
            .ctx(|| format!("creating the working directory {}", rs.workdir))?;
    }

    let mut container = match sandbox.spawn(&spec, StdioSet::piped()) {
        Ok(c) => c,
        Err(e) => {
            return Ok(RunOutcome {
                success: false,
                status: e.to_string(),
                tail: Vec::new(),
            });
        }
    };
    let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let outputs = [
        (container.stdout.take(), Stream::Stdout),
        (container.stderr.take(), Stream::Stderr),
    ];
    std::thread::scope(|scope| {
        for (file, stream) in outputs {
            let Some(file) = file else { continue };
            let tail = &tail;
            scope.spawn(move || {
                for line in BufReader::new(file).split(b'\n') {
                    let Ok(line) = line else { break };
                    let mut text = String::from_utf8_lossy(&line).into_owned();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                    {
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if t.len() == TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(text.clone());
                    }
                    log(stream, text);
                }
            });
        }
    });
    let exit = container.wait().map_err(|e| crate::error::BuildError::Io {
        context: "waiting for the step's process".into(),
        error: std::io::Error::other(e.to_string()),
    })?;
    let tail: Vec<String> = tail.into_inner().unwrap_or_else(|e| e.into_inner()).into();
    let status = match (&exit.exec_error, exit.status.signal, exit.oom_killed) {
        (Some(err), _, _) => format!("{err} (exit code: {})", exit.status.code),
        (None, _, true) => format!("exit code: {} (out of memory)", exit.status.code),
        (None, Some(sig), _) => format!("exit code: {} (signal {sig})", exit.status.code),
        (None, None, _) => format!("exit code: {}", exit.status.code),
    };
    Ok(RunOutcome {
        success: exit.status.success() && exit.exec_error.is_none(),
        status,
        tail,
    })
}
