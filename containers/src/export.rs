//! `export`: a container's filesystem as one uncompressed tar (`docker export`).

use std::io::Write;
use std::path::Path;

use strata_snapshotter::{Compression, Diff, LayerOptions};

use crate::error::{Error, Result};
use crate::record::Status;

impl crate::Containers {
    /// Writes container `name_or_id`'s filesystem (its image's files with its own changes; not
    /// its volumes or other mounts, as Docker's) to `out` as an uncompressed tar, running or not.
    pub fn export(&self, name_or_id: &str, mut out: impl Write + Send) -> Result<()> {
        let record = self.get(name_or_id)?;
        let id = &record.config.id;
        if self
            .with_stopped_rootfs(&record.config, |root| write_tar(root, &mut out))?
            .is_some()
        {
            return Ok(());
        }
        // Running: its monitor keeps the rootfs mounted.
        match self.load(id)?.state {
            state if state.status == Status::Running => match state.rootfs {
                Some(rootfs) => write_tar(&rootfs, out),
                None => Err(Error::NotRunning(id.clone())),
            },
            _ => Err(Error::Invalid(format!(
                "container {id} is starting or stopping: try again"
            ))),
        }
    }
}

/// The tree at `root` as an uncompressed tar.
fn write_tar(root: &Path, out: impl Write + Send) -> Result<()> {
    let options = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    strata_snapshotter::write_layer(&Diff::directory(root), &options, out)?;
    Ok(())
}
