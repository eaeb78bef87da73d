//! `strata image prune`, `strata system prune` and `strata system df`.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use strata_containers::volumes::data_size;
use strata_containers::{Containers, Record, Status};
use strata_store::{GcOptions, GcReport, ImagePrune, meta::CACHE_HOLDER_PREFIX};

use super::container_output::open_containers;
use super::image_output::{human_size, open_store, print_table};

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove untagged images, the build cache and unreferenced blobs.
    Prune(PruneArgs),
    /// Show what uses space in the store.
    Df,
    /// Show what this strata and this machine are.
    Info(super::info::InfoArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images no container uses, not only untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Deletes a snapshot nothing holds any more (one already gone counts as deleted). A snapshot
/// that is still another's parent stays recorded and is offered again by the next collection.
pub fn delete_snapshot(id: &str) -> strata_store::Result<()> {
    let root = strata_store::default_root().join("snapshots");
    let removed = strata_snapshotter::Snapshotter::open(&root).and_then(|s| s.remove(id));
    match removed {
        Ok(()) | Err(strata_snapshotter::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(strata_store::StoreError::Invalid(format!(
            "snapshot {id}: {e}"
        ))),
    }
}

/// `image prune [-a]`.
pub fn run_image_prune(args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let what = if args.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    prune(args, what, false)
}

/// Only `-f`.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// `container prune`: every container that is not running.
pub fn run_container_prune(args: &ForceArgs) -> anyhow::Result<ExitCode> {
    if !args.force && !confirm("all stopped containers")? {
        return Ok(ExitCode::SUCCESS);
    }
    let freed = prune_containers(&open_containers()?)?;
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(ExitCode::SUCCESS)
}

/// Removes the stopped containers and prints Docker's "Deleted Containers:" list (nothing when
/// none was); returns the bytes freed.
fn prune_containers(containers: &Containers) -> anyhow::Result<u64> {
    let (removed, freed) = containers.prune_containers()?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    Ok(freed)
}

pub fn run_system(cmd: SystemCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCommand::Prune(args) => {
            let what = if args.all {
                "all stopped containers, all images without at least one container associated \
                 to them, and all build cache"
            } else {
                "all stopped containers, all dangling images, and all dangling build cache"
            };
            prune(&args, what, true)
        }
        SystemCommand::Df => df(&open_containers()?),
        SystemCommand::Info(args) => super::info::run(args),
    }
}

fn prune(args: &PruneArgs, what: &str, build_cache: bool) -> anyhow::Result<ExitCode> {
    if !args.force && !confirm(what)? {
        return Ok(ExitCode::SUCCESS);
    }
    // `system prune` removes stopped containers first, so the images only they used go too.
    let containers_freed = if build_cache {
        prune_containers(&open_containers()?)?
    } else {
        0
    };
    let store = open_store()?;
    let dirs = if build_cache {
        Some(super::builder::prune_build_dirs(store.root())?)
    } else {
        None
    };
    let options = GcOptions {
        images: if args.all {
            ImagePrune::Unused
        } else {
            ImagePrune::Dangling
        },
        build_cache,
    };
    let report = store.gc(&options, &mut delete_snapshot)?;
    print_report(&report);
    let mut reclaimed = report.reclaimed + containers_freed;
    if let Some(dirs) = dirs {
        dirs.print(std::iter::empty());
        reclaimed += dirs.reclaimed;
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal before a destructive prune, as Docker does; only `y`/`yes` proceeds.
pub(crate) fn confirm(what: &str) -> anyhow::Result<bool> {
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    io::stderr().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Docker's "Deleted Images:" list (nothing when no image was removed).
fn print_report(report: &GcReport) {
    if !report.removed_images.is_empty() {
        println!("Deleted Images:");
        for e in &report.removed_images {
            match &e.name {
                Some(n) => println!("untagged: {}", n.familiar_string()),
                None => println!("deleted: {}", e.target.digest()),
            }
        }
        for d in &report.deleted_blobs {
            println!("deleted: {d}");
        }
        println!();
    }
}

/// Sizes of what images reach, what only the build cache reaches, and what nothing does.
fn df(containers: &Containers) -> anyhow::Result<ExitCode> {
    let store = containers.store();
    let images = store.images()?;
    let roots = store.read_meta(|m| m.roots())?;
    let held: HashSet<_> = roots
        .iter()
        .filter(|(h, _)| !h.starts_with(CACHE_HOLDER_PREFIX))
        .map(|(_, d)| d.clone())
        .collect();
    let mut image_blobs = HashSet::new();
    let mut active_blobs = HashSet::new();
    let mut ids = HashSet::new();
    let mut active_ids = HashSet::new();
    for (entry, image) in &images {
        let Ok(image) = image else { continue };
        let blobs: Vec<_> = std::iter::once(image.manifest_descriptor.clone())
            .chain(std::iter::once(image.manifest.config().clone()))
            .chain(image.manifest.layers().iter().cloned())
            .map(|d| (d.digest().clone(), d.size()))
            .collect();
        ids.insert(image.id().clone());
        let active = held.contains(entry.target.digest());
        if active {
            active_ids.insert(image.id().clone());
        }
        for b in blobs {
            if active {
                active_blobs.insert(b.clone());
            }
            image_blobs.insert(b);
        }
    }
    let images_size: u64 = image_blobs.iter().map(|(_, s)| s).sum();
    let active_size: u64 = active_blobs.iter().map(|(_, s)| s).sum();
    let image_digests: HashSet<_> = image_blobs.iter().map(|(d, _)| d.clone()).collect();
    let mut cache_size = 0;
    let mut cache_count = 0;
    for (holder, digest) in &roots {
        if holder.starts_with(CACHE_HOLDER_PREFIX) && !image_digests.contains(digest) {
            cache_count += 1;
            cache_size += store.blob_size(digest)?.unwrap_or(0);
        }
    }
    let reclaimable = images_size - active_size;
    let percent = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let usage = |total: usize, active: usize, size: u64, reclaimable: u64| {
        [
            total.to_string(),
            active.to_string(),
            human_size(size),
            format!(
                "{} ({}%)",
                human_size(reclaimable),
                percent(reclaimable, size)
            ),
        ]
    };
    // A container's size is its writable layer; a stopped one's is reclaimable (`container
    // prune`), as is an unused volume's (`volume prune`).
    let records = containers.list()?;
    let snapshotter = containers.snapshotter()?;
    let (mut container_size, mut stopped_size, mut running) = (0, 0, 0);
    for record in &records {
        let size = data_size(&snapshotter.fs_path(&record.config.snapshot));
        container_size += size;
        if matches!(record.state.status, Status::Running | Status::Restarting) {
            running += 1;
        } else {
            stopped_size += size;
        }
    }
    let volumes = containers.volumes().list()?;
    let in_use: HashSet<&str> = records.iter().flat_map(Record::volumes).collect();
    let (mut volume_size, mut unused_size, mut used) = (0, 0, 0);
    for volume in &volumes {
        let size = data_size(&volume.mountpoint);
        volume_size += size;
        if in_use.contains(volume.name.as_str()) {
            used += 1;
        } else {
            unused_size += size;
        }
    }
    let row = |kind: &str, cells: [String; 4]| {
        std::iter::once(kind.to_string())
            .chain(cells)
            .collect::<Vec<_>>()
    };
    print_table(&[
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(String::from)
            .to_vec(),
        row(
            "Images",
            usage(ids.len(), active_ids.len(), images_size, reclaimable),
        ),
        row(
            "Containers",
            usage(records.len(), running, container_size, stopped_size),
        ),
        row(
            "Local Volumes",
            usage(volumes.len(), used, volume_size, unused_size),
        ),
        vec![
            "Build Cache".into(),
            cache_count.to_string(),
            "0".into(),
            human_size(cache_size),
            human_size(cache_size),
        ],
    ])?;
    Ok(ExitCode::SUCCESS)
}
