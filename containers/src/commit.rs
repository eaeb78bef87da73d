//! `commit`: a container's changes become one more layer on its image.

use oci_spec::image::Descriptor;
use serde_json::{Value, json};
use strata_codec::Compression;
use strata_snapshotter::LayerOptions;
use strata_store::{Image, LayerRecord, Reference};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::registry::Containers;

/// What `commit` writes besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name (untagged when `None`).
    pub name: Option<Reference>,
    /// `-a`: the image's `author`.
    pub author: Option<String>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// Replaces the container's config in the image (`--change` applied by the caller).
    pub config: Option<Value>,
}

impl Containers {
    /// Writes the container's changes (its snapshot's diff against the image) as a gzip layer
    /// and creates an image from the parent image's config with the container's config, the new
    /// diffID and a history entry. A running container is committed as it is at that moment.
    pub fn commit(&self, name_or_id: &str, options: &CommitOptions) -> Result<Image> {
        let record = self.get(name_or_id)?;
        let config = &record.config;
        let store = self.store();
        let parent = store.resolve(&config.image_id)?;
        let lease = store.lease()?;
        let mut writer = store.blob_writer(&lease)?;
        let layer_options = LayerOptions {
            compression: Compression::Gzip,
            ..LayerOptions::default()
        };
        // A missing parent is found before anything is written.
        let layer = self.on_rootfs(config, |s| {
            s.write_layer(&config.snapshot, &layer_options, &mut writer)
        })?;
        let blob = writer.commit()?;
        let media_type = Compression::Gzip
            .oci_layer_media_type()
            .unwrap_or("application/vnd.oci.image.layer.v1.tar+gzip");
        store.record_layer(&LayerRecord {
            digest: blob.digest.clone(),
            diff_id: layer.diff_id.clone(),
            media_type: media_type.to_string(),
            size: blob.size,
            uncompressed_size: Some(layer.uncompressed_size),
        })?;

        let created = fsutil::now();
        let mut image_config = parent.config_json.clone();
        let Some(object) = image_config.as_object_mut() else {
            return Err(Error::Invalid(format!(
                "image {} has a config that is not an object",
                parent.id()
            )));
        };
        object.insert("created".into(), json!(created));
        let container_config = match &options.config {
            Some(c) => c.clone(),
            None => serde_json::to_value(&config.config)
                .map_err(|e| Error::Invalid(format!("encoding the container's config: {e}")))?,
        };
        object.insert("config".into(), container_config);
        object.insert("container".into(), json!(config.id));
        match &options.author {
            Some(a) => object.insert("author".into(), json!(a)),
            None => object.remove("author"),
        };
        let diff_ids = object
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}))
            .get_mut("diff_ids")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| Error::Invalid("the image config has no rootfs.diff_ids".into()))?;
        diff_ids.push(json!(layer.diff_id.to_string()));
        let mut entry = json!({"created": created, "created_by": config.command_line()});
        if let Some(a) = &options.author {
            entry["author"] = json!(a);
        }
        if let Some(m) = &options.message {
            entry["comment"] = json!(m);
        }
        let history = object.entry("history").or_insert_with(|| json!([]));
        match history.as_array_mut() {
            Some(h) => h.push(entry),
            None => *history = json!([entry]),
        }
        let mut layers: Vec<Descriptor> = parent.manifest.layers().clone();
        layers.push(Descriptor::new(
            media_type.into(),
            blob.size,
            blob.digest.clone(),
        ));
        let names: Vec<Reference> = options.name.iter().cloned().collect();
        Ok(store.create_image(&lease, &image_config, &layers, &names)?)
    }
}
