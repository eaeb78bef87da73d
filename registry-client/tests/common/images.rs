//! Test images: gzipped tar layers of pseudo-random data, a config, an OCI manifest; written
//! as OCI layouts for skopeo, or pushed with the client under test.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use strata_codec::{Compression, Digest, Encoder, EncoderOptions, sha256_digest};
use strata_registry_client::{BlobSource, BlobUpload, Reference, RepositoryClient};

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub bytes: Bytes,
}

impl Blob {
    pub fn new(bytes: impl Into<Bytes>) -> Blob {
        let bytes = bytes.into();
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn upload(&self) -> BlobUpload {
        BlobUpload {
            digest: self.digest.clone(),
            size: self.size(),
            source: BlobSource::from_bytes(self.bytes.clone()),
            mount_from: None,
        }
    }

    pub fn descriptor(&self, media_type: &str) -> serde_json::Value {
        serde_json::json!({"mediaType": media_type, "digest": self.digest.to_string(), "size": self.size()})
    }
}

/// Pseudo-random, incompressible bytes (xorshift), different for each seed.
pub fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut state = sha256_digest(seed.as_bytes()).digest()[..16]
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15u64, |s, b| {
            s.rotate_left(5) ^ u64::from(b)
        });
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A gzipped tar holding one file of `size` noise bytes; returns (layer blob, diffID).
pub fn layer(seed: &str, size: usize) -> (Blob, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = noise(seed, size);
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, format!("{seed}.bin"), &data[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256_digest(&tar);
    let mut gz = Encoder::new(Vec::new(), Compression::Gzip, EncoderOptions::default()).unwrap();
    gz.write_all(&tar).unwrap();
    (Blob::new(gz.finish().unwrap()), diff_id)
}

/// One platform's image.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Blob,
}

impl Image {
    pub fn new(seed: &str, layer_sizes: &[usize], os: &str, arch: &str) -> Image {
        let (layers, diff_ids): (Vec<Blob>, Vec<Digest>) = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| layer(&format!("{seed}-{i}"), *size))
            .unzip();
        let config = Blob::new(
            serde_json::json!({
                "architecture": arch, "os": os,
                "config": {"Env": [format!("SEED={seed}")]},
                "rootfs": {"type": "layers",
                           "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            })
            .to_string(),
        );
        let manifest = Blob::new(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(CONFIG),
                "layers": layers.iter().map(|l| l.descriptor(LAYER_GZIP)).collect::<Vec<_>>(),
            })
            .to_string(),
        );
        Image {
            config,
            layers,
            manifest,
        }
    }

    pub fn blobs(&self) -> Vec<&Blob> {
        let mut all = vec![&self.config];
        all.extend(&self.layers);
        all
    }

    /// Pushes blobs then the manifest with the client under test.
    pub async fn push(&self, repo: &RepositoryClient, tag: &str) {
        let uploads: Vec<BlobUpload> = self.blobs().iter().map(|b| b.upload()).collect();
        repo.push_blobs(&uploads).await.unwrap();
        let digest = repo
            .push_manifest(
                &Reference::tag(tag).unwrap(),
                self.manifest.bytes.clone(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(digest, self.manifest.digest);
    }
}

/// An OCI index over several images with their platforms.
pub fn index(images: &[(&Image, &str, &str)]) -> Blob {
    Blob::new(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": images.iter().map(|(image, os, arch)| {
                let mut d = image.manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
                d["platform"] = serde_json::json!({"os": os, "architecture": arch});
                d
            }).collect::<Vec<_>>(),
        })
        .to_string(),
    )
}

/// Writes an OCI layout at `dir` holding `blobs`, with `top` (a manifest or an index) tagged
/// `tag`.
pub fn write_layout(dir: &Path, blobs: &[&Blob], top: &Blob, top_media_type: &str, tag: &str) {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).unwrap();
    for blob in blobs.iter().chain([&top]) {
        std::fs::write(blob_dir.join(blob.digest.digest()), &blob.bytes).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut entry = top.descriptor(top_media_type);
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [entry]}).to_string(),
    )
    .unwrap();
}
