//! `strata push REF [--format oci|docker] [--compression gzip|zstd] [-q]`: an image of the store
//! to a registry, with Docker's output.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use strata_codec::Compression;
use strata_registry_client::{ManifestFormat, PushOptions, push_image};
use strata_store::{Reference, Store, reference};

use super::image_output::open_store;
use super::registry::{self, Mode, Progress};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push, named for its registry: NAME[:TAG] (`registry.example:5000/app:v1`).
    reference: String,
    /// Media types of the pushed manifests (default: those the image is stored with, OCI for
    /// images strata builds and imports). Converting changes the manifest's digest.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Recompress layers stored with another compression (kept in the store for next time).
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Print only the pushed name.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Oci,
    Docker,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
}

pub fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    let destination = reference::parse_normalized_named(&args.reference)
        .with_context(|| format!("invalid reference format: {:?}", args.reference))?;
    if destination.digest().is_some() {
        bail!("cannot push a digest reference: {}", args.reference);
    }
    let destination = destination.tag_name_only();
    let options = PushOptions {
        format: args.format.map(|f| match f {
            FormatArg::Oci => ManifestFormat::Oci,
            FormatArg::Docker => ManifestFormat::Docker,
        }),
        compression: args.compression.map(|c| match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
        }),
    };
    let store = open_store()?;
    let report = if args.quiet {
        PushReport::NameOnly
    } else {
        PushReport::Docker
    };
    push_reference(&store, &destination, &options, report)?;
    Ok(ExitCode::SUCCESS)
}

/// What a push prints on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushReport {
    /// Docker's lines (bars on a terminal).
    Docker,
    /// The name pushed, alone (`push -q`, `build -q --push`).
    NameOnly,
    /// Nothing (`build --progress=json --push`: standard output carries the JSON events).
    Nothing,
}

/// Pushes the stored image named `destination` to its registry (`push`, `build --push`).
pub fn push_reference(
    store: &Store,
    destination: &Reference,
    options: &PushOptions,
    report: PushReport,
) -> anyhow::Result<()> {
    let progress = Progress::new(Mode::detect(report != PushReport::Docker));
    let client = registry::client(progress.callback())?;
    progress.println(&format!(
        "The push refers to repository [{}]",
        destination.without_tag_or_digest()
    ));
    let source = destination.to_string();
    let pushed =
        registry::runtime()?.block_on(push_image(store, &client, &source, destination, options));
    progress.done();
    let pushed = pushed.with_context(|| format!("pushing {}", destination.familiar_string()))?;
    progress.println(&format!(
        "{}: digest: {} size: {}",
        pushed.tag, pushed.digest, pushed.size
    ));
    if report == PushReport::NameOnly {
        println!("{destination}");
    }
    Ok(())
}
