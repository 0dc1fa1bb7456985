//! Differences between two trees: paths added, removed and changed, with
//! content digests and the metadata that changed.

use std::collections::BTreeMap;

use crate::tree::{InodeId, Tree};

/// One difference, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Changed {
        /// Old and new content, as digests (or symlink targets).
        content: Option<(String, String)>,
        /// Names of the metadata that changed.
        metadata: Vec<&'static str>,
    },
}

/// What changed from `a` to `b`, in path order.
pub fn diff(a: &Tree, b: &Tree) -> Vec<Change> {
    let (pa, pb) = (paths(a), paths(b));
    let mut out = Vec::new();
    for (path, &ia) in &pa {
        match pb.get(path) {
            None => out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Removed,
            }),
            Some(&ib) => {
                let (x, y) = (&a.inodes[ia], &b.inodes[ib]);
                let content =
                    (content_key(x) != content_key(y)).then(|| (content_key(x), content_key(y)));
                let mut metadata = Vec::new();
                if x.mode != y.mode {
                    metadata.push("mode");
                }
                if x.uid != y.uid || x.gid != y.gid {
                    metadata.push("owner");
                }
                if x.mtime != y.mtime {
                    metadata.push("mtime");
                }
                if x.nlink != y.nlink && !x.is_dir() {
                    metadata.push("links");
                }
                if x.xattrs != y.xattrs {
                    metadata.push("xattrs");
                }
                if x.rdev != y.rdev {
                    metadata.push("rdev");
                }
                if content.is_some() || !metadata.is_empty() {
                    out.push(Change {
                        path: path.clone(),
                        kind: ChangeKind::Changed { content, metadata },
                    });
                }
            }
        }
    }
    for path in pb.keys() {
        if !pa.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Added,
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

fn paths(tree: &Tree) -> BTreeMap<Vec<u8>, InodeId> {
    let mut out = BTreeMap::new();
    tree.walk(|components, id, _| {
        let mut p = Vec::new();
        for c in components {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        out.insert(p, id);
    });
    out
}

/// What identifies an inode's content for comparison.
fn content_key(inode: &crate::tree::Inode) -> String {
    if let Some(d) = &inode.digest {
        return hex::encode(d);
    }
    if let Some(c) = &inode.content {
        return hex::encode(crate::fsverity::digest_bytes(c));
    }
    match (&inode.payload, inode.file_type()) {
        (Some(p), Some(crate::tree::FileType::Symlink)) => format!("-> {}", p.escape_ascii()),
        _ if inode.is_dir() => "directory".into(),
        _ => format!("{:?}", inode.file_type()).to_lowercase(),
    }
}
