//! An image's layers as a chain of committed snapshots, shared by every container (and build)
//! over the same layers.
//!
//! A layer stack is named by its OCI ChainID (image-spec `config.md`):
//! `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`,
//! and its snapshot id is `sha256-<hex of the ChainID>` ([`chain_snapshot_id`]). The snapshot of
//! layer n has the snapshot of the stack below it as parent, so equal stacks are unpacked once.
//! Each layer snapshot is held in the store by `SnapshotHolder::Blob(layer digest)`: garbage
//! collection deletes it with its layer blob.

use strata_codec::{Digest, sha256_digest};
use strata_snapshotter::{Snapshotter, State};
use strata_store::{Image, Lease, SnapshotHolder, Store};

use crate::error::{Error, Result};

/// The ChainIDs of a layer stack, base first: one per layer.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(below) => sha256_digest(format!("{below} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// The snapshot id of a layer stack: `sha256-<hex>` of its ChainID.
pub fn chain_snapshot_id(chain_id: &Digest) -> String {
    format!("{}-{}", chain_id.algorithm(), chain_id.digest())
}

/// Makes sure every layer of `image` is unpacked and held; returns the id of the top snapshot
/// (`None` for an image without layers). Hold `lease` for as long as the result is used
/// unheld (until the caller's own snapshot on top of it is recorded), so no collection runs.
pub fn unpack_image(
    store: &Store,
    _lease: &Lease,
    snapshotter: &Snapshotter,
    image: &Image,
) -> Result<Option<String>> {
    let diff_ids = image
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| Error::Invalid(format!("image config has a bad diffID {d:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = image.manifest.layers();
    if layers.len() != diff_ids.len() {
        return Err(Error::Invalid(format!(
            "image {} has {} layers but {} diffIDs",
            image.id(),
            layers.len(),
            diff_ids.len()
        )));
    }
    let mut parent: Option<String> = None;
    let mut holds = Vec::new();
    for ((layer, diff_id), chain_id) in layers.iter().zip(&diff_ids).zip(chain_ids(&diff_ids)) {
        let id = chain_snapshot_id(&chain_id);
        match snapshotter.info(&id) {
            Ok(info) if info.state == State::Committed => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "snapshot {id} exists but is not committed"
                )));
            }
            Err(strata_snapshotter::Error::NotFound(_)) => {
                extract(
                    store,
                    snapshotter,
                    &id,
                    parent.as_deref(),
                    layer.digest(),
                    diff_id,
                )?;
            }
            Err(e) => return Err(e.into()),
        }
        holds.push((id.clone(), SnapshotHolder::Blob(layer.digest().clone())));
        parent = Some(id);
    }
    let missing: Vec<_> = store.read_meta(|m| {
        let mut missing = Vec::new();
        for (id, holder) in &holds {
            if !m.snapshot_holders(id)?.contains(holder) {
                missing.push((id.clone(), holder.clone()));
            }
        }
        Ok(missing)
    })?;
    if !missing.is_empty() {
        store.write_meta(|m| {
            for (id, holder) in &missing {
                m.hold_snapshot(id, holder)?;
            }
            Ok(())
        })?;
    }
    Ok(parent)
}

fn extract(
    store: &Store,
    snapshotter: &Snapshotter,
    id: &str,
    parent: Option<&str>,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<()> {
    if !store.has_blob(blob) {
        return Err(Error::Invalid(format!(
            "layer {blob} is not in the store (was the pull interrupted?)"
        )));
    }
    let reader = store.open_blob(blob)?;
    let extracted = match snapshotter.extract_layer(id, parent, reader, None) {
        Ok((_, extracted)) => extracted,
        // Another process unpacked the same stack meanwhile.
        Err(strata_snapshotter::Error::AlreadyExists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if &extracted.diff_id != diff_id {
        let _ = snapshotter.remove(id);
        return Err(Error::Invalid(format!(
            "layer {blob} unpacks to diffID {}, but the image config says {diff_id}",
            extracted.diff_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(
            chain[1],
            sha256_digest(format!("{a} {b}").as_bytes()),
            "ChainID(L0|L1) = sha256(ChainID(L0) + \" \" + DiffID(L1))"
        );
        assert_eq!(
            chain_snapshot_id(&chain[0]),
            format!("sha256-{}", "a".repeat(64))
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
