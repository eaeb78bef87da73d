//! A container's OCI runtime spec: Docker's defaults (the runtime's `default_spec`) plus the
//! container's command, environment, user, mounts, network and limits.

use std::path::Path;

use strata_runtime::Spec;
use strata_runtime::etc::{EtcFiles, mount_etc_files};
use strata_runtime::spec::{
    DEFAULT_PATH_ENV, Limits, Network, add_bind, add_tmpfs, default_spec, set_limits, set_network,
    set_user, tweak_capabilities,
};
use strata_runtime::user::{resolve_groups, resolve_user};

use crate::error::{Error, Result, io_err};
use crate::options::merge_env;
use crate::record::{ContainerConfig, HostConfig, MountKind, NetworkMode};
use crate::volumes::Volumes;

/// CPU period for `--cpus` (Docker's 100 ms).
const CPU_PERIOD: u64 = 100_000;

/// Makes the process's terminal at `(rows, cols)` before its command starts (OCI
/// `consoleSize`), so that its first look at the size sees the caller's.
pub(crate) fn set_console_size(process: &mut oci_spec::runtime::Process, (rows, cols): (u16, u16)) {
    if let Ok(size) = oci_spec::runtime::BoxBuilder::default()
        .height(rows)
        .width(cols)
        .build()
    {
        process.set_console_size(Some(size));
    }
}

/// The command's environment as Docker makes it: `PATH` (unless the config sets it),
/// `HOSTNAME`, `TERM=xterm` with a terminal, then the config's `Env`.
pub(crate) fn process_env(config: &ContainerConfig) -> Vec<String> {
    let mut env = vec![
        DEFAULT_PATH_ENV.to_string(),
        format!("HOSTNAME={}", config.config.hostname),
    ];
    if config.config.tty {
        env.push("TERM=xterm".into());
    }
    merge_env(&mut env, &config.config.env);
    env
}

/// `--ulimit`s as the process's rlimits, `--sysctl`s beside the network's, `--shm-size` as the
/// size of the `/dev/shm` tmpfs.
fn set_ulimits_sysctls_shm(spec: &mut Spec, host: &HostConfig) -> Result<()> {
    if !host.ulimits.is_empty() {
        let rlimits: Vec<serde_json::Value> = host
            .ulimits
            .iter()
            .map(|u| {
                serde_json::json!({
                    "type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()),
                    "soft": u.soft,
                    "hard": u.hard,
                })
            })
            .collect();
        let rlimits = serde_json::from_value(serde_json::Value::Array(rlimits))
            .map_err(|e| Error::Invalid(format!("--ulimit: {e}")))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_rlimits(Some(rlimits));
        spec.set_process(Some(process));
    }
    if !host.sysctls.is_empty() {
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut sysctl = linux.sysctl().clone().unwrap_or_default();
        sysctl.extend(host.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));
        linux.set_sysctl(Some(sysctl));
        spec.set_linux(Some(linux));
    }
    if let Some(size) = host.shm_size {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
        {
            let mut options: Vec<String> = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| !o.starts_with("size="))
                .collect();
            options.push(format!("size={size}"));
            m.set_options(Some(options));
        }
        spec.set_mounts(Some(mounts));
    }
    Ok(())
}

/// Builds the spec for one run of `config` over the mounted `rootfs`; generated `/etc` files go
/// to `state_dir`.
pub(crate) fn build(
    config: &ContainerConfig,
    rootfs: &Path,
    state_dir: &Path,
    volumes: &Volumes,
) -> Result<Spec> {
    let args: Vec<String> = std::iter::once(config.path.clone())
        .chain(config.args.iter().cloned())
        .collect();
    let mut spec = default_spec(rootfs, args);
    let network = match config.host.network {
        NetworkMode::Private => Network::Private,
        NetworkMode::Host => Network::Host,
        NetworkMode::None => Network::None,
    };
    set_network(&mut spec, network);

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_env(Some(process_env(config)));
    process.set_terminal(Some(config.config.tty));
    let cwd = if config.config.working_dir.is_empty() {
        "/"
    } else {
        &config.config.working_dir
    };
    process.set_cwd(cwd.into());
    spec.set_process(Some(process));
    tweak_capabilities(&mut spec, &config.host.cap_add, &config.host.cap_drop)
        .map_err(Error::Invalid)?;
    set_ulimits_sysctls_shm(&mut spec, &config.host)?;
    let mut user =
        resolve_user(rootfs, &config.config.user).map_err(|e| Error::Invalid(e.to_string()))?;
    for gid in resolve_groups(rootfs, &config.host.group_add)
        .map_err(|e| Error::Invalid(format!("--group-add: {e}")))?
    {
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    set_user(&mut spec, &user);

    if config.host.read_only {
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
    }
    let etc = EtcFiles {
        hostname: config.config.hostname.clone(),
        extra_hosts: config.host.extra_hosts.clone(),
        network,
        hostname_file: true,
        readonly: false,
    };
    mount_etc_files(&mut spec, state_dir, &etc)
        .map_err(io_err("writing /etc files in", state_dir))?;
    for m in &config.host.mounts {
        let destination = Path::new(&m.destination);
        match m.kind {
            MountKind::Bind => add_bind(&mut spec, Path::new(&m.source), destination, m.read_only),
            MountKind::Volume => {
                let volume = volumes.get(&m.source)?;
                add_bind(&mut spec, &volume.mountpoint, destination, m.read_only);
            }
            MountKind::Tmpfs => {
                let options: Vec<&str> = m.options.iter().map(String::as_str).collect();
                add_tmpfs(&mut spec, destination, &options);
            }
        }
    }
    let limits = Limits {
        memory: config.host.memory,
        pids: config.host.pids_limit,
        cpu_quota: config
            .host
            .nano_cpus
            .map(|n| n * CPU_PERIOD as i64 / 1_000_000_000),
        cpu_period: config.host.nano_cpus.map(|_| CPU_PERIOD),
        ..Limits::default()
    };
    if limits != Limits::default() {
        set_limits(&mut spec, &limits);
    }
    // Its own cgroup (limits or not), named after the container: `exec` joins it, and a
    // leftover of a killed run is reused by the next.
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(format!("strata/{}", config.id).into()));
    spec.set_linux(Some(linux));
    Ok(spec)
}
