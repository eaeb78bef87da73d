//! `strata history IMAGE`: the layers' history table, as `docker history`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::image_output::{human_size, open_store, print_table, short_id, since};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image: a name, an ID or a digest.
    image: String,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Only print image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let image = store.resolve(&args.image)?;
    let history = image.config.history().clone().unwrap_or_default();
    let layers = image.manifest.layers();
    // Pair history entries with layers, oldest first; empty_layer entries have none.
    let mut next_layer = 0;
    let mut rows = Vec::new();
    for h in &history {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            let s = layers.get(next_layer).map_or(0, |l| l.size());
            next_layer += 1;
            s
        };
        rows.push((h, size));
    }
    rows.reverse();
    let id = if args.no_trunc {
        image.id().to_string()
    } else {
        short_id(image.id())
    };
    if args.quiet {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let ids = |i: usize| {
        if i == 0 {
            id.clone()
        } else {
            "<missing>".to_string()
        }
    };
    match args.format.as_str() {
        "json" => {
            for (i, (h, size)) in rows.iter().enumerate() {
                let v = json!({
                    "ID": ids(i),
                    "CreatedAt": h.created().clone().unwrap_or_default(),
                    "CreatedSince": since(h.created().as_deref()),
                    "CreatedBy": h.created_by().clone().unwrap_or_default(),
                    "Size": human_size(*size),
                    "Comment": h.comment().clone().unwrap_or_default(),
                });
                println!("{v}");
            }
        }
        "table" => {
            let mut table = vec![
                ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
                    .map(String::from)
                    .to_vec(),
            ];
            for (i, (h, size)) in rows.iter().enumerate() {
                let mut created_by = h.created_by().clone().unwrap_or_default();
                if !args.no_trunc && created_by.chars().count() > 45 {
                    created_by = created_by.chars().take(44).collect::<String>() + "…";
                }
                table.push(vec![
                    ids(i),
                    since(h.created().as_deref()),
                    created_by,
                    human_size(*size),
                    h.comment().clone().unwrap_or_default(),
                ]);
            }
            print_table(&table)?;
        }
        other => anyhow::bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
