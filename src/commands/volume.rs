//! `strata volume create|ls|inspect|rm|prune`, in Docker's shapes.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use regex::Regex;
use serde_json::{Value, json};
use strata_containers::Record;
use strata_containers::volumes::Volume;

use super::container_output::open_containers;
use super::image_output::{human_size, print_table};
use crate::template::{default_header, print_rows};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes' details as JSON.
    Inspect(NamesArgs),
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Set a label (`K=V`).
    #[arg(short, long = "label")]
    label: Vec<String>,
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// Only volumes that match: `dangling=true|false` (used by no container), `name=NAME`
    /// (a prefix or a regex), `label=KEY[=VALUE]`, `driver=local`. Values of one key: any;
    /// different keys: all.
    #[arg(short, long)]
    filter: Vec<String>,
    /// `table` (default), `json` (one object a line, Docker's fields), or a Go template
    /// (`{{.Name}}`).
    #[arg(long, default_value = "table")]
    format: String,
}

/// Whether volume `v` passes every `--filter`; `in_use`: the volumes containers name.
fn volume_matches(
    v: &Volume,
    filters: &[(String, String)],
    in_use: &HashSet<&str>,
) -> anyhow::Result<bool> {
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let mut any = false;
        for (_, value) in filters.iter().filter(|(k, _)| k == key) {
            any |= match key {
                "dangling" => match value.as_str() {
                    "true" | "1" => !in_use.contains(v.name.as_str()),
                    "false" | "0" => in_use.contains(v.name.as_str()),
                    _ => bail!("invalid filter 'dangling={value}'"),
                },
                "name" => {
                    v.name.starts_with(value.as_str())
                        || Regex::new(value).is_ok_and(|re| re.is_match(&v.name))
                }
                "label" => match value.split_once('=') {
                    Some((k, val)) => v.labels.get(k).is_some_and(|l| l == val),
                    None => v.labels.contains_key(value),
                },
                "driver" => value == "local",
                other => bail!("invalid filter '{other}'"),
            };
        }
        if !any {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A volume as `ls --format json` prints it (Docker's fields).
fn ls_json(v: &Volume) -> Value {
    let labels: Vec<String> = v.labels.iter().map(|(k, l)| format!("{k}={l}")).collect();
    json!({
        "Availability": "N/A",
        "Driver": "local",
        "Group": "N/A",
        "Labels": labels.join(","),
        "Links": "N/A",
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Scope": "local",
        "Size": "N/A",
        "Status": "N/A",
    })
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// All unused volumes, not only anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

fn inspect_json(v: &Volume) -> Value {
    json!({
        "CreatedAt": v.created,
        "Driver": "local",
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": "local",
    })
}

pub fn run(cmd: VolumeCommand) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    let volumes = containers.volumes();
    match cmd {
        VolumeCommand::Create(args) => {
            let labels: BTreeMap<String, String> = args
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect();
            let (volume, _) = volumes.create(args.name.as_deref(), labels)?;
            println!("{}", volume.name);
        }
        VolumeCommand::Ls(args) => {
            let filters: Vec<(String, String)> = args
                .filter
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("bad format of filter (expected name=value): {f}"))
                })
                .collect::<anyhow::Result<_>>()?;
            // Every container is read only when `dangling` asks which volumes they use.
            let records = if filters.iter().any(|(k, _)| k == "dangling") {
                containers.list()?
            } else {
                Vec::new()
            };
            let in_use: HashSet<&str> = records.iter().flat_map(Record::volumes).collect();
            let mut list = Vec::new();
            for v in volumes.list()? {
                if volume_matches(&v, &filters, &in_use)? {
                    list.push(v);
                }
            }
            if args.format != "table" && !args.quiet {
                let rows: Vec<Value> = list.iter().map(ls_json).collect();
                if args.format == "json" {
                    for row in &rows {
                        println!("{row}");
                    }
                } else {
                    print_rows(&args.format, &rows, &|field| match field {
                        "Name" => "VOLUME NAME".into(),
                        other => default_header(other),
                    })?;
                }
            } else if args.quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                rows.extend(
                    list.iter()
                        .map(|v| vec!["local".to_string(), v.name.clone()]),
                );
                print_table(&rows)?;
            }
        }
        VolumeCommand::Inspect(args) => {
            let mut out = Vec::new();
            let mut failed = false;
            for name in &args.names {
                match volumes.get(name) {
                    Ok(v) => out.push(inspect_json(&v)),
                    Err(e) => {
                        eprintln!("strata: error: {e}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        VolumeCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                match containers.remove_volume(name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("strata: error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        VolumeCommand::Prune(args) => {
            let what = if args.all {
                "all local volumes not used by at least one container"
            } else {
                "all anonymous local volumes not used by at least one container"
            };
            if !args.force && !super::prune::confirm(what)? {
                return Ok(ExitCode::SUCCESS);
            }
            let (removed, freed) = containers.prune_volumes(args.all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for name in &removed {
                    println!("{name}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(freed));
        }
    }
    Ok(ExitCode::SUCCESS)
}
