//! Diff -> OCI layer: a deterministic tar, hashed, compressed and hashed again in one pass.
//!
//! The tar is what containerd's `ChangeWriter` (BuildKit's layer writer) produces for the same
//! changes: names relative without `./`, directories with a trailing `/`, no root entry, parent
//! directories of every change included, the first path of a multiply-linked inode carries the
//! content and later ones are hard links to it, mode = permission and setuid/setgid/sticky bits,
//! mtimes truncated to seconds (clamped to `SOURCE_DATE_EPOCH`), no atime/ctime, sockets
//! skipped, deletions as empty `.wh.<name>` files. Departures, each for determinism: uname and
//! gname stay empty (Go fills them from the writing host's passwd file), whiteouts get the
//! mtime `SOURCE_DATE_EPOCH` or 0 (containerd: the current time), and every xattr but
//! overlayfs's own is recorded (containerd: only `security.capability`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use strata_codec::{Compression, Digest, Encoder, EncoderOptions, HashingWriter};

use crate::Error;
use crate::changes::{self, ChangeKind, ChangeSink};
use crate::fsutil::{self, EntryStat};
use crate::tarfmt::{self, EntryType, Header};

/// Where a layer's changes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diff {
    /// An overlay upper directory (deletions as char 0/0 whiteouts, replaced directories marked
    /// opaque) over `lower`, a merged view of its parent snapshots. With the view, the layer is
    /// exactly BuildKit's (unchanged copied-up entries skipped, an opaque directory written as
    /// the deletions and additions that turn the lower directory into it); without one, every
    /// entry is an addition and an opaque directory gets a `.wh..wh..opq` marker.
    Overlay {
        upper: PathBuf,
        lower: Option<PathBuf>,
    },
    /// Two full trees: the changes that turn `lower` (absent: an empty tree) into `upper`.
    Trees {
        lower: Option<PathBuf>,
        upper: PathBuf,
    },
}

impl Diff {
    /// A plain directory every entry of which is an addition (COPY/ADD results). Device nodes
    /// in it, char 0/0 included, are written as devices.
    pub fn directory(path: impl Into<PathBuf>) -> Diff {
        Diff::Trees {
            lower: None,
            upper: path.into(),
        }
    }
}

/// How to write a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    pub encoder: EncoderOptions,
    /// Clamp every mtime to this (Unix seconds), as `SOURCE_DATE_EPOCH` asks.
    pub source_date_epoch: Option<i64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            encoder: EncoderOptions::default(),
            source_date_epoch: None,
        }
    }
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// sha256 of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out` (the manifest's layer digest).
    pub digest: Digest,
    /// Bytes written to `out`.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub compression: Compression,
}

/// Writes `diff` as a layer to `out` in one streaming pass: tar -> sha256 (diffID) -> encoder ->
/// sha256 (digest) -> `out`. The same tree and options give the same bytes for any thread count.
///
/// One helper thread walks the diff, a second reads the files and writes the tar stream (handed
/// over in 1 MiB chunks) while the calling thread hashes it and feeds the compressors, and a
/// third hashes and writes their output, so file system calls overlap with each other and with
/// compression as in `tar | pigz`, and neither sha256 waits for the other.
pub fn write_layer<W: Write + Send>(
    diff: &Diff,
    options: &LayerOptions,
    out: W,
) -> Result<LayerDescriptor, Error> {
    let (compressed, received) = mpsc::sync_channel::<Vec<u8>>(4);
    let (recycle_compressed, spare_compressed) = mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|scope| {
        // With both hashes on one thread, that thread was the slowest of the pipeline for a
        // large layer: sha256 of the tar and of the output is 1.5 GiB of hashing for 1 GiB
        // that halves, against 1 GiB of deflate shared by the compressing threads.
        let writer = std::thread::Builder::new()
            .name("layer-write".into())
            .spawn_scoped(scope, move || -> io::Result<(Digest, u64)> {
                let mut sink = HashingWriter::new(out);
                for mut chunk in received {
                    sink.write_all(&chunk)?;
                    chunk.clear();
                    let _ = recycle_compressed.try_send(chunk);
                }
                sink.flush()?;
                let (_, digest, size) = sink.finish();
                Ok((digest, size))
            })
            .map_err(Error::Write)?;
        let sink = ChunkWriter::new(compressed, spare_compressed);
        // Dropping the encoder (on an error) closes the channel, which ends the writer.
        let tarred = compress_tar(diff, options, sink);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("layer-write thread panicked")));
        // The writer's error (a full disk) explains the encoder's ("layer writer stopped").
        let (digest, size) = written.map_err(Error::Write)?;
        let (diff_id, uncompressed_size) = tarred?;
        Ok(LayerDescriptor {
            diff_id,
            digest,
            size,
            uncompressed_size,
            compression: options.compression,
        })
    })
}

/// The tar stream of `diff`, hashed (its diffID and size returned) and compressed into `sink`,
/// whose last chunk is sent before it is dropped.
fn compress_tar(
    diff: &Diff,
    options: &LayerOptions,
    sink: ChunkWriter,
) -> Result<(Digest, u64), Error> {
    let encoder = Encoder::new(sink, options.compression, options.encoder).map_err(Error::Write)?;
    // The diffID is hashed here, not beside the reading: with many small files the reading
    // thread is the slowest of the pipeline.
    let mut tar_in = HashingWriter::new(encoder);
    let (recycle, spare) = mpsc::sync_channel::<Vec<u8>>(8);
    pipeline(
        "layer-tar",
        4,
        move |chunks| {
            let mut out = ChunkWriter::new(chunks, spare);
            write_tar(diff, options.source_date_epoch, &mut out)?;
            out.send()
        },
        |mut chunk: Vec<u8>| {
            tar_in.write_all(&chunk)?;
            chunk.clear();
            let _ = recycle.try_send(chunk);
            Ok(())
        },
    )
    .map_err(Error::Write)?;
    let (encoder, diff_id, uncompressed_size) = tar_in.finish();
    let mut sink = encoder.finish().map_err(Error::Write)?;
    sink.send().map_err(Error::Write)?;
    Ok((diff_id, uncompressed_size))
}

/// Bytes per chunk handed from the reading thread to the compressing one, and from the
/// compressing one to the writer.
const CHUNK: usize = 1 << 20;

/// Collects a stream into chunks for a channel; emptied chunks come back for reuse.
struct ChunkWriter {
    chunk: Vec<u8>,
    chunks: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn new(chunks: SyncSender<Vec<u8>>, spare: Receiver<Vec<u8>>) -> ChunkWriter {
        ChunkWriter {
            chunk: Vec::with_capacity(CHUNK),
            chunks,
            spare,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.chunks
            .send(full)
            .map_err(|_| io::Error::other("layer writer stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The whole tar stream of `diff`, end-of-archive included.
///
/// The diff is walked on a thread of its own (directory reads, `lstat`s, comparisons with the
/// parent view) while this one opens and reads the files and writes the entries: for a layer
/// of many small files both halves are mostly system calls, and on one thread they were the
/// slowest part of committing a step.
fn write_tar<W: Write>(diff: &Diff, source_date_epoch: Option<i64>, out: W) -> io::Result<()> {
    let upper = match diff {
        Diff::Overlay { upper, .. } | Diff::Trees { upper, .. } => upper.clone(),
    };
    let root_dir = fsutil::open_dir(&upper).map_err(|e| with_path(e, &upper))?;
    let mut tar = TarChanges {
        out,
        root: upper,
        root_dir,
        last_dir: None,
        source_date_epoch,
        opaque_markers: matches!(diff, Diff::Overlay { lower: None, .. }),
        added_dirs: HashSet::new(),
        first_link: HashMap::new(),
        buf: vec![0u8; 256 * 1024],
    };
    pipeline(
        "layer-walk",
        8,
        move |batches| {
            let mut sink = ChangeBatches {
                batch: Vec::with_capacity(BATCH),
                batches,
            };
            match diff {
                Diff::Overlay { upper, lower } => {
                    changes::overlay_changes(upper, lower.as_deref(), &mut sink)?
                }
                Diff::Trees { lower, upper } => {
                    changes::tree_changes(lower.as_deref(), upper, &mut sink)?
                }
            }
            sink.send()
        },
        |batch: Vec<Change>| {
            batch
                .iter()
                .try_for_each(|c| tar.change(c.kind, &c.rel, c.stat.as_ref()))
        },
    )?;
    tarfmt::write_trailer(&mut tar.out)
}

/// Runs `produce` on a thread named `name`, which hands its items through a channel of
/// `capacity` to `consume` on this thread. An error of `consume` closes the channel, which stops
/// the producer at its next item, and is the error returned: it explains the producer's.
fn pipeline<T: Send>(
    name: &str,
    capacity: usize,
    produce: impl FnOnce(SyncSender<T>) -> io::Result<()> + Send,
    consume: impl FnMut(T) -> io::Result<()>,
) -> io::Result<()> {
    let (items, received) = mpsc::sync_channel::<T>(capacity);
    std::thread::scope(|scope| {
        let producer = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, move || produce(items))?;
        let consumed = received.iter().try_for_each(consume);
        drop(received);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("{name} thread panicked"))));
        consumed?;
        produced
    })
}

/// Changes handed from the walking thread to the writing one per batch.
const BATCH: usize = 256;

/// One change, as [`ChangeSink::change`] receives it.
struct Change {
    kind: ChangeKind,
    rel: PathBuf,
    stat: Option<EntryStat>,
}

/// Collects changes into batches for the channel.
struct ChangeBatches {
    batch: Vec<Change>,
    batches: SyncSender<Vec<Change>>,
}

impl ChangeBatches {
    fn send(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.batches
            .send(full)
            .map_err(|_| io::Error::other("layer writer stopped"))
    }
}

impl ChangeSink for ChangeBatches {
    fn change(&mut self, kind: ChangeKind, rel: &Path, stat: Option<&EntryStat>) -> io::Result<()> {
        self.batch.push(Change {
            kind,
            rel: rel.to_path_buf(),
            stat: stat.copied(),
        });
        if self.batch.len() == BATCH {
            self.send()?;
        }
        Ok(())
    }
}

/// Turns changes into tar entries, as containerd's `ChangeWriter.HandleChange` does.
struct TarChanges<W: Write> {
    out: W,
    /// The tree whose directories are written as parents of changed entries.
    root: PathBuf,
    /// `root`, open: files are opened by their path below it, a walk of a few components
    /// instead of the whole path per file.
    root_dir: OwnedFd,
    /// The directory (relative path, descriptor) of the last file opened: changes come in
    /// directory order, so most files are opened by their name alone below it.
    last_dir: Option<(PathBuf, OwnedFd)>,
    source_date_epoch: Option<i64>,
    opaque_markers: bool,
    /// Directories already written (relative, no trailing slash).
    added_dirs: HashSet<PathBuf>,
    /// For each multiply-linked inode written, the tar name that carries its content.
    first_link: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl<W: Write> TarChanges<W> {
    fn clamp(&self, mtime: i64) -> i64 {
        match self.source_date_epoch {
            Some(epoch) if mtime > epoch => epoch,
            _ => mtime,
        }
    }

    /// Writes the parent directory of `rel` first when no entry wrote it (containerd's
    /// `includeParents`), and remembers `rel` when it is a directory.
    fn include_parents(&mut self, rel: &Path, is_dir: bool) -> io::Result<()> {
        if let Some(parent) = rel.parent()
            && !parent.as_os_str().is_empty()
            && !self.added_dirs.contains(parent)
        {
            let parent = parent.to_path_buf();
            self.added_dirs.insert(parent.clone());
            let source = self.root.join(&parent);
            let stat = EntryStat::follow(&source).map_err(|e| with_path(e, &source))?;
            self.change(ChangeKind::Modify, &parent, Some(&stat))?;
        }
        if is_dir {
            self.added_dirs.insert(rel.to_path_buf());
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let mut name = match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => {
                let mut n = p.as_os_str().as_bytes().to_vec();
                n.push(b'/');
                n
            }
            _ => Vec::new(),
        };
        name.extend_from_slice(b".wh.");
        name.extend_from_slice(target);
        let mut header = Header::new(name, EntryType::Regular);
        header.mtime = self.source_date_epoch.unwrap_or(0);
        tarfmt::write_header(&mut self.out, &header)
    }

    fn entry(&mut self, rel: &Path, stat: &EntryStat) -> io::Result<()> {
        let mut name = rel.as_os_str().as_bytes().to_vec();
        let entry_type = match stat.file_type {
            FileType::Socket => return Ok(()),
            FileType::Directory => {
                name.push(b'/');
                EntryType::Directory
            }
            FileType::Symlink => EntryType::Symlink,
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            FileType::Fifo => EntryType::Fifo,
            _ => EntryType::Regular,
        };
        let mut header = Header::new(name, entry_type);
        header.mode = stat.mode;
        header.uid = u64::from(stat.uid);
        header.gid = u64::from(stat.gid);
        header.mtime = self.clamp(stat.mtime);
        match entry_type {
            EntryType::Regular => header.size = stat.size,
            EntryType::Symlink => {
                header.link_name =
                    rustix::fs::readlinkat(&self.root_dir, rel, Vec::new())?.into_bytes();
            }
            EntryType::Char | EntryType::Block => {
                header.dev_major = u64::from(rustix::fs::major(stat.rdev));
                header.dev_minor = u64::from(rustix::fs::minor(stat.rdev));
            }
            _ => {}
        }
        let is_dir = stat.is_dir();
        if !is_dir && stat.nlink > 1 {
            let inode = (stat.dev, stat.ino);
            if let Some(first) = self.first_link.get(&inode) {
                header.entry_type = EntryType::HardLink;
                header.link_name = first.clone();
                header.size = 0;
            } else {
                self.first_link.insert(inode, header.name.clone());
            }
        }
        // A file with content is opened first, and its xattrs read from the descriptor: one
        // walk of its path instead of two.
        let content = if header.entry_type == EntryType::Regular && header.size > 0 {
            Some(self.open_content(rel)?)
        } else {
            None
        };
        header.xattrs = match &content {
            Some(file) => fsutil::file_xattrs(file)?,
            None => fsutil::xattrs(&self.root.join(rel))?,
        };
        self.include_parents(rel, is_dir)?;
        tarfmt::write_header(&mut self.out, &header)?;
        if let Some(file) = content {
            self.content(file, header.size)?;
        }
        if self.opaque_markers && is_dir && fsutil::is_opaque_dir(&self.root.join(rel))? {
            let mut marker = Header::new(
                [&header.name[..], b".wh..wh..opq"].concat(),
                EntryType::Regular,
            );
            marker.mtime = self.source_date_epoch.unwrap_or(0);
            tarfmt::write_header(&mut self.out, &marker)?;
        }
        Ok(())
    }

    /// Opens regular file `rel` to read its content, by its name in the directory of the last
    /// file opened when it is the same (one lookup instead of one per component).
    fn open_content(&mut self, rel: &Path) -> io::Result<File> {
        let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
            return open_content(&self.root_dir, rel);
        };
        if dir.as_os_str().is_empty() {
            return open_content(&self.root_dir, rel);
        }
        let dir_fd = match &self.last_dir {
            // Bytes, not components: both come from the same walk, and this runs per file.
            Some((last, fd)) if last.as_os_str() == dir.as_os_str() => fd,
            _ => {
                let fd = rustix::fs::openat(
                    &self.root_dir,
                    dir,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )?;
                &self.last_dir.insert((dir.to_path_buf(), fd)).1
            }
        };
        open_content(dir_fd, Path::new(name))
    }

    /// Copies exactly `size` bytes of a regular file (its size when it was stat'ed).
    fn content(&mut self, mut file: File, size: u64) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while it was being written to the layer",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        self.out
            .write_all(&[0u8; tarfmt::BLOCK][..tarfmt::padding(size)])
    }
}

/// Opens regular file `rel` below `dir` to read its content. Reading a file just written would
/// update its access time (relatime): a journalled inode write per file. O_NOATIME needs the
/// file's owner or CAP_FOWNER.
fn open_content(dir: &OwnedFd, rel: &Path) -> io::Result<File> {
    let open = |flags| {
        rustix::fs::openat(
            dir,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
            rustix::fs::Mode::empty(),
        )
    };
    let fd = match open(OFlags::NOATIME) {
        Err(Errno::PERM) => open(OFlags::empty()),
        opened => opened,
    }?;
    Ok(File::from(fd))
}

impl<W: Write> ChangeSink for TarChanges<W> {
    fn change(&mut self, kind: ChangeKind, rel: &Path, stat: Option<&EntryStat>) -> io::Result<()> {
        let result = match (kind, stat) {
            (ChangeKind::Delete, _) | (_, None) => {
                self.include_parents(rel, false).and_then(|()| {
                    let target = rel.file_name().map_or(&[][..], |n| n.as_bytes()).to_vec();
                    self.whiteout(rel, &target)
                })
            }
            (_, Some(stat)) => self.entry(rel, stat),
        };
        result.map_err(|e| with_path(e, &self.root.join(rel)))
    }
}
