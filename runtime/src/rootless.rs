//! Rootless mode: the user namespace maps the caller to root, plus its `/etc/subuid` and
//! `/etc/subgid` ranges through the setuid helpers newuidmap/newgidmap when both exist.

use std::path::Path;
use std::process::Command;

/// A subordinate id range: container ids 1.. map to host ids `start..start+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The first range of `file` (`/etc/subuid` format) for the user `name` or numeric `id`.
pub(crate) fn sub_range(file: &Path, name: Option<&str>, id: u32) -> Option<SubRange> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let owner = f.next()?;
        if Some(owner) != name && owner != id.to_string() {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count = f.next()?.parse().ok()?;
        Some(SubRange { start, count })
    })
}

/// Writes the uid and gid maps of `pid`, a process that just unshared its user namespace.
pub(crate) fn write_id_maps(pid: i32) -> Result<(), String> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if uid == 0 {
        // Root asked for a user namespace: identity-map everything.
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 4294967295")
            .map_err(|e| format!("uid_map: {e}"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 4294967295")
            .map_err(|e| format!("gid_map: {e}"))?;
        return Ok(());
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let subuid = sub_range(Path::new("/etc/subuid"), name.as_deref(), uid);
    let subgid = sub_range(Path::new("/etc/subgid"), name.as_deref(), uid);
    match (
        subuid,
        subgid,
        find_tool("newuidmap"),
        find_tool("newgidmap"),
    ) {
        (Some(su), Some(sg), Some(newuidmap), Some(newgidmap)) => {
            run_map_tool(&newuidmap, pid, uid, su)?;
            run_map_tool(&newgidmap, pid, gid, sg)
        }
        _ => {
            // Without subordinate ids only the caller itself can be mapped, and setgroups(2)
            // must be denied before an unprivileged process may write gid_map.
            std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1"))
                .map_err(|e| format!("uid_map: {e}"))?;
            std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
                .map_err(|e| format!("setgroups: {e}"))?;
            std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1"))
                .map_err(|e| format!("gid_map: {e}"))
        }
    }
}

fn run_map_tool(tool: &Path, pid: i32, own: u32, range: SubRange) -> Result<(), String> {
    let out = Command::new(tool)
        .args([
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
        ])
        .args([range.start.to_string(), range.count.to_string()])
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subuid");
        std::fs::write(&file, "alice:100000:65536\n1001:200000:1000\n").unwrap();
        assert_eq!(
            sub_range(&file, Some("alice"), 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            sub_range(&file, Some("bob"), 1001),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(sub_range(&file, Some("carol"), 1002), None);
    }
}
