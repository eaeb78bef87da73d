//! The container lifecycle: what `strata run`, `ps`, `logs`, `stop`, `exec`, `commit`, `cp` and
//! `volume` work on.
//!
//! A container is a directory under `$STRATA_ROOT/containers/<id>/` plus an active snapshot
//! (`container-<id>`) over the image's layers, which are unpacked into committed snapshots named
//! by their OCI ChainID ([`unpack`]). A running container is watched by a *monitor*: a process
//! (the `strata` binary in a hidden mode, or the `strata run` process itself when attached) that
//! owns the rootfs mount, the runtime's [`strata_runtime::Container`] handle, the port proxy and
//! the logs, records the exit and applies the restart policy ([`monitor`]). Every other command
//! works from the files alone, so any later strata process sees the same state:
//!
//! ```text
//! containers/<id>/container.json   what the container is (written at create; `rename` rewrites it)
//! containers/<id>/state.json       what it is doing (replaced atomically under state.lock)
//! containers/<id>/monitor.lock     flock held by the live monitor: free = no monitor
//! containers/<id>/spec.json        the OCI runtime spec of the current run (for exec)
//! containers/<id>/<id>-json.log    Docker's json-file log, rotated to .1, .2, ...
//! containers/<id>/{hosts,hostname,resolv.conf}
//! volumes/<name>/_data             named and anonymous volumes
//! snapshots/                       the snapshotter's root
//! ```

mod commit;
mod copy;
mod error;
mod exec;
mod export;
mod fsutil;
pub mod logs;
pub mod monitor;
mod names;
pub mod options;
pub mod process;
mod record;
mod registry;
mod spec;
mod stats;
pub mod unpack;
pub mod volumes;
mod watch;

pub use commit::CommitOptions;
pub use copy::{CopyOptions, copy_from_container, copy_into_container};
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use fsutil::{ZERO_TIME, now, parse_time};
pub use names::{new_id, random_name, validate_name};
pub use record::{
    ContainerConfig, ContainerState, HostConfig, MountConfig, MountKind, NetworkMode, PortBinding,
    RestartPolicy, RunConfig, Status, Ulimit,
};
pub use registry::{
    Containers, CreateOptions, Created, DEFAULT_STOP_TIMEOUT, Record, RemoveOptions,
};
pub use stats::Stats;
pub use watch::Watcher;

/// The first argument that makes the `strata` binary act as a container monitor
/// (`strata MONITOR_ARG <id>`); dispatch it to [`monitor::monitor_main`] before anything else.
pub const MONITOR_ARG: &str = "__strata-container-monitor";

/// The snapshot id of a container's own (active) snapshot.
pub fn container_snapshot_id(id: &str) -> String {
    format!("container-{id}")
}

/// The store holder name (GC root and snapshot hold) of a container.
pub fn holder_name(id: &str) -> String {
    format!("container:{id}")
}
