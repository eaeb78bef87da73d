//! `strata ps [-a] [-q] [--no-trunc] [-f KEY=VALUE]... [--format table|json]`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use regex::Regex;
use serde_json::json;
use strata_containers::{MountKind, Record, Status};

use super::container_output::{command_text, created_at, open_containers, ports_text, status_text};
use super::image_output::{print_table, since};
use crate::template::{default_header, print_rows};

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
    /// `table` (default), `json` (one object a line, Docker's fields), or a Go template
    /// (`{{.Names}}`, `table {{.ID}}\t{{.Status}}`).
    #[arg(long, default_value = "table")]
    format: String,
    /// Only containers that match: `id=PREFIX`, `name=REGEX`, `label=KEY[=VALUE]`,
    /// `status=STATE` (implies -a), `exited=CODE`, `ancestor=IMAGE`. Values of one key: any;
    /// different keys: all.
    #[arg(short, long)]
    filter: Vec<String>,
}

/// `--filter`s, as dockerd reads them.
#[derive(Default)]
struct Filters {
    ids: Vec<String>,
    names: Vec<Regex>,
    labels: Vec<(String, Option<String>)>,
    statuses: Vec<String>,
    exited: Vec<i32>,
    /// Image IDs.
    ancestors: Vec<String>,
}

impl Filters {
    fn parse(specs: &[String], store: &strata_store::Store) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        for spec in specs {
            let (key, value) = spec
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {spec}"))?;
            let value = value.to_string();
            match key {
                "id" => f.ids.push(value),
                "name" => f.names.push(
                    Regex::new(&value).with_context(|| format!("invalid filter 'name={value}'"))?,
                ),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value, None),
                }),
                "status" => {
                    const STATES: [&str; 7] = [
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !STATES.contains(&value.as_str()) {
                        bail!("invalid filter 'status={value}'");
                    }
                    f.statuses.push(value);
                }
                "exited" => f.exited.push(
                    value
                        .parse()
                        .with_context(|| format!("invalid filter 'exited={value}'"))?,
                ),
                "ancestor" => f.ancestors.push(store.resolve(&value)?.id().to_string()),
                _ => bail!("invalid filter '{key}'"),
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &Record) -> bool {
        let labels = &r.config.config.labels;
        let exited = r.state.status == Status::Exited;
        any(&self.ids, |id| r.config.id.starts_with(id))
            // dockerd matches the name with its leading slash.
            && any(&self.names, |re| re.is_match(&format!("/{}", r.config.name)))
            && any(&self.labels, |(k, v)| match v {
                None => labels.contains_key(k),
                Some(v) => labels.get(k) == Some(v),
            })
            && any(&self.statuses, |s| s == r.state.status.name())
            && any(&self.exited, |code| exited && r.state.exit_code == *code)
            && any(&self.ancestors, |id| r.config.image_id == *id)
    }
}

/// A filter key given no values passes everything; given some, one must hold.
fn any<T>(values: &[T], hit: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(hit)
}

pub fn run(args: PsArgs) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    let filters = Filters::parse(&args.filter, containers.store())?;
    let mut records = containers.list()?;
    if args.latest {
        records.truncate(1);
    } else if !args.all && filters.statuses.is_empty() {
        records.retain(|r| matches!(r.state.status, Status::Running | Status::Restarting));
    }
    records.retain(|r| filters.matches(r));
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
    if args.format != "table" {
        let rows: Vec<serde_json::Value> = records
            .iter()
            .map(|r| json_row(r, &id_of, args.no_trunc))
            .collect();
        if args.format == "json" {
            for row in &rows {
                println!("{row}");
            }
        } else {
            print_rows(&args.format, &rows, &header_of)?;
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

/// A container as `--format json` prints it (Docker's fields), and as templates see it.
fn json_row(r: &Record, id_of: &dyn Fn(&str) -> String, no_trunc: bool) -> serde_json::Value {
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
    json!({
        "Command": command_text(r, !no_trunc),
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
    })
}

/// The header Docker's `ps` shows for a template field.
fn header_of(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        other => default_header(other),
    }
}
