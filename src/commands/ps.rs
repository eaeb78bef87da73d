//! `strata ps [-a] [-q] [--no-trunc] [--format table|json]`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde_json::json;
use strata_containers::{MountKind, Status};

use super::container_output::{command_text, created_at, open_containers, ports_text, status_text};
use super::image_output::{print_table, since};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Only the newest container (any state).
    #[arg(short = 'l', long)]
    latest: bool,
    /// `table` (default) or `json` (one object a line, Docker's fields).
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn run(args: PsArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.format.as_str(), "table" | "json") {
        bail!("unsupported --format {:?}: use table or json", args.format);
    }
    let containers = open_containers()?;
    let mut records = containers.list()?;
    if args.latest {
        records.truncate(1);
    } else if !args.all {
        records.retain(|r| matches!(r.state.status, Status::Running | Status::Restarting));
    }
    let id_of = |id: &str| {
        if args.no_trunc {
            id.to_string()
        } else {
            id[..12].to_string()
        }
    };
    if args.quiet {
        for r in &records {
            println!("{}", id_of(&r.config.id));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.format == "json" {
        for r in &records {
            let volumes: Vec<&str> = r
                .config
                .host
                .mounts
                .iter()
                .filter(|m| m.kind != MountKind::Tmpfs)
                .map(|m| m.source.as_str())
                .collect();
            let labels: Vec<String> = r
                .config
                .config
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let line = json!({
                "Command": command_text(r, !args.no_trunc),
                "CreatedAt": created_at(r),
                "ID": id_of(&r.config.id),
                "Image": r.config.config.image,
                "Labels": labels.join(","),
                "LocalVolumes": r.config.host.mounts.iter().filter(|m| m.kind == MountKind::Volume).count().to_string(),
                "Mounts": volumes.join(","),
                "Names": r.config.name,
                "Networks": r.config.host.network.name(),
                "Ports": ports_text(r),
                "RunningFor": since(Some(&r.config.created)),
                "Size": "0B",
                "State": r.state.status.name(),
                "Status": status_text(r),
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &records {
        rows.push(vec![
            id_of(&r.config.id),
            r.config.config.image.clone(),
            command_text(r, !args.no_trunc),
            since(Some(&r.config.created)),
            status_text(r),
            ports_text(r),
            r.config.name.clone(),
        ]);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}
