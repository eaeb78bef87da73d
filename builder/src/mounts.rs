//! `RUN --mount`: what each mount type puts in the sandbox, and what it adds to the step's key.
//!
//! - `cache`: a directory kept across builds under `$STRATA_ROOT/cache-mounts/<sha256 of id>/data`
//!   (next to a `lock` file and an `id` file naming it). `sharing=shared` holds a shared flock on
//!   `lock` for the run, `locked` an exclusive one (concurrent users wait), `private` tries an
//!   exclusive one and, when the cache is busy, gets a fresh directory of its own for this run.
//!   `strata builder prune` removes the caches nobody holds ([`prune_cache_mounts`]).
//! - `secret`: the value is written to a private tmpfs mounted on the host for the run only and
//!   bind-mounted read-only at the target (or put in the process environment with `env=`); it is
//!   never written to disk, a snapshot, the key or a message.
//! - `bind`: the context's selection (after `.dockerignore`) copied to scratch; a stage or image
//!   read-only from its snapshot view, or copied to scratch when `rw` (writes are discarded).
//! - `tmpfs`: a tmpfs of the given size.
//! - `ssh`: a socket in scratch, with the mount's mode and owner, relaying every connection to the
//!   agent socket the build was given (`--ssh id=PATH`); `SSH_AUTH_SOCK` names the first one.
//!
//! Mount points the rootfs lacked are created by the runtime and removed after the run (its
//! mount-stub cleaner), so no mount leaves an empty file or directory in the layer.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rustix::fs::{FlockOperation, flock};
use serde_json::json;
use strata_codec::sha256_digest;
use strata_frontend::mount::{Mount, MountType, Sharing};
use strata_runtime::rootpath::resolve_in_root;

use crate::context::Context;
use crate::copy::{CopyOptions, copy_path};
use crate::layers::Layer;
use crate::slots::{self, SlotPrune};
use crate::source::SourceRoot;

/// The directory of cache mounts under the store root.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts";

/// The tmpfs of a step's secrets, in its scratch directory.
const SECRETS_DIR: &str = "secrets";

/// Where a `--secret` value comes from; read when a RUN step mounts it, never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `src=FILE` (`type=file`).
    File(PathBuf),
    /// `env=VAR` (`type=env`): the builder process's environment variable.
    Env(String),
}

impl SecretSource {
    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SecretSource::File(path) => {
                fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            SecretSource::Env(var) => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| format!("environment variable {var} is not set")),
        }
    }
}

/// What a bind or cache mount reads from.
pub(crate) enum MountFrom {
    /// The build context (a bind mount without `from`).
    Context,
    /// A stage of this build.
    Stage(usize),
    /// An image's layers.
    Image(Vec<Layer>),
    /// Nothing: an empty cache, a tmpfs, a secret, an SSH socket.
    Nothing,
}

/// One `--mount` of a RUN step, resolved at planning time.
pub(crate) struct RunMount {
    pub kind: MountType,
    /// Absolute; `None` for a secret exposed only as an environment variable.
    pub target: Option<String>,
    pub read_only: bool,
    pub from: MountFrom,
    /// How `from` was written (for the key and messages).
    pub from_name: Option<String>,
    /// The path inside `from`, relative (`""`: its root).
    pub source: String,
    /// Cache id, secret id or SSH agent id.
    pub id: String,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<i64>,
    pub env: Option<String>,
    pub required: bool,
}

/// Joins a mount target onto the working directory and cleans it.
fn absolute(target: &str, workdir: &str) -> String {
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{workdir}/{target}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl RunMount {
    /// Resolves `m` for a step whose working directory is `workdir`; `ssh_index` counts the ssh
    /// mounts before this one (BuildKit's default target `/run/buildkit/ssh_agent.<n>`).
    /// `source` is the path inside `from`, already made relative by the caller.
    pub(crate) fn plan(
        m: &Mount,
        from: MountFrom,
        source: String,
        workdir: &str,
        ssh_index: usize,
    ) -> Result<RunMount, String> {
        let mut id = m.id.clone().unwrap_or_default();
        let mut target = m.target.as_deref().map(|t| absolute(t, workdir));
        match m.kind {
            MountType::Secret => {
                let (secret_id, secret_target) = m
                    .secret_id_and_target()
                    .ok_or("invalid secret mount. one of source, target required")?;
                id = secret_id;
                target = secret_target.map(|t| absolute(&t, workdir));
            }
            MountType::Ssh => {
                if id.is_empty() {
                    id = "default".into();
                }
                if target.is_none() {
                    target = Some(format!("/run/buildkit/ssh_agent.{ssh_index}"));
                }
            }
            MountType::Cache => {
                let t = target.as_deref().ok_or("mount target must be specified")?;
                if id.is_empty() {
                    id = t.to_string();
                }
            }
            MountType::Bind | MountType::Tmpfs => {
                if target.is_none() {
                    return Err("mount target must be specified".into());
                }
            }
        }
        if target.as_deref() == Some("/") {
            return Err("cannot mount over the root filesystem (target /)".into());
        }
        Ok(RunMount {
            kind: m.kind,
            target,
            read_only: m.read_only,
            from,
            from_name: m.from.clone(),
            source,
            id,
            sharing: m.sharing.unwrap_or(Sharing::Shared),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size_limit,
            env: m.env.clone(),
            required: m.required,
        })
    }

    /// The mount's options for the step key: never content (a bind's source adds its own input).
    pub(crate) fn key(&self) -> serde_json::Value {
        let sharing = match self.sharing {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        };
        let mut v = json!({
            "type": self.kind.as_str(),
            "target": self.target,
            "ro": self.read_only,
        });
        let extra = match self.kind {
            MountType::Bind => json!({"from": self.from_name, "source": self.source}),
            MountType::Cache => json!({
                "id": self.id, "sharing": sharing, "from": self.from_name, "source": self.source,
                "mode": self.mode, "uid": self.uid, "gid": self.gid,
            }),
            MountType::Tmpfs => json!({"size": self.size}),
            MountType::Secret => json!({
                "id": self.id, "env": self.env, "required": self.required,
                "mode": self.mode, "uid": self.uid, "gid": self.gid,
            }),
            MountType::Ssh => json!({
                "id": self.id, "required": self.required,
                "mode": self.mode, "uid": self.uid, "gid": self.gid,
            }),
        };
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    }
}

/// A mount for the sandbox spec.
pub(crate) enum SandboxMount {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size: Option<i64>,
    },
}

impl SandboxMount {
    fn target(&self) -> &str {
        match self {
            SandboxMount::Bind { target, .. } | SandboxMount::Tmpfs { target, .. } => target,
        }
    }
}

/// What a step's mounts need from the build.
pub(crate) struct MountInputs<'a> {
    /// `$STRATA_ROOT`.
    pub store_root: &'a Path,
    /// A scratch directory of this step's own (removed after it).
    pub scratch: &'a Path,
    pub context: Option<&'a Context>,
    pub secrets: &'a BTreeMap<String, SecretSource>,
    pub ssh: &'a BTreeMap<String, PathBuf>,
}

/// The mounts of one run and what keeps them valid; dropping it releases everything.
pub(crate) struct Attached {
    pub mounts: Vec<SandboxMount>,
    /// Variables to add to the process environment (secrets with `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<(String, String)>,
    // Dropped in order: relays stop, then the secrets' tmpfs goes, then locks are released.
    _relays: Vec<AgentRelay>,
    _secrets: Option<Tmpfs>,
    _locks: Vec<File>,
}

/// Prepares `mounts`; `roots[i]` is the host directory of mount i's stage or image (`None`
/// for an empty image or a mount without one).
pub(crate) fn attach(
    inputs: &MountInputs<'_>,
    mounts: &[RunMount],
    roots: &[Option<PathBuf>],
) -> Result<Attached, String> {
    let mut out = Attached {
        mounts: Vec::new(),
        env: Vec::new(),
        _relays: Vec::new(),
        _secrets: None,
        _locks: Vec::new(),
    };
    let mut cache_sources: BTreeMap<usize, PathBuf> = BTreeMap::new();
    for (i, m) in mounts.iter().enumerate() {
        let root = roots.get(i).cloned().flatten();
        let scratch = inputs.scratch.join(format!("mount-{i}"));
        match m.kind {
            MountType::Bind => {
                let target = m.target.clone().unwrap_or_default();
                let source = match (&m.from, m.read_only, &root) {
                    (MountFrom::Context, _, _) => {
                        let ctx = inputs.context.ok_or("the build has no context to mount")?;
                        materialize(&SourceRoot::Context(ctx), &m.source, &scratch)?
                    }
                    (_, true, Some(root)) => {
                        let path = resolve_in_root(root, Path::new(&m.source))
                            .map_err(|e| e.to_string())?;
                        if fs::symlink_metadata(&path).is_err() {
                            return Err(not_found(&m.source));
                        }
                        path
                    }
                    (_, false, Some(root)) => {
                        materialize(&SourceRoot::Dir(root.clone()), &m.source, &scratch)?
                    }
                    (_, _, None) if m.source.is_empty() => {
                        fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
                        scratch
                    }
                    (_, _, None) => return Err(not_found(&m.source)),
                };
                out.mounts.push(SandboxMount::Bind {
                    source,
                    target,
                    read_only: m.read_only,
                });
            }
            MountType::Cache => {
                // The same cache twice in one RUN is one directory (a second lock would wait
                // for the first forever).
                let earlier = mounts[..i]
                    .iter()
                    .position(|e| e.kind == MountType::Cache && e.id == m.id);
                let data = match earlier.and_then(|e| cache_sources.get(&e)) {
                    Some(data) => data.clone(),
                    None => {
                        let (data, lock) = cache_dir(inputs, m, root.as_deref(), &scratch)?;
                        out._locks.extend(lock);
                        cache_sources.insert(i, data.clone());
                        data
                    }
                };
                out.mounts.push(SandboxMount::Bind {
                    source: data,
                    target: m.target.clone().unwrap_or_default(),
                    read_only: m.read_only,
                });
            }
            MountType::Tmpfs => out.mounts.push(SandboxMount::Tmpfs {
                target: m.target.clone().unwrap_or_default(),
                size: m.size,
            }),
            MountType::Secret => {
                let Some(source) = inputs.secrets.get(&m.id) else {
                    if m.required {
                        return Err(format!("secret {}: not found", m.id));
                    }
                    continue;
                };
                let value = source.read().map_err(|e| format!("secret {}: {e}", m.id))?;
                if let Some(var) = &m.env {
                    let text = String::from_utf8(value.clone()).map_err(|_| {
                        format!("secret {}: not valid UTF-8, cannot be put in ${var}", m.id)
                    })?;
                    out.env.push((var.clone(), text));
                }
                if let Some(target) = &m.target {
                    if out._secrets.is_none() {
                        out._secrets = Some(Tmpfs::mount(&inputs.scratch.join(SECRETS_DIR))?);
                    }
                    let dir = out
                        ._secrets
                        .as_ref()
                        .map(|t| t.0.clone())
                        .unwrap_or_default();
                    let file = dir.join(format!("{i}"));
                    fs::write(&file, &value)
                        .and_then(|()| {
                            fs::set_permissions(
                                &file,
                                fs::Permissions::from_mode(m.mode.unwrap_or(0o400)),
                            )
                        })
                        .and_then(|()| chown(&file, m.uid.or(Some(0)), m.gid.or(Some(0))))
                        .map_err(|e| format!("secret {}: {e}", m.id))?;
                    out.mounts.push(SandboxMount::Bind {
                        source: file,
                        target: target.clone(),
                        read_only: true,
                    });
                }
            }
            MountType::Ssh => {
                let Some(agent) = inputs.ssh.get(&m.id) else {
                    if m.required {
                        return Err(format!(
                            "no SSH key {:?} forwarded from the client (use --ssh {})",
                            m.id, m.id
                        ));
                    }
                    continue;
                };
                let target = m.target.clone().unwrap_or_default();
                fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
                let socket = scratch.join("agent.sock");
                let relay = AgentRelay::start(&socket, agent.clone())
                    .and_then(|r| {
                        fs::set_permissions(
                            &socket,
                            fs::Permissions::from_mode(m.mode.unwrap_or(0o600)),
                        )?;
                        chown(&socket, m.uid.or(Some(0)), m.gid.or(Some(0)))?;
                        Ok(r)
                    })
                    .map_err(|e| format!("ssh {}: {e}", m.id))?;
                out._relays.push(relay);
                if !out.env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                    out.env.push(("SSH_AUTH_SOCK".into(), target.clone()));
                }
                out.mounts.push(SandboxMount::Bind {
                    source: socket,
                    target,
                    read_only: false,
                });
            }
        }
    }
    // Parents before children, whatever order the Dockerfile gave.
    out.mounts
        .sort_by_key(|m| m.target().split('/').filter(|c| !c.is_empty()).count());
    Ok(out)
}

fn not_found(source: &str) -> String {
    format!("\"/{source}\": not found: no such file or directory")
}

/// Copies `rel` of `src` into `into` (created) and returns the copy: `into` itself for a
/// directory, `into/file` for anything else.
fn materialize(src: &SourceRoot<'_>, rel: &str, into: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let entry = src
        .resolve(rel)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| not_found(rel))?;
    let options = CopyOptions {
        chown: None,
        chmod: None,
        unpack_into: None,
        only: None,
        filter: None,
    };
    let is_dir = entry.1.kind == crate::context::Kind::Dir;
    let (dest, path) = if is_dir {
        ("/", into.to_path_buf())
    } else {
        ("/file", into.join("file"))
    };
    copy_path(src, rel, into, dest, &options).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Opens (making it on first use) the cache of mount `m` and takes its lock as its sharing
/// says. Returns the directory to mount and the lock to hold for the run (none for a private
/// cache that was busy: the fresh directory in `scratch` is this run's alone).
fn cache_dir(
    inputs: &MountInputs<'_>,
    m: &RunMount,
    from: Option<&Path>,
    scratch: &Path,
) -> Result<(PathBuf, Option<File>), String> {
    let err = |e: io::Error| format!("cache mount {}: {e}", m.id);
    let (dir, lock) = open_cache_mount(inputs.store_root, &m.id).map_err(err)?;
    let data = dir.join("data");
    // Locks as `op` says; false when prune removed the cache meanwhile (a lock on a deleted
    // file protects nothing: the cache is opened again). Converting a flock between shared and
    // exclusive lets go of it for a moment, so every conversion is checked too.
    let lock_with = |op: FlockOperation| -> Result<bool, String> {
        flock(&lock, op).map_err(|e| err(e.into()))?;
        Ok(!slots::was_pruned(&lock))
    };
    let again = || cache_dir(inputs, m, from, scratch);
    match m.sharing {
        Sharing::Private => {
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                let fresh = scratch.join("cache");
                fill_cache(&fresh, m, from, scratch)
                    .map_err(|e| format!("cache mount {}: {e}", m.id))?;
                return Ok((fresh, None));
            }
            if slots::was_pruned(&lock) {
                return again();
            }
        }
        Sharing::Locked => {
            if !lock_with(FlockOperation::LockExclusive)? {
                return again();
            }
        }
        Sharing::Shared => {
            if !lock_with(FlockOperation::LockShared)? {
                return again();
            }
            if data.is_dir() {
                return Ok((data, Some(lock)));
            }
            // Made under the exclusive lock, then shared again.
            if !lock_with(FlockOperation::LockExclusive)? {
                return again();
            }
        }
    }
    if !data.is_dir() {
        let tmp = dir.join(format!("data.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fill_cache(&tmp, m, from, scratch).map_err(|e| format!("cache mount {}: {e}", m.id))?;
        fs::rename(&tmp, &data).map_err(err)?;
    }
    if m.sharing == Sharing::Shared && !lock_with(FlockOperation::LockShared)? {
        return again();
    }
    Ok((data, Some(lock)))
}

/// The directory of cache mount `id` under `store_root` (`<sha256 of id>`: ids are free text).
pub(crate) fn cache_mount_dir(store_root: &Path, id: &str) -> PathBuf {
    store_root
        .join(CACHE_MOUNTS_DIR)
        .join(sha256_digest(id.as_bytes()).digest())
}

/// Opens (making it on first use) the directory of cache mount `id` under `store_root`, with its
/// `id` file written and its `lock` file open (not locked yet).
fn open_cache_mount(store_root: &Path, id: &str) -> io::Result<(PathBuf, File)> {
    let dir = cache_mount_dir(store_root, id);
    let lock = slots::open_lock(&dir)?;
    write_cache_id(&dir, id)?;
    Ok((dir, lock))
}

/// Names cache mount `id` in its directory, for `builder prune`'s report (once).
fn write_cache_id(dir: &Path, id: &str) -> io::Result<()> {
    let id_file = dir.join("id");
    if !id_file.exists() {
        fs::write(&id_file, id)?;
    }
    Ok(())
}

/// [`open_cache_mount`] with its lock taken as `op` (blocking), on a cache prune has not removed.
pub(crate) fn lock_cache_mount(
    store_root: &Path,
    id: &str,
    op: FlockOperation,
) -> io::Result<(PathBuf, File)> {
    let dir = cache_mount_dir(store_root, id);
    let lock = slots::hold(&dir, op)?;
    write_cache_id(&dir, id)?;
    Ok((dir, lock))
}

/// Makes a new cache directory: the mount's `from`/`source` copied in (or empty), its root
/// with the mount's mode (default 0755) and owner (default 0:0).
fn fill_cache(dir: &Path, m: &RunMount, from: Option<&Path>, scratch: &Path) -> Result<(), String> {
    match from {
        Some(root) => {
            let copy = materialize(
                &SourceRoot::Dir(root.to_path_buf()),
                &m.source,
                &scratch.join("cache-source"),
            )?;
            if !copy.is_dir() {
                return Err(format!("{:?} is not a directory", m.source));
            }
            fs::rename(&copy, dir).map_err(|e| e.to_string())?;
        }
        None => fs::create_dir_all(dir).map_err(|e| e.to_string())?,
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(m.mode.unwrap_or(0o755)))
        .and_then(|()| chown(dir, m.uid.or(Some(0)), m.gid.or(Some(0))))
        .map_err(|e| e.to_string())
}

/// Removes every cache mount directory under `store_root` that no build holds; the report
/// names each by its id.
pub fn prune_cache_mounts(store_root: &Path) -> io::Result<SlotPrune> {
    slots::prune(&store_root.join(CACHE_MOUNTS_DIR), |dir| {
        fs::read_to_string(dir.join("id")).unwrap_or_default()
    })
}

/// A private tmpfs mounted on the host at a directory, unmounted (contents gone) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        use rustix::mount::{MountFlags, mount};
        let err = |e: io::Error| format!("mounting a tmpfs for secrets at {}: {e}", dir.display());
        fs::create_dir_all(dir).map_err(err)?;
        mount(
            "tmpfs",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some(c"mode=0700"),
        )
        .map_err(|e| err(e.into()))?;
        let tmpfs = Tmpfs(dir.to_path_buf());
        // Never propagated to other mount namespaces.
        rustix::mount::mount_change(dir, rustix::mount::MountPropagationFlags::PRIVATE)
            .map_err(|e| err(e.into()))?;
        Ok(tmpfs)
    }
}

/// Detaches a secrets tmpfs a crashed build left in its scratch directory `dir`.
pub(crate) fn release_stale(dir: &Path) {
    let _ = rustix::mount::unmount(dir.join(SECRETS_DIR), rustix::mount::UnmountFlags::DETACH);
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use rustix::mount::{UnmountFlags, unmount};
        let _ = unmount(&self.0, UnmountFlags::DETACH);
        let _ = fs::remove_dir(&self.0);
    }
}

/// Relays connections on a socket of ours to an SSH agent socket; stops on drop.
struct AgentRelay {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentRelay {
    fn start(socket: &Path, agent: PathBuf) -> io::Result<AgentRelay> {
        let listener = UnixListener::bind(socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else {
                    continue;
                };
                relay(client, upstream);
            }
        });
        Ok(AgentRelay {
            socket: socket.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

/// Copies both ways between two streams on two threads, each closing its direction at EOF.
fn relay(a: UnixStream, b: UnixStream) {
    let pipe = |from: UnixStream, to: UnixStream| {
        std::thread::spawn(move || {
            let (mut r, mut w) = (&from, &to);
            let _ = io::copy(&mut r, &mut w);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_the_working_directory() {
        assert_eq!(absolute("cache", "/src"), "/src/cache");
        assert_eq!(absolute("/a/../b/./c/", "/src"), "/b/c");
    }

    #[test]
    fn cache_mounts_survive_until_pruned_unless_held() {
        let root = tempfile::tempdir().unwrap();
        let scratch = root.path().join("scratch");
        let inputs = MountInputs {
            store_root: root.path(),
            scratch: &scratch,
            context: None,
            secrets: &BTreeMap::new(),
            ssh: &BTreeMap::new(),
        };
        let parsed = strata_frontend::mount::parse_mount(
            "type=cache,target=/c,sharing=locked,mode=0700",
            &mut |v| Ok(v.to_string()),
        )
        .unwrap();
        let m = RunMount::plan(&parsed, MountFrom::Nothing, String::new(), "/", 0).unwrap();
        assert_eq!(m.id, "/c");
        let (data, lock) = cache_dir(&inputs, &m, None, &scratch).unwrap();
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        fs::write(data.join("kept"), "x").unwrap();
        let held = prune_cache_mounts(root.path()).unwrap();
        assert_eq!((held.removed.len(), held.in_use), (0, 1));
        drop(lock);
        let (again, lock) = cache_dir(&inputs, &m, None, &scratch).unwrap();
        assert_eq!(fs::read_to_string(again.join("kept")).unwrap(), "x");
        drop(lock);
        let pruned = prune_cache_mounts(root.path()).unwrap();
        assert_eq!(pruned.removed, vec!["/c".to_string()]);
        assert!(!data.exists());
    }

    #[test]
    fn shared_users_overlap_and_locked_users_exclude_everyone() {
        let root = tempfile::tempdir().unwrap();
        let scratch = root.path().join("scratch");
        let inputs = MountInputs {
            store_root: root.path(),
            scratch: &scratch,
            context: None,
            secrets: &BTreeMap::new(),
            ssh: &BTreeMap::new(),
        };
        let mount = |sharing: &str| {
            let parsed = strata_frontend::mount::parse_mount(
                &format!("type=cache,target=/c,id=s,sharing={sharing}"),
                &mut |v| Ok(v.to_string()),
            )
            .unwrap();
            RunMount::plan(&parsed, MountFrom::Nothing, String::new(), "/", 0).unwrap()
        };
        let lock_file = || {
            let dir = root
                .path()
                .join(CACHE_MOUNTS_DIR)
                .join(sha256_digest(b"s").digest());
            File::open(dir.join("lock")).unwrap()
        };
        // Two shared users at once (a blocking shared lock would hang here), same directory.
        let (a, lock_a) = cache_dir(&inputs, &mount("shared"), None, &scratch).unwrap();
        let (b, lock_b) = cache_dir(&inputs, &mount("shared"), None, &scratch).unwrap();
        assert_eq!(a, b);
        assert!(flock(lock_file(), FlockOperation::NonBlockingLockExclusive).is_err());
        drop((lock_a, lock_b));
        // A locked user holds it exclusively: not even a shared user could enter.
        let (c, lock_c) = cache_dir(&inputs, &mount("locked"), None, &scratch).unwrap();
        assert_eq!(a, c);
        assert!(flock(lock_file(), FlockOperation::NonBlockingLockShared).is_err());
        drop(lock_c);
        assert!(flock(lock_file(), FlockOperation::NonBlockingLockExclusive).is_ok());
    }

    #[test]
    fn a_busy_private_cache_gives_a_fresh_directory() {
        let root = tempfile::tempdir().unwrap();
        let scratch = root.path().join("scratch");
        let inputs = MountInputs {
            store_root: root.path(),
            scratch: &scratch,
            context: None,
            secrets: &BTreeMap::new(),
            ssh: &BTreeMap::new(),
        };
        let parsed = strata_frontend::mount::parse_mount(
            "type=cache,target=/c,id=p,sharing=private",
            &mut |v| Ok(v.to_string()),
        )
        .unwrap();
        let m = RunMount::plan(&parsed, MountFrom::Nothing, String::new(), "/", 0).unwrap();
        let (first, lock) = cache_dir(&inputs, &m, None, &scratch).unwrap();
        assert!(lock.is_some());
        fs::write(first.join("mine"), "x").unwrap();
        let (second, none) = cache_dir(&inputs, &m, None, &scratch).unwrap();
        assert!(none.is_none());
        assert_ne!(first, second);
        assert!(!second.join("mine").exists());
    }
}
