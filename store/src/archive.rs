//! Image archives: `save` writes a docker-archive (Docker 25+ layout, which is also an OCI layout:
//! `docker load`, `podman load` and skopeo read it) or a plain OCI layout tarball; `load` reads
//! both, classic docker-archives (`<id>/layer.tar`), compressed or not, several images at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::{Deserialize, Serialize};
use strata_codec::{Compression, Decoder, Digest};

use crate::content::{BlobInfo, MAX_JSON_SIZE, canonical_json, parse_json};
use crate::error::{IoContext, Result, StoreError};
use crate::image::Image;
use crate::layout::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, strip_name_annotations};
use crate::lock::Lease;
use crate::media::{self, Kind};
use crate::meta::LayerRecord;
use crate::reference::{AnyReference, Reference, parse_any, parse_docker_ref};
use crate::store::Store;

/// What `save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// docker-archive: `manifest.json` beside an OCI layout, as `docker save` (25+) writes.
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// One image `load` added.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub names: Vec<Reference>,
    /// The image ID (config digest).
    pub id: Digest,
    /// The manifest (or index) now in the store.
    pub target: Descriptor,
}

/// An entry of a docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn blob_entry_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_ref(), d.digest())
}

fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).ctx(|| format!("archive path {path}"))?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

impl Store {
    /// Writes the images `refs` name (anything [`Store::resolve`] accepts) to `out` as one
    /// archive. A reference that is a name keeps that name in the archive; an ID keeps none.
    pub fn save(&self, refs: &[String], format: ArchiveFormat, out: impl Write) -> Result<()> {
        let lease = self.lease()?;
        // manifest digest -> (image, names), in the order first asked for.
        let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
        for r in refs {
            let image = self.resolve(r)?;
            let name = match parse_any(r) {
                Ok(AnyReference::Named(n))
                    if image.names.contains(&n.tag_name_only()) && n.digest().is_none() =>
                {
                    Some(n.tag_name_only())
                }
                _ => None,
            };
            match images
                .iter_mut()
                .find(|(i, _)| i.manifest_descriptor.digest() == image.manifest_descriptor.digest())
            {
                Some((_, names)) => names.extend(name.filter(|n| !names.contains(n))),
                None => images.push((image, name.into_iter().collect())),
            }
        }
        let mut tar = tar::Builder::new(out);
        for dir in ["blobs/", "blobs/sha256/"] {
            tar.append(&header(dir, 0, true)?, io::empty())
                .ctx(|| "writing the archive".into())?;
        }
        let mut written = HashSet::new();
        let mut index_entries = Vec::new();
        let mut docker_manifest = Vec::new();
        for (image, names) in &images {
            let blobs = std::iter::once(image.manifest.config().clone())
                .chain(image.manifest.layers().iter().cloned())
                .chain(std::iter::once(image.manifest_descriptor.clone()));
            for d in blobs {
                if written.insert(d.digest().clone()) {
                    self.append_blob(&mut tar, &d)?;
                }
            }
            let target = strip_name_annotations(&image.manifest_descriptor);
            if names.is_empty() {
                index_entries.push(target.clone());
            }
            for n in names {
                let mut d = target.clone();
                let mut a = d.annotations().clone().unwrap_or_default();
                a.insert(ANNOTATION_IMAGE_NAME.into(), n.to_string());
                // As `docker save` does: the OCI annotation holds the tag alone.
                a.insert(
                    ANNOTATION_REF_NAME.into(),
                    n.tag().map_or_else(|| n.to_string(), str::to_string),
                );
                d.set_annotations(Some(a));
                index_entries.push(d);
            }
            docker_manifest.push(DockerManifestEntry {
                config: blob_entry_path(image.manifest.config().digest()),
                repo_tags: (!names.is_empty())
                    .then(|| names.iter().map(Reference::familiar_string).collect()),
                layers: image
                    .manifest
                    .layers()
                    .iter()
                    .map(|l| blob_entry_path(l.digest()))
                    .collect(),
            });
        }
        let index = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(index_entries)
            .build()
            .map_err(|e| StoreError::Invalid(format!("building index.json: {e}")))?;
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("index.json", canonical_json(&index)?),
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ];
        if format == ArchiveFormat::Docker {
            files.push(("manifest.json", canonical_json(&docker_manifest)?));
        }
        for (path, bytes) in files {
            tar.append(&header(path, bytes.len() as u64, false)?, &bytes[..])
                .ctx(|| format!("writing {path} to the archive"))?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .ctx(|| "finishing the archive".into())?;
        drop(lease);
        Ok(())
    }

    fn append_blob<W: Write>(&self, tar: &mut tar::Builder<W>, d: &Descriptor) -> Result<()> {
        let size = self
            .blob_size(d.digest())?
            .ok_or_else(|| StoreError::BlobNotFound(d.digest().to_string()))?;
        let reader =
            crate::content::open_blob_at(&self.blob_path(d.digest()), d.digest(), Some(size))?;
        tar.append(&header(&blob_entry_path(d.digest()), size, false)?, reader)
            .ctx(|| format!("writing blob {} to the archive", d.digest()))
    }

    /// Loads every image of a docker-archive (classic or Docker 25+) or OCI layout tarball,
    /// compressed or not. Blobs are verified against their digests as they are stored; names are
    /// added only once everything an image needs is in the store.
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>> {
        let lease = self.lease()?;
        let (_, decoder) = Decoder::detect(BufReader::with_capacity(1 << 20, input))
            .ctx(|| "reading the archive".into())?;
        let contents = self.ingest_archive(&lease, decoder)?;
        let loaded = if let Some(index) = &contents.index {
            self.load_oci(&contents, index)?
        } else if let Some(manifest) = &contents.docker_manifest {
            self.load_docker(&lease, &contents, manifest)?
        } else {
            return Err(StoreError::Invalid(
                "the archive has neither manifest.json nor index.json: not a docker-archive or OCI layout"
                    .into(),
            ));
        };
        drop(lease);
        Ok(loaded)
    }

    fn ingest_archive(&self, lease: &Lease, input: impl Read) -> Result<ArchiveContents> {
        let mut contents = ArchiveContents::default();
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().ctx(|| "reading the archive".into())? {
            let mut entry = entry.ctx(|| "reading the archive".into())?;
            let Some(path) = clean_path(&entry.path().ctx(|| "reading the archive".into())?) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().ok().flatten() {
                    let base = if kind.is_symlink() {
                        path.parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default()
                            .join(target)
                    } else {
                        target.into_owned()
                    };
                    if let Some(t) = clean_path(&base) {
                        contents.links.insert(path, t);
                    }
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let name = path.to_string_lossy().into_owned();
            match name.as_str() {
                "manifest.json" | "index.json" | "oci-layout" | "repositories" => {
                    let mut bytes = Vec::new();
                    (&mut entry)
                        .take(MAX_JSON_SIZE + 1)
                        .read_to_end(&mut bytes)
                        .ctx(|| format!("reading {name} from the archive"))?;
                    if bytes.len() as u64 > MAX_JSON_SIZE {
                        return Err(StoreError::Invalid(format!(
                            "{name} in the archive is too large"
                        )));
                    }
                    match name.as_str() {
                        "manifest.json" => {
                            let m: Option<Vec<DockerManifestEntry>> =
                                parse_json(&bytes, "the archive's manifest.json")?;
                            contents.docker_manifest = Some(m.unwrap_or_default());
                        }
                        "index.json" => {
                            contents.index = Some(parse_json(&bytes, "the archive's index.json")?);
                        }
                        _ => {}
                    }
                    continue;
                }
                _ => {}
            }
            // Metadata of classic archives' v1 layers: not needed.
            if matches!(
                path.file_name().and_then(|f| f.to_str()),
                Some("json" | "VERSION")
            ) {
                continue;
            }
            let expected: Option<Digest> = name
                .strip_prefix("blobs/")
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(alg, hex)| format!("{alg}:{hex}").parse().ok());
            let size = entry.size();
            let mut writer = match &expected {
                Some(d) => self.blob_writer_expecting(lease, d, Some(size))?,
                None => self.blob_writer(lease)?,
            };
            io::copy(&mut entry, &mut writer).ctx(|| format!("reading {name} from the archive"))?;
            let info = writer
                .commit()
                .map_err(|e| StoreError::Invalid(format!("{name} in the archive: {e}")))?;
            contents.files.insert(path, info);
        }
        Ok(contents)
    }

    fn load_oci(&self, contents: &ArchiveContents, index: &ImageIndex) -> Result<Vec<LoadedImage>> {
        if index.manifests().is_empty() {
            return Err(StoreError::Invalid(
                "the archive's index.json lists no images".into(),
            ));
        }
        let docker_tags: HashMap<String, Vec<String>> = contents
            .docker_manifest
            .iter()
            .flatten()
            .filter_map(|m| {
                let config = contents.resolve(&m.config)?;
                Some((
                    config.digest.to_string(),
                    m.repo_tags.clone().unwrap_or_default(),
                ))
            })
            .collect();
        let mut loaded = Vec::new();
        for d in index.manifests() {
            self.check_complete(d)?;
            let id = self.image_id_of(d)?;
            let annotations = d.annotations().clone().unwrap_or_default();
            let mut names: Vec<Reference> = Vec::new();
            let annotated = annotations
                .get(ANNOTATION_IMAGE_NAME)
                .and_then(|n| parse_docker_ref(n).ok())
                .or_else(|| {
                    // A ref.name that is only a tag (`latest`) names nothing by itself.
                    let r = annotations.get(ANNOTATION_REF_NAME)?;
                    let looks_like_name = r.contains('/')
                        || r.contains(':')
                        || !docker_tags.contains_key(id.as_ref());
                    looks_like_name.then(|| parse_docker_ref(r).ok()).flatten()
                });
            names.extend(annotated);
            if names.is_empty() {
                for t in docker_tags.get(id.as_ref()).into_iter().flatten() {
                    names.push(parse_docker_ref(t)?);
                }
            }
            self.add_image(d, &names)?;
            self.record_layers(d)?;
            match loaded
                .iter_mut()
                .find(|l: &&mut LoadedImage| l.target.digest() == d.digest())
            {
                Some(l) => l.names.extend(names),
                None => loaded.push(LoadedImage {
                    names,
                    id,
                    target: strip_name_annotations(d),
                }),
            }
        }
        Ok(loaded)
    }

    fn load_docker(
        &self,
        lease: &Lease,
        contents: &ArchiveContents,
        manifest: &[DockerManifestEntry],
    ) -> Result<Vec<LoadedImage>> {
        if manifest.is_empty() {
            return Err(StoreError::Invalid(
                "the archive's manifest.json lists no images".into(),
            ));
        }
        let mut loaded = Vec::new();
        for entry in manifest {
            let config = contents.resolve(&entry.config).ok_or_else(|| {
                StoreError::Invalid(format!("the archive lacks the config {}", entry.config))
            })?;
            let config_json: ImageConfiguration = self.read_json(&config.digest)?;
            let diff_ids = config_json.rootfs().diff_ids();
            if diff_ids.len() != entry.layers.len() {
                return Err(StoreError::Invalid(format!(
                    "config {} lists {} layers, manifest.json {}",
                    entry.config,
                    diff_ids.len(),
                    entry.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
                let blob = contents.resolve(path).ok_or_else(|| {
                    StoreError::Invalid(format!("the archive lacks the layer {path}"))
                })?;
                let compression = self.detect_compression(&blob.digest)?;
                let media_type = compression.oci_layer_media_type().ok_or_else(|| {
                    StoreError::Invalid(format!("layer {path} is compressed as {compression:?}, which OCI has no media type for"))
                })?;
                let diff_id: Digest = diff_id.parse().map_err(|e| {
                    StoreError::Invalid(format!("bad diff_id {diff_id} in the config: {e}"))
                })?;
                if compression == Compression::None && diff_id != blob.digest {
                    return Err(StoreError::Invalid(format!(
                        "layer {path} has digest {} but the config says {diff_id}",
                        blob.digest
                    )));
                }
                self.record_layer(&LayerRecord {
                    digest: blob.digest.clone(),
                    diff_id,
                    media_type: media_type.to_string(),
                    size: blob.size,
                    uncompressed_size: (compression == Compression::None).then_some(blob.size),
                })?;
                layers.push(blob.descriptor(MediaType::from(media_type)));
            }
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(config.descriptor(MediaType::ImageConfig))
                .layers(layers)
                .build()
                .map_err(|e| StoreError::Invalid(format!("building a manifest: {e}")))?;
            let target = self.put_json(lease, MediaType::ImageManifest, &manifest)?;
            let names = entry
                .repo_tags
                .iter()
                .flatten()
                .map(|t| parse_docker_ref(t))
                .collect::<Result<Vec<_>, _>>()?;
            self.add_image(&target, &names)?;
            loaded.push(LoadedImage {
                names,
                id: config.digest.clone(),
                target,
            });
        }
        Ok(loaded)
    }

    /// Fails unless every blob `d` reaches is in the store.
    fn check_complete(&self, d: &Descriptor) -> Result<()> {
        let mut stack = vec![d.clone()];
        while let Some(d) = stack.pop() {
            if !self.has_blob(d.digest()) {
                return Err(StoreError::Invalid(format!(
                    "the archive lacks blob {} ({})",
                    d.digest(),
                    d.media_type()
                )));
            }
            match media::kind(d.media_type()) {
                Kind::Manifest => {
                    let m: ImageManifest = self.read_json(d.digest())?;
                    stack.extend(media::manifest_children(&m));
                }
                Kind::Index => {
                    let i: ImageIndex = self.read_json(d.digest())?;
                    stack.extend(media::index_children(&i));
                }
                Kind::Other => {}
            }
        }
        Ok(())
    }

    /// Records diffIDs of the layers of the host platform's manifest under `target`.
    fn record_layers(&self, target: &Descriptor) -> Result<()> {
        let image = self.load_image(target, Vec::new(), &crate::Platform::host())?;
        for (layer, diff_id) in image.manifest.layers().iter().zip(image.diff_ids()) {
            let Ok(diff_id) = diff_id.parse::<Digest>() else {
                continue;
            };
            let known = self.read_meta(|m| m.layer(layer.digest()))?.is_some();
            if !known {
                self.record_layer(&LayerRecord {
                    digest: layer.digest().clone(),
                    diff_id,
                    media_type: layer.media_type().to_string(),
                    size: layer.size(),
                    uncompressed_size: None,
                })?;
            }
        }
        Ok(())
    }

    fn detect_compression(&self, digest: &Digest) -> Result<Compression> {
        let mut head = [0u8; 6];
        let mut file =
            std::fs::File::open(self.blob_path(digest)).ctx(|| format!("opening blob {digest}"))?;
        let mut n = 0;
        while n < head.len() {
            match file
                .read(&mut head[n..])
                .ctx(|| format!("reading blob {digest}"))?
            {
                0 => break,
                k => n += k,
            }
        }
        Ok(Compression::detect(&head[..n]))
    }
}

/// What `load` found in an archive.
#[derive(Default)]
struct ArchiveContents {
    /// Regular files stored as blobs, by path.
    files: BTreeMap<PathBuf, BlobInfo>,
    /// Symlinks and hard links: path -> target path.
    links: HashMap<PathBuf, PathBuf>,
    docker_manifest: Option<Vec<DockerManifestEntry>>,
    index: Option<ImageIndex>,
}

impl ArchiveContents {
    /// The blob at an archive path, following links.
    fn resolve(&self, path: &str) -> Option<&BlobInfo> {
        let mut p = clean_path(Path::new(path))?;
        for _ in 0..16 {
            if let Some(info) = self.files.get(&p) {
                return Some(info);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

/// A relative archive path without `.`, `..` resolved lexically; `None` when it leaves the root.
fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}
