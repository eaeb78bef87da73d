//! Docker's run options: `-p`, `-v`, `--mount`, `--tmpfs`, `--memory`, `--cpus`, and how a
//! container's config comes from the image's config and the flags.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::record::{MountConfig, MountKind, PortBinding, RunConfig, Ulimit};

/// `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]` (`-p`); a missing host port is 0 (any free one).
pub fn parse_publish(s: &str) -> Result<PortBinding> {
    let bad = |why: &str| Error::Invalid(format!("invalid publish spec {s:?}: {why}"));
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad(&format!(
            "protocol {protocol} is not supported (the userspace proxy carries TCP and UDP)"
        )));
    }
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (ip, rest) = match spec.strip_prefix('[') {
        Some(r) => {
            let (ip, rest) = r.split_once("]:").ok_or_else(|| bad("unclosed ["))?;
            (Some(ip.to_string()), rest.to_string())
        }
        None => {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (None, spec.to_string()),
                3 => (
                    Some(parts[0].to_string()),
                    format!("{}:{}", parts[1], parts[2]),
                ),
                _ => return Err(bad("too many colons")),
            }
        }
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest.as_str()),
    };
    let port = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("invalid port {p:?}")))
    };
    let host_ip = match ip.as_deref() {
        None | Some("") => "0.0.0.0".to_string(),
        Some(ip) => {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| bad(&format!("invalid IP address {ip:?}")))?;
            ip.to_string()
        }
    };
    Ok(PortBinding {
        host_ip,
        host_port: if host_port.is_empty() {
            0
        } else {
            port(host_port)?
        },
        container_port: port(container_port)?,
        protocol,
    })
}

/// `-v SRC:DST[:OPTS]` or `-v DST`: a bind mount when SRC is an absolute path, else a named
/// volume; just DST is an anonymous volume. OPTS: `ro`, `rw`, `nocopy` (SELinux `z`/`Z` and
/// propagation options are accepted and ignored).
pub fn parse_volume_flag(s: &str) -> Result<MountConfig> {
    let bad = |why: &str| Error::Invalid(format!("invalid volume specification {s:?}: {why}"));
    let parts: Vec<&str> = s.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [a, b] if b.starts_with('/') => (*a, *b, ""),
        [dst, opts] => ("", *dst, *opts),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(bad("too many colons")),
    };
    let mut mount = MountConfig {
        kind: if source.starts_with('/') {
            MountKind::Bind
        } else {
            MountKind::Volume
        },
        source: source.to_string(),
        destination: destination.to_string(),
        read_only: false,
        anonymous: source.is_empty(),
        no_copy: false,
        options: Vec::new(),
    };
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => mount.read_only = true,
            "rw" => mount.read_only = false,
            "nocopy" => mount.no_copy = true,
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => return Err(bad(&format!("unknown option {other:?}"))),
        }
    }
    check_destination(&mount.destination).map_err(|why| bad(&why))?;
    Ok(mount)
}

/// `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,volume-nocopy]
/// [,tmpfs-size=N][,tmpfs-mode=M]`.
pub fn parse_mount_flag(s: &str) -> Result<MountConfig> {
    let bad = |why: &str| Error::Invalid(format!("invalid argument {s:?} for --mount: {why}"));
    let mut kind = MountKind::Volume;
    let (mut source, mut destination) = (String::new(), String::new());
    let (mut read_only, mut no_copy) = (false, false);
    let mut options = Vec::new();
    for field in s.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let flag = |v: Option<&str>| -> Result<bool> {
            match v {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(other) => Err(bad(&format!("invalid value {other:?} for {key}"))),
            }
        };
        match key {
            "type" => {
                kind = match value {
                    Some("bind") => MountKind::Bind,
                    Some("volume") => MountKind::Volume,
                    Some("tmpfs") => MountKind::Tmpfs,
                    other => return Err(bad(&format!("unsupported type {other:?}"))),
                }
            }
            "source" | "src" => source = value.unwrap_or_default().to_string(),
            "target" | "destination" | "dst" => destination = value.unwrap_or_default().to_string(),
            "readonly" | "ro" => read_only = flag(value)?,
            "volume-nocopy" => no_copy = flag(value)?,
            "tmpfs-size" => options.push(format!("size={}", value.unwrap_or_default())),
            "tmpfs-mode" => options.push(format!("mode={}", value.unwrap_or_default())),
            "bind-propagation" | "consistency" => {}
            other => return Err(bad(&format!("unexpected key {other:?}"))),
        }
    }
    if destination.is_empty() {
        return Err(bad("target is required"));
    }
    check_destination(&destination).map_err(|why| bad(&why))?;
    match kind {
        MountKind::Bind if !source.starts_with('/') => {
            return Err(bad("a bind source must be an absolute path"));
        }
        MountKind::Tmpfs if !source.is_empty() => {
            return Err(bad("a tmpfs mount has no source"));
        }
        _ => {}
    }
    Ok(MountConfig {
        kind,
        anonymous: kind == MountKind::Volume && source.is_empty(),
        source,
        destination,
        read_only,
        no_copy,
        options,
    })
}

/// `--tmpfs DST[:OPTIONS]`.
pub fn parse_tmpfs_flag(s: &str) -> Result<MountConfig> {
    let (destination, options) = match s.split_once(':') {
        Some((d, o)) => (d, o.split(',').map(str::to_string).collect()),
        None => (s, Vec::new()),
    };
    check_destination(destination)
        .map_err(|why| Error::Invalid(format!("invalid --tmpfs {s:?}: {why}")))?;
    let read_only = options.iter().any(|o| o == "ro");
    Ok(MountConfig {
        kind: MountKind::Tmpfs,
        source: String::new(),
        destination: destination.to_string(),
        read_only,
        anonymous: false,
        no_copy: false,
        options,
    })
}

fn check_destination(d: &str) -> std::result::Result<(), String> {
    if !d.starts_with('/') {
        return Err(format!("destination {d:?} must be an absolute path"));
    }
    if d == "/" {
        return Err("the destination cannot be /".into());
    }
    Ok(())
}

/// Docker's `RAMInBytes`: `512`, `16m`, `1.5g`, `64MB` (binary units, case-insensitive).
pub fn parse_memory(s: &str) -> Result<i64> {
    let bad = || Error::Invalid(format!("invalid size: {s:?}"));
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// Docker's `--ulimit` names (go-units' `ulimitNameMapping`).
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `--ulimit NAME=SOFT[:HARD]` (a missing hard limit is the soft one), as go-units parses it.
pub fn parse_ulimit(s: &str) -> Result<Ulimit> {
    let bad = |why: String| Error::Invalid(format!("invalid ulimit {s:?}: {why}"));
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| bad("use NAME=SOFT[:HARD]".into()))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(bad(format!("unknown ulimit type {name:?}")));
    }
    let number = |v: &str| {
        v.parse::<i64>()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad(format!("invalid value {v:?}")))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => (number(values)?, number(values)?),
    };
    if soft > hard {
        return Err(bad(format!(
            "soft limit {soft} must be less than or equal to hard limit {hard}"
        )));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--sysctl KEY=VALUE` for a kernel parameter of the container's own namespaces (moby's
/// `ValidateSysctl`): IPC ones (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`),
/// and `net.*` unless the container shares the host's network.
pub fn parse_sysctl(s: &str, host_network: bool) -> Result<(String, String)> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("invalid sysctl {s:?}: use KEY=VALUE")))?;
    let namespaced = IPC.contains(&key)
        || key.starts_with("fs.mqueue.")
        || (key.starts_with("net.") && !host_network);
    if !namespaced || key.contains("..") || key.contains('/') {
        return Err(Error::Invalid(format!(
            "sysctl {key:?} is not allowed: only the container's own namespaces' (net.* with a \
             network of its own, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
        )));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `--cpus 1.5` as billionths of a CPU.
pub fn parse_cpus(s: &str) -> Result<i64> {
    let v: f64 = s
        .parse()
        .map_err(|_| Error::Invalid(format!("invalid --cpus value {s:?}")))?;
    if !(v.is_finite() && v > 0.0 && v < 1e6) {
        return Err(Error::Invalid(format!(
            "invalid --cpus value {s:?}: must be a positive number"
        )));
    }
    Ok((v * 1e9).round() as i64)
}

/// Sets `entries` (`K=V`) over `env`, replacing entries with the same key, in order.
pub fn merge_env(env: &mut Vec<String>, entries: &[String]) {
    for entry in entries {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
}

/// What the flags of `run`/`create` change in the image's config.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// The command after the image (empty: the image's `Cmd`).
    pub cmd: Vec<String>,
    /// `--entrypoint` (`Some("")` clears the image's).
    pub entrypoint: Option<String>,
    /// `K=V` entries (`-e`, `--env-file`), applied over the image's `Env`.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Attached to the caller's terminal (not `-d`).
    pub attach: bool,
}

/// The container's `Config` and command (`Path`, `Args`) from the image's config (the image
/// config JSON's `config` object) and the flags, combined as Docker combines them: the
/// entrypoint followed by the command; `--entrypoint` drops the image's `Cmd`.
pub fn run_config(
    image_config: &Value,
    image_ref: &str,
    id: &str,
    o: &ConfigOverrides,
) -> Result<(RunConfig, String, Vec<String>)> {
    let strings = |key: &str| -> Option<Vec<String>> {
        image_config.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    let text = |key: &str| {
        image_config
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let object = |key: &str| -> BTreeMap<String, Value> {
        image_config
            .get(key)
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let entrypoint = match &o.entrypoint {
        Some(e) if e.is_empty() => None,
        Some(e) => Some(vec![e.clone()]),
        None => strings("Entrypoint").filter(|e| !e.is_empty()),
    };
    let cmd = if !o.cmd.is_empty() {
        Some(o.cmd.clone())
    } else if o.entrypoint.is_some() {
        None
    } else {
        strings("Cmd").filter(|c| !c.is_empty())
    };
    let mut full: Vec<String> = entrypoint
        .iter()
        .chain(cmd.iter())
        .flatten()
        .cloned()
        .collect();
    if full.is_empty() {
        return Err(Error::Invalid("no command specified".into()));
    }
    let path = full.remove(0);
    let workdir = o.workdir.clone().unwrap_or_else(|| text("WorkingDir"));
    if !workdir.is_empty() && !workdir.starts_with('/') {
        return Err(Error::Invalid(format!(
            "the working directory '{workdir}' is invalid, it needs to be an absolute path"
        )));
    }
    let mut env = strings("Env").unwrap_or_default();
    merge_env(&mut env, &o.env);
    let mut labels: BTreeMap<String, String> = object("Labels")
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
        .collect();
    labels.extend(o.labels.clone());
    let volumes = object("Volumes");
    let config = RunConfig {
        hostname: o.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        domainname: String::new(),
        user: o.user.clone().unwrap_or_else(|| text("User")),
        attach_stdin: o.attach && o.open_stdin,
        attach_stdout: o.attach,
        attach_stderr: o.attach,
        exposed_ports: object("ExposedPorts"),
        tty: o.tty,
        open_stdin: o.open_stdin,
        stdin_once: o.attach && o.open_stdin,
        env,
        cmd,
        image: image_ref.to_string(),
        volumes: (!volumes.is_empty()).then_some(volumes),
        working_dir: workdir,
        entrypoint,
        on_build: strings("OnBuild"),
        labels,
        stop_signal: o
            .stop_signal
            .clone()
            .or_else(|| Some(text("StopSignal")).filter(|s| !s.is_empty())),
    };
    Ok((config, path, full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("0.0.0.0", 8080, 80)
        );
        let p = parse_publish("127.0.0.1:8080:80/tcp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 8080));
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!(p.host_port, 0);
        let p = parse_publish("[::1]:9000:90").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("::1", 9000));
        let p = parse_publish("5353:53/UDP").unwrap();
        assert_eq!((p.host_port, p.container_port), (5353, 53));
        assert_eq!(p.protocol, "udp");
        for bad in [
            "80/sctp",
            "x:80",
            "1:2:3:4",
            "70000:80",
            "300.1.1.1:1:2",
            "0:0",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_flags() {
        let m = parse_volume_flag("/srv/data:/data:ro").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(m.read_only);
        let m = parse_volume_flag("cache:/var/cache").unwrap();
        assert_eq!((m.kind, m.source.as_str()), (MountKind::Volume, "cache"));
        assert!(!m.anonymous);
        let m = parse_volume_flag("/scratch").unwrap();
        assert!(m.anonymous && m.kind == MountKind::Volume);
        let m = parse_volume_flag("/scratch:nocopy").unwrap();
        assert!(m.anonymous && m.no_copy);
        for bad in ["data:relative", "a:/b:bogus", "a:/b:c:d", "vol:/"] {
            assert!(parse_volume_flag(bad).is_err(), "{bad}");
        }
        let m = parse_mount_flag("type=bind,source=/srv,target=/srv,readonly").unwrap();
        assert!(m.read_only && m.kind == MountKind::Bind);
        let m = parse_mount_flag("type=tmpfs,dst=/run,tmpfs-size=64m").unwrap();
        assert_eq!(m.options, ["size=64m"]);
        let m = parse_mount_flag("source=v,target=/v,volume-nocopy").unwrap();
        assert!(m.no_copy && m.kind == MountKind::Volume && !m.anonymous);
        assert!(parse_mount_flag("type=bind,source=rel,target=/x").is_err());
        assert!(parse_mount_flag("type=volume,source=v").is_err());
        let t = parse_tmpfs_flag("/run:rw,size=1m").unwrap();
        assert_eq!(t.options, ["rw", "size=1m"]);
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_memory("16m").unwrap(), 16 << 20);
        assert_eq!(parse_memory("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpus("0").is_err());
    }

    #[test]
    fn command_and_env_combine_as_in_docker() {
        let image = json!({
            "Env": ["PATH=/usr/bin:/bin", "A=1"],
            "Entrypoint": ["/entry"],
            "Cmd": ["default"],
            "WorkingDir": "/srv",
            "User": "nobody",
            "Labels": {"l": "1"},
            "StopSignal": "SIGQUIT",
        });
        let id = "0123456789abcdef";
        let o = ConfigOverrides::default();
        let (c, path, args) = run_config(&image, "img", id, &o).unwrap();
        assert_eq!(
            (path.as_str(), args),
            ("/entry", vec!["default".to_string()])
        );
        assert_eq!(c.hostname, "0123456789ab");
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        let o = ConfigOverrides {
            cmd: vec!["x".into()],
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let (c, path, args) = run_config(&image, "img", id, &o).unwrap();
        assert_eq!((path.as_str(), args), ("/entry", vec!["x".to_string()]));
        assert_eq!(c.env, ["PATH=/usr/bin:/bin", "A=2", "B=3"]);
        // --entrypoint drops the image's Cmd.
        let o = ConfigOverrides {
            entrypoint: Some("/bin/sh".into()),
            ..Default::default()
        };
        let (c, path, args) = run_config(&image, "img", id, &o).unwrap();
        assert_eq!((path.as_str(), args.len()), ("/bin/sh", 0));
        assert_eq!(c.cmd, None);
        // --entrypoint "" clears it: the command alone runs.
        let o = ConfigOverrides {
            entrypoint: Some(String::new()),
            cmd: vec!["ls".into(), "-l".into()],
            ..Default::default()
        };
        let (_, path, args) = run_config(&image, "img", id, &o).unwrap();
        assert_eq!((path.as_str(), args), ("ls", vec!["-l".to_string()]));
        let err = run_config(&json!({}), "img", id, &ConfigOverrides::default()).unwrap_err();
        assert_eq!(err.to_string(), "no command specified");
        let o = ConfigOverrides {
            workdir: Some("rel".into()),
            ..Default::default()
        };
        assert!(run_config(&image, "img", id, &o).is_err());
    }
}
