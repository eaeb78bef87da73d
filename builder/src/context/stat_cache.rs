//! The stat cache as stored: one record per file, (path, stat key, sha256 hex), in path order.
//! Decoding only checks and indexes the bytes (no map, no string per file): the walk joins the
//! records with its entries, which are in the same order, in one pass.

use super::{HexHash, StatKey};

const MAGIC: &[u8] = b"strata-statcache-1\n";
/// A record's stat key: dev, ino, size, mtime and ctime as little-endian 64-bit numbers.
const KEY_LEN: usize = 40;
const HASH_LEN: usize = 64;

/// The remembered hashes of a context.
#[derive(Debug, Default, Clone)]
pub(crate) struct StatCache {
    bytes: Vec<u8>,
    records: Vec<Record>,
}

/// Where one record is in [`StatCache::bytes`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    path_at: usize,
    path_len: usize,
    pub key: StatKey,
}

impl Record {
    fn hash_at(&self) -> usize {
        self.path_at + self.path_len + KEY_LEN
    }
}

impl StatCache {
    /// Indexes an encoded cache. A damaged or out-of-order record ends it: what was read so far
    /// is still good, and files after it are hashed again.
    pub(crate) fn decode(bytes: Vec<u8>) -> StatCache {
        if !bytes.starts_with(MAGIC) {
            return StatCache::default();
        }
        // Sized once, for paths of 16 bytes or more (room not used is never touched): growing a
        // vector of 20,000 records faulted in twice its memory.
        let mut records = Vec::with_capacity(bytes.len() / (8 + 16 + KEY_LEN + HASH_LEN));
        let mut at = MAGIC.len();
        let mut last: Option<&[u8]> = None;
        while at < bytes.len() {
            let Some((record, next)) = read_record(&bytes, at) else {
                break;
            };
            let path = &bytes[record.path_at..record.path_at + record.path_len];
            if last.is_some_and(|l| l >= path) {
                break;
            }
            last = Some(path);
            records.push(record);
            at = next;
        }
        StatCache { bytes, records }
    }

    /// The encoded cache.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn records(&self) -> &[Record] {
        &self.records
    }

    pub(super) fn path(&self, r: &Record) -> &str {
        // Checked by `decode`.
        std::str::from_utf8(self.path_bytes(r)).unwrap_or_default()
    }

    /// The path as bytes: what the join with the walk compares, without checking UTF-8 again.
    pub(super) fn path_bytes(&self, r: &Record) -> &[u8] {
        &self.bytes[r.path_at..r.path_at + r.path_len]
    }

    pub(super) fn hash(&self, r: &Record) -> HexHash {
        // `decode` checked that these are 64 lowercase hex digits; a no-op rebuild reads every
        // record's hash twice or more, so they are not checked again.
        let mut hash = [0; HASH_LEN];
        hash.copy_from_slice(&self.bytes[r.hash_at()..r.hash_at() + HASH_LEN]);
        HexHash(hash)
    }
}

/// Writes a cache from records given in strictly increasing path order.
pub(super) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(super) fn new() -> Encoder {
        Encoder {
            bytes: MAGIC.to_vec(),
        }
    }

    pub(super) fn push(&mut self, path: &str, key: &StatKey, hash: &HexHash) {
        self.bytes
            .extend_from_slice(&(path.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(path.as_bytes());
        for v in [
            key.dev,
            key.ino,
            key.size,
            key.mtime_ns as u64,
            key.ctime_ns as u64,
        ] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.bytes.extend_from_slice(hash.as_str().as_bytes());
    }

    pub(super) fn finish(self) -> StatCache {
        StatCache::decode(self.bytes)
    }
}

/// The record at `at` and where the next one starts.
fn read_record(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
    };
    let path_len = usize::try_from(u64_at(at)?).ok()?;
    let path_at = at + 8;
    let key_at = path_at.checked_add(path_len)?;
    std::str::from_utf8(bytes.get(path_at..key_at)?).ok()?;
    let key = StatKey {
        dev: u64_at(key_at)?,
        ino: u64_at(key_at + 8)?,
        size: u64_at(key_at + 16)?,
        mtime_ns: u64_at(key_at + 24)? as i64,
        ctime_ns: u64_at(key_at + 32)? as i64,
    };
    let hash_at = key_at + KEY_LEN;
    HexHash::parse(bytes.get(hash_at..hash_at + HASH_LEN)?)?;
    Some((
        Record {
            path_at,
            path_len,
            key,
        },
        hash_at + HASH_LEN,
    ))
}
