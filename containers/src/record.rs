//! What a container is (`container.json`, written at create; `rename` rewrites it) and what it is
//! doing (`state.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::ZERO_TIME;

/// Docker's container `Config`: the image's config with the run's flags applied. Serialized with
/// Docker's field names, so `inspect` shows it and `commit` writes it as the new image's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Value>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    /// The image as the user named it.
    pub image: String,
    pub volumes: Option<BTreeMap<String, Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// How the container's network is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with loopback; published ports through the userspace proxy.
    #[default]
    Private,
    Host,
    None,
}

impl NetworkMode {
    /// `host`, `none`, `private` (Docker's `bridge` and `default` mean `private` here).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" | "bridge" | "default" => Some(Self::Private),
            "host" => Some(Self::Host),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Host => "host",
            Self::None => "none",
        }
    }
}

/// What a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A volume under `$STRATA_ROOT/volumes`.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    pub kind: MountKind,
    /// The host path (bind) or the volume's name (volume); empty for tmpfs.
    pub source: String,
    /// Where it appears in the container (absolute).
    pub destination: String,
    pub read_only: bool,
    /// A volume made for this container alone (image `VOLUME`, `-v /path`): `rm -v` removes it.
    #[serde(default)]
    pub anonymous: bool,
    /// Do not fill an empty volume from the image's content at the destination.
    #[serde(default)]
    pub no_copy: bool,
    /// tmpfs options (`size=...`, `mode=...`).
    #[serde(default)]
    pub options: Vec<String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address to listen on (`0.0.0.0` unless given).
    pub host_ip: String,
    /// Host port; 0 picks a free one when the container starts.
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Docker's restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// `on-failure:N`: at most N restarts (0 = no limit).
    pub maximum_retry_count: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            name: "no".into(),
            maximum_retry_count: 0,
        }
    }
}

impl RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let maximum_retry_count = match (name, count) {
            ("on-failure", Some(c)) => c.parse().ok()?,
            (_, Some(_)) => return None,
            (_, None) => 0,
        };
        matches!(name, "no" | "always" | "unless-stopped" | "on-failure").then(|| Self {
            name: name.to_string(),
            maximum_retry_count,
        })
    }

    /// Whether a run that ended with `code` is followed by another, after `restarts` restarts.
    pub fn restarts_after(&self, code: i32, restarts: u32) -> bool {
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0 && (self.maximum_retry_count == 0 || restarts < self.maximum_retry_count)
            }
            _ => false,
        }
    }
}

/// The run's resources and wiring (Docker's `HostConfig`, in our own terms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    pub mounts: Vec<MountConfig>,
    pub ports: Vec<PortBinding>,
    pub network: NetworkMode,
    /// `--memory`, bytes.
    pub memory: Option<i64>,
    /// `--cpus` in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub read_only: bool,
    /// `--init` (the command always runs under strata's init; recorded for inspect).
    pub init: bool,
    pub restart: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--runtime`: an external OCI runtime (runc, crun, a path) instead of strata's sandbox.
    pub runtime: Option<String>,
    /// Rotate the log when it reaches this many bytes.
    pub log_max_size: Option<u64>,
    /// Log files kept, the current one included.
    pub log_max_files: u32,
    /// `--cap-add` and `--cap-drop`, as given.
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--add-host`: names and addresses added to `/etc/hosts`.
    #[serde(default)]
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--ulimit`.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl`: namespaced kernel parameters.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `--shm-size`: the size of `/dev/shm` in bytes (Docker's default: 64 MiB).
    #[serde(default)]
    pub shm_size: Option<i64>,
    /// `--stop-timeout`: seconds `stop` waits before SIGKILL when not told (Docker's `Config`
    /// field; kept here so `commit` does not write it into an image config).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// `--group-add`: gids or group names of the image's `/etc/group`, added to the user's.
    #[serde(default)]
    pub group_add: Vec<String>,
}

/// A resource limit (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// As Docker names it: `nofile`, `nproc`, `core`...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// What a container is. Written once, when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub created: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// The digest of the manifest or index the store names: the container's GC root.
    pub image_target: String,
    /// The container's active snapshot.
    pub snapshot: String,
    /// The command: the first word and the rest (Docker's `Path` and `Args`).
    pub path: String,
    pub args: Vec<String>,
    pub config: RunConfig,
    pub host: HostConfig,
}

impl ContainerConfig {
    /// The command as one line (`ps`).
    pub fn command_line(&self) -> String {
        std::iter::once(self.path.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The signal `stop` sends first.
    pub fn stop_signal(&self) -> &str {
        self.config.stop_signal.as_deref().unwrap_or("SIGTERM")
    }
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Exited,
    Dead,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// A monitor is (or should be) watching the container.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Restarting)
    }
}

/// What a container is doing. Replaced atomically under the container's state lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The container's init as the host sees it (0 when not running).
    pub pid: i32,
    /// Its start time (clock ticks after boot): with `pid`, an identity no recycled pid shares.
    pub pid_start: u64,
    /// The monitor process watching the container.
    pub monitor_pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: u32,
    /// `stop`/`kill` asked for the end: the restart policy does not apply.
    pub stop_requested: bool,
    /// The mounted root filesystem while running.
    pub rootfs: Option<PathBuf>,
    /// Published ports as bound (a requested port 0 shows the port picked).
    pub ports: Vec<PortBinding>,
    /// How many runs have ended (lets `wait` tell one run's end from the next).
    pub exits: u64,
}

impl Default for ContainerState {
    fn default() -> Self {
        Self {
            status: Status::Created,
            pid: 0,
            pid_start: 0,
            monitor_pid: 0,
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            restart_count: 0,
            stop_requested: false,
            rootfs: None,
            ports: Vec::new(),
            exits: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_decide() {
        let p = RestartPolicy::parse("on-failure:2").unwrap();
        assert_eq!(p.maximum_retry_count, 2);
        assert!(p.restarts_after(1, 0));
        assert!(p.restarts_after(1, 1));
        assert!(!p.restarts_after(1, 2));
        assert!(!p.restarts_after(0, 0));
        assert!(
            RestartPolicy::parse("always")
                .unwrap()
                .restarts_after(0, 99)
        );
        assert!(!RestartPolicy::parse("no").unwrap().restarts_after(1, 0));
        assert!(
            RestartPolicy::parse("on-failure")
                .unwrap()
                .restarts_after(3, 1000)
        );
        for bad in ["sometimes", "always:3", "on-failure:x", ""] {
            assert!(RestartPolicy::parse(bad).is_none(), "{bad}");
        }
    }
}
