//! User and group resolution from the rootfs's `/etc/passwd` and `/etc/group`, with the semantics
//! of runc/moby (`user.GetExecUser`): `USER name`, `USER uid`, `USER name:group`, `USER uid:gid`.

use std::path::Path;

use crate::rootpath::resolve_in_root;

/// A user resolved to numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of `/etc/group` that list the user by name, when no group
    /// was given explicitly (as Docker does).
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd` (`/` when the user has no entry), for `HOME`.
    pub home: String,
}

/// Why a user string could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user specification {0:?}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`user`, `user:group`, names or numbers; empty means root) against the files
/// of `rootfs`. Missing files count as empty, as in Docker.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part == Some("") {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = read_etc(rootfs, "/etc/passwd")?;
    let users: Vec<PasswdEntry> = passwd.lines().filter_map(parse_passwd).collect();
    let numeric_uid = user_part.parse::<u32>().ok();
    let matched = users.iter().find(|u| match numeric_uid {
        Some(uid) => u.uid == uid,
        None => u.name == user_part,
    });
    let (uid, mut gid, home, name) = match (matched, numeric_uid) {
        (Some(u), _) => (u.uid, u.gid, u.home.clone(), Some(u.name.clone())),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => return Err(UserError::UnknownUser(user_part.to_string())),
    };
    let mut additional_gids = Vec::new();
    if group_part.is_some() || name.is_some() {
        let group_file = read_etc(rootfs, "/etc/group")?;
        let groups: Vec<GroupEntry> = group_file.lines().filter_map(parse_group).collect();
        match group_part {
            Some(g) => {
                let numeric_gid = g.parse::<u32>().ok();
                let found = groups.iter().find(|e| match numeric_gid {
                    Some(n) => e.gid == n,
                    None => e.name == g,
                });
                gid = match (found, numeric_gid) {
                    (Some(e), _) => e.gid,
                    (None, Some(n)) => n,
                    (None, None) => return Err(UserError::UnknownGroup(g.to_string())),
                };
            }
            None => {
                let name = name.as_deref().unwrap_or_default();
                for g in &groups {
                    if g.members.iter().any(|m| m == name) && !additional_gids.contains(&g.gid) {
                        additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Docker's `--group-add`: each a gid, or a group name of the rootfs's `/etc/group`.
pub fn resolve_groups(rootfs: &Path, groups: &[String]) -> Result<Vec<u32>, UserError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let group_file = read_etc(rootfs, "/etc/group")?;
    let entries: Vec<GroupEntry> = group_file.lines().filter_map(parse_group).collect();
    groups
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => entries
                .iter()
                .find(|e| e.name == *g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.clone())),
        })
        .collect()
}

fn read_etc(rootfs: &Path, file: &str) -> Result<String, UserError> {
    let io = |source| UserError::Io {
        path: file.to_string(),
        source,
    };
    let path = resolve_in_root(rootfs, Path::new(file)).map_err(io)?;
    match std::fs::read(&path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io(e)),
    }
}

fn parse_passwd(line: &str) -> Option<PasswdEntry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    Some(PasswdEntry {
        name: f.first()?.to_string(),
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
        home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
    })
}

fn parse_group(line: &str) -> Option<GroupEntry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    Some(GroupEntry {
        name: f.first()?.to_string(),
        gid: f.get(2)?.parse().ok()?,
        members: f
            .get(3)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:alice\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_numbers_and_supplementary_groups() {
        let r = rootfs();
        let alice = resolve_user(r.path(), "alice").unwrap();
        assert_eq!(
            (alice.uid, alice.gid, alice.home.as_str()),
            (1000, 1000, "/home/alice")
        );
        assert_eq!(alice.additional_gids, vec![10, 29]);
        // A uid with an entry gets its supplementary groups; an explicit group drops them.
        assert_eq!(
            resolve_user(r.path(), "1000").unwrap().additional_gids,
            vec![10, 29]
        );
        let explicit = resolve_user(r.path(), "alice:wheel").unwrap();
        assert_eq!((explicit.gid, explicit.additional_gids.len()), (10, 0));
        // Unknown numbers are fine (gid 0, home /); unknown names are not.
        let n = resolve_user(r.path(), "4242:4343").unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 4343, "/"));
        assert_eq!(resolve_user(r.path(), "4242").unwrap().gid, 0);
        assert!(matches!(
            resolve_user(r.path(), "nobody"),
            Err(UserError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve_user(r.path(), "alice:staff"),
            Err(UserError::UnknownGroup(_))
        ));
        assert_eq!(resolve_user(r.path(), "").unwrap().uid, 0);
    }
}
