//! `--runtime runc|crun|PATH`: the same spec written as an OCI bundle and run by an external runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::Spec;

use crate::ExitStatus;

/// An external OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalRuntime {
    Runc,
    Crun,
    Path(PathBuf),
}

impl ExternalRuntime {
    /// `runc`, `crun`, or a path to any runtime with runc's command line.
    pub fn parse(name: &str) -> Self {
        match name {
            "runc" => Self::Runc,
            "crun" => Self::Crun,
            other => Self::Path(PathBuf::from(other)),
        }
    }

    fn program(&self) -> &Path {
        match self {
            Self::Runc => Path::new("runc"),
            Self::Crun => Path::new("crun"),
            Self::Path(p) => p,
        }
    }
}

/// Writes `spec` as `bundle/config.json` and runs it with `runtime run` under the id `id`, stdio
/// inherited. Its exit status is the container's (runc exits with the command's code, 128+n
/// for a signal).
pub fn run_external(
    runtime: &ExternalRuntime,
    spec: &Spec,
    bundle: &Path,
    id: &str,
) -> std::io::Result<ExitStatus> {
    std::fs::create_dir_all(bundle)?;
    let json = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
    std::fs::write(bundle.join("config.json"), json)?;
    let status = Command::new(runtime.program())
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .status()
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", runtime.program().display()))
        })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus { code, signal: None },
        (None, Some(sig)) => ExitStatus {
            code: 128 + sig,
            signal: Some(sig),
        },
        _ => ExitStatus {
            code: 255,
            signal: None,
        },
    })
}
