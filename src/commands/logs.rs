//! `strata logs [-f] [--tail N] [-t] CONTAINER`: the container's output from its json-file log,
//! stdout entries to stdout and stderr entries to stderr.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_containers::Watcher;
use strata_containers::logs::{LogEntry, tail};

use super::container_output::open_containers;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output while the container runs.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end to show (`all` for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Prefix every line with its time.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    let record = containers.get(&args.container)?;
    let id = record.config.id;
    let n = match args.tail.as_str() {
        "all" | "-1" => None,
        t => Some(
            t.parse::<usize>()
                .with_context(|| format!("invalid --tail {t:?}"))?,
        ),
    };
    let path = containers.log_path(&id);
    let watcher = if args.follow {
        Some(Watcher::new(&containers.container_dir(&id))?)
    } else {
        None
    };
    let (entries, mut reader) = tail(&path, n)?;
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let mut show = |e: &LogEntry| -> io::Result<()> {
        let to: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if args.timestamps {
            write!(to, "{} ", e.time)?;
        }
        to.write_all(e.log.as_bytes())?;
        to.flush()
    };
    for e in &entries {
        show(e)?;
    }
    let Some(watcher) = watcher else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        // Checked before reading, so what the container wrote before it ended is still shown.
        let running = containers.monitor_alive(&id)?;
        while let Some(e) = reader.next_entry()? {
            show(&e)?;
        }
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        watcher.wait(Duration::from_millis(500));
    }
}
