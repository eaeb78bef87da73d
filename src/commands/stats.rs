//! `strata stats [--no-stream] [-a] [--format table|json] [CONTAINER...]`: what running
//! containers use, as `docker stats` shows it. CPU % is the container's share of the time all
//! CPUs ran between two readings a second apart, times the number of CPUs (Docker's formula).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use strata_containers::{Containers, Stats, Status};

use super::container_output::open_containers;
use super::image_output::{bytes_size, human_size, print_table};
use super::info::memory_total;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one reading and exit (default: a new reading every second).
    #[arg(long)]
    no_stream: bool,
    /// Show stopped containers too (their use is zero).
    #[arg(short, long)]
    all: bool,
    /// `table` (default) or `json` (one object a line, Docker's fields).
    #[arg(long, default_value = "table")]
    format: String,
    /// The containers (default: every running one).
    containers: Vec<String>,
}

/// A container and, while it runs, a reading.
struct Reading {
    id: String,
    name: String,
    stats: Option<Stats>,
    /// All CPUs' time when read, in nanoseconds.
    system_ns: u64,
}

pub fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.format.as_str(), "table" | "json") {
        bail!("unsupported --format {:?}: use table or json", args.format);
    }
    let containers = open_containers()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let memory_total = memory_total()?;
    let mut previous = read_all(&containers, &args)?;
    let clear = !args.no_stream && std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let current = read_all(&containers, &args)?;
        let mut rows = Vec::new();
        for now in &current {
            let before = previous.iter().find(|p| p.id == now.id);
            rows.push(row(now, before, cpus, memory_total));
        }
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        if args.format == "json" {
            let mut out = std::io::stdout().lock();
            for r in &rows {
                writeln!(out, "{}", r.json)?;
            }
            out.flush()?;
        } else {
            let mut table = vec![
                [
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ]
                .map(String::from)
                .to_vec(),
            ];
            table.extend(rows.into_iter().map(|r| r.cells));
            print_table(&table)?;
        }
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        previous = current;
    }
}

/// Readings of the containers asked for, or of every running one (every one with `-a`).
fn read_all(containers: &Containers, args: &StatsArgs) -> anyhow::Result<Vec<Reading>> {
    let records = if args.containers.is_empty() {
        containers
            .list()?
            .into_iter()
            .filter(|r| args.all || r.state.status == Status::Running)
            .collect()
    } else {
        args.containers
            .iter()
            .map(|n| containers.get(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let system_ns = system_cpu_ns()?;
    Ok(records
        .into_iter()
        .map(|r| Reading {
            // A container that stopped meanwhile reads as zero, as Docker shows it.
            stats: containers.stats(&r).ok(),
            id: r.config.id,
            name: r.config.name,
            system_ns,
        })
        .collect())
}

struct Row {
    cells: Vec<String>,
    json: serde_json::Value,
}

fn row(now: &Reading, before: Option<&Reading>, cpus: f64, memory_total: u64) -> Row {
    let usage = now.stats.as_ref().map(|s| s.cgroup).unwrap_or_default();
    let earlier = before.and_then(|b| Some((b.stats.as_ref()?, b.system_ns)));
    let cpu = now
        .stats
        .as_ref()
        .zip(earlier)
        .map_or(0.0, |(n, (b, system_before))| {
            let container = n.cgroup.cpu_ns.unwrap_or(0);
            let container = container.saturating_sub(b.cgroup.cpu_ns.unwrap_or(0));
            let system = now.system_ns.saturating_sub(system_before);
            if system == 0 {
                0.0
            } else {
                container as f64 / system as f64 * cpus * 100.0
            }
        });
    let memory = usage.memory.unwrap_or(0);
    let limit = usage
        .memory_limit
        .unwrap_or(memory_total)
        .min(memory_total.max(1));
    let memory_percent = memory as f64 / limit.max(1) as f64 * 100.0;
    let (net, block) = now
        .stats
        .as_ref()
        .map_or(((0, 0), (0, 0)), |s| (s.net, s.block));
    let pair = |(a, b): (u64, u64)| format!("{} / {}", human_size(a), human_size(b));
    let cells = vec![
        now.id[..12].to_string(),
        now.name.clone(),
        format!("{cpu:.2}%"),
        format!("{} / {}", bytes_size(memory), bytes_size(limit)),
        format!("{memory_percent:.2}%"),
        pair(net),
        pair(block),
        usage.pids.unwrap_or(0).to_string(),
    ];
    let json = json!({
        "BlockIO": cells[6],
        "CPUPerc": cells[2],
        "Container": now.id[..12],
        "ID": now.id[..12],
        "MemPerc": cells[4],
        "MemUsage": cells[3],
        "Name": now.name,
        "NetIO": cells[5],
        "PIDs": cells[7],
    });
    Row { cells, json }
}

/// The time all CPUs have run since boot (`/proc/stat`'s first line), in nanoseconds.
fn system_cpu_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf(3) reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks.saturating_mul(1_000_000_000 / per_second))
}
