//! Where blobs are known to exist remotely: every repository a blob was pulled from or pushed
//! to, kept in the store's metadata database (table `registry.blob_sources`), so a push can ask
//! the registry to mount a blob from a repository it already has instead of uploading it.
//!
//! A record is a hint, never a promise: registries delete blobs, so a mount the registry
//! declines falls back to an upload.

use strata_codec::Digest;
use strata_store::redb::{self, MultimapTableDefinition};
use strata_store::{MetaWrite, Store};

use crate::names::Repository;

/// blob digest -> `registry/path` of repositories that had it
const BLOB_SOURCES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("registry.blob_sources");

/// Records, inside a metadata write transaction, that `repository` has `digests`.
pub(crate) fn record(
    meta: &MetaWrite<'_>,
    repository: &Repository,
    digests: &[&Digest],
) -> strata_store::Result<()> {
    let mut table = meta
        .transaction()
        .open_multimap_table(BLOB_SOURCES)
        .map_err(redb::Error::from)?;
    let repo = repository.to_string();
    for digest in digests {
        table
            .insert(digest.as_ref(), repo.as_str())
            .map_err(redb::Error::from)?;
    }
    Ok(())
}

/// For each digest, a repository of `target`'s registry other than `target` that is recorded as
/// having it: where to mount it from.
pub(crate) fn mount_sources(
    store: &Store,
    target: &Repository,
    digests: &[Digest],
) -> strata_store::Result<Vec<Option<String>>> {
    let registry = target.registry().as_str();
    store.read_meta(|meta| {
        let table = match meta.transaction().open_multimap_table(BLOB_SOURCES) {
            Ok(table) => table,
            // Nothing was ever recorded in this store.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; digests.len()]),
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let mut out = Vec::with_capacity(digests.len());
        for digest in digests {
            let mut found = None;
            for value in table.get(digest.as_ref()).map_err(redb::Error::from)? {
                let value = value.map_err(redb::Error::from)?;
                let Some((host, path)) = value.value().split_once('/') else {
                    continue;
                };
                if host == registry && path != target.path() {
                    found = Some(path.to_string());
                    break;
                }
            }
            out.push(found);
        }
        Ok(out)
    })
}
