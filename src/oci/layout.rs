//! An OCI image layout on disk (`oci:DIR[:TAG]`): `oci-layout`,
//! `index.json` naming manifests by tag (`org.opencontainers.image.ref.name`),
//! and blobs under `blobs/ALG/HEX`.

use std::io::Read;

use serde::de::DeserializeOwned;

use super::files::Files;
use super::image::{self, Blobs, JSON_LIMIT};
use super::layer_cache::LayerCache;
use super::{invalid, Descriptor, Image, ImageIndex, OciError};
use crate::objects::Staging;

/// Where a tag is kept in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn read(
    reference: &str,
    files: &Files,
    tag: Option<&str>,
    staging: Option<&Staging>,
    cache: Option<&LayerCache>,
) -> Result<Image, OciError> {
    let version: serde_json::Value = read_json_file(files, "oci-layout")?;
    if version.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(invalid(format!(
            "{}: not an OCI image layout 1.0.0",
            files.name("oci-layout")
        )));
    }
    let index: ImageIndex = read_json_file(files, "index.json")?;
    let chosen = choose_tag(&index.manifests, tag)
        .map_err(|e| invalid(format!("{}: {e}", files.name("index.json"))))?;
    image::read(reference, &Layout { files }, chosen, staging, cache)
}

/// The descriptor of `tag` (else of the only image) in a layout's index.
fn choose_tag<'d>(
    manifests: &'d [Descriptor],
    tag: Option<&str>,
) -> Result<&'d Descriptor, String> {
    let tags = || {
        manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME))
            .map(|t| t.escape_debug().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match tag {
        Some(tag) => manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
            .ok_or_else(|| {
                format!(
                    "no image tagged '{}' (tags: {})",
                    tag.escape_debug(),
                    tags()
                )
            }),
        None => match manifests {
            [only] => Ok(only),
            [] => Err("no image in it".into()),
            _ => Err(format!("several images: give a tag (tags: {})", tags())),
        },
    }
}

struct Layout<'a> {
    files: &'a Files,
}

impl Layout<'_> {
    /// Where a blob is kept, relative to the layout; only sha256 digests
    /// of 64 hex digits.
    fn path(&self, digest: &str) -> Result<String, OciError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| {
                invalid(format!(
                    "{}: digest '{}' is not sha256:<64 hex digits>",
                    self.files.name(""),
                    digest.escape_debug()
                ))
            })?;
        Ok(format!("blobs/sha256/{hex}"))
    }
}

impl Blobs for Layout<'_> {
    fn name(&self, digest: &str) -> String {
        match self.path(digest) {
            Ok(rel) => self.files.name(&rel),
            Err(_) => format!("{} {}", self.files.name(""), digest.escape_debug()),
        }
    }

    fn manifest(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        self.blob(desc)
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        self.files.open(&self.path(&desc.digest)?)
    }

    fn local(&self) -> bool {
        true
    }
}

fn read_json_file<T: DeserializeOwned>(files: &Files, rel: &str) -> Result<T, OciError> {
    let name = files.name(rel);
    let mut bytes = Vec::new();
    files
        .open(rel)?
        .take(JSON_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    if bytes.len() as u64 > JSON_LIMIT {
        return Err(invalid(format!("{name}: larger than {JSON_LIMIT} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::MAX_LAYERS;
    use sha2::{Digest as _, Sha256};
    use std::io::Write;
    use std::path::Path;

    fn put_blob(dir: &Path, bytes: &[u8]) -> String {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// A layout with one image tagged v1 of one gzip layer holding
    /// `etc/hello`; the layer's digest.
    fn make_layout(dir: &Path) -> String {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(6);
        b.append_data(&mut h, "etc/hello", &b"hello\n"[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b.into_inner().unwrap()).unwrap();
        let layer = gz.finish().unwrap();
        let layer_digest = put_blob(dir, &layer);
        let config = br#"{"config":{"Labels":{"version":"1"}}}"#;
        let config_digest = put_blob(dir, config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let manifest_digest = put_blob(dir, manifest.as_bytes());
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
                manifest.len()
            ),
        )
        .unwrap();
        layer_digest
    }

    fn refusal(dir: &Path, tag: &str) -> String {
        match read(
            "oci:x",
            &Files::Dir(dir.to_path_buf()),
            Some(tag),
            None,
            None,
        ) {
            Ok(_) => panic!("tag {tag} was read"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_layout_is_read_and_bad_blobs_are_refused_naming_them() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let layer = make_layout(dir);
        let Ok(image) = read(
            "oci:x",
            &Files::Dir(dir.to_path_buf()),
            Some("v1"),
            None,
            None,
        ) else {
            panic!("{}", refusal(dir, "v1"));
        };
        assert!(image.tree.lookup(b"etc/hello").is_some());
        assert_eq!(
            image.source.labels.get("version").map(String::as_str),
            Some("1")
        );
        assert!(image.source.manifest.starts_with("sha256:"));

        // The same layout as an oci-archive, read in place.
        let archive = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        {
            let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            b.append_dir_all(".", dir).unwrap();
            b.finish().unwrap();
        }
        let files = Files::archive(&archive).unwrap_or_else(|e| panic!("{e}"));
        match read("oci-archive:x", &files, None, None, None) {
            Ok(from_archive) => {
                assert_eq!(from_archive.source.manifest, image.source.manifest);
                assert!(from_archive.tree.lookup(b"etc/hello").is_some());
            }
            Err(e) => panic!("{e}"),
        }

        let err = refusal(dir, "v2");
        assert!(err.contains("no image tagged 'v2' (tags: v1)"), "{err}");

        // A layer blob one byte short, then a link in its place.
        let path = dir.join("blobs/sha256").join(&layer["sha256:".len()..]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = refusal(dir, "v1");
        assert!(err.contains(&layer), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.join("elsewhere"), &bytes).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).unwrap();
        let err = refusal(dir, "v1");
        assert!(err.contains(&layer["sha256:".len()..]), "{err}");

        // A digest that is not 64 hex digits cannot name a path.
        let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
        let start = index.find("sha256:").unwrap();
        let bad = format!(
            "{}sha256:../../../etc/passwd{}",
            &index[..start],
            &index[start + 71..]
        );
        std::fs::write(dir.join("index.json"), bad).unwrap();
        let err = refusal(dir, "v1");
        assert!(err.contains("is not sha256:<64 hex digits>"), "{err}");
    }

    #[test]
    fn layers_are_bounded() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let layer = make_layout(dir);
        let size = std::fs::metadata(dir.join("blobs/sha256").join(&layer["sha256:".len()..]))
            .unwrap()
            .len();
        let config = put_blob(dir, b"{}");
        let one = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{size}}}"#
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
            vec![one; MAX_LAYERS + 1].join(",")
        );
        let digest = put_blob(dir, manifest.as_bytes());
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{}}}]}}"#,
                manifest.len()
            ),
        )
        .unwrap();
        let err = match read("oci:x", &Files::Dir(dir.to_path_buf()), None, None, None) {
            Ok(_) => panic!("129 layers were read"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("129 layers (at most 128)"), "{err}");
    }
}
