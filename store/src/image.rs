//! Images: creating them from a config and layers, naming, resolving, listing and removing them.

use std::collections::{HashMap, HashSet};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Serialize;
use strata_codec::Digest;

use crate::content::canonical_json;
use crate::error::{Result, StoreError};
use crate::layout::IndexEntry;
use crate::lock::Lease;
use crate::media;
use crate::meta::CACHE_HOLDER_PREFIX;
use crate::platform::Platform;
use crate::reference::{AnyReference, Reference, parse_any};
use crate::store::{Store, invalid};

/// One image, resolved down to a single platform's manifest and config.
#[derive(Debug, Clone)]
pub struct Image {
    /// Every name the store gives this image's index entry (full normalised references).
    pub names: Vec<Reference>,
    /// What `index.json` points at: the manifest, or an index of per-platform manifests.
    pub target: Descriptor,
    /// The manifest for the chosen platform (equal to `target` for a single-platform image).
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    /// The config as stored, Docker's extra fields (Healthcheck, Shell, OnBuild...) included.
    pub config_json: serde_json::Value,
    /// The config parsed as OCI's type.
    pub config: ImageConfiguration,
}

impl Image {
    /// The image ID: the config's digest, as Docker's.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }

    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        Platform::new(
            &self.config.os().to_string(),
            &self.config.architecture().to_string(),
            self.config.variant().as_deref(),
        )
    }

    /// The layers' diffIDs, base first.
    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }

    /// Bytes the image's blobs take: config plus layers as stored (compressed when they are).
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }

    /// `created` from the config (RFC 3339), when set.
    pub fn created(&self) -> Option<&str> {
        self.config.created().as_deref()
    }
}

/// What [`Store::remove_image`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Removal {
    pub untagged: Vec<Reference>,
    /// Image IDs whose last entry was removed.
    pub deleted: Vec<Digest>,
}

fn short(d: &Digest) -> String {
    d.digest().chars().take(12).collect()
}

impl Store {
    /// Stores `config` and a manifest over `layers` (blobs already in the store, base first),
    /// then names the image `names` (or keeps it untagged when there are none).
    ///
    /// `config` is any serializable image config (oci-spec's `ImageConfiguration`, or a JSON value
    /// with Docker's extra fields); its `rootfs.diff_ids` must have one entry per layer. The
    /// config and manifest are written as canonical JSON with OCI media types.
    pub fn create_image<C: Serialize + ?Sized>(
        &self,
        lease: &Lease,
        config: &C,
        layers: &[Descriptor],
        names: &[Reference],
    ) -> Result<Image> {
        for l in layers {
            if !self.has_blob(l.digest()) {
                return Err(StoreError::BlobNotFound(l.digest().to_string()));
            }
        }
        self.write_image(lease, &canonical_json(config)?, layers, names)
    }

    /// [`Store::create_image`] for an image whose layers need not be in the store: they live
    /// in a registry (a build's cache hits that a push mounts there). Such an image can be
    /// pushed; anything that reads its layers needs them pulled first.
    pub fn create_image_with_remote_layers<C: Serialize + ?Sized>(
        &self,
        lease: &Lease,
        config: &C,
        layers: &[Descriptor],
        names: &[Reference],
    ) -> Result<Image> {
        self.write_image(lease, &canonical_json(config)?, layers, names)
    }

    fn write_image(
        &self,
        lease: &Lease,
        config_bytes: &[u8],
        layers: &[Descriptor],
        names: &[Reference],
    ) -> Result<Image> {
        let parsed: ImageConfiguration = crate::content::parse_json(config_bytes, "image config")?;
        if parsed.rootfs().diff_ids().len() != layers.len() {
            return Err(invalid(format!(
                "config lists {} diff_ids but the image has {} layers",
                parsed.rootfs().diff_ids().len(),
                layers.len()
            )));
        }
        let config_desc = self
            .put_blob(lease, config_bytes)?
            .descriptor(MediaType::ImageConfig);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(layers.to_vec())
            .build()
            .map_err(|e| invalid(format!("building a manifest: {e}")))?;
        let manifest_desc = self.put_json(lease, MediaType::ImageManifest, &manifest)?;
        self.add_image(&manifest_desc, names)?;
        let names = names.iter().map(Reference::tag_name_only).collect();
        self.load_image(&manifest_desc, names, &Platform::host())
    }

    /// Registers a manifest or index already in the store (pulled, loaded) as an image named
    /// `names` (normalised with `:latest` when they have neither tag nor digest), or as an untagged
    /// image when `names` is empty and nothing else names it. Records which blobs it references.
    pub fn add_image(&self, target: &Descriptor, names: &[Reference]) -> Result<()> {
        let refs = self.collect_refs(target)?;
        let mut locked = self.lock()?;
        locked.write_meta(|m| {
            for (parent, children) in &refs {
                m.set_children(parent, children)?;
            }
            Ok(())
        })?;
        let mut entries = locked.store().entries()?;
        let target = crate::layout::strip_name_annotations(target);
        if names.is_empty() {
            if !entries.iter().any(|e| e.target.digest() == target.digest()) {
                entries.push(IndexEntry { name: None, target });
            }
        } else {
            for name in names {
                set_name(&mut entries, name.tag_name_only(), &target);
            }
        }
        locked.write_entries(&entries)
    }

    /// Parent -> children for `target` and every manifest and index below it that is stored.
    fn collect_refs(&self, target: &Descriptor) -> Result<Vec<(Digest, Vec<Digest>)>> {
        let mut out = Vec::new();
        let mut stack = vec![target.clone()];
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.digest().clone()) || !self.has_blob(d.digest()) {
                continue;
            }
            let children = match media::kind(d.media_type()) {
                media::Kind::Manifest => {
                    let m: ImageManifest = self.read_json(d.digest())?;
                    media::manifest_children(&m)
                }
                media::Kind::Index => {
                    let i: ImageIndex = self.read_json(d.digest())?;
                    stack.extend(i.manifests().iter().cloned());
                    media::index_children(&i)
                }
                media::Kind::Other => continue,
            };
            out.push((
                d.digest().clone(),
                children.iter().map(|c| c.digest().clone()).collect(),
            ));
        }
        Ok(out)
    }

    /// Gives the image `source` (anything [`Store::resolve`] accepts) the name `name`
    /// (normalised with `:latest`); the image that had the name before keeps its other names,
    /// or stays as an untagged image.
    pub fn tag(&self, source: &str, name: &Reference) -> Result<Image> {
        let locked = self.lock()?;
        let entries = self.entries()?;
        let target = self.find_target(&entries, source)?;
        let mut entries = entries;
        let name = name.tag_name_only();
        set_name(&mut entries, name.clone(), &target);
        locked.write_entries(&entries)?;
        drop(locked);
        self.load_image(&target, vec![name], &Platform::host())
    }

    /// Resolves a name (`busybox`, `localhost:5000/a:v1`, `name@sha256:...`), a full or short
    /// image ID, or a manifest digest to the image, for the host platform.
    pub fn resolve(&self, s: &str) -> Result<Image> {
        self.resolve_for(s, &Platform::host())
    }

    /// As [`Store::resolve`], choosing `platform`'s manifest when the image is an index.
    pub fn resolve_for(&self, s: &str, platform: &Platform) -> Result<Image> {
        let entries = self.entries()?;
        let target = self.find_target(&entries, s)?;
        let names = names_of(&entries, target.digest());
        self.load_image(&target, names, platform)
    }

    /// Every image entry of the store, resolved for the host platform. Entries whose blobs are
    /// missing or malformed are reported as errors in place, so one bad image does not hide the
    /// others.
    pub fn images(&self) -> Result<Vec<(IndexEntry, Result<Image>)>> {
        let entries = self.entries()?;
        let host = Platform::host();
        let mut cache: HashMap<Digest, Image> = HashMap::new();
        let mut out = Vec::new();
        for e in entries {
            let image = match cache.get(e.target.digest()) {
                Some(i) => Ok(i.clone()),
                None => {
                    let names = e.name.iter().cloned().collect();
                    let r = self.load_image(&e.target, names, &host);
                    if let Ok(i) = &r {
                        cache.insert(e.target.digest().clone(), i.clone());
                    }
                    r
                }
            };
            out.push((e, image));
        }
        Ok(out)
    }

    /// Docker's `rmi`: a name is untagged, and the image deleted with its last name; an ID deletes
    /// the image with all its names, which needs `force` when it has more than one. An image a
    /// GC root holds (a container, say) needs `force` too. Blobs are freed by garbage collection.
    pub fn remove_image(&self, s: &str, force: bool) -> Result<Removal> {
        let mut locked = self.lock()?;
        let mut entries = self.entries()?;
        let target = self.find_target(&entries, s)?;
        let id = self.image_id_of(&target)?;
        let by_name = match parse_any(s) {
            Ok(AnyReference::Named(r)) => entries
                .iter()
                .any(|e| e.name.as_ref() == Some(&r.tag_name_only())),
            _ => false,
        };
        let mut removal = Removal::default();
        if by_name {
            let Ok(AnyReference::Named(r)) = parse_any(s) else {
                unreachable!("by_name implies a name")
            };
            let name = r.tag_name_only();
            let others = entries
                .iter()
                .filter(|e| e.target.digest() == target.digest() && e.name.as_ref() != Some(&name))
                .count();
            if others > 0 {
                entries.retain(|e| e.name.as_ref() != Some(&name));
                removal.untagged.push(name);
                locked.write_entries(&entries)?;
                return Ok(removal);
            }
        }
        // By name: that image's entries go. By ID or digest: every entry with the image ID.
        let mut doomed = Vec::new();
        for e in &entries {
            let same_target = e.target.digest() == target.digest();
            if same_target || (!by_name && self.image_id_of(&e.target).ok().as_ref() == Some(&id)) {
                doomed.push(e.clone());
            }
        }
        let named: Vec<&Reference> = doomed.iter().filter_map(|e| e.name.as_ref()).collect();
        if !by_name && named.len() > 1 && !force {
            return Err(StoreError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short(&id)
            )));
        }
        if !force {
            let doomed_digests: HashSet<&Digest> =
                doomed.iter().map(|e| e.target.digest()).collect();
            let holders: Vec<String> = locked
                .read_meta(|m| m.roots())?
                .into_iter()
                .filter(|(h, d)| {
                    !h.starts_with(CACHE_HOLDER_PREFIX) && (doomed_digests.contains(d) || *d == id)
                })
                .map(|(h, _)| h)
                .collect();
            if let Some(h) = holders.first() {
                return Err(StoreError::Conflict(format!(
                    "unable to delete {} (must be forced) - image is in use by {h}",
                    short(&id)
                )));
            }
        }
        removal.untagged = named.into_iter().cloned().collect();
        entries.retain(|e| !doomed.contains(e));
        removal.deleted.push(id);
        locked.write_entries(&entries)?;
        Ok(removal)
    }

    /// Removes one name; the image stays (untagged, if it has no other name).
    pub fn untag(&self, name: &Reference) -> Result<bool> {
        let locked = self.lock()?;
        let mut entries = self.entries()?;
        let name = name.tag_name_only();
        let Some(pos) = entries.iter().position(|e| e.name.as_ref() == Some(&name)) else {
            return Ok(false);
        };
        let removed = entries.remove(pos);
        if !entries
            .iter()
            .any(|e| e.target.digest() == removed.target.digest())
        {
            entries.push(IndexEntry {
                name: None,
                target: removed.target,
            });
        }
        locked.write_entries(&entries)?;
        Ok(true)
    }

    /// The image ID of an entry target (the host platform's config digest for an index).
    pub(crate) fn image_id_of(&self, target: &Descriptor) -> Result<Digest> {
        let manifest_desc = self.platform_manifest(target, &Platform::host())?;
        let manifest: ImageManifest = self.read_json(manifest_desc.digest())?;
        Ok(manifest.config().digest().clone())
    }

    /// Picks `platform`'s manifest when `target` is an index (recursively).
    fn platform_manifest(&self, target: &Descriptor, platform: &Platform) -> Result<Descriptor> {
        let mut current = target.clone();
        for _ in 0..8 {
            match media::kind(current.media_type()) {
                media::Kind::Manifest => return Ok(current),
                media::Kind::Index => {
                    let index: ImageIndex = self.read_json(current.digest())?;
                    let candidates: Vec<(Platform, &Descriptor)> = index
                        .manifests()
                        .iter()
                        .filter(|d| media::kind(d.media_type()) != media::Kind::Other)
                        .filter_map(|d| Some((Platform::from_oci(d.platform().as_ref()?), d)))
                        .collect();
                    let best = platform
                        .best_match(candidates.iter().map(|(p, _)| p))
                        .map(|i| candidates[i].1.clone());
                    current = match best {
                        Some(d) => d,
                        // No platforms given: a single manifest is the image.
                        None if index.manifests().len() == 1 => index.manifests()[0].clone(),
                        None => {
                            return Err(StoreError::ImageNotFound(format!(
                                "{} has no manifest for platform {platform}",
                                target.digest()
                            )));
                        }
                    };
                }
                media::Kind::Other => {
                    return Err(invalid(format!(
                        "{} has media type {}, not an image manifest or index",
                        current.digest(),
                        current.media_type()
                    )));
                }
            }
        }
        Err(invalid(format!(
            "{} nests indexes too deeply",
            target.digest()
        )))
    }

    /// Reads the manifest and config of `target` for `platform`.
    pub(crate) fn load_image(
        &self,
        target: &Descriptor,
        names: Vec<Reference>,
        platform: &Platform,
    ) -> Result<Image> {
        let manifest_descriptor = self.platform_manifest(target, platform)?;
        let manifest: ImageManifest = self.read_json(manifest_descriptor.digest())?;
        let config_bytes = self.read_blob(manifest.config().digest())?;
        let config_json: serde_json::Value =
            crate::content::parse_json(&config_bytes, "image config")?;
        let config: ImageConfiguration = crate::content::parse_json(&config_bytes, "image config")?;
        Ok(Image {
            names,
            target: target.clone(),
            manifest_descriptor,
            manifest,
            config_json,
            config,
        })
    }

    /// The index entry target `s` names: a name, an ID (full or short), or a digest.
    pub(crate) fn find_target(&self, entries: &[IndexEntry], s: &str) -> Result<Descriptor> {
        let not_found = || StoreError::ImageNotFound(s.to_string());
        match parse_any(s) {
            Ok(AnyReference::Named(r)) => {
                if let Some(e) = entries
                    .iter()
                    .find(|e| e.name.as_ref() == Some(&r.tag_name_only()))
                {
                    return Ok(e.target.clone());
                }
                if let Some(d) = r.digest()
                    && let Some(t) = self.find_by_digest(entries, d)?
                {
                    return Ok(t);
                }
            }
            Ok(AnyReference::Digest(d)) => {
                return self.find_by_digest(entries, &d)?.ok_or_else(not_found);
            }
            Err(_) => {}
        }
        // A short ID: a prefix of an image ID, with or without `sha256:`.
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return Err(not_found());
        }
        let mut found: Vec<(Digest, &IndexEntry)> = Vec::new();
        for e in entries {
            if let Ok(id) = self.image_id_of(&e.target)
                && id.digest().starts_with(prefix)
            {
                found.push((id, e));
            }
        }
        let ids: HashSet<&Digest> = found.iter().map(|(id, _)| id).collect();
        match ids.len() {
            0 => Err(not_found()),
            1 => Ok(prefer_named(found.iter().map(|(_, e)| *e))),
            _ => Err(StoreError::Ambiguous(format!(
                "short ID {s} is ambiguous: it matches {} images",
                ids.len()
            ))),
        }
    }

    /// The entry whose image ID or manifest (or index) digest is `digest`.
    fn find_by_digest(&self, entries: &[IndexEntry], digest: &str) -> Result<Option<Descriptor>> {
        let by_id: Vec<&IndexEntry> = entries
            .iter()
            .filter(|e| {
                self.image_id_of(&e.target)
                    .is_ok_and(|id| id.as_ref() == digest)
            })
            .collect();
        if !by_id.is_empty() {
            return Ok(Some(prefer_named(by_id.into_iter())));
        }
        Ok(entries
            .iter()
            .find(|e| e.target.digest().as_ref() == digest)
            .map(|e| e.target.clone()))
    }
}

/// Of several entries for one image, a named one (the first), else the first.
fn prefer_named<'a>(mut entries: impl Iterator<Item = &'a IndexEntry> + Clone) -> Descriptor {
    let first = entries.clone().next().map(|e| e.target.clone());
    match entries.find(|e| e.name.is_some()) {
        Some(e) => e.target.clone(),
        None => first.unwrap_or_else(|| unreachable!("called with at least one entry")),
    }
}

fn names_of(entries: &[IndexEntry], digest: &Digest) -> Vec<Reference> {
    entries
        .iter()
        .filter(|e| e.target.digest() == digest)
        .filter_map(|e| e.name.clone())
        .collect()
}

/// Points `name` at `target`. The image that had the name keeps its other names or stays as an
/// untagged entry; an untagged entry of `target` is replaced by the named one.
fn set_name(entries: &mut Vec<IndexEntry>, name: Reference, target: &Descriptor) {
    if let Some(pos) = entries.iter().position(|e| e.name.as_ref() == Some(&name)) {
        let old = entries.remove(pos);
        if old.target.digest() != target.digest()
            && !entries
                .iter()
                .any(|e| e.target.digest() == old.target.digest())
        {
            entries.push(IndexEntry {
                name: None,
                target: old.target,
            });
        }
    }
    entries.retain(|e| !(e.name.is_none() && e.target.digest() == target.digest()));
    entries.push(IndexEntry {
        name: Some(name),
        target: target.clone(),
    });
}
