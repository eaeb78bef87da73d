//! `strata build`: a Dockerfile and its context to an image in the store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use strata_builder::{BuildRequest, Builder, Layer, Network};
use strata_codec::Decoder;
use strata_registry_client::PushOptions;
use strata_snapshotter::{ExtractOptions, Snapshotter, WhiteoutMode};
use strata_store::reference;

use super::build_cache::{CacheLocation, CacheSpec, CacheTransfers};
use super::image_output::open_store;
use super::push::PushReport;
use crate::progress::{ProgressMode, Renderer};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// A build arg: `K=V`, or `K` to take the value from the environment.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last.
    #[arg(long)]
    target: Option<String>,
    /// A label for the image: `K=V` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Run every step, whatever the cache holds.
    #[arg(long)]
    no_cache: bool,
    /// Pull every base image named by tag, even one the store has, so a moved tag is followed.
    #[arg(long)]
    pull: bool,
    /// Push the image to the registry of each `-t` name once it is built (only the layers the
    /// registry lacks are uploaded).
    #[arg(long)]
    push: bool,
    /// The network of RUN steps: `host` (default, as BuildKit without a bridge) or `none`.
    #[arg(long, default_value = "host")]
    network: String,
    /// Where the image goes besides the store: `type=oci|docker|local|tar|image,dest=...`,
    /// `DIR` (type=local) or `-` (a tar of the filesystem on standard output); repeatable.
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// The platform to build for (`os/arch[/variant]`); only this machine's own (or one it runs
    /// natively) can be built, as strata does not emulate.
    #[arg(long)]
    platform: Option<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Only run the lint checks (BuildKit's `--check`): print the warnings, build nothing.
    #[arg(long)]
    check: bool,
    /// Stages to build at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// A secret for `RUN --mount=type=secret`: `id=X,src=FILE` or `id=X,env=VAR` (repeatable).
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: `default` ($SSH_AUTH_SOCK) or `ID=SOCKET`.
    #[arg(long)]
    ssh: Vec<String>,
    /// Export the build cache: `type=registry,ref=NAME[,mode=min|max]`, `type=local,dest=DIR`,
    /// or `type=inline` (in the pushed image's config; needs --push). Repeatable.
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    /// Use a build cache exported before: `type=registry,ref=NAME` (or just `NAME`) or
    /// `type=local,src=DIR`. Only the metadata is read up front; a layer is fetched when a
    /// step needs its files or the image is stored. Repeatable; the first that has a step wins.
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// The build context directory; `-` reads a context tar (or a lone Dockerfile) from
    /// standard input.
    context: String,
}

fn key_value(flag: &str, s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: expected KEY=VALUE"),
    }
}

fn parse_cache_specs(flag: &str, values: &[String]) -> anyhow::Result<Vec<CacheSpec>> {
    values.iter().map(|v| CacheSpec::parse(flag, v)).collect()
}

/// What standard input held for `strata build -`.
enum Stdin {
    Dockerfile(String),
    Context(tempfile::TempDir),
}

/// Reads `-`: a tar (maybe compressed) is a context; anything else is a Dockerfile.
fn read_stdin_context() -> anyhow::Result<Stdin> {
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    let looks_like_tar = {
        let mut header = [0u8; 512];
        Decoder::detect(io::BufReader::new(&bytes[..]))
            .ok()
            .map(|(_, mut d)| d.read_exact(&mut header).is_ok() && tar_header_ok(&header))
            .unwrap_or(false)
    };
    if !looks_like_tar {
        return Ok(Stdin::Dockerfile(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    let dir = tempfile::tempdir().context("creating a directory for the context")?;
    strata_snapshotter::extract_layer(
        &bytes[..],
        dir.path(),
        &ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            max_uncompressed_size: None,
        },
    )
    .context("unpacking the context from standard input")?;
    Ok(Stdin::Context(dir))
}

fn tar_header_ok(h: &[u8; 512]) -> bool {
    if h.iter().all(|&b| b == 0) {
        return false;
    }
    let text: String = h[148..156]
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(recorded) = u64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
        .sum();
    recorded == sum
}

/// `--platform`: one platform (buildx's comma-separated list, when it names one).
fn parse_platform(spec: &str) -> anyhow::Result<strata_store::Platform> {
    let mut platforms = Vec::new();
    for p in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let platform = strata_store::Platform::parse(p)
            .with_context(|| format!("--platform {p:?}: expected os/arch[/variant]"))?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    match platforms.len() {
        0 => bail!("--platform: no platform given"),
        1 => Ok(platforms.remove(0)),
        _ => bail!(
            "--platform {spec:?}: a multi-platform build is not supported: strata builds one \
             platform, natively (the others would need binfmt_misc/qemu-user-static emulation)"
        ),
    }
}

/// The Dockerfile of a context when `-f` is not given: `Dockerfile`, else `dockerfile`.
fn default_dockerfile(context: &Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    if upper.exists() {
        return upper;
    }
    let lower = context.join("dockerfile");
    if lower.exists() { lower } else { upper }
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let renderer = Renderer::new(if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    });
    let network = match args.network.as_str() {
        "host" | "default" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other:?}: strata supports host and none"),
    };
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg K`: the value comes from the environment; unset means not given.
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    // buildx passes the client's SOURCE_DATE_EPOCH as the build arg unless one is given.
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        build_args
            .entry("SOURCE_DATE_EPOCH".to_string())
            .or_insert(v);
    }
    let source_date_epoch = strata_builder::source_date_epoch(&build_args, None)?;
    let platform = match &args.platform {
        Some(p) => Some(parse_platform(p)?),
        None => None,
    };
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = key_value("--label", l)?;
        labels.insert(k, v);
    }
    let outputs = super::build_output::parse_all(&args.outputs)?;
    let push = args.push || outputs.iter().any(|o| o.pushes());
    if push && args.tags.is_empty() && outputs.iter().all(|o| o.store_names().is_empty()) {
        bail!("--push needs a name to push to: add -t REGISTRY/NAME[:TAG]");
    }
    let cache_to = parse_cache_specs("--cache-to", &args.cache_to)?;
    let cache_from = parse_cache_specs("--cache-from", &args.cache_from)?;
    let inline_cache = cache_to.iter().any(|c| c.location == CacheLocation::Inline);
    if inline_cache && !push {
        bail!("--cache-to type=inline puts the cache in the pushed image: add --push");
    }
    let mut tags = Vec::new();
    for t in &args.tags {
        let r =
            reference::parse_normalized_named(t).with_context(|| format!("invalid tag {t:?}"))?;
        if r.digest().is_some() {
            bail!("invalid tag {t:?}: a tag cannot have a digest");
        }
        tags.push(r);
    }
    for name in outputs.iter().flat_map(|o| o.store_names()) {
        if !tags.contains(name) {
            tags.push(name.clone());
        }
    }

    // The context and the Dockerfile.
    let mut _stdin_context = None;
    let (context, mut dockerfile, mut dockerfile_path) = if args.context == "-" {
        if args.file.as_deref() == Some("-") {
            bail!("the Dockerfile and the context cannot both come from standard input");
        }
        match read_stdin_context()? {
            Stdin::Dockerfile(text) => (None, Some(text), None),
            Stdin::Context(dir) => {
                let path = dir.path().to_path_buf();
                _stdin_context = Some(dir);
                (Some(path), None, None)
            }
        }
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            bail!(
                "unable to prepare context: path {:?} not found",
                args.context
            );
        }
        (Some(dir), None, None)
    };
    match args.file.as_deref() {
        Some("-") => {
            let mut text = String::new();
            io::stdin()
                .lock()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from standard input")?;
            dockerfile = Some(text);
        }
        Some(f) => {
            let path = match (
                &context,
                Path::new(f).is_absolute() || Path::new(f).exists(),
            ) {
                (Some(ctx), false) => ctx.join(f),
                _ => PathBuf::from(f),
            };
            dockerfile_path = Some(path);
        }
        None if dockerfile.is_none() => {
            let ctx = context.as_deref().unwrap_or(Path::new("."));
            dockerfile_path = Some(default_dockerfile(ctx));
        }
        None => {}
    }
    let dockerfile = match (dockerfile, &dockerfile_path) {
        (Some(text), _) => text,
        (None, Some(path)) => fs::read_to_string(path)
            .with_context(|| format!("reading the Dockerfile {}", path.display()))?,
        (None, None) => bail!("no Dockerfile"),
    };

    let store = open_store()?;
    let lint_input = super::lint::LintInput {
        dockerfile: &dockerfile,
        dockerfile_path: dockerfile_path.as_deref(),
        context: context.as_deref(),
        build_args: &build_args,
        target: args.target.as_deref(),
    };
    if args.check {
        return super::lint::check(&lint_input, &store);
    }
    let quiet = renderer.mode() == ProgressMode::Quiet;
    if let Some(failed) = super::lint::warn_before_build(&lint_input, &store, quiet) {
        return Ok(failed);
    }
    let snapshotter =
        Snapshotter::open(store.root().join("snapshots")).context("opening the snapshot store")?;
    let _ = snapshotter.cleanup();
    let mut builder = Builder::new(
        store,
        snapshotter,
        strata_runtime::Sandbox::new("/proc/self/exe"),
    );
    builder = builder.with_image_provider(std::sync::Arc::new(super::pull::RegistryImages));
    if let Some(jobs) = args.jobs {
        builder = builder.with_jobs(jobs);
    }
    let mut transfers = None;
    if !cache_to.is_empty() || !cache_from.is_empty() {
        let mut t = CacheTransfers::new()?;
        let import = t.import(builder.store(), &cache_from, quiet)?;
        // A pushed image's imported layers stay in the registry: the push mounts them.
        builder = builder.with_cache_import(import.fetch_final(!push));
        transfers = Some(t);
    }
    let request = BuildRequest {
        dockerfile,
        dockerfile_path,
        context,
        build_args,
        target: args.target.clone(),
        labels,
        tags,
        no_cache: args.no_cache,
        network,
        pull: args.pull,
        platform,
        secrets: super::builder::parse_secrets(&args.secrets)?,
        ssh: super::builder::parse_ssh(&args.ssh)?,
    };
    let outcome = match builder.build(&request, &renderer) {
        Ok(o) => o,
        Err(e) => {
            renderer.finish();
            return Err(anyhow::Error::new(e));
        }
    };
    renderer.finish();
    let mut id = outcome.image.id().to_string();
    if let Some(t) = &transfers {
        for spec in cache_to
            .iter()
            .filter(|c| c.location != CacheLocation::Inline)
        {
            let started = Instant::now();
            renderer.line(&format!("#0 exporting cache to {}", spec.location));
            let layers = t
                .export(builder.store(), spec, &outcome.cache, &outcome.cache_mounts)
                .with_context(|| format!("exporting cache to {}", spec.location))?;
            renderer.line(&format!(
                "#0 exporting cache to {}: {layers} layers, done {:.1}s",
                spec.location,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    if inline_cache {
        super::build_cache::add_inline_cache(builder.store(), &request.tags, &outcome.cache)?;
        id = builder
            .store()
            .resolve(&request.tags[0].to_string())?
            .id()
            .to_string();
    }
    if let Some(path) = &args.iidfile {
        fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    for output in &outputs {
        super::build_output::export(
            builder.store(),
            &outcome.image,
            output,
            &request.tags,
            source_date_epoch,
        )?;
    }
    if renderer.mode() == ProgressMode::Quiet && !outputs.iter().any(|o| o.to_stdout()) {
        println!("{id}");
    }
    if push {
        let store = builder.store();
        for tag in &request.tags {
            let report = match renderer.mode() {
                ProgressMode::Quiet => PushReport::NameOnly,
                ProgressMode::Json => PushReport::Nothing,
                _ => PushReport::Docker,
            };
            if let Some(t) = &transfers {
                let image = store.resolve(&tag.to_string())?;
                t.push_remote_layers(store, tag, &Layer::of_image(&image)?)?;
            }
            super::push::push_reference(
                store,
                &tag.tag_name_only(),
                &PushOptions::default(),
                report,
            )?;
        }
        // An image whose cached layers were left in the registry is not kept under its names:
        // every named image of the store has all its blobs (`run` pulls this one when asked).
        if let Some(image) = request
            .tags
            .first()
            .and_then(|t| store.resolve(&t.to_string()).ok())
            && image
                .manifest
                .layers()
                .iter()
                .any(|l| !store.has_blob(l.digest()))
        {
            for tag in &request.tags {
                store.untag(tag)?;
            }
            eprintln!(
                "note: the image's cached layers stay in the registry; `strata pull {}` fetches them",
                request.tags[0].familiar_string()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
