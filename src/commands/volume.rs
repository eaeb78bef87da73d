//! `strata volume create|ls|inspect|rm|prune`, in Docker's shapes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use strata_containers::volumes::Volume;

use super::container_output::open_containers;
use super::image_output::{human_size, print_table};

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
            let list = volumes.list()?;
            if args.quiet {
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
