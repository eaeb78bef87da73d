//! The build cache in the store's database: step key -> result, step identity -> the inputs of
//! its last build (to explain the next miss) and, apart, the manifest of what it copied from the
//! context (read only on a miss). Beside the database, one file per context directory holds its
//! stat cache (`builder-contexts/<sha256 of the path>`): megabytes for a large context, read by
//! every build of it, which the database would read into a zeroed buffer and copy again.
//!
//! A result's layer blob is kept alive by a store GC root `cache:<key>`, so `strata system
//! prune` (which drops every `cache:` root) and GC free what only the cache holds; a record
//! whose blob is gone reads as a miss. Everything a build learns is written in one transaction
//! at its end; a fully cached build writes nothing but what changed (usually nothing).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_store::meta::CACHE_HOLDER_PREFIX;
use strata_store::redb::{self, TableDefinition};
use strata_store::{Store, StoreError, canonical_json};

use crate::context::StatCache;
use crate::error::{IoContext, Result};
use crate::layers::{Layer, Pending};

/// Bumped whenever the meaning of a key changes, so old entries stop matching.
const KEY_VERSION: u32 = 1;

/// step key -> [`CacheRecord`] (JSON).
const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("builder.cache");
/// step identity -> [`StepRecord`] (JSON) without its manifest.
const STEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("builder.steps");
/// step identity -> [`StepRecord::manifest`] (JSON), where it has one: a line per copied
/// context file, megabytes for a large context, so a lookup that hits never reads it.
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("builder.step-manifests");

/// What a step produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CacheRecord {
    pub layer: Layer,
    /// When the layer was made (RFC 3339): the history's `created`, so a cached rebuild writes
    /// the same config.
    pub created: String,
}

/// Everything a step's key covers, kept to say what changed next time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StepInputs {
    /// The operation after expansion (canonical JSON text).
    pub op: String,
    /// The key of what the step starts from (the previous step, or the stage's base).
    pub parent: String,
    /// The environment a RUN sees (build args included).
    pub env: Vec<(String, String)>,
    /// Build args the step uses.
    pub build_args: BTreeMap<String, String>,
    /// `USER`, `WORKDIR`, network...
    pub settings: BTreeMap<String, String>,
    /// What it reads besides its parent: (name, digest): the context files it selects, or a
    /// stage's or image's key.
    pub sources: Vec<(String, String)>,
}

impl StepInputs {
    /// The step's cache key.
    pub fn key(&self) -> String {
        #[derive(Serialize)]
        struct Keyed<'a> {
            v: u32,
            inputs: &'a StepInputs,
        }
        let bytes = canonical_json(&Keyed {
            v: KEY_VERSION,
            inputs: self,
        })
        .unwrap_or_default();
        strata_codec::sha256_digest(&bytes).to_string()
    }
}

/// The last build of a step identity (Dockerfile, stage, position).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StepRecord {
    pub key: String,
    /// The instruction as written, to show what it was.
    pub text: String,
    pub inputs: StepInputs,
    /// For a COPY from the context: one line per selected entry (path, type, mode, content
    /// hash, link target), to name the files that change and to redo only them. Stored apart
    /// (`MANIFESTS`); read inline from records written before that.
    #[serde(default, skip_serializing)]
    pub manifest: Vec<String>,
}

/// What the cache knows about a planned build, read in one transaction.
#[derive(Default)]
pub(crate) struct Lookup {
    pub results: HashMap<String, CacheRecord>,
    pub steps: HashMap<String, StepRecord>,
}

fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the stat cache of a context directory (empty when there is none).
pub(crate) fn read_stat_cache(store: &Store, context: &str) -> Result<StatCache> {
    let path = stat_cache_path(store, context);
    match fs::read(&path) {
        Ok(bytes) => Ok(StatCache::decode(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StatCache::default()),
        Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
    }
}

/// Where the stat caches of context directories are kept, under the store's root.
const CONTEXT_CACHES_DIR: &str = "builder-contexts";

fn stat_cache_path(store: &Store, context: &str) -> PathBuf {
    let name = strata_codec::sha256_digest(context.as_bytes());
    store.root().join(CONTEXT_CACHES_DIR).join(name.digest())
}

/// Removes the stat caches of context directories (`builder prune`, as BuildKit's drops its
/// local-source records: the next build of a context hashes its files again), and what killed
/// builds left half-written. A cache being written by a live build is left to it. Returns the
/// bytes removed.
pub fn prune_context_caches(store_root: &Path) -> io::Result<u64> {
    let entries = match fs::read_dir(store_root.join(CONTEXT_CACHES_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut reclaimed = 0;
    for entry in entries {
        let entry = entry?;
        if being_written(&entry.file_name()) {
            continue;
        }
        let meta = entry.metadata()?;
        match fs::remove_file(entry.path()) {
            Ok(()) => reclaimed += meta.blocks() * 512,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reclaimed)
}

/// Whether `name` is a stat cache's temporary file (`<name>.<pid>.tmp`, see [`write_stat_cache`])
/// whose writer is still running.
fn being_written(name: &std::ffi::OsStr) -> bool {
    let pid = name
        .to_str()
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(|n| n.rsplit('.').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Replaces the stat cache of a context directory: written beside and renamed over, so a
/// reader sees the old or the new one. Not synced: a cache lost in a crash is rebuilt by
/// hashing, and a damaged one is read up to the damage.
fn write_stat_cache(store: &Store, context: &str, cache: &StatCache) -> Result<()> {
    let path = stat_cache_path(store, context);
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    (|| {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&tmp, cache.as_bytes())?;
        fs::rename(&tmp, &path)
    })()
    .ctx(|| format!("writing {}", path.display()))
}

/// Reads the results of `keys`.
pub(crate) fn results(store: &Store, keys: &[&str]) -> Result<HashMap<String, CacheRecord>> {
    Ok(lookup(store, keys, &[])?.results)
}

/// A [`StepRecord`] without its manifest, which serde skips without building it.
#[derive(Deserialize)]
struct StepRecordHead {
    key: String,
    text: String,
    inputs: StepInputs,
}

/// Reads the results of `keys` and the records of `identities` (identity, the step's key now).
/// A record made under the same key comes without its manifest: it is a hit, or (its result
/// gone) a miss whose reason is not a file and that cannot start from the missing result, so
/// a no-op rebuild does not read one line per context file. (Records written before manifests
/// had their own table carry theirs inline.)
pub(crate) fn lookup(store: &Store, keys: &[&str], identities: &[(&str, &str)]) -> Result<Lookup> {
    Ok(store.read_meta(|m| {
        let mut out = Lookup::default();
        if let Some(t) = open(m.transaction(), RESULTS)? {
            for k in keys {
                if let Some(v) = t.get(*k)?
                    && let Ok(r) = serde_json::from_slice::<CacheRecord>(v.value())
                {
                    out.results.insert(k.to_string(), r);
                }
            }
        }
        if let Some(t) = open(m.transaction(), STEPS)? {
            // Opened only for a miss: opening reads the table's root page, manifests and all.
            let mut manifests = None;
            for (id, key) in identities {
                let Some(v) = t.get(*id)? else {
                    continue;
                };
                let record = match serde_json::from_slice::<StepRecordHead>(v.value()) {
                    Ok(head) if head.key == *key => Some(StepRecord {
                        key: head.key,
                        text: head.text,
                        inputs: head.inputs,
                        manifest: Vec::new(),
                    }),
                    _ => serde_json::from_slice::<StepRecord>(v.value()).ok(),
                };
                let Some(mut r) = record else {
                    continue;
                };
                if r.manifest.is_empty() && r.key != *key {
                    if manifests.is_none() {
                        manifests = Some(open(m.transaction(), MANIFESTS)?);
                    }
                    if let Some(Some(t)) = &manifests
                        && let Some(v) = t.get(*id)?
                    {
                        r.manifest = serde_json::from_slice(v.value()).unwrap_or_default();
                    }
                }
                out.steps.insert(id.to_string(), r);
            }
        }
        Ok(out)
    })?)
}

/// What a build writes at its end.
#[derive(Default)]
pub(crate) struct Updates {
    pub results: Vec<(String, CacheRecord)>,
    pub steps: Vec<(String, StepRecord)>,
    pub stat_cache: Option<(String, StatCache)>,
}

impl Updates {
    pub fn is_empty(&self, pending: &Pending) -> bool {
        self.results.is_empty()
            && self.steps.is_empty()
            && self.stat_cache.is_none()
            && pending.holds.is_empty()
            && pending.layers.is_empty()
    }
}

/// Writes everything in one transaction.
pub(crate) fn write(store: &Store, updates: &Updates, pending: &Pending) -> Result<()> {
    if updates.is_empty(pending) {
        return Ok(());
    }
    // These record types always serialize.
    let json = |v: &dyn ErasedJson| v.to_json();
    store.write_meta(|m| {
        for l in &pending.layers {
            m.record_layer(l)?;
        }
        for (snapshot, holder) in &pending.holds {
            m.hold_snapshot(snapshot, holder)?;
        }
        {
            let mut t = m.transaction().open_table(RESULTS)?;
            for (key, record) in &updates.results {
                t.insert(key.as_str(), json(record).as_slice())?;
            }
        }
        for (key, record) in &updates.results {
            let digest = record
                .layer
                .parsed_digest()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            m.add_root(&format!("{CACHE_HOLDER_PREFIX}{key}"), &digest)?;
        }
        {
            let mut steps = m.transaction().open_table(STEPS)?;
            let mut manifests = m.transaction().open_table(MANIFESTS)?;
            for (id, record) in &updates.steps {
                steps.insert(id.as_str(), json(record).as_slice())?;
                if record.manifest.is_empty() {
                    manifests.remove(id.as_str())?;
                } else {
                    manifests.insert(id.as_str(), json(&record.manifest).as_slice())?;
                }
            }
        }
        Ok(())
    })?;
    if let Some((dir, cache)) = &updates.stat_cache {
        write_stat_cache(store, dir, cache)?;
    }
    Ok(())
}

trait ErasedJson {
    fn to_json(&self) -> Vec<u8>;
}

impl<T: Serialize> ErasedJson for T {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
