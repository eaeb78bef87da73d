//! `strata builder prune`, and the `strata build --secret` / `--ssh` flag values.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use strata_builder::SecretSource;
use strata_store::{GcOptions, ImagePrune};

use super::image_output::{human_size, open_store};
use super::prune::{confirm, delete_snapshot};

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache: cached step results, RUN cache mounts, ADD's downloads.
    Prune(BuilderPruneArgs),
}

#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// Remove all build cache (strata keeps no other kind: accepted for Docker's sake).
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn run(cmd: BuilderCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BuilderCommand::Prune(args) => prune(&args),
    }
}

/// What [`prune_build_dirs`] removed and kept.
pub(super) struct BuildDirsPruned {
    /// A line per removed cache mount (`cache mount ID`) and download (`download URL`).
    pub removed: Vec<String>,
    pub reclaimed: u64,
    /// What was kept because a running build holds it, as a line for standard error.
    pub kept: Vec<String>,
}

/// The part of the build cache kept beside the store's records: RUN cache mounts and ADD
/// downloads no build holds, and the context stat caches. `builder prune` and `system prune`
/// remove it, as Docker's both prune BuildKit's cache.
pub(super) fn prune_build_dirs(store_root: &Path) -> anyhow::Result<BuildDirsPruned> {
    let mounts =
        strata_builder::prune_cache_mounts(store_root).context("removing the RUN cache mounts")?;
    let downloads =
        strata_builder::prune_downloads(store_root).context("removing ADD's downloads")?;
    let contexts = strata_builder::prune_context_caches(store_root)
        .context("removing the context stat caches")?;
    let removed = mounts
        .removed
        .iter()
        .map(|id| format!("cache mount {id}"))
        .chain(
            downloads
                .removed
                .iter()
                .map(|url| format!("download {url}")),
        )
        .collect();
    let kept = [
        (mounts.in_use, "cache mount(s)"),
        (downloads.in_use, "download(s)"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what} in use by a running build were kept"))
    .collect();
    Ok(BuildDirsPruned {
        removed,
        reclaimed: mounts.reclaimed + downloads.reclaimed + contexts,
        kept,
    })
}

/// Docker's `builder prune`: [`prune_build_dirs`], then the `cache:` GC roots of step results
/// and a collection of what only they kept. Images are left alone.
fn prune(args: &BuilderPruneArgs) -> anyhow::Result<ExitCode> {
    let what = if args.all {
        "all build cache"
    } else {
        "all dangling build cache"
    };
    if !args.force && !confirm(what)? {
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store()?;
    let dirs = prune_build_dirs(store.root())?;
    let report = store.gc(
        &GcOptions {
            images: ImagePrune::None,
            build_cache: true,
        },
        &mut delete_snapshot,
    )?;
    dirs.print(report.deleted_blobs.iter().map(ToString::to_string));
    println!(
        "Total reclaimed space: {}",
        human_size(report.reclaimed + dirs.reclaimed)
    );
    Ok(ExitCode::SUCCESS)
}

impl BuildDirsPruned {
    /// Docker's "Deleted build cache objects:" list (nothing when there is nothing): what was
    /// removed here, then `more` (blobs the collection deleted); what was kept goes to stderr.
    pub(super) fn print(&self, more: impl Iterator<Item = String>) {
        let mut lines = self.removed.iter().cloned().chain(more).peekable();
        if lines.peek().is_some() {
            println!("Deleted build cache objects:");
            for line in lines {
                println!("{line}");
            }
            println!();
        }
        for line in &self.kept {
            eprintln!("{line}");
        }
    }
}

/// `--secret id=X[,src=FILE|,env=VAR][,type=file|env]` as buildx reads it: `source`/`src`
/// name a file (or, with `type=env`, a variable); with neither, the variable named by the id if
/// it is set, else the file named by the id.
pub fn parse_secrets(values: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for value in values {
        let (mut id, mut typ, mut src, mut env) = (None, None, None, None);
        for field in value.split(',') {
            let (key, v) = field
                .split_once('=')
                .with_context(|| format!("invalid --secret {value:?}: {field:?} is not K=V"))?;
            match key.to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "type" => typ = Some(v.to_string()),
                "source" | "src" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                _ => bail!("invalid --secret {value:?}: unexpected key {key:?}"),
            }
        }
        let source = match typ.as_deref() {
            Some("env") => SecretSource::Env(
                env.or(src)
                    .or_else(|| id.clone())
                    .context("--secret type=env needs env= or id=")?,
            ),
            Some("file") => SecretSource::File(
                src.or_else(|| id.clone())
                    .context("--secret type=file needs src= or id=")?
                    .into(),
            ),
            Some(other) => bail!("invalid --secret {value:?}: unsupported type {other:?}"),
            None => match (src, env) {
                (Some(path), _) => SecretSource::File(path.into()),
                (None, Some(var)) => SecretSource::Env(var),
                (None, None) => {
                    let name = id.clone().context("--secret needs id=")?;
                    if std::env::var_os(&name).is_some() {
                        SecretSource::Env(name)
                    } else {
                        SecretSource::File(name.into())
                    }
                }
            },
        };
        let id = match (id, &source) {
            (Some(id), _) => id,
            (None, SecretSource::File(p)) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("--secret needs id=")?,
            (None, SecretSource::Env(v)) => v.clone(),
        };
        // As buildx: a file that cannot be read fails the build before it starts.
        if let SecretSource::File(path) = &source {
            std::fs::File::open(path)
                .with_context(|| format!("--secret id={id}: {}", path.display()))?;
        }
        out.insert(id, source);
    }
    Ok(out)
}

/// `--ssh default` (the agent of `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`.
pub fn parse_ssh(values: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for value in values {
        let (id, path) = match value.split_once('=') {
            Some((id, path)) => {
                if path.contains(',') {
                    bail!("--ssh {value:?}: only one agent socket per id is supported");
                }
                (id.to_string(), PathBuf::from(path))
            }
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").with_context(|| {
                    format!("--ssh {value}: SSH_AUTH_SOCK is not set (start ssh-agent, or give ID=SOCKET)")
                })?;
                (value.clone(), PathBuf::from(sock))
            }
        };
        let meta =
            std::fs::metadata(&path).with_context(|| format!("--ssh {id}: {}", path.display()))?;
        if !meta.file_type().is_socket() {
            bail!(
                "--ssh {id}: {} is not an SSH agent socket (key files are not supported: add the key to an ssh-agent)",
                path.display()
            );
        }
        out.insert(id, path);
    }
    Ok(out)
}
