//! `strata debug parse-ref REF`: an image reference as distribution/reference normalises it.

use std::process::ExitCode;

use serde::Serialize;
use strata_store::reference;

#[derive(Serialize)]
struct Parsed {
    name: String,
    familiar: String,
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Prints the parsed reference as one JSON object, or the parse error on stderr (exit 1).
pub fn run(input: &str) -> anyhow::Result<ExitCode> {
    match reference::parse_normalized_named(input) {
        Ok(r) => {
            let r = r.tag_name_only();
            let parsed = Parsed {
                name: r.name(),
                familiar: r.familiar_name(),
                domain: r.domain().to_string(),
                path: r.path().to_string(),
                tag: r.tag().map(str::to_string),
                digest: r.digest().map(str::to_string),
            };
            println!("{}", serde_json::to_string(&parsed)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("strata: error: invalid reference {input:?}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
