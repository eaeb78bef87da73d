//! Rendering shared by the container commands, in Docker's shapes: `ps` columns and statuses,
//! published ports, and the container-inspect object.

use anyhow::Context;
use serde_json::{Value, json};
use strata_containers::{
    Containers, MountKind, NetworkMode, PortBinding, Record, Status, ZERO_TIME, parse_time,
};
use time::OffsetDateTime;

use super::image_output::{human_duration, open_store};

/// The containers of the store at `$STRATA_ROOT`.
pub fn open_containers() -> anyhow::Result<Containers> {
    let store = open_store()?;
    Containers::open(store, "/proc/self/exe").context("opening the containers")
}

fn ago(time: &str) -> Option<String> {
    let t = parse_time(time).filter(|_| time != ZERO_TIME)?;
    Some(human_duration(
        (OffsetDateTime::now_utc() - t).whole_seconds(),
    ))
}

/// `ps`'s STATUS: `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`, ...
pub fn status_text(record: &Record) -> String {
    let s = &record.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => match ago(&s.started_at) {
            Some(d) => format!("Up {d}"),
            None => "Up".into(),
        },
        Status::Restarting => match ago(&s.finished_at) {
            Some(d) => format!("Restarting ({}) {d} ago", s.exit_code),
            None => format!("Restarting ({})", s.exit_code),
        },
        Status::Exited => match ago(&s.finished_at) {
            Some(d) => format!("Exited ({}) {d} ago", s.exit_code),
            None => format!("Exited ({})", s.exit_code),
        },
        Status::Dead => "Dead".into(),
    }
}

/// Where a port is published on the host, as Go's `net.JoinHostPort` writes it (`[::]:8080`).
pub fn host_address(p: &PortBinding) -> String {
    if p.host_ip.contains(':') {
        format!("[{}]:{}", p.host_ip, p.host_port)
    } else {
        format!("{}:{}", p.host_ip, p.host_port)
    }
}

fn port_text(p: &PortBinding) -> String {
    format!("{}->{}/{}", host_address(p), p.container_port, p.protocol)
}

/// `ps`'s PORTS: bound ports while running (`0.0.0.0:8080->80/tcp`), exposed ones otherwise.
pub fn ports_text(record: &Record) -> String {
    let mut parts: Vec<String> = record.state.ports.iter().map(port_text).collect();
    for exposed in record.config.config.exposed_ports.keys() {
        let published = record
            .state
            .ports
            .iter()
            .any(|p| format!("{}/{}", p.container_port, p.protocol) == *exposed);
        if !published {
            parts.push(exposed.clone());
        }
    }
    parts.join(", ")
}

/// `ps`'s COMMAND: Go's `strconv.Quote` of the command line, cut to 20 characters with `…`.
pub fn command_text(record: &Record, truncate: bool) -> String {
    let mut command = record.config.command_line();
    if truncate && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…";
    }
    let mut quoted = String::from("\"");
    for c in command.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Docker's `CreatedAt` in `ps --format json`: `2024-05-01 12:00:00 +0000 UTC`.
pub fn created_at(record: &Record) -> String {
    let Some(t) = parse_time(&record.config.created) else {
        return String::new();
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"
    );
    t.format(format).unwrap_or_default()
}

fn ports_json(record: &Record) -> Value {
    let mut ports = serde_json::Map::new();
    for exposed in record.config.config.exposed_ports.keys() {
        ports.insert(exposed.clone(), Value::Null);
    }
    for p in &record.state.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let entry = json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()});
        match ports.get_mut(&key) {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                ports.insert(key, json!([entry]));
            }
        }
    }
    Value::Object(ports)
}

/// Docker's `ContainerJSON` for a container (the fields that apply without a daemon).
pub fn inspect_json(containers: &Containers, record: &Record) -> Value {
    let c = &record.config;
    let s = &record.state;
    let mut config = json!(c.config);
    if let Some(timeout) = c.host.stop_timeout {
        config["StopTimeout"] = json!(timeout);
    }
    let id = &c.id;
    let dir = containers.container_dir(id);
    let mounts: Vec<Value> = c
        .host
        .mounts
        .iter()
        .map(|m| {
            let (kind, name, source) = match m.kind {
                MountKind::Bind => ("bind", None, m.source.clone()),
                MountKind::Volume => (
                    "volume",
                    Some(m.source.clone()),
                    containers
                        .volumes()
                        .get(&m.source)
                        .map(|v| v.mountpoint.display().to_string())
                        .unwrap_or_default(),
                ),
                MountKind::Tmpfs => ("tmpfs", None, String::new()),
            };
            let mut v = json!({
                "Type": kind,
                "Source": source,
                "Destination": m.destination,
                "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only,
                "Propagation": if m.kind == MountKind::Bind { "rprivate" } else { "" },
            });
            if let Some(name) = name {
                v["Name"] = json!(name);
                v["Driver"] = json!("local");
            }
            v
        })
        .collect();
    let binds: Vec<String> = c
        .host
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs && !m.anonymous)
        .map(|m| {
            let mut b = format!("{}:{}", m.source, m.destination);
            if m.read_only {
                b.push_str(":ro");
            }
            b
        })
        .collect();
    let tmpfs: serde_json::Map<String, Value> = c
        .host
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Tmpfs)
        .map(|m| (m.destination.clone(), json!(m.options.join(","))))
        .collect();
    let mut port_bindings = serde_json::Map::new();
    for p in &c.host.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let entry = json!({
            "HostIp": if p.host_ip == "0.0.0.0" { "" } else { p.host_ip.as_str() },
            "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
        });
        match port_bindings.get_mut(&key) {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                port_bindings.insert(key, json!([entry]));
            }
        }
    }
    let network = match c.host.network {
        NetworkMode::Private => "private",
        NetworkMode::Host => "host",
        NetworkMode::None => "none",
    };
    let snapshot_dir = containers
        .snapshotter()
        .map(|s| s.root().join("s").join(&c.snapshot))
        .unwrap_or_default();
    json!({
        "Id": id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": {
            "Status": s.status.name(),
            "Running": s.status == Status::Running,
            "Paused": false,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": s.started_at,
            "FinishedAt": s.finished_at,
        },
        "Image": c.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": containers.log_path(id),
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": Value::Null,
        "HostConfig": {
            "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
            "LogConfig": {
                "Type": "json-file",
                "Config": match c.host.log_max_size {
                    Some(size) => json!({"max-size": size.to_string(), "max-file": c.host.log_max_files.to_string()}),
                    None => json!({}),
                },
            },
            "NetworkMode": network,
            "PortBindings": port_bindings,
            "RestartPolicy": {
                "Name": c.host.restart.name,
                "MaximumRetryCount": c.host.restart.maximum_retry_count,
            },
            "AutoRemove": c.host.auto_remove,
            "Runtime": c.host.runtime.clone().unwrap_or_else(|| "strata".into()),
            "ReadonlyRootfs": c.host.read_only,
            "Memory": c.host.memory.unwrap_or(0),
            "NanoCpus": c.host.nano_cpus.unwrap_or(0),
            "PidsLimit": c.host.pids_limit,
            "Init": c.host.init,
            "Ulimits": if c.host.ulimits.is_empty() {
                Value::Null
            } else {
                json!(c.host.ulimits.iter().map(|u| json!({"Name": u.name, "Hard": u.hard, "Soft": u.soft})).collect::<Vec<_>>())
            },
            "Sysctls": if c.host.sysctls.is_empty() { Value::Null } else { json!(c.host.sysctls) },
            "ShmSize": c.host.shm_size.unwrap_or(64 * 1024 * 1024),
            "GroupAdd": if c.host.group_add.is_empty() { Value::Null } else { json!(c.host.group_add) },
            "CapAdd": if c.host.cap_add.is_empty() { Value::Null } else { json!(c.host.cap_add) },
            "CapDrop": if c.host.cap_drop.is_empty() { Value::Null } else { json!(c.host.cap_drop) },
            "ExtraHosts": if c.host.extra_hosts.is_empty() {
                Value::Null
            } else {
                json!(c.host.extra_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>())
            },
            "Tmpfs": if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) },
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "MergedDir": snapshot_dir.join("merged"),
                "UpperDir": snapshot_dir.join("fs"),
                "WorkDir": snapshot_dir.join("work"),
            },
        },
        "Mounts": mounts,
        "Config": config,
        "NetworkSettings": {
            "Ports": ports_json(record),
            "SandboxKey": if s.pid > 0 { json!(format!("/proc/{}/ns/net", s.pid)) } else { json!("") },
        },
    })
}
