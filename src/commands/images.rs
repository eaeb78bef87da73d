//! `strata images`: the image table, as `docker images`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use strata_store::reference::{self, AnyReference};

use super::image_output::{human_size, open_store, parse_time, print_table, short_id, since};
use crate::template::{default_header, print_rows};

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag); `*` patterns as `docker images` accepts.
    repository: Option<String>,
    /// Only print image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Show all images (strata has no intermediate images; accepted for Docker compatibility).
    #[arg(short, long)]
    all: bool,
    /// `table` (default), `json` (one object per line), or a Go template
    /// (`{{.Repository}}:{{.Tag}}`, `table {{.ID}}\t{{.Size}}`).
    #[arg(long, default_value = "table")]
    format: String,
    /// `dangling=true|false` or `reference=PATTERN`.
    #[arg(short, long)]
    filter: Vec<String>,
}

struct Row {
    repository: String,
    tag: String,
    digest: String,
    id: String,
    created_since: String,
    created_at: String,
    size: u64,
}

pub fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let mut patterns: Vec<String> = args.repository.iter().cloned().collect();
    let mut dangling: Option<bool> = None;
    for f in &args.filter {
        match f.split_once('=') {
            Some(("dangling", v)) => dangling = Some(v == "true" || v == "1"),
            Some(("reference", p)) => patterns.push(p.to_string()),
            _ => anyhow::bail!(
                "invalid filter {f:?}: expected dangling=true|false or reference=PATTERN"
            ),
        }
    }
    let mut rows = Vec::new();
    for (entry, image) in store.images()? {
        let image = match image {
            Ok(i) => i,
            Err(e) => {
                eprintln!(
                    "strata: warning: skipping image {}: {e}",
                    entry.target.digest()
                );
                continue;
            }
        };
        if let Some(d) = dangling
            && d != entry.name.is_none()
        {
            continue;
        }
        if !patterns.is_empty() {
            let Some(name) = &entry.name else { continue };
            let any = AnyReference::Named(name.clone());
            let matched = patterns.iter().any(|p| reference::familiar_match(p, &any));
            if !matched {
                continue;
            }
        }
        let (repository, tag) = match &entry.name {
            Some(n) => (n.familiar_name(), n.tag().unwrap_or("<none>").to_string()),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        let id = if args.no_trunc {
            image.id().to_string()
        } else {
            short_id(image.id())
        };
        let created_at = image
            .created()
            .and_then(parse_time)
            .map(|t| {
                let f = time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"
                );
                t.to_offset(time::UtcOffset::UTC)
                    .format(&f)
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        rows.push(Row {
            repository,
            tag,
            digest: entry.target.digest().to_string(),
            id,
            created_since: since(image.created()),
            created_at,
            size: image.size(),
        });
    }
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                println!("{}", r.id);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let json_rows = || -> Vec<serde_json::Value> {
        rows.iter()
            .map(|r| {
                json!({
                    "Containers": "N/A",
                    "CreatedAt": r.created_at,
                    "CreatedSince": r.created_since,
                    "Digest": r.digest,
                    "ID": r.id,
                    "Repository": r.repository,
                    "SharedSize": "N/A",
                    "Size": human_size(r.size),
                    "Tag": r.tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(r.size),
                })
            })
            .collect()
    };
    match args.format.as_str() {
        "json" => {
            for row in json_rows() {
                println!("{}", serde_json::to_string(&row).context("rendering JSON")?);
            }
        }
        "table" => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
            for r in rows {
                let mut row = vec![r.repository, r.tag];
                if args.digests {
                    row.push(r.digest);
                }
                row.extend([r.id, r.created_since, human_size(r.size)]);
                table.push(row);
            }
            print_table(&table)?;
        }
        template => print_rows(template, &json_rows(), &|field| match field {
            "ID" => "IMAGE ID".into(),
            "CreatedSince" => "CREATED".into(),
            other => default_header(other),
        })?,
    }
    Ok(ExitCode::SUCCESS)
}
