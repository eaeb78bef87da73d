//! Rendering shared by the image commands, in Docker's shapes: tables aligned as Go's tabwriter
//! (min width 10, padding 3), sizes and ages as go-units prints them.

use std::io::{self, Write};

use anyhow::Context;
use strata_store::{Digest, Reference, Store, reference};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Opens the store at `$STRATA_ROOT` (or the default root).
/// A name to give an image (`tag`, `commit`, `import`): normalised, and never a digest.
pub fn parse_new_name(text: &str) -> anyhow::Result<Reference> {
    let name = reference::parse_normalized_named(text)
        .with_context(|| format!("invalid reference {text:?}"))?;
    if name.digest().is_some() {
        anyhow::bail!("refusing to create a tag with a digest reference");
    }
    Ok(name)
}

pub fn open_store() -> anyhow::Result<Store> {
    let root = strata_store::default_root();
    Store::open(&root).with_context(|| format!("opening the image store at {}", root.display()))
}

/// Prints rows as Docker's tables: each column as wide as its widest cell plus 3, at least 10.
pub fn print_table(rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = (widths[i] + 3).max(10);
                line.push_str(&" ".repeat(width - cell.chars().count()));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    custom_size(
        bytes,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"],
        3,
    )
}

/// go-units `BytesSize`: binary units, four significant digits (`1.234MiB`).
pub fn bytes_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    custom_size(bytes, 1024.0, &units, 4)
}

/// go-units `CustomSize`: `bytes` in the largest of `units` (each `base` times the one before)
/// it reaches, to `precision` significant digits.
fn custom_size(bytes: u64, base: f64, units: &[&str], precision: i32) -> String {
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= base && unit < units.len() - 1 {
        size /= base;
        unit += 1;
    }
    format!("{}{}", go_g(size, precision), units[unit])
}

/// Go's `%.*g` for non-negative values.
fn go_g(v: f64, precision: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.log10().floor() as i32;
    // Rounding can carry into the next power of ten (999.9 -> 1e+03).
    let rounded: f64 = format!("{:.*e}", (precision - 1) as usize, v)
        .parse()
        .unwrap_or(v);
    let exp = if rounded >= 10f64.powi(exp + 1) {
        exp + 1
    } else {
        exp
    };
    if exp < -4 || exp >= precision {
        let s = format!("{:.*e}", (precision - 1) as usize, v);
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let mantissa = trim_zeros(mantissa);
        format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (precision - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// go-units `HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let hours = ((seconds as f64) / 3600.0 + 0.5) as i64;
    match seconds {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Parses an RFC 3339 timestamp as image configs carry it.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// "3 hours ago", or "N/A" for a missing or unparsable time.
pub fn since(created: Option<&str>) -> String {
    match created.and_then(parse_time) {
        Some(t) => {
            let age = (OffsetDateTime::now_utc() - t).whole_seconds();
            format!("{} ago", human_duration(age))
        }
        None => "N/A".into(),
    }
}

/// The 12-digit short form of an ID.
pub fn short_id(d: &Digest) -> String {
    d.digest().chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_550), "4.26MB");
        assert_eq!(human_size(1_200), "1.2kB");
        assert_eq!(human_size(2_000_000), "2MB");
        assert_eq!(human_size(999_999), "1e+03kB");
    }

    #[test]
    fn durations_like_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
