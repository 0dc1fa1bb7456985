//! OCI images as the source of a commit: an image's layers applied in
//! order (whiteouts and opaque directories included) into one tree, file
//! contents streamed into the store as each layer is read, every blob
//! checked against the digest and size its descriptor gives before the
//! tree built from it is used. Transports, as skopeo names them:
//! `oci:DIR[:TAG]` (an image layout, `layout.rs`),
//! `oci-archive:FILE[:TAG]` (a tar of one, read in place: `files.rs`),
//! `docker-archive:FILE[:NAME:TAG]` (what `docker save` writes) and `docker://HOST/NAME[:TAG|@DIGEST]` (a registry, `registry.rs`).
//! Layers seen before are replayed from the layer cache
//! (`layer_cache.rs`) instead of being read or fetched again.

mod blob;
mod docker_archive;
mod files;
mod image;
mod layer_cache;
mod layout;
mod registry;

pub use layer_cache::{LayerCache, Pending};
pub use registry::RegistryOptions;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objects::Staging;
use crate::tar_import::TarError;
use crate::tree::Tree;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// What is wrong, naming the file or blob.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Layer(#[from] TarError),
}

fn invalid(what: String) -> OciError {
    OciError::Invalid(what)
}

/// What a commit records of the image it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    /// The reference it was read by.
    pub reference: String,
    /// The manifest's digest (`sha256:…`).
    pub manifest: String,
    /// The image config's labels (`org.opencontainers.image.version`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An image read into a tree.
pub struct Image {
    pub tree: Tree,
    pub source: ImageSource,
    /// Its layers, in order, and whether each came from the cache.
    pub layers: Vec<LayerRead>,
    /// Cache records of the layers read, to put in place once their
    /// contents are committed.
    pub pending: Vec<Pending>,
}

pub struct LayerRead {
    pub digest: String,
    pub cached: bool,
}

/// Where to read an image from, and how.
#[derive(Default)]
pub struct ReadOptions<'a> {
    /// Layers seen before.
    pub cache: Option<&'a LayerCache<'a>>,
    pub registry: RegistryOptions,
}

/// Read the image `reference` names; contents larger than the inline
/// threshold are staged into `staging`.
pub fn read(
    reference: &str,
    staging: Option<&Staging>,
    options: &ReadOptions,
) -> Result<Image, OciError> {
    let cache = options.cache;
    if let Some(rest) = reference.strip_prefix("oci:") {
        let (dir, tag) = split_tag(rest);
        return layout::read(
            reference,
            &files::Files::Dir(dir.into()),
            tag,
            staging,
            cache,
        );
    }
    if let Some(rest) = reference.strip_prefix("oci-archive:") {
        let (file, tag) = split_tag(rest);
        let files = files::Files::archive(std::path::Path::new(file))?;
        return layout::read(reference, &files, tag, staging, cache);
    }
    if let Some(rest) = reference.strip_prefix("docker-archive:") {
        let (file, tag) = split_tag(rest);
        let files = files::Files::archive(std::path::Path::new(file))?;
        return docker_archive::read(reference, &files, tag, staging, cache);
    }
    if let Some(rest) = reference.strip_prefix("docker://") {
        let image = registry::ImageRef::parse(rest).map_err(OciError::Invalid)?;
        let registry = registry::Registry::new(image, &options.registry)?;
        let top = registry.top()?;
        return image::read(reference, &registry, &top, staging, cache);
    }
    Err(OciError::Invalid(format!(
        "{}: not an image reference this version reads (oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], docker://HOST/NAME[:TAG|@DIGEST])",
        reference.escape_debug()
    )))
}

/// `PATH[:TAG]`: as skopeo reads it, the tag is what follows the first
/// colon (so a path holding a colon cannot be named; a tag may hold one).
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(':') {
        Some((path, tag)) if !path.is_empty() => (path, (!tag.is_empty()).then_some(tag)),
        _ => (rest, None),
    }
}

// The parts of the image specification's JSON that are read.

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// An image index (`index.json` of a layout, or a multi-platform image).
#[derive(Debug, Deserialize)]
struct ImageIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ConfigSection>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    /// Digests of the layers uncompressed, in order.
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigSection {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const LAYER_TYPES: [&str; 7] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// The architecture name OCI uses for this machine's.
fn this_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_follow_the_first_colon() {
        assert_eq!(split_tag("/srv/img:v1"), ("/srv/img", Some("v1")));
        assert_eq!(split_tag("/srv/img"), ("/srv/img", None));
        assert_eq!(split_tag("/srv/img:a:b/c"), ("/srv/img", Some("a:b/c")));
        assert_eq!(split_tag("/srv/img:"), ("/srv/img", None));
        assert_eq!(split_tag(":x"), (":x", None));
    }
}
