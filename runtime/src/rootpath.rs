//! Resolving a path inside a root directory the way the container will see it: symlinks are
//! followed, but absolute links and `..` never leave the root (like runc's securejoin).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (as the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// Returns the host path of `path` (absolute or relative to `/`) inside `root`, following symlinks
/// within the root. Components that do not exist are appended as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut links = 0;
    // Components still to walk, next on top: a symlink pushes its target's components.
    let mut todo: Vec<Vec<u8>> = Vec::new();
    push_components(&mut todo, path);
    while let Some(name) = todo.pop() {
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(OsStr::from_bytes(&name));
        let host = root.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links resolving {}",
                        path.display()
                    )));
                }
                let target = std::fs::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_components(&mut todo, &target);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Pushes the components of `path` so that the first component is popped first.
fn push_components(todo: &mut Vec<Vec<u8>>, path: &Path) {
    let parts: Vec<Vec<u8>> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_and_dotdot_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/real")).unwrap();
        symlink("/etc/real", root.join("etc/abs")).unwrap();
        symlink("../../../../etc", root.join("etc/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/abs/x")).unwrap(),
            root.join("etc/real/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("etc/up/real")).unwrap(),
            root.join("etc/real")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert!(resolve_in_root(root, Path::new("/loop/x")).is_err());
    }
}
