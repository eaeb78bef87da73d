//! `export`: a container's filesystem as one uncompressed tar (`docker export`).

use std::io::Write;
use std::path::Path;

use strata_snapshotter::{Compression, Diff, LayerOptions};

use crate::error::{Error, Result};
use crate::fsutil::try_lock;
use crate::record::Status;

impl crate::Containers {
    /// Writes container `name_or_id`'s filesystem (its image's files with its own changes; not
    /// its volumes or other mounts, as Docker's) to `out` as an uncompressed tar, running or not.
    pub fn export(&self, name_or_id: &str, out: impl Write + Send) -> Result<()> {
        let record = self.get(name_or_id)?;
        let id = &record.config.id;
        let write = |root: &Path, out| -> Result<()> {
            let options = LayerOptions {
                compression: Compression::None,
                ..LayerOptions::default()
            };
            strata_snapshotter::write_layer(&Diff::directory(root), &options, out)?;
            Ok(())
        };
        if let Some(_lock) = try_lock(&self.monitor_lock_path(id), true)? {
            // Not running: mount its snapshot, holding the monitor lock so none starts meanwhile.
            let mount = self.on_rootfs(&record.config, |s| s.mount(&record.config.snapshot))?;
            let written = write(mount.path(), out);
            let unmounted = mount.unmount();
            written?;
            return unmounted.map_err(|e| {
                Error::Invalid(format!("unmounting the rootfs of container {id}: {e}"))
            });
        }
        // Running: its monitor keeps the rootfs mounted.
        match self.load(id)?.state {
            state if state.status == Status::Running => match state.rootfs {
                Some(rootfs) => write(&rootfs, out),
                None => Err(Error::NotRunning(id.clone())),
            },
            _ => Err(Error::Invalid(format!(
                "container {id} is starting or stopping: try again"
            ))),
        }
    }
}
