//! Image layer stacks as chains of committed snapshots, shared by builds, containers and
//! everything else that unpacks an image.
//!
//! A layer stack is named by its OCI ChainID (image-spec `config.md`):
//! `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`,
//! and its snapshot id is `sha256-<hex of the ChainID>` ([`chain_snapshot_id`]). The snapshot of
//! layer n has the snapshot of the stack below it as parent, so equal stacks are unpacked once,
//! whoever asks first.

use std::io::Read;

use strata_codec::{Digest, sha256_digest};

use crate::{Error, Snapshotter, State};

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

impl Snapshotter {
    /// Makes sure committed snapshot `id` holds one layer (whose uncompressed tar has digest
    /// `diff_id`) on top of `parent`. When it is missing, `open` gives the layer's bytes and
    /// they are extracted; a layer whose content does not hash to `diff_id` is removed again
    /// and refused. Returns whether this call extracted it (`false`: it was there, or another
    /// process made it meanwhile).
    pub fn ensure_layer<R: Read>(
        &self,
        id: &str,
        parent: Option<&str>,
        diff_id: &Digest,
        open: impl FnOnce() -> Result<R, Error>,
    ) -> Result<bool, Error> {
        match self.info(id) {
            Ok(info) if info.state == State::Committed => return Ok(false),
            Ok(info) => {
                return Err(Error::WrongState {
                    id: id.to_string(),
                    state: info.state.name(),
                    expected: State::Committed.name(),
                });
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let extracted = match self.extract_layer(id, parent, open()?, None) {
            Ok((_, extracted)) => extracted,
            Err(Error::AlreadyExists(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if &extracted.diff_id != diff_id {
            let _ = self.remove(id);
            return Err(Error::DiffIdMismatch {
                id: id.to_string(),
                expected: diff_id.clone(),
                actual: extracted.diff_id,
            });
        }
        Ok(true)
    }
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
