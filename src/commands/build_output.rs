//! `strata build -o/--output`: where a built image goes besides the store, in buildx's words.
//!
//! `-o DIR` is `type=local,dest=DIR`; `-o -` is `type=tar,dest=-`; otherwise comma-separated
//! `key=value` fields with a `type`: `image` (the store, the default; `name=` adds names,
//! `push=true` pushes), `registry` (`image` with `push=true`), `oci` and `docker` (archives;
//! `oci,tar=false` an OCI layout directory; `docker` without `dest` loads into the store, as
//! buildx loads into dockerd), `local` (the final filesystem in a directory) and `tar` (the
//! final filesystem as a tar). `dest=-` (or no `dest` for `oci`/`tar`) writes to standard
//! output, refused when that is a terminal.

use std::fs;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use strata_builder::export;
use strata_store::{ArchiveFormat, Image, Reference, Store, reference};

/// Where an exporter writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The store (named by `-t` and `name=`), pushed when `push`.
    Image { names: Vec<Reference>, push: bool },
    /// An OCI layout: a tar, or a directory when `tar=false`.
    Oci {
        dest: Dest,
        tar: bool,
        names: Vec<Reference>,
    },
    /// A docker-archive (`docker load` format).
    Docker { dest: Dest, names: Vec<Reference> },
    /// The final filesystem in a directory.
    Local { dir: PathBuf },
    /// The final filesystem as a tar.
    Tar { dest: Dest },
}

impl Output {
    fn dest(&self) -> Option<&Dest> {
        match self {
            Output::Oci { dest, .. } | Output::Docker { dest, .. } | Output::Tar { dest } => {
                Some(dest)
            }
            Output::Image { .. } | Output::Local { .. } => None,
        }
    }

    /// Names this output gives the image in the store (`name=`).
    pub fn store_names(&self) -> &[Reference] {
        match self {
            Output::Image { names, .. }
            | Output::Oci { names, .. }
            | Output::Docker { names, .. } => names,
            Output::Local { .. } | Output::Tar { .. } => &[],
        }
    }

    /// Whether this output pushes the image (`type=registry`, `push=true`).
    pub fn pushes(&self) -> bool {
        matches!(self, Output::Image { push: true, .. })
    }

    /// Whether this output writes to standard output.
    pub fn to_stdout(&self) -> bool {
        self.dest() == Some(&Dest::Stdout)
    }
}

fn parse_bool(key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("--output {key}={value:?}: expected true or false"),
    }
}

fn parse_names(value: &str) -> anyhow::Result<Vec<Reference>> {
    value
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            let r = reference::parse_normalized_named(n)
                .with_context(|| format!("--output name={n:?}: invalid name"))?;
            if r.digest().is_some() {
                bail!("--output name={n:?}: a name cannot have a digest");
            }
            Ok(r)
        })
        .collect()
}

/// Parses one `-o/--output` value as buildx does.
pub fn parse(spec: &str) -> anyhow::Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output::Tar { dest: Dest::Stdout }
        } else if spec.is_empty() {
            bail!("--output: empty value")
        } else {
            Output::Local {
                dir: PathBuf::from(spec),
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut names = Vec::new();
    let mut push = false;
    let mut extra: Vec<(String, String)> = Vec::new();
    for field in spec.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            // buildx splits `name=a,b` the CSV way; a bare word continues a name list.
            if !names.is_empty() && !field.is_empty() {
                names.extend(parse_names(field)?);
                continue;
            }
            bail!("--output {spec:?}: invalid value {field:?}: expected KEY=VALUE");
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "type" => kind = Some(value.to_string()),
            "dest" => dest = Some(value.to_string()),
            "tar" => tar = parse_bool(key, value)?,
            "name" => names.extend(parse_names(value)?),
            "push" => push = parse_bool(key, value)?,
            _ => extra.push((key.to_string(), value.to_string())),
        }
    }
    let Some(kind) = kind else {
        bail!("--output {spec:?}: type is required for output");
    };
    if let Some((key, _)) = extra.first() {
        bail!(
            "--output {spec:?}: unknown option {key:?} for type={kind} (strata knows type, dest, \
             tar, name and push)"
        );
    }
    let dest_of = |dest: Option<String>| match dest.as_deref() {
        None | Some("-") => Dest::Stdout,
        Some(p) => Dest::Path(PathBuf::from(p)),
    };
    let only_for = |what: &str, ok: bool| -> anyhow::Result<()> {
        if ok {
            Ok(())
        } else {
            bail!("--output {spec:?}: {what} does not apply to type={kind}")
        }
    };
    only_for("tar=false", tar || kind == "oci")?;
    only_for("push", !push || kind == "image" || kind == "registry")?;
    only_for(
        "name",
        names.is_empty() || matches!(kind.as_str(), "image" | "registry" | "oci" | "docker"),
    )?;
    Ok(match kind.as_str() {
        "image" | "registry" => {
            only_for("dest", dest.is_none())?;
            Output::Image {
                names,
                push: push || kind == "registry",
            }
        }
        "oci" => {
            let dest = dest_of(dest);
            if !tar && dest == Dest::Stdout {
                bail!("--output {spec:?}: tar=false needs dest=DIR");
            }
            Output::Oci { dest, tar, names }
        }
        // buildx loads a docker output without `dest` into dockerd; strata's store is that.
        "docker" if dest.is_none() => Output::Image { names, push: false },
        "docker" => Output::Docker {
            dest: dest_of(dest),
            names,
        },
        "local" => match dest.as_deref() {
            None | Some("") => bail!("--output {spec:?}: dest=DIR is required for type=local"),
            Some("-") => Output::Tar { dest: Dest::Stdout },
            Some(d) => Output::Local {
                dir: PathBuf::from(d),
            },
        },
        "tar" => Output::Tar {
            dest: dest_of(dest),
        },
        other => bail!(
            "--output {spec:?}: unknown type {other:?} (strata knows image, registry, oci, \
             docker, local and tar)"
        ),
    })
}

/// Parses every `--output` and checks they fit together.
pub fn parse_all(specs: &[String]) -> anyhow::Result<Vec<Output>> {
    let outputs = specs
        .iter()
        .map(|s| parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to_stdout = outputs.iter().filter(|o| o.to_stdout()).count();
    if to_stdout > 1 {
        bail!("--output: only one output can go to standard output");
    }
    if to_stdout == 1 && io::stdout().is_terminal() {
        let kind = match outputs.iter().find(|o| o.to_stdout()) {
            Some(Output::Oci { .. }) => "oci",
            Some(Output::Docker { .. }) => "docker",
            _ => "tar",
        };
        bail!(
            "--output: dest file is required for {kind} exporter; refusing to write to the \
             terminal (add dest=FILE or redirect standard output)"
        );
    }
    Ok(outputs)
}

/// Writes a file through a temporary one beside it, renamed into place once complete, so a
/// failed export leaves no half-written file under the asked name.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("creating a file in {}", parent.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // A temporary file is private; an export is an ordinary file (as BuildKit writes it).
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_dest(
    dest: &Dest,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match dest {
        Dest::Path(p) => write_file(p, write),
        Dest::Stdout => {
            // Not locked: a layer is written from a thread of its own, and a lock is not Send.
            let mut w = BufWriter::new(io::stdout());
            write(&mut w)?;
            w.flush().context("writing to standard output")
        }
    }
}

/// Exports `image` to `output`. `tags` are the `-t` names (archives carry them unless the
/// output has `name=`); `source_date_epoch` clamps the mtimes of a `type=tar` export.
pub fn export(
    store: &Store,
    image: &Image,
    output: &Output,
    tags: &[Reference],
    source_date_epoch: Option<i64>,
) -> anyhow::Result<()> {
    let names_or_tags = |names: &[Reference]| {
        if names.is_empty() {
            tags.to_vec()
        } else {
            names.to_vec()
        }
    };
    match output {
        Output::Image { .. } => Ok(()),
        Output::Oci {
            dest,
            tar: true,
            names,
        } => write_dest(dest, |w| {
            export::write_archive(store, image, &names_or_tags(names), ArchiveFormat::Oci, w)
                .context("writing the OCI archive")
        }),
        Output::Oci { dest, names, .. } => {
            let Dest::Path(dir) = dest else {
                bail!("an OCI layout directory needs dest=DIR");
            };
            export::write_oci_dir(store, image, &names_or_tags(names), dir)
                .with_context(|| format!("writing the OCI layout {}", dir.display()))
        }
        Output::Docker { dest, names } => write_dest(dest, |w| {
            export::write_archive(
                store,
                image,
                &names_or_tags(names),
                ArchiveFormat::Docker,
                w,
            )
            .context("writing the docker archive")
        }),
        Output::Local { dir } => export::write_rootfs(store, image, dir)
            .with_context(|| format!("writing the image's filesystem to {}", dir.display())),
        Output::Tar { dest } => {
            let scratch = strata_builder::scratch_dir(store.root(), "export")
                .context("creating a directory in the store's scratch area")?;
            write_dest(dest, |w| {
                export::write_rootfs_tar(store, image, scratch.path(), source_date_epoch, w)
                    .context("writing the image's filesystem as a tar")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Dest {
        Dest::Path(PathBuf::from(p))
    }

    #[test]
    fn buildx_shorthands() {
        assert_eq!(parse("-").unwrap(), Output::Tar { dest: Dest::Stdout });
        assert_eq!(
            parse("out").unwrap(),
            Output::Local {
                dir: PathBuf::from("out")
            }
        );
        assert_eq!(
            parse("type=local,dest=-").unwrap(),
            Output::Tar { dest: Dest::Stdout }
        );
    }

    #[test]
    fn types_and_options() {
        assert_eq!(
            parse("type=oci,dest=a.tar").unwrap(),
            Output::Oci {
                dest: path("a.tar"),
                tar: true,
                names: vec![]
            }
        );
        assert_eq!(
            parse("type=oci,dest=dir,tar=false").unwrap(),
            Output::Oci {
                dest: path("dir"),
                tar: false,
                names: vec![]
            }
        );
        assert_eq!(
            parse("type=oci").unwrap(),
            Output::Oci {
                dest: Dest::Stdout,
                tar: true,
                names: vec![]
            }
        );
        assert_eq!(
            parse("type=docker,dest=d.tar").unwrap(),
            Output::Docker {
                dest: path("d.tar"),
                names: vec![]
            }
        );
        let named = parse("type=docker").unwrap();
        assert_eq!(
            named,
            Output::Image {
                names: vec![],
                push: false
            }
        );
        assert_eq!(
            parse("type=tar,dest=fs.tar").unwrap(),
            Output::Tar {
                dest: path("fs.tar")
            }
        );
        assert!(
            parse("type=registry,name=localhost:5000/a")
                .unwrap()
                .pushes()
        );
        let Output::Image { names, .. } = parse("type=image,name=a:1,b:2").unwrap() else {
            panic!("not an image output");
        };
        assert_eq!(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["docker.io/library/a:1", "docker.io/library/b:2"]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert!(err("dest=x").contains("type is required"));
        assert!(err("type=local").contains("dest=DIR is required"));
        assert!(err("type=oci,tar=false").contains("tar=false needs dest=DIR"));
        assert!(err("type=tar,dest=x,tar=false").contains("tar=false does not apply"));
        assert!(
            err("type=local,dest=x,compression=zstd").contains("unknown option \"compression\"")
        );
        assert!(err("type=cacheonly").contains("unknown type"));
        assert!(err("type=image,dest=x").contains("dest does not apply"));
    }
}
