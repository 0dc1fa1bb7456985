//! `docker-archive:FILE[:NAME:TAG]`: what `docker save` and skopeo
//! write. `manifest.json` lists each image's config and layer files;
//! the config is named by its own digest (`HEX.json` or
//! `blobs/sha256/HEX`), and its `rootfs.diff_ids` give each layer's
//! digest, uncompressed as the archive holds them. Both are checked
//! before what they built is used.

use std::io::Read;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::files::Files;
use super::image::{self, Blobs, JSON_LIMIT};
use super::layer_cache::LayerCache;
use super::{invalid, Descriptor, Image, ImageConfig, ImageSource, OciError};
use crate::objects::Staging;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

pub fn read(
    reference: &str,
    files: &Files,
    tag: Option<&str>,
    staging: Option<&Staging>,
    cache: Option<&LayerCache>,
) -> Result<Image, OciError> {
    let manifest_name = files.name("manifest.json");
    let entries: Vec<Entry> = serde_json::from_slice(&read_small(files, "manifest.json")?)
        .map_err(|e| invalid(format!("{manifest_name}: {e}")))?;
    let tags = || {
        let all: Vec<String> = entries
            .iter()
            .flat_map(|e| &e.repo_tags)
            .map(|t| t.escape_debug().to_string())
            .collect();
        all.join(", ")
    };
    let entry = match tag {
        Some(tag) => entries
            .iter()
            .find(|e| e.repo_tags.iter().any(|t| normalized(t) == normalized(tag)))
            .ok_or_else(|| {
                invalid(format!(
                    "{manifest_name}: no image tagged '{}' (tags: {})",
                    tag.escape_debug(),
                    tags()
                ))
            })?,
        None => match &entries[..] {
            [only] => only,
            [] => return Err(invalid(format!("{manifest_name}: no image in it"))),
            _ => {
                return Err(invalid(format!(
                    "{manifest_name}: several images: give NAME:TAG (tags: {})",
                    tags()
                )))
            }
        },
    };

    // The config is named by its digest: that is the image's id.
    let config_name = entry.config.trim_start_matches("./");
    let hex = config_name
        .strip_suffix(".json")
        .or_else(|| config_name.strip_prefix("blobs/sha256/"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| {
            invalid(format!(
                "{manifest_name}: the config {} is not named by its sha256 digest",
                config_name.escape_debug()
            ))
        })?;
    let bytes = read_small(files, config_name)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != hex {
        return Err(invalid(format!(
            "{}: its content has digest sha256:{actual}",
            files.name(config_name)
        )));
    }
    let config: ImageConfig = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("{}: {e}", files.name(config_name))))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid(format!(
            "{}: {} layer digests for the {} layers {manifest_name} lists",
            files.name(config_name),
            diff_ids.len(),
            entry.layers.len()
        )));
    }
    let mut layers = Vec::new();
    let mut paths = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
        let path = path.trim_start_matches("./").to_string();
        layers.push(Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: diff_id,
            size: files.size(&path)?,
            annotations: Default::default(),
            platform: None,
        });
        paths.push(path);
    }
    let source = ImageSource {
        reference: reference.to_string(),
        manifest: format!("sha256:{hex}"),
        labels: config.config.and_then(|c| c.labels).unwrap_or_default(),
    };
    let archive = Archive {
        files,
        layers: layers.iter().map(|l| l.digest.clone()).zip(paths).collect(),
    };
    image::read_layers(source, &archive, &layers, staging, cache)
}

/// A docker reference as docker normalizes it: `debian:12` is
/// `docker.io/library/debian:12`, `os/x:1` is `docker.io/os/x:1`.
fn normalized(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_host = reference.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    match (has_host, reference.contains('/')) {
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

fn read_small(files: &Files, rel: &str) -> Result<Vec<u8>, OciError> {
    let mut bytes = Vec::new();
    files
        .open(rel)?
        .take(JSON_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("{}: {e}", files.name(rel))))?;
    if bytes.len() as u64 > JSON_LIMIT {
        return Err(invalid(format!(
            "{}: larger than {JSON_LIMIT} bytes",
            files.name(rel)
        )));
    }
    Ok(bytes)
}

struct Archive<'a> {
    files: &'a Files,
    /// Layer digest (uncompressed) to its member.
    layers: std::collections::HashMap<String, String>,
}

impl Blobs for Archive<'_> {
    fn name(&self, digest: &str) -> String {
        match self.layers.get(digest) {
            Some(path) => self.files.name(path),
            None => format!("{} {}", self.files.name(""), digest.escape_debug()),
        }
    }

    fn manifest(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        Err(invalid(format!(
            "{}: not a manifest",
            self.name(&desc.digest)
        )))
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        let path = self
            .layers
            .get(&desc.digest)
            .ok_or_else(|| invalid(format!("{}: not a layer", self.name(&desc.digest))))?;
        self.files.open(path)
    }

    fn local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn references_are_normalized_as_docker_does() {
        assert_eq!(normalized("debian:12"), "docker.io/library/debian:12");
        assert_eq!(normalized("os/x:1"), "docker.io/os/x:1");
        assert_eq!(normalized("docker.io/os/x:1"), "docker.io/os/x:1");
        assert_eq!(normalized("localhost:5000/x:1"), "localhost:5000/x:1");
    }
}
