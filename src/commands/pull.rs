//! `strata pull REF [--platform P] [-q]`: an image from a registry into the store, with
//! Docker's output.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_builder::{BuildError, ImageProvider};
use strata_registry_client::pull_image;
use strata_store::{Image, Platform, Reference, Store, reference};

use super::image_output::open_store;
use super::registry::{self, Mode, Progress};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG|@DIGEST] (`registry.example:5000/team/app:v1`).
    reference: String,
    /// The platform to pull from a multi-platform image, os/arch[/variant] (default: this
    /// machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Print only the image's name.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: PullArgs) -> anyhow::Result<ExitCode> {
    let reference = reference::parse_normalized_named(&args.reference)
        .with_context(|| format!("invalid reference format: {:?}", args.reference))?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let store = open_store()?;
    let progress = Progress::new(Mode::detect(args.quiet));
    let client = registry::client(progress.callback())?;
    let name = reference.tag_name_only();
    if reference.tag().is_none() && reference.digest().is_none() {
        progress.println("Using default tag: latest");
    }
    let wanted = name.digest().or(name.tag()).unwrap_or("latest");
    progress.println(&format!("{wanted}: Pulling from {}", name.path()));
    let pulled = registry::runtime()?.block_on(pull_image(&store, &client, &name, &platform));
    progress.done();
    let pulled = pulled.with_context(|| format!("pulling {}", name.familiar_string()))?;
    progress.println(&format!("Digest: {}", pulled.digest));
    let status = if pulled.updated {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    progress.println(&format!("Status: {status} {}", name.familiar_string()));
    let actual = pulled.image.platform();
    if !platform.can_run(&actual) {
        eprintln!(
            "WARNING: The requested image's platform ({actual}) does not match the {} platform \
             ({platform})",
            if args.platform.is_some() {
                "requested"
            } else {
                "detected host"
            }
        );
    }
    println!("{name}");
    Ok(ExitCode::SUCCESS)
}

/// Pulls an image another command needs and does not have (`run`), saying so on stderr as
/// `docker run` does, so the command's own output stays clean.
pub fn pull_missing(store: &Store, reference: &str, platform: &Platform) -> anyhow::Result<Image> {
    let name = parse_name(reference)?;
    eprintln!("Unable to find image '{}' locally", name.familiar_string());
    pull_named(store, &name, platform)
}

fn parse_name(reference: &str) -> anyhow::Result<Reference> {
    Ok(reference::parse_normalized_named(reference)
        .with_context(|| format!("invalid reference format: {reference:?}"))?
        .tag_name_only())
}

/// Pulls `name` without progress bars, then prints Docker's one-line status on stderr.
fn pull_named(store: &Store, name: &Reference, platform: &Platform) -> anyhow::Result<Image> {
    let client = registry::client(None)?;
    let pulled = registry::runtime()?
        .block_on(pull_image(store, &client, name, platform))
        .with_context(|| format!("pulling {}", name.familiar_string()))?;
    let status = if pulled.updated {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    eprintln!("Status: {status} {}", name.familiar_string());
    Ok(pulled.image)
}

/// The builder's way to base images it lacks (or, with `build --pull`, every base named by
/// tag): pull them from their registry.
pub struct RegistryImages;

impl ImageProvider for RegistryImages {
    fn provide(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> Result<Image, BuildError> {
        let pull = || pull_named(store, &parse_name(reference)?, platform);
        pull().map_err(|e| {
            BuildError::ImageNotFound(format!(
                "{e:#}\n(an image can also be made local with `strata load -i IMAGE.tar` or \
                 `strata import ROOTFS.tar {reference}`)"
            ))
        })
    }
}
