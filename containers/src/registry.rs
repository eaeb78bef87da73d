//! [`Containers`]: creating, finding, signalling, waiting for and removing containers, from the
//! files under `$STRATA_ROOT/containers`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_snapshotter::Snapshotter;
use strata_store::{Image, SnapshotHolder, Store};

use crate::error::{Error, Result, io_err};
use crate::fsutil::{self, FileLock, lock, read_json, try_lock, write_json_atomic};
use crate::names::{new_id, random_name, validate_name};
use crate::options::{ConfigOverrides, run_config};
use crate::process::{open_pidfd, parse_signal, pidfd_wait, start_time};
use crate::record::{ContainerConfig, ContainerState, HostConfig, MountKind, Status};
use crate::unpack::unpack_image;
use crate::volumes::{Volumes, data_size};
use crate::watch::Watcher;
use crate::{MONITOR_ARG, container_snapshot_id, holder_name};
use strata_runtime::pidfd_signal;

/// How long `stop` waits after the stop signal unless told otherwise (Docker's 10 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A container's two files.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub config: ContainerConfig,
    pub state: ContainerState,
}

impl Record {
    /// The names of the volumes the container mounts.
    pub fn volumes(&self) -> impl Iterator<Item = &str> {
        self.config
            .host
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.source.as_str())
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `--name` (a random `adjective_surname` when `None`).
    pub name: Option<String>,
    /// The image as the user named it.
    pub image_ref: String,
    pub image: Image,
    pub overrides: ConfigOverrides,
    /// Mounts as asked for: anonymous volumes get their names here.
    pub host: HostConfig,
}

/// A new container, and the volumes made for it.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: Record,
    /// Volumes that did not exist before (named ones included): [`Containers::discard`] removes
    /// them with the container when it cannot start.
    pub new_volumes: Vec<String>,
}

/// `rm` options.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveOptions {
    /// Kill a running container first.
    pub force: bool,
    /// Also remove its anonymous volumes.
    pub volumes: bool,
}

/// The containers (and volumes) of one strata root.
pub struct Containers {
    root: PathBuf,
    dir: PathBuf,
    store: Store,
    snapshotter: OnceLock<Snapshotter>,
    volumes: Volumes,
    exe: PathBuf,
}

impl Containers {
    /// The containers of `store`'s root. `exe` is the strata executable: it runs the sandbox
    /// helper and the monitor (`/proc/self/exe` in the binary).
    pub fn open(store: Store, exe: impl Into<PathBuf>) -> Result<Self> {
        let root = store.root().to_path_buf();
        let dir = root.join("containers");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        Ok(Self {
            volumes: Volumes::open(root.join("volumes"))?,
            dir,
            root,
            store,
            snapshotter: OnceLock::new(),
            exe: exe.into(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The strata executable (sandbox helper, monitor).
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// The snapshotter at `$STRATA_ROOT/snapshots`, opened on first use.
    pub fn snapshotter(&self) -> Result<&Snapshotter> {
        if let Some(s) = self.snapshotter.get() {
            return Ok(s);
        }
        let opened = Snapshotter::open(self.root.join("snapshots"))?;
        Ok(self.snapshotter.get_or_init(|| opened))
    }

    /// A container's directory.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// A container's log (Docker's `LogPath`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    pub(crate) fn spec_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("spec.json")
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("state.json")
    }

    pub(crate) fn monitor_lock_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("monitor.lock")
    }

    fn names_lock(&self) -> Result<FileLock> {
        lock(&self.dir.join("names.lock"), true)
    }

    // ---- creating ----

    /// Creates a container: unpacks the image, makes the container's snapshot, volumes and
    /// files. On any error nothing of it is left (volumes it created included).
    pub fn create(&self, options: CreateOptions) -> Result<Created> {
        let CreateOptions {
            name,
            image_ref,
            image,
            overrides,
            mut host,
        } = options;
        let id = new_id();
        let image_config = image
            .config_json
            .get("config")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let (mut config, path, args) = run_config(&image_config, &image_ref, &id, &overrides)?;
        if host.auto_remove && host.restart.name != "no" {
            return Err(Error::Invalid(
                "Conflicting options: --restart and --rm".into(),
            ));
        }
        for p in &host.ports {
            config
                .exposed_ports
                .entry(format!("{}/{}", p.container_port, p.protocol))
                .or_insert_with(|| serde_json::json!({}));
        }
        for m in &host.mounts {
            if m.kind == MountKind::Bind && !Path::new(&m.source).exists() {
                return Err(Error::Invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    m.source
                )));
            }
        }
        let mut destinations: Vec<&str> =
            host.mounts.iter().map(|m| m.destination.as_str()).collect();
        destinations.sort();
        if let Some(w) = destinations.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Invalid(format!("Duplicate mount point: {}", w[0])));
        }
        // Each image VOLUME no mount covers gets an anonymous volume, as in Docker.
        for dest in config.volumes.iter().flat_map(|v| v.keys()) {
            if !host.mounts.iter().any(|m| &m.destination == dest) {
                host.mounts.push(crate::record::MountConfig {
                    kind: MountKind::Volume,
                    source: String::new(),
                    destination: dest.clone(),
                    read_only: false,
                    anonymous: true,
                    no_copy: false,
                    options: Vec::new(),
                });
            }
        }
        host.log_max_files = host.log_max_files.max(1);

        let snapshotter = self.snapshotter()?;
        let lease = self.store.lease()?;
        let top = unpack_image(&self.store, &lease, snapshotter, &image)?;
        let snapshot = container_snapshot_id(&id);
        let record = Record {
            config: ContainerConfig {
                id: id.clone(),
                name: String::new(),
                created: fsutil::now(),
                image_id: image.id().to_string(),
                image_target: image.target.digest().to_string(),
                snapshot: snapshot.clone(),
                path,
                args,
                config,
                host,
            },
            state: ContainerState::default(),
        };
        let mut new_volumes = Vec::new();
        let result = self
            .create_locked(record, name, &mut new_volumes)
            .and_then(|record| {
                snapshotter.prepare(&snapshot, top.as_deref())?;
                let holder = holder_name(&id);
                self.store.write_meta(|m| {
                    m.hold_snapshot(&snapshot, &SnapshotHolder::Named(holder.clone()))?;
                    m.add_root(&holder, image.target.digest())
                })?;
                Ok(record)
            });
        let result = result.map(|record| Created {
            record,
            new_volumes: new_volumes.clone(),
        });
        drop(lease);
        if result.is_err() {
            let _ = self.snapshotter().map(|s| s.remove(&snapshot));
            let _ = self.store.write_meta(|m| {
                m.release_snapshot(&snapshot, &SnapshotHolder::Named(holder_name(&id)))?;
                m.remove_roots(&holder_name(&id))
            });
            let _ = fs::remove_dir_all(self.container_dir(&id));
            for v in new_volumes {
                let _ = self.volumes.delete(&v);
            }
        }
        result
    }

    /// Under the names lock: picks the name, makes the volumes and writes the files.
    fn create_locked(
        &self,
        mut record: Record,
        name: Option<String>,
        new_volumes: &mut Vec<String>,
    ) -> Result<Record> {
        let _names = self.names_lock()?;
        let existing = self.list_unreconciled()?;
        let taken = |n: &str| existing.iter().find(|r| r.config.name == n);
        record.config.name = match name {
            Some(n) => {
                let n = validate_name(&n)?;
                if let Some(other) = taken(&n) {
                    return Err(Error::NameInUse {
                        name: n,
                        id: other.config.id.clone(),
                    });
                }
                n
            }
            None => (0..)
                .map(random_name)
                .find(|n| taken(n).is_none())
                .unwrap_or_default(),
        };
        for m in &mut record.config.host.mounts {
            if m.kind != MountKind::Volume {
                continue;
            }
            let name = (!m.anonymous).then_some(m.source.as_str());
            let (volume, created) = self.volumes.create(name, BTreeMap::new())?;
            if created {
                new_volumes.push(volume.name.clone());
            }
            m.source = volume.name;
        }
        let dir = self.container_dir(&record.config.id);
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        write_json_atomic(&self.state_path(&record.config.id), &record.state)?;
        // Last: a directory without container.json is not (yet) a container.
        write_json_atomic(&dir.join("container.json"), &record.config)?;
        Ok(record)
    }

    /// The host pids of a running container's processes (those in its pid namespace), in
    /// order: what `docker top` lists.
    pub fn pids(&self, name_or_id: &str) -> Result<Vec<i32>> {
        self.pids_of(&self.get(name_or_id)?)
    }

    /// [`Containers::pids`] of a container already read.
    pub(crate) fn pids_of(&self, record: &Record) -> Result<Vec<i32>> {
        let state = &record.state;
        let id = record.config.id.clone();
        let is_init = || state.pid > 0 && start_time(state.pid) == Some(state.pid_start);
        if state.status != Status::Running || !is_init() {
            return Err(Error::NotRunning(id));
        }
        let namespace = |pid: i32| {
            fs::metadata(format!("/proc/{pid}/ns/pid"))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let ours = namespace(state.pid).ok_or_else(|| Error::NotRunning(id.clone()))?;
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").map_err(io_err("listing", "/proc"))? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // Gone meanwhile, or another namespace.
            if namespace(pid) == Some(ours) {
                pids.push(pid);
            }
        }
        // Still the container's init after the walk: not a recycled pid.
        if !is_init() {
            return Err(Error::NotRunning(id));
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Gives a container another name (`docker rename`), running or not. Only the record
    /// changes: its hostname and everything else stay.
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<()> {
        let new_name = validate_name(new_name)?;
        let _names = self.names_lock()?;
        let mut config = self.get(name_or_id)?.config;
        if config.name == new_name {
            return Err(Error::Invalid(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(other) = self
            .list_unreconciled()?
            .into_iter()
            .find(|r| r.config.name == new_name)
        {
            return Err(Error::NameInUse {
                name: new_name,
                id: other.config.id,
            });
        }
        config.name = new_name;
        write_json_atomic(
            &self.container_dir(&config.id).join("container.json"),
            &config,
        )
    }

    // ---- finding ----

    fn read_record(&self, id: &str) -> Result<Record> {
        let dir = self.container_dir(id);
        let config_path = dir.join("container.json");
        if !config_path.is_file() {
            return Err(Error::NoSuchContainer(id.to_string()));
        }
        let config: ContainerConfig = read_json(&config_path)?;
        let state: ContainerState = match read_json(&self.state_path(id)) {
            Ok(s) => s,
            Err(_) if !dir.exists() => return Err(Error::NoSuchContainer(id.to_string())),
            Err(e) => return Err(e),
        };
        Ok(Record { config, state })
    }

    fn list_unreconciled(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if id.len() != 64 {
                continue;
            }
            match self.read_record(&id) {
                Ok(r) => out.push(r),
                // Being created or removed.
                Err(Error::NoSuchContainer(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    /// Every container, newest first, with the state of those whose monitor died corrected.
    pub fn list(&self) -> Result<Vec<Record>> {
        self.list_unreconciled()?
            .into_iter()
            .map(|r| self.reconcile(r))
            .collect()
    }

    /// A container by full ID, name, or unique ID prefix (Docker's order).
    pub fn get(&self, name_or_id: &str) -> Result<Record> {
        let id = self.resolve_id(name_or_id)?;
        self.load(&id)
    }

    /// The ID of a container by full ID, name or unique ID prefix.
    pub fn resolve_id(&self, name_or_id: &str) -> Result<String> {
        let wanted = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        if wanted.len() == 64 && self.container_dir(wanted).join("container.json").is_file() {
            return Ok(wanted.to_string());
        }
        let all = self.list_unreconciled()?;
        if let Some(r) = all.iter().find(|r| r.config.name == wanted) {
            return Ok(r.config.id.clone());
        }
        let matches: Vec<&Record> = if wanted.is_empty() {
            Vec::new()
        } else {
            all.iter()
                .filter(|r| r.config.id.starts_with(wanted))
                .collect()
        };
        match matches.as_slice() {
            [one] => Ok(one.config.id.clone()),
            [] => Err(Error::NoSuchContainer(name_or_id.to_string())),
            _ => Err(Error::AmbiguousPrefix(name_or_id.to_string())),
        }
    }

    /// A container by ID, its state corrected if its monitor died.
    pub fn load(&self, id: &str) -> Result<Record> {
        let record = self.read_record(id)?;
        self.reconcile(record)
    }

    /// Whether a monitor process watches the container now.
    pub fn monitor_alive(&self, id: &str) -> Result<bool> {
        if !self.container_dir(id).exists() {
            return Ok(false);
        }
        Ok(try_lock(&self.monitor_lock_path(id), false)?.is_none())
    }

    /// A state saying running while no monitor holds the lock means the monitor died (killed):
    /// the container died with it (its sandbox helper kills it when the monitor's end of the
    /// control socket closes). Record that, and unmount what the monitor left mounted.
    fn reconcile(&self, record: Record) -> Result<Record> {
        if !record.state.status.is_active() || self.monitor_alive(&record.config.id)? {
            return Ok(record);
        }
        let id = record.config.id.clone();
        let mut fixed = None;
        let state = self.update_state(&id, |s| {
            // Re-checked under the state lock: a monitor writes its last state under it too.
            if s.status.is_active() && try_lock(&self.monitor_lock_path(&id), false)?.is_some() {
                s.status = Status::Exited;
                s.exit_code = 137;
                s.error = "the container's monitor process ended unexpectedly".into();
                s.finished_at = fsutil::now();
                s.pid = 0;
                s.pid_start = 0;
                fixed = Some(s.rootfs.take());
                s.exits += 1;
            }
            Ok(())
        })?;
        if let Some(rootfs) = fixed {
            // The dead monitor's mount, by the path it recorded: the snapshotter's own sweep
            // (`cleanup`) would spare it while the monitor is an unreaped zombie.
            if let Some(rootfs) = rootfs {
                unmount_if_mounted(&rootfs)?;
            }
            self.snapshotter()?.cleanup()?;
        }
        Ok(Record {
            config: record.config,
            state,
        })
    }

    /// Changes a container's state under its state lock; returns the new state.
    pub(crate) fn update_state(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerState) -> Result<()>,
    ) -> Result<ContainerState> {
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Err(Error::NoSuchContainer(id.to_string()));
        }
        let _lock = lock(&dir.join("state.lock"), true)?;
        let path = self.state_path(id);
        let mut state: ContainerState = read_json(&path)?;
        change(&mut state)?;
        write_json_atomic(&path, &state)?;
        Ok(state)
    }

    // ---- signals, stop, wait ----

    /// Sends `signal` to a running container's command (through its init). SIGKILL and the
    /// container's stop signal count as a stop: the restart policy does not apply.
    pub fn kill(&self, name_or_id: &str, signal: i32) -> Result<()> {
        let record = self.get(name_or_id)?;
        let id = &record.config.id;
        if record.state.status != Status::Running {
            return Err(Error::NotRunning(id.clone()));
        }
        let stops =
            signal == libc::SIGKILL || parse_signal(record.config.stop_signal()) == Some(signal);
        let state = if stops {
            self.update_state(id, |s| {
                s.stop_requested = true;
                Ok(())
            })?
        } else {
            record.state
        };
        let pidfd =
            open_pidfd(state.pid, state.pid_start).ok_or_else(|| Error::NotRunning(id.clone()))?;
        pidfd_signal(pidfd.as_fd(), signal).map_err(|_| Error::NotRunning(id.clone()))
    }

    /// Docker's `stop`: the stop signal (the container's, or `signal`), `timeout` to end, then
    /// SIGKILL; returns once the monitor recorded the end. A stopped container is left alone.
    pub fn stop(
        &self,
        name_or_id: &str,
        timeout: Option<Duration>,
        signal: Option<i32>,
    ) -> Result<()> {
        let record = self.get(name_or_id)?;
        let id = record.config.id.clone();
        if !record.state.status.is_active() {
            return Ok(());
        }
        let signal = signal
            .or_else(|| parse_signal(record.config.stop_signal()))
            .unwrap_or(libc::SIGTERM);
        let timeout = timeout
            .or(record.config.host.stop_timeout.map(Duration::from_secs))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let state = self.update_state(&id, |s| {
            s.stop_requested = true;
            Ok(())
        })?;
        if let Some(pidfd) = open_pidfd(state.pid, state.pid_start) {
            let _ = pidfd_signal(pidfd.as_fd(), signal);
            if !pidfd_wait(pidfd.as_fd(), Some(timeout)) {
                let _ = pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
                pidfd_wait(pidfd.as_fd(), Some(DEFAULT_STOP_TIMEOUT));
            }
        }
        self.wait_for_monitor(&id, DEFAULT_STOP_TIMEOUT)
    }

    /// Waits until no monitor watches `id` (it recorded the end and went away).
    fn wait_for_monitor(&self, id: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.monitor_alive(id)? {
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "container {id}: the monitor did not finish within {}s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Docker's `wait`: blocks until the container's current (or next) run ends; returns its
    /// exit code.
    pub fn wait(&self, name_or_id: &str) -> Result<i32> {
        let record = self.get(name_or_id)?;
        let id = record.config.id.clone();
        let ended = |s: &ContainerState| s.status == Status::Exited || s.status == Status::Dead;
        if ended(&record.state) {
            let _ = self.wait_for_monitor(&id, DEFAULT_STOP_TIMEOUT);
            return Ok(record.state.exit_code);
        }
        let watcher = Watcher::new(&self.container_dir(&id))?;
        let exits = record.state.exits;
        let mut last = record.state;
        loop {
            match self.load(&id) {
                Ok(r) if r.state.exits > exits || ended(&r.state) => {
                    // Ended for good: return once the monitor let go of it too (unmounted,
                    // removed), so `wait && rm` works.
                    if ended(&r.state) {
                        let _ = self.wait_for_monitor(&id, DEFAULT_STOP_TIMEOUT);
                    }
                    return Ok(r.state.exit_code);
                }
                Ok(r) => last = r.state,
                // Removed (--rm) after it ended: its last recorded end is the answer.
                Err(Error::NoSuchContainer(_)) if last.exits > exits || ended(&last) => {
                    return Ok(last.exit_code);
                }
                Err(e) => return Err(e),
            }
            watcher.wait(Duration::from_millis(500));
        }
    }

    // ---- starting ----

    /// Starts a created or stopped container under a detached monitor process; returns once the
    /// container runs, or with the reason it could not start.
    pub fn start_detached(&self, id: &str) -> Result<()> {
        let record = self.load(id)?;
        if record.state.status.is_active() {
            return Ok(());
        }
        let dir = self.container_dir(id);
        let log_path = dir.join("monitor.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("opening", &log_path))?;
        let mut command = Command::new(&self.exe);
        command
            .arg(MONITOR_ARG)
            .arg(id)
            .env("STRATA_ROOT", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: setsid(2) is async-signal-safe; the monitor gets its own session, away from
        // the caller's terminal and process group.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let mut child = command
            .spawn()
            .map_err(io_err("starting monitor", &self.exe))?;
        let mut report = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut report);
        }
        // The monitor forked away from this child at once: reap it.
        let _ = child.wait();
        crate::monitor::parse_report(&report)
    }

    // ---- removing ----

    /// Removes a container: its snapshot, its holds in the store, its files (and with `volumes`
    /// its anonymous volumes no other container uses). A running one needs `force` (it is
    /// killed first). Returns the ID.
    pub fn remove(&self, name_or_id: &str, options: RemoveOptions) -> Result<String> {
        let record = self.get(name_or_id)?;
        let id = record.config.id.clone();
        if record.state.status.is_active() {
            if !options.force {
                return Err(Error::Running {
                    name: record.config.name,
                });
            }
            match self.kill(&id, libc::SIGKILL) {
                Ok(()) | Err(Error::NotRunning(_)) => {}
                Err(e) => return Err(e),
            }
            self.wait_for_monitor(&id, DEFAULT_STOP_TIMEOUT)?;
        }
        // A monitor that recorded the end may still be unmounting: let it finish.
        self.wait_for_monitor(&id, DEFAULT_STOP_TIMEOUT)?;
        let lock_path = self.monitor_lock_path(&id);
        let Some(_monitor) = try_lock(&lock_path, true)? else {
            return Err(Error::AlreadyRunning(id));
        };
        let record = self.read_record(&id)?;
        self.destroy(&record.config, options.volumes)?;
        Ok(id)
    }

    /// What the container changed in its filesystem against its image, as `docker diff`
    /// reports it (running or not). The mount points the runtime makes in every rootfs are
    /// left out, as Docker keeps them in a layer of their own.
    pub fn changes(&self, name_or_id: &str) -> Result<Vec<strata_snapshotter::Change>> {
        let record = self.get(name_or_id)?;
        let skip = |path: &Path| strata_runtime::is_runtime_mount_point(&Path::new("/").join(path));
        self.on_rootfs(&record.config, |s| {
            s.docker_changes(&record.config.snapshot, &skip)
        })
    }

    /// Removes every container that is not running (`docker container prune`): created, exited
    /// and dead ones; their volumes stay. One started meanwhile is left alone. Returns the IDs
    /// removed and the bytes their writable layers held.
    pub fn prune_containers(&self) -> Result<(Vec<String>, u64)> {
        let (mut removed, mut freed) = (Vec::new(), 0);
        for record in self.list()? {
            if record.state.status.is_active() {
                continue;
            }
            let size = data_size(&self.snapshotter()?.fs_path(&record.config.snapshot));
            match self.remove(&record.config.id, RemoveOptions::default()) {
                Ok(id) => {
                    removed.push(id);
                    freed += size;
                }
                Err(
                    Error::Running { .. } | Error::AlreadyRunning(_) | Error::NoSuchContainer(_),
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, freed))
    }

    /// Removes everything of a container that no monitor runs (the caller holds the monitor
    /// lock, or is the monitor).
    pub(crate) fn destroy(&self, config: &ContainerConfig, volumes: bool) -> Result<()> {
        let id = &config.id;
        let _names = self.names_lock()?;
        match self.snapshotter()?.remove(&config.snapshot) {
            Ok(()) | Err(strata_snapshotter::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let holder = holder_name(id);
        self.store.write_meta(|m| {
            m.release_snapshot(&config.snapshot, &SnapshotHolder::Named(holder.clone()))?;
            m.remove_roots(&holder)
        })?;
        if volumes {
            let others = self.list_unreconciled()?;
            for m in config.host.mounts.iter().filter(|m| m.anonymous) {
                let used = others
                    .iter()
                    .any(|r| r.config.id != *id && r.volumes().any(|v| v == m.source));
                if !used {
                    match self.volumes.delete(&m.source) {
                        Ok(_) | Err(Error::NoSuchVolume(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // Renamed away first: a half-removed directory is never read as a container.
        let dir = self.container_dir(id);
        let doomed = self.dir.join(format!(".rm-{id}"));
        fs::rename(&dir, &doomed).map_err(io_err("removing", &dir))?;
        fs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))
    }

    /// Removes a container that could not start, with the volumes its creation made (those no
    /// other container took meanwhile): `run` leaves nothing half-created.
    pub fn discard(&self, created: &Created) -> Result<()> {
        self.remove(
            &created.record.config.id,
            RemoveOptions {
                force: true,
                volumes: true,
            },
        )?;
        let _names = self.names_lock()?;
        for v in &created.new_volumes {
            if self.volume_users(v)?.is_empty() {
                match self.volumes.delete(v) {
                    Ok(_) | Err(Error::NoSuchVolume(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    // ---- volumes ----

    /// IDs of the containers whose mounts use volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .list_unreconciled()?
            .into_iter()
            .filter(|r| r.volumes().any(|v| v == name))
            .map(|r| r.config.id)
            .collect())
    }

    /// Removes a volume no container uses (`docker volume rm`).
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        let _names = self.names_lock()?;
        self.volumes.get(name)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::VolumeInUse {
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        self.volumes.delete(name).map(drop)
    }

    /// Removes unused volumes: anonymous ones, or all with `all` (`docker volume prune [-a]`).
    /// Returns their names and the bytes freed.
    pub fn prune_volumes(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let _names = self.names_lock()?;
        let records = self.list_unreconciled()?;
        let in_use: HashSet<&str> = records.iter().flat_map(Record::volumes).collect();
        let mut removed = Vec::new();
        let mut freed = 0;
        for v in self.volumes.list()? {
            if (all || v.anonymous) && !in_use.contains(v.name.as_str()) {
                freed += self.volumes.delete(&v.name)?;
                removed.push(v.name);
            }
        }
        Ok((removed, freed))
    }
}

/// Unmounts `path` (lazily) when it is a mount point.
fn unmount_if_mounted(path: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading", "/proc/self/mountinfo"))?;
    let mounted = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == path);
    if mounted {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| io_err("unmounting", path)(e.into()))?;
    }
    Ok(())
}
