//! `strata logs [-f] [--tail N] [-t] [--since T] [--until T] CONTAINER`: the container's output from its json-file log,
//! stdout entries to stdout and stderr entries to stderr.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use strata_containers::Watcher;
use strata_containers::logs::{LogEntry, tail};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

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
    /// Only lines written at or after this: a time (`2024-05-01T10:00:00Z`, `2024-05-01`, Unix
    /// seconds) or a duration before now (`10m`, `1h30m`).
    #[arg(long)]
    since: Option<String>,
    /// Only lines written at or before this (same forms as --since); -f stops there.
    #[arg(long)]
    until: Option<String>,
    container: String,
}

/// A `--since`/`--until` value as the Docker CLI reads it (`GetTimestamp`): a Go duration
/// before `now`, Unix seconds (with a fraction), RFC 3339, or a date and time without a zone
/// (taken as UTC, where Docker takes the client's local time).
fn moment(value: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Some(ago) = go_duration(value) {
        return now
            .checked_sub(ago)
            .with_context(|| format!("invalid time {value:?}: too long ago"));
    }
    if let Some((secs, fraction)) = value
        .split_once('.')
        .map_or(Some((value, "")), Some)
        .filter(|(s, f)| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && f.len() <= 9
                && f.bytes().all(|b| b.is_ascii_digit())
        })
    {
        let nanos: i128 = format!("{fraction:0<9}").parse().unwrap_or(0);
        let secs: i128 = secs.parse().context("invalid Unix time")?;
        return OffsetDateTime::from_unix_timestamp_nanos(secs * 1_000_000_000 + nanos)
            .context("Unix time out of range");
    }
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t);
    }
    let with_time = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let with_fraction =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]");
    if let Ok(t) = PrimitiveDateTime::parse(value, with_time)
        .or_else(|_| PrimitiveDateTime::parse(value, with_fraction))
    {
        return Ok(t.assume_utc());
    }
    let day = format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(value, day) {
        return Ok(d.midnight().assume_utc());
    }
    bail!(
        "invalid time {value:?}: use RFC 3339 (2024-05-01T10:00:00Z), Unix seconds or a duration (10m)"
    )
}

/// Go's `time.ParseDuration` for non-negative values: numbers with units (`h`, `m`, `s`, `ms`,
/// `us`, `µs`, `ns`), e.g. `1h30m`, `1.5s`.
fn go_duration(text: &str) -> Option<time::Duration> {
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    if text.is_empty() {
        return None;
    }
    time::Duration::checked_seconds_f64(total)
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
    let now = OffsetDateTime::now_utc();
    let since = args.since.as_deref().map(|v| moment(v, now)).transpose()?;
    let until = args.until.as_deref().map(|v| moment(v, now)).transpose()?;
    // An entry whose time does not parse is shown: nothing says it is outside.
    let within = |e: &LogEntry| match OffsetDateTime::parse(&e.time, &Rfc3339) {
        Ok(t) => since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u),
        Err(_) => true,
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
    for e in entries.iter().filter(|e| within(e)) {
        show(e)?;
    }
    let Some(watcher) = watcher else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        // Checked before reading, so what the container wrote before it ended is still shown.
        let running = containers.monitor_alive(&id)?;
        while let Some(e) = reader.next_entry()? {
            if within(&e) {
                show(&e)?;
            }
        }
        if !running || until.is_some_and(|u| OffsetDateTime::now_utc() > u) {
            return Ok(ExitCode::SUCCESS);
        }
        watcher.wait(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_as_docker_reads_them() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let at = |v: &str| moment(v, now).unwrap().unix_timestamp_nanos();
        assert_eq!(at("10m"), (1_700_000_000 - 600) * 1_000_000_000);
        assert_eq!(at("1h30m"), (1_700_000_000 - 5400) * 1_000_000_000);
        assert_eq!(at("1.5s"), 1_699_999_998_500_000_000);
        assert_eq!(at("1600000000"), 1_600_000_000 * 1_000_000_000);
        assert_eq!(at("1600000000.25"), 1_600_000_000_250_000_000);
        assert_eq!(at("2023-11-14T22:13:20Z"), 1_700_000_000 * 1_000_000_000);
        assert_eq!(
            at("2023-11-14T23:13:20+01:00"),
            1_700_000_000 * 1_000_000_000
        );
        assert_eq!(at("2023-11-14T22:13:20"), 1_700_000_000 * 1_000_000_000);
        assert_eq!(at("2023-11-14"), 1_699_920_000 * 1_000_000_000);
        for bad in [
            "",
            "yesterday",
            "10x",
            "1.2.3",
            "2023-13-01",
            "99999999999999999999999999h",
            "9999999999999h",
            "99999999999999999999999999999",
        ] {
            assert!(moment(bad, now).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// No --since/--until value panics: it is a moment or an error.
        #[test]
        fn any_value_is_a_moment_or_an_error(
            shaped in "[0-9.]{0,30}[a-zµ]{0,2}[0-9.]{0,5}[hms]{0,2}",
            text in proptest::prelude::any::<String>(),
        ) {
            let now = OffsetDateTime::now_utc();
            let _ = moment(&shaped, now);
            let _ = moment(&text, now);
        }
    }
}
