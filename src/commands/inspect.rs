//! `strata inspect [--type container|image] NAME...`: Docker's inspect JSON array; a name is
//! looked up as a container first, then as an image, as Docker does.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use strata_store::Image;

use super::container_output::{self, open_containers};
use crate::template::Template;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Only look up this kind of object.
    #[arg(long = "type", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Print each object through a Go template (`{{.State.Pid}}`, `{{json .Config}}`).
    #[arg(short, long)]
    format: Option<String>,
    /// Containers or images: names, IDs or digests.
    #[arg(required = true)]
    names: Vec<String>,
}

/// Names to inspect, of the kind the command implies (`container inspect`, `image inspect`).
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Print each object through a Go template (`{{.State.Pid}}`, `{{json .Config}}`).
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    inspect(args.kind.as_deref(), &args.names, args.format.as_deref())
}

/// `container inspect` and `image inspect`.
pub fn run_kind(kind: &str, args: NamesArgs) -> anyhow::Result<ExitCode> {
    inspect(Some(kind), &args.names, args.format.as_deref())
}

fn inspect(kind: Option<&str>, names: &[String], format: Option<&str>) -> anyhow::Result<ExitCode> {
    // Parsed first: a bad template is an error before anything is looked up.
    let template = format.map(Template::parse).transpose()?;
    let containers = open_containers()?;
    let store = containers.store();
    let mut out = Vec::new();
    let mut failed = false;
    for name in names {
        if kind != Some("image") {
            match containers.get(name) {
                Ok(record) => {
                    out.push(container_output::inspect_json(&containers, &record));
                    continue;
                }
                Err(strata_containers::Error::NoSuchContainer(_)) => {}
                Err(e) => {
                    eprintln!("strata: error: {e}");
                    failed = true;
                    continue;
                }
            }
            if kind.is_some() {
                eprintln!("strata: error: No such container: {name}");
                failed = true;
                continue;
            }
        }
        match store.resolve(name) {
            Ok(image) => out.push(inspect_json(&image)),
            Err(e) => {
                eprintln!("strata: error: {e}");
                failed = true;
            }
        }
    }
    match &template {
        Some(template) => {
            for object in &out {
                println!("{}", template.render(object)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Docker's `ImageInspect` object for an image (API 1.48 fields that apply without a daemon).
pub fn inspect_json(image: &Image) -> Value {
    let c = &image.config_json;
    let field = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let repo_tags: Vec<String> = image
        .names
        .iter()
        .filter(|n| n.digest().is_none())
        .map(|n| n.familiar_string())
        .collect();
    let mut repo_digests: Vec<String> = image
        .names
        .iter()
        .map(|n| format!("{}@{}", n.familiar_name(), image.target.digest()))
        .collect();
    repo_digests.dedup();
    let mut v = json!({
        "Id": image.id().to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": image
            .config
            .history()
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|h| h.comment().clone())
            .unwrap_or_default(),
        "Created": text("created"),
        "DockerVersion": text("docker_version"),
        "Author": text("author"),
        "Config": field("config"),
        "Architecture": text("architecture"),
        "Os": text("os"),
        "Size": image.size(),
        "RootFS": {
            "Type": "layers",
            "Layers": image.diff_ids(),
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": image.target,
    });
    if let Some(variant) = c.get("variant") {
        v["Variant"] = variant.clone();
    }
    v
}
