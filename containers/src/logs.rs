//! Container logs in Docker's `json-file` format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}`, in
//! `<id>-json.log`, rotated to `<id>-json.log.1`, `.2`, ... when it reaches the size limit.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Longest entry: longer lines are split, as Docker splits them (16 KiB).
pub const MAX_ENTRY: usize = 16 * 1024;

/// One log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline when the line had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
}

/// Appends entries to a container's log, rotating it.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_files: u32,
}

impl LogWriter {
    /// Opens (appending) the log at `path`; with `max_size`, keeps at most `max_files` files.
    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32) -> io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Writes one entry.
    pub fn write(&mut self, stream: &str, bytes: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.to_string(),
            time: fsutil::now(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(max) = self.max_size
            && self.size > 0
            && self.size + line.len() as u64 > max
        {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files <= 1 {
            self.file.set_len(0)?;
            self.file.rewind()?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.max_files - 1).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Cuts a byte stream into log entries: at each newline, and every [`MAX_ENTRY`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for every complete entry.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = MAX_ENTRY - self.pending.len();
            let take = match memchr(b'\n', &bytes[..bytes.len().min(room)]) {
                Some(i) => i + 1,
                None => bytes.len().min(room),
            };
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.ends_with(b"\n") || self.pending.len() == MAX_ENTRY {
                emit(&self.pending)?;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Emits what is left (a last line without newline).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if !self.pending.is_empty() {
            emit(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// Reads a log from its oldest rotated file on, then follows the current file across
/// rotations: [`LogReader::next_entry`] returns `None` at the current end.
pub struct LogReader {
    path: PathBuf,
    /// Rotated files still to read, oldest first.
    queue: VecDeque<PathBuf>,
    current: Option<(BufReader<File>, u64)>,
    /// A line read only partly (the writer was mid-write).
    partial: Vec<u8>,
}

impl LogReader {
    /// Starts at the oldest entry of the log at `path` (which may not exist yet).
    pub fn open(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            queue: rotated_files(path).into_iter().rev().collect(),
            current: None,
            partial: Vec::new(),
        }
    }

    /// The next entry, or `None` when everything written so far was read.
    pub fn next_entry(&mut self) -> io::Result<Option<LogEntry>> {
        loop {
            if self.current.is_none() {
                let (path, following) = match self.queue.pop_front() {
                    Some(p) => (p, false),
                    None => (self.path.clone(), true),
                };
                match File::open(&path) {
                    Ok(f) => {
                        let inode = f.metadata()?.ino();
                        self.current = Some((BufReader::new(f), inode));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && following => {
                        return Ok(None);
                    }
                    // A rotated file that rotated further away meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some((reader, inode)) = self.current.as_mut() else {
                continue;
            };
            if self.partial.ends_with(b"\n") {
                let line = std::mem::take(&mut self.partial);
                match serde_json::from_slice::<LogEntry>(&line) {
                    Ok(entry) => return Ok(Some(entry)),
                    // A damaged line (a crash mid-write) is skipped, as Docker skips it.
                    Err(_) => continue,
                }
            }
            let read = reader.read_until(b'\n', &mut self.partial)?;
            if read > 0 {
                continue;
            }
            if !self.queue.is_empty() {
                // A rotated file is complete.
                self.current = None;
                continue;
            }
            // At the end of the live file: was it rotated away? Then the writer is done with it
            // once one more read finds nothing (it may have written between our read and the
            // rename).
            let rotated = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != *inode);
            if rotated {
                if reader.read_until(b'\n', &mut self.partial)? > 0 {
                    continue;
                }
                // The files written after ours: those newer than where ours went (or all the
                // rotated ones, if ours is already gone), then the live file.
                let inode = *inode;
                let rotated = rotated_files(&self.path);
                let newer = match rotated
                    .iter()
                    .position(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == inode))
                {
                    Some(ours) => rotated[..ours].to_vec(),
                    None => rotated,
                };
                self.queue = newer.into_iter().rev().collect();
                self.partial.clear();
                self.current = None;
                continue;
            }
            return Ok(None);
        }
    }
}

/// The rotated files of the log at `path`, newest (`.1`) first.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
        .take_while(|p| p.exists())
        .collect()
}

/// The last `n` entries of the log at `path`, and a reader positioned after them.
pub fn tail(path: &Path, n: Option<usize>) -> io::Result<(Vec<LogEntry>, LogReader)> {
    let mut reader = LogReader::open(path);
    let mut entries = VecDeque::new();
    while let Some(e) = reader.next_entry()? {
        entries.push_back(e);
        if n.is_some_and(|n| entries.len() > n) {
            entries.pop_front();
        }
    }
    Ok((entries.into(), reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(entries: &[LogEntry]) -> Vec<String> {
        entries.iter().map(|e| e.log.clone()).collect()
    }

    #[test]
    fn lines_are_split_at_newlines_and_at_the_entry_limit() {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut emit = |b: &[u8]| {
            out.push(b.to_vec());
            Ok(())
        };
        s.push(b"one\ntw", &mut emit).unwrap();
        s.push(b"o\nthree", &mut emit).unwrap();
        s.push(&vec![b'x'; MAX_ENTRY + 5], &mut emit).unwrap();
        s.finish(&mut emit).unwrap();
        assert_eq!(out[0], b"one\n");
        assert_eq!(out[1], b"two\n");
        assert_eq!(out[2].len(), MAX_ENTRY);
        assert!(out[2].starts_with(b"three"));
        assert_eq!(out[3].len(), 10);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn rotation_keeps_max_files_and_readers_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = LogWriter::open(&path, Some(300), 3).unwrap();
        let mut follower = LogReader::open(&path);
        let mut followed = Vec::new();
        for i in 0..30 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
            if i % 4 == 0 {
                while let Some(e) = follower.next_entry().unwrap() {
                    followed.push(e);
                }
            }
        }
        while let Some(e) = follower.next_entry().unwrap() {
            followed.push(e);
        }
        // Everything written was seen by the follower, in order, across rotations.
        let expected: Vec<String> = (0..30).map(|i| format!("line {i}\n")).collect();
        assert_eq!(texts(&followed), expected);
        assert!(dir.path().join("c-json.log.1").exists());
        assert!(dir.path().join("c-json.log.2").exists());
        assert!(!dir.path().join("c-json.log.3").exists());
        // A fresh reader sees what the kept files hold: the newest lines, in order.
        let (all, _) = tail(&path, None).unwrap();
        let all = texts(&all);
        assert!(all.len() < 30);
        assert_eq!(all.last().unwrap(), "line 29\n");
        assert_eq!(all, expected[30 - all.len()..].to_vec());
        let (last2, _) = tail(&path, Some(2)).unwrap();
        assert_eq!(texts(&last2), ["line 28\n", "line 29\n"]);
        // The stored line is Docker's json-file format.
        let raw = std::fs::read_to_string(&path).unwrap();
        let first = raw.lines().next().unwrap();
        assert!(first.starts_with(r#"{"log":"line "#), "{first}");
        assert!(first.contains(r#","stream":"stdout","time":""#));
    }
}
