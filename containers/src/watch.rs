//! Waiting for a container's files to change (state replaced, log appended) without polling.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use crate::error::{Result, io_err};

/// An inotify watch on one directory.
pub struct Watcher {
    fd: OwnedFd,
}

impl Watcher {
    /// Watches `dir` for files written, created, renamed in or deleted.
    pub fn new(dir: &Path) -> Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| io_err("watching", dir)(e.into()))?;
        inotify::add_watch(
            &fd,
            dir,
            WatchFlags::MODIFY
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::CREATE
                | WatchFlags::MOVED_TO
                | WatchFlags::DELETE
                | WatchFlags::DELETE_SELF,
        )
        .map_err(|e| io_err("watching", dir)(e.into()))?;
        Ok(Self { fd })
    }

    /// Waits until something changed or `timeout` passed; drains the pending events.
    pub fn wait(&self, timeout: Duration) {
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: poll(2) on a descriptor we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if rc > 0 {
            let mut buf = [0u8; 4096];
            while rustix::io::read(self.fd.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
        }
    }
}
