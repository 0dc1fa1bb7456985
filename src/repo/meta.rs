//! The metadata recorded beside each commit's dumpfile.

use serde::{Deserialize, Serialize};

use crate::tree::{FileType, Tree, ROOT};

/// `meta.json` in a commit's git tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMeta {
    /// Format version of the composefs image.
    pub format_version: u32,
    /// fs-verity digest of the composefs image, hex.
    pub image_digest: String,
    /// Kernel versions found as directories under usr/lib/modules.
    pub kernels: Vec<String>,
    /// Number of inodes in the tree.
    pub entries: u64,
    /// Total bytes of regular file content.
    pub total_size: u64,
    /// Bytes of the commit's dumpfile, so a pull can bound it before it
    /// is inflated (0 in commits made before it was recorded).
    #[serde(default)]
    pub dump_size: u64,
    /// The OCI image the tree was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_source: Option<crate::oci::ImageSource>,
}

impl CommitMeta {
    pub fn describe(
        tree: &Tree,
        dump_size: u64,
        image_digest: &[u8; 32],
        format_version: u32,
    ) -> CommitMeta {
        let mut entries = 0;
        let mut total_size = 0;
        tree.walk(|_, id, hardlink| {
            if !hardlink {
                entries += 1;
                if tree.inodes[id].file_type() == Some(FileType::Regular) {
                    total_size += tree.inodes[id].size;
                }
            }
        });
        CommitMeta {
            format_version,
            image_digest: hex::encode(image_digest),
            kernels: kernels(tree),
            entries,
            total_size,
            dump_size,
            image_source: None,
        }
    }
}

fn kernels(tree: &Tree) -> Vec<String> {
    let mut dir = ROOT;
    for name in ["usr", "lib", "modules"] {
        match tree.inodes[dir].entries.get(name.as_bytes()) {
            Some(e) if tree.inodes[e.inode].is_dir() => dir = e.inode,
            _ => return Vec::new(),
        }
    }
    tree.inodes[dir]
        .entries
        .iter()
        .filter(|(_, e)| tree.inodes[e.inode].is_dir())
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .collect()
}
