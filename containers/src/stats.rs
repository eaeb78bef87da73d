//! `stats`: what a running container uses, read from its cgroup and its processes.

use strata_runtime::{CgroupUsage, cgroup_usage};

use crate::error::{Error, Result};
use crate::registry::Record;

/// One reading of a running container's use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub id: String,
    pub name: String,
    /// Memory, CPU time and process count from its cgroup.
    pub cgroup: CgroupUsage,
    /// Bytes received and sent by the interfaces of its network namespace other than `lo`
    /// (Docker counts its endpoint's; a private strata network has only `lo`).
    pub net: (u64, u64),
    /// Bytes its current processes read from and wrote to storage (`/proc/PID/io`; Docker reads
    /// the blkio cgroup, which strata's containers do not join).
    pub block: (u64, u64),
}

impl crate::Containers {
    /// Reads what the running container of `record` uses now.
    pub fn stats(&self, record: &Record) -> Result<Stats> {
        let pids = self.pids_of(record)?;
        let init = record.state.pid;
        let cgroup = cgroup_usage(init).map_err(|e| Error::Invalid(e.to_string()))?;
        let net = std::fs::read_to_string(format!("/proc/{init}/net/dev"))
            .map(|text| interface_bytes(&text))
            .unwrap_or_default();
        let block = pids.iter().fold((0, 0), |(read, write), pid| {
            let (r, w) = std::fs::read_to_string(format!("/proc/{pid}/io"))
                .map(|text| storage_bytes(&text))
                .unwrap_or_default();
            (read + r, write + w)
        });
        Ok(Stats {
            id: record.config.id.clone(),
            name: record.config.name.clone(),
            cgroup,
            net,
            block,
        })
    }
}

/// (received, sent) bytes of every interface but `lo` in a `/proc/net/dev` table.
fn interface_bytes(text: &str) -> (u64, u64) {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let fields: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            Some((*fields.first()?, *fields.get(8)?))
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// (`read_bytes`, `write_bytes`) of a `/proc/PID/io`.
fn storage_bytes(text: &str) -> (u64, u64) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_tables() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:  100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                   eth0: 2000      20    0    0    0     0          0         0      3000      30    0    0    0     0       0          0\n";
        assert_eq!(interface_bytes(dev), (2000, 3000));
        let io = "rchar: 5\nwchar: 6\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\n\
                  cancelled_write_bytes: 0\n";
        assert_eq!(storage_bytes(io), (4096, 8192));
    }
}
