//! `strata commit [-a AUTHOR] [-m MESSAGE] [-c CHANGE]... CONTAINER [REPO[:TAG]]`: the
//! container's changes become a new image layer; prints the new image ID.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use strata_containers::CommitOptions;

use super::container_output::open_containers;
use super::import::apply_change;

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (`"Name <email>"`).
    #[arg(short, long)]
    author: Option<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// A Dockerfile instruction to apply to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL).
    #[arg(short, long = "change")]
    change: Vec<String>,
    container: String,
    /// The new image's name.
    reference: Option<String>,
}

pub fn run(args: CommitArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .reference
        .as_deref()
        .map(super::image_output::parse_new_name)
        .transpose()?;
    let containers = open_containers()?;
    let config = if args.change.is_empty() {
        None
    } else {
        let record = containers.get(&args.container)?;
        let mut config = match serde_json::to_value(&record.config.config)? {
            Value::Object(map) => map,
            _ => bail!("the container's config is not an object"),
        };
        for c in &args.change {
            apply_change(&mut config, c).with_context(|| format!("--change {c:?}"))?;
        }
        Some(Value::Object(config))
    };
    let image = containers.commit(
        &args.container,
        &CommitOptions {
            name,
            author: args.author,
            message: args.message,
            config,
        },
    )?;
    println!("{}", image.id());
    Ok(ExitCode::SUCCESS)
}
