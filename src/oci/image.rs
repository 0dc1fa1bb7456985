//! An image, wherever its blobs are kept: the manifest for this machine
//! chosen, its config read, its layers applied in order. Each layer is
//! either replayed from the layer cache or read from its blob, checked
//! against the blob's digest and size before what it built counts.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::DeserializeOwned;

use super::blob::Verifying;
use super::layer_cache::{LayerCache, Pending};
use super::{
    invalid, this_architecture, Descriptor, Image, ImageConfig, ImageIndex, ImageSource, LayerRead,
    Manifest, OciError, INDEX_TYPE, LAYER_TYPES, MANIFEST_TYPES,
};
use crate::objects::Staging;
use crate::tar_import::TarImport;

/// Index, manifest and config blobs are small JSON documents.
pub const JSON_LIMIT: u64 = 4 << 20;
/// Layers an image may have.
pub const MAX_LAYERS: usize = 128;

/// Where an image's blobs are read from.
pub trait Blobs {
    /// How messages name the blob `digest`.
    fn name(&self, digest: &str) -> String;
    /// The manifest or index `desc` names.
    fn manifest(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError>;
    /// The config or layer blob `desc` names.
    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError>;
    /// Whether blobs are local files, cheap to read twice: a layer is
    /// then checked whole before it is unpacked, so that a compression
    /// bomb with a wrong digest stages nothing.
    fn local(&self) -> bool {
        false
    }
}

/// Read the image `top` (a manifest or an index) names, found as
/// `reference`.
pub fn read(
    reference: &str,
    blobs: &dyn Blobs,
    top: &Descriptor,
    staging: Option<&Staging>,
    cache: Option<&LayerCache>,
) -> Result<Image, OciError> {
    check_digest(&top.digest)?;
    let manifest_desc = resolve(blobs, top)?;
    check_digest(&manifest_desc.digest)?;
    let manifest: Manifest = json(blobs, &manifest_desc, true)?;
    check_digest(&manifest.config.digest)?;
    let config: ImageConfig = json(blobs, &manifest.config, false)?;
    let source = ImageSource {
        reference: reference.to_string(),
        manifest: manifest_desc.digest.clone(),
        labels: config.config.and_then(|c| c.labels).unwrap_or_default(),
    };
    read_layers(source, blobs, &manifest.layers, staging, cache)
}

/// Apply `layers` in order into a tree.
pub fn read_layers(
    source: ImageSource,
    blobs: &dyn Blobs,
    layers: &[Descriptor],
    staging: Option<&Staging>,
    cache: Option<&LayerCache>,
) -> Result<Image, OciError> {
    // Every entry of every layer costs memory until the end, even if a
    // later layer deletes it: layers are bounded (Docker's limit is
    // 127), and entries in all by the tar import.
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "{}: {} layers (at most {MAX_LAYERS})",
            blobs.name(&source.manifest),
            layers.len()
        )));
    }
    for layer in layers {
        check_digest(&layer.digest)?;
    }
    let mut import = TarImport::new(staging);
    let mut pending = Vec::new();
    let mut read = Vec::new();
    for layer in layers {
        let name = blobs.name(&layer.digest);
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(invalid(format!(
                "{name}: layer {} is of type {}, not a tar layer",
                layer.digest,
                layer.media_type.escape_debug()
            )));
        }
        if let Some(ops) = cache.and_then(|c| c.load(&layer.digest)) {
            import.replay(&ops, Path::new(&name))?;
            read.push(LayerRead {
                digest: layer.digest.clone(),
                cached: true,
            });
            continue;
        }
        pending.extend(apply_layer(
            &mut import,
            blobs,
            layer,
            &name,
            staging,
            cache,
        )?);
        read.push(LayerRead {
            digest: layer.digest.clone(),
            cached: false,
        });
    }
    let tree = import.finish(Path::new(&source.reference))?;
    Ok(Image {
        tree,
        source,
        layers: read,
        pending,
    })
}

/// Read one layer from its blob into `import`, recording it into the
/// cache when there is one.
fn apply_layer(
    import: &mut TarImport,
    blobs: &dyn Blobs,
    layer: &Descriptor,
    name: &str,
    staging: Option<&Staging>,
    cache: Option<&LayerCache>,
) -> Result<Option<Pending>, OciError> {
    let cache_err = |e: std::io::Error| invalid(format!("layer cache: {e}"));
    let mismatch = |e: String| invalid(format!("{name}: layer {}: {e}", layer.digest));
    // A layer is checked whole before it is unpacked, so that a
    // compression bomb under a wrong digest stages nothing: a local blob
    // is read twice; one from the network is kept in a scratch file on
    // the store's filesystem (as large as its descriptor says, at most).
    let file: Box<dyn Read + '_> = if blobs.local() {
        Verifying::new(blobs.blob(layer)?, layer.size)
            .finish(&layer.digest)
            .map_err(mismatch)?;
        blobs.blob(layer)?
    } else {
        let spool_err = |e: std::io::Error| invalid(format!("{name}: a scratch copy: {e}"));
        let mut spool = match staging {
            Some(s) => s.scratch_file(),
            None => tempfile::tempfile(),
        }
        .map_err(spool_err)?;
        let mut fetched = Verifying::new(blobs.blob(layer)?, layer.size);
        std::io::copy(&mut fetched, &mut spool).map_err(|e| invalid(format!("{name}: {e}")))?;
        fetched.finish(&layer.digest).map_err(mismatch)?;
        spool.seek(SeekFrom::Start(0)).map_err(spool_err)?;
        Box::new(spool)
    };
    let mut recorder = cache
        .map(|c| c.record(&layer.digest))
        .transpose()
        .map_err(cache_err)?;
    let mut reader = BufReader::with_capacity(1 << 20, Verifying::new(file, layer.size));
    let applied = import.apply_recorded(
        &mut reader,
        Path::new(name),
        true,
        |op| match &mut recorder {
            Some(r) => r.write(op).map_err(|e| format!("layer cache: {e}")),
            None => Ok(()),
        },
    );
    // Nothing built from a layer counts until all of it matched; a blob
    // that does not match is the cause of whatever else failed.
    reader
        .into_inner()
        .finish(&layer.digest)
        .map_err(mismatch)?;
    applied?;
    recorder.map(|r| r.finish()).transpose().map_err(cache_err)
}

/// Digests are `sha256:` and 64 hex digits: they name files and URLs,
/// and are printed.
pub fn check_digest(digest: &str) -> Result<(), OciError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(invalid(format!(
        "a descriptor's digest '{}' is not sha256:<64 hex digits>",
        digest.escape_debug()
    )))
}

/// A JSON blob (or manifest), checked against its descriptor, then parsed.
fn json<T: DeserializeOwned>(
    blobs: &dyn Blobs,
    desc: &Descriptor,
    manifest: bool,
) -> Result<T, OciError> {
    let name = blobs.name(&desc.digest);
    if desc.size > JSON_LIMIT {
        return Err(invalid(format!(
            "{name}: a JSON document of {} bytes (at most {JSON_LIMIT})",
            desc.size
        )));
    }
    let reader = if manifest {
        blobs.manifest(desc)?
    } else {
        blobs.blob(desc)?
    };
    let mut reader = Verifying::new(reader, desc.size);
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    reader
        .finish(&desc.digest)
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{name}: {e}")))
}

/// The image manifest `desc` leads to: itself, or in an image index the
/// one for Linux on this machine's architecture.
fn resolve(blobs: &dyn Blobs, desc: &Descriptor) -> Result<Descriptor, OciError> {
    if MANIFEST_TYPES.contains(&desc.media_type.as_str()) {
        return Ok(desc.clone());
    }
    if !INDEX_TYPES.contains(&desc.media_type.as_str()) {
        return Err(invalid(format!(
            "{}: of type {}, not an image manifest or index",
            blobs.name(&desc.digest),
            desc.media_type.escape_debug()
        )));
    }
    let index: ImageIndex = json(blobs, desc, true)?;
    let arch = this_architecture();
    let for_here = |m: &&Descriptor| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    };
    match index.manifests.iter().find(for_here) {
        Some(m) if MANIFEST_TYPES.contains(&m.media_type.as_str()) => Ok(m.clone()),
        Some(m) => Err(invalid(format!(
            "{}: the entry for linux/{arch} is of type {}, not an image manifest (nested indexes are not read)",
            blobs.name(&desc.digest),
            m.media_type.escape_debug()
        ))),
        None => {
            let platforms: Vec<String> = index
                .manifests
                .iter()
                .map(|m| match &m.platform {
                    Some(p) => format!("{}/{}", p.os, p.architecture).escape_debug().to_string(),
                    None => "(no platform)".into(),
                })
                .collect();
            Err(invalid(format!(
                "{}: no image for linux/{arch} in the index (it has: {})",
                blobs.name(&desc.digest),
                platforms.join(", ")
            )))
        }
    }
}

/// Media types of an image index: OCI's and Docker's manifest list.
const INDEX_TYPES: [&str; 2] = [
    INDEX_TYPE,
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
