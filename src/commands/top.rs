//! `strata top CONTAINER [ps OPTIONS]`: a running container's processes, as `docker top` shows
//! them: the host's `ps` (default `-ef`) for the container's pids, in a table.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use super::container_output::open_containers;

#[derive(Debug, Args)]
pub struct TopArgs {
    container: String,
    /// Options for `ps` (default: -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let pids = open_containers()?.pids(&args.container)?;
    let options = if args.ps_options.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_options
    };
    let listed: Vec<String> = pids.iter().map(i32::to_string).collect();
    let ps = |extra: &[String]| {
        Command::new("ps")
            .args(&options)
            .args(extra)
            .output()
            .context("running ps")
    };
    // As dockerd: `-q` lists only those pids, but some options (such as f) refuse it.
    let mut output = ps(&["-q".to_string(), listed.join(",")])?;
    if !output.status.success() {
        output = ps(&[])?;
    }
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let rows = container_rows(&String::from_utf8_lossy(&output.stdout), &pids)?;
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// The header and the rows of `ps` output whose PID is one of `pids` (dockerd's
/// `parsePSOutput`): the last column (the command) keeps its spaces.
fn container_rows(output: &str, pids: &[i32]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(pid_column) = titles.iter().position(|t| t == "PID") else {
        bail!("Couldn't find PID field in ps output");
    };
    let mut rows = vec![titles.clone()];
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let pid = fields.get(pid_column).and_then(|p| p.parse::<i32>().ok());
        if fields.len() < titles.len() || !pid.is_some_and(|p| pids.contains(&p)) {
            continue;
        }
        let last = titles.len() - 1;
        let mut row: Vec<String> = fields[..last].iter().map(|f| f.to_string()).collect();
        row.push(fields[last..].join(" "));
        rows.push(row);
    }
    Ok(rows)
}

/// The Docker CLI's table: a column is as wide as its widest cell plus 3, at least 20; the last
/// is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count());
            (widest.max().unwrap_or(0) + 3).max(20)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_the_container_with_their_commands_whole() {
        let ps = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                  root           1       0  0 10:00 ?        00:00:01 /sbin/init\n\
                  root        4242    4241  0 10:01 ?        00:00:00 sleep 60 --long arg\n";
        let rows = container_rows(ps, &[4242]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][1], "4242");
        assert_eq!(rows[1][7], "sleep 60 --long arg");
        assert!(container_rows("USER COMMAND\nroot x\n", &[1]).is_err());
        let text = table(&[vec!["A".into(), "B".into()], vec!["1".into(), "two".into()]]);
        assert_eq!(
            text,
            format!("A{}B\n1{}two\n", " ".repeat(19), " ".repeat(19))
        );
    }
}
