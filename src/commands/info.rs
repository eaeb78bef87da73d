//! `strata info` (also `system info`): what this strata and this machine are, with Docker's
//! field names, so that `info --format '{{.ServerVersion}}'` and scripts checking `docker info`
//! work.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use super::container_output::open_containers;
use super::image_output::bytes_size;
use crate::template::Template;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A Go template over the fields (`{{.ServerVersion}}`), or `json`.
    #[arg(short, long)]
    format: Option<String>,
}

pub fn run(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let info = info()?;
    match args.format.as_deref() {
        Some("json") => println!("{info}"),
        Some(format) => println!("{}", Template::parse(format)?.render(&info)?),
        None => print!("{}", text(&info)),
    }
    Ok(ExitCode::SUCCESS)
}

fn info() -> anyhow::Result<Value> {
    let containers = open_containers()?;
    let records = containers.list()?;
    let running = records
        .iter()
        .filter(|r| r.state.status.is_active())
        .count();
    // An image with several names is one image.
    let images: std::collections::HashSet<String> = containers
        .store()
        .images()?
        .into_iter()
        .filter_map(|(_, image)| image.ok().map(|i| i.id().to_string()))
        .collect();
    let images = images.len();
    let driver = containers.snapshotter()?.driver().as_str();
    let uname = nix::sys::utsname::uname()?;
    let cgroup_v2 = strata_runtime::cgroup_v2();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let memory = memory_total()?;
    Ok(json!({
        "ID": "",
        "Containers": records.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": records.len() - running,
        "Images": images,
        "Driver": driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if cgroup_v2 { "2" } else { "1" },
        "KernelVersion": uname.release().to_string_lossy(),
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": uname.machine().to_string_lossy(),
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": memory,
        "DockerRootDir": containers.store().root(),
        "Name": uname.nodename().to_string_lossy(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRuntime": "strata",
        "Runtimes": {"strata": {}, "runc": {"path": "runc"}, "crun": {"path": "crun"}},
    }))
}

/// The machine's memory (`MemTotal`), in bytes.
pub(super) fn memory_total() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kib * 1024)
}

/// The human form, as `docker info` lays its server section out.
fn text(info: &Value) -> String {
    let field = |k: &str| match &info[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let memory = bytes_size(info["MemTotal"].as_u64().unwrap_or(0));
    format!(
        "Containers: {}\n Running: {}\n Paused: 0\n Stopped: {}\nImages: {}\n\
         Server Version: strata {}\nStorage Driver: {}\nCgroup Driver: cgroupfs\n\
         Cgroup Version: {}\nDefault Runtime: strata\nKernel Version: {}\n\
         Operating System: {}\nOSType: linux\nArchitecture: {}\nCPUs: {}\nTotal Memory: {memory}\n\
         Name: {}\nDocker Root Dir: {}\n",
        field("Containers"),
        field("ContainersRunning"),
        field("ContainersStopped"),
        field("Images"),
        field("ServerVersion"),
        field("Driver"),
        field("CgroupVersion"),
        field("KernelVersion"),
        field("OperatingSystem"),
        field("Architecture"),
        field("NCPU"),
        field("Name"),
        field("DockerRootDir"),
    )
}
