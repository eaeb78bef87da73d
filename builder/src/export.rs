//! Exporting a built image out of the store, as BuildKit's exporters do: image archives (docker
//! or OCI, through the store's own `save`, so there is one archive writer) and the image's final
//! filesystem (a directory or a tar, whiteouts applied).

use std::io::{self, Write};
use std::path::Path;

use strata_codec::Compression;
use strata_snapshotter::{Diff, ExtractOptions, LayerOptions, WhiteoutMode, extract_layer};
use strata_store::{ArchiveFormat, Image, Reference, Store};

use crate::error::{IoContext, Result};
use crate::layers::Layer;

/// The references `save` is given for `image`: its names, else its manifest digest (an archive
/// of an unnamed image).
fn archive_refs(image: &Image, names: &[Reference]) -> Vec<String> {
    if names.is_empty() {
        vec![image.manifest_descriptor.digest().to_string()]
    } else {
        names.iter().map(|n| n.to_string()).collect()
    }
}

/// Writes `image` as a docker-archive (`docker load` format) or an OCI layout tar, named
/// `names` (each must name `image` in `store`).
pub fn write_archive(
    store: &Store,
    image: &Image,
    names: &[Reference],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<()> {
    Ok(store.save(&archive_refs(image, names), format, out)?)
}

/// Writes `image` as an OCI image layout directory `dir` (BuildKit's `type=oci,tar=false`).
pub fn write_oci_dir(store: &Store, image: &Image, names: &[Reference], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let (reader, writer) = io::pipe().ctx(|| "creating a pipe".into())?;
    let refs = archive_refs(image, names);
    std::thread::scope(|scope| {
        let saver = scope.spawn(move || store.save(&refs, ArchiveFormat::Oci, writer));
        let extracted = extract_layer(reader, dir, &extract_options());
        let saved = saver
            .join()
            .unwrap_or_else(|_| Err(strata_store::StoreError::Invalid("save panicked".into())));
        // The writer's error explains a reader's broken pipe: report it first.
        saved?;
        extracted?;
        Ok(())
    })
}

fn extract_options() -> ExtractOptions {
    ExtractOptions {
        whiteouts: WhiteoutMode::Apply,
        max_uncompressed_size: None,
    }
}

/// Unpacks `image`'s layers in order into `dir` (BuildKit's `type=local`): the final
/// filesystem, whiteouts applied, none left in it.
pub fn write_rootfs(store: &Store, image: &Image, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    for layer in Layer::of_image(image)? {
        let blob = store.open_blob(&layer.parsed_digest()?)?;
        extract_layer(io::BufReader::new(blob), dir, &extract_options())?;
    }
    Ok(())
}

/// Writes `image`'s final filesystem as one uncompressed tar (BuildKit's `type=tar`), mtimes
/// clamped to `source_date_epoch` when given. `scratch` is an empty directory to unpack into.
pub fn write_rootfs_tar(
    store: &Store,
    image: &Image,
    scratch: &Path,
    source_date_epoch: Option<i64>,
    out: impl Write + Send,
) -> Result<()> {
    write_rootfs(store, image, scratch)?;
    let options = LayerOptions {
        compression: Compression::None,
        source_date_epoch,
        ..LayerOptions::default()
    };
    strata_snapshotter::write_layer(&Diff::directory(scratch), &options, out)?;
    Ok(())
}
