//! `strata tag SOURCE TARGET` and `strata rmi [-f] IMAGE...`.

use std::process::ExitCode;

use clap::Args;
use strata_store::GcOptions;

use super::image_output::open_store;
use super::prune::delete_snapshot;

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: a name, an ID or a digest.
    source: String,
    /// The new name (`:latest` when no tag is given).
    target: String,
}

pub fn run_tag(args: TagArgs) -> anyhow::Result<ExitCode> {
    let name = super::image_output::parse_new_name(&args.target)?;
    open_store()?.tag(&args.source, &name)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove: names, IDs or digests.
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image with several names by ID, or one in use.
    #[arg(short, long)]
    force: bool,
}

pub fn run_rmi(args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let mut failed = false;
    for image in &args.images {
        match store.remove_image(image, args.force) {
            Ok(removal) => {
                for n in &removal.untagged {
                    println!("Untagged: {}", n.familiar_string());
                }
                for id in &removal.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(e) => {
                eprintln!("strata: error: {e}");
                failed = true;
            }
        }
    }
    // Free the blobs now unless a build or another command holds a lease; prune catches up.
    store.try_gc(&GcOptions::default(), &mut delete_snapshot)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
