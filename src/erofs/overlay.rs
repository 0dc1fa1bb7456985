//! The rewrite that turns a tree into what overlayfs needs in a composefs
//! lower layer: the tree's own `trusted.overlay.*` xattrs escaped, metacopy
//! and redirect xattrs on external files, whiteouts escaped, the root made
//! opaque and given the 256 `00`..`ff` whiteout stubs.

use crate::tree::{DirEntry, Inode, InodeId, Tree, ROOT, S_IFCHR, S_IFMT, S_IFREG};

pub const OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";
pub const ESCAPED_PREFIX: &[u8] = b"trusted.overlay.overlay.";
pub const METACOPY: &[u8] = b"trusted.overlay.metacopy";
pub const REDIRECT: &[u8] = b"trusted.overlay.redirect";
pub const OPAQUE: &[u8] = b"trusted.overlay.opaque";
pub const ESCAPED_WHITEOUT: &[u8] = b"trusted.overlay.overlay.whiteout";
pub const ESCAPED_WHITEOUTS: &[u8] = b"trusted.overlay.overlay.whiteouts";
pub const ESCAPED_OPAQUE: &[u8] = b"trusted.overlay.overlay.opaque";
pub const USER_WHITEOUT: &[u8] = b"user.overlay.whiteout";
pub const USER_WHITEOUTS: &[u8] = b"user.overlay.whiteouts";
pub const USER_OPAQUE: &[u8] = b"user.overlay.opaque";

/// fs-verity hash algorithm number of SHA-256 in a metacopy xattr.
const METACOPY_SHA256: u8 = 1;

/// The format version to write: raised from `min` towards `max` only when
/// the tree needs it (whiteouts are handled better from version 1).
pub fn choose_version(tree: &Tree, order: &[InodeId], min: u32, max: u32) -> u32 {
    let max = max.max(min);
    if min < 1 && max >= 1 && order.iter().any(|&id| tree.inodes[id].is_whiteout()) {
        1
    } else {
        min
    }
}

/// Rewrite `tree` in place for use as an overlayfs lower layer. `order`
/// lists the reachable inodes, parents first; `parent` maps each to the
/// directory holding its primary entry.
pub fn rewrite(tree: &mut Tree, order: &[InodeId], parent: &[InodeId], version: u32) {
    for &id in order {
        escape_overlay_xattrs(&mut tree.inodes[id]);
        add_metacopy(&mut tree.inodes[id]);
        if tree.inodes[id].is_whiteout() {
            let inode = &mut tree.inodes[id];
            inode.size = 0;
            inode.mode = S_IFREG | (inode.mode & !S_IFMT);
            inode.xattrs.insert(ESCAPED_WHITEOUT.to_vec(), Vec::new());
            inode.xattrs.insert(USER_WHITEOUT.to_vec(), Vec::new());
            let dir = &mut tree.inodes[parent[id]];
            dir.xattrs.insert(ESCAPED_WHITEOUTS.to_vec(), Vec::new());
            dir.xattrs.insert(USER_WHITEOUTS.to_vec(), Vec::new());
            if version >= 1 {
                dir.xattrs.insert(ESCAPED_OPAQUE.to_vec(), b"x".to_vec());
                dir.xattrs.insert(USER_OPAQUE.to_vec(), b"x".to_vec());
            }
        }
    }
    tree.inodes[ROOT]
        .xattrs
        .insert(OPAQUE.to_vec(), b"y".to_vec());
    add_whiteout_stubs(tree);
}

/// `trusted.overlay.X` becomes `trusted.overlay.overlay.X`, which overlayfs
/// shows to its users as `trusted.overlay.X` again.
fn escape_overlay_xattrs(inode: &mut Inode) {
    if !inode.xattrs.keys().any(|k| k.starts_with(OVERLAY_PREFIX)) {
        return;
    }
    let xattrs = std::mem::take(&mut inode.xattrs);
    inode.xattrs = xattrs
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(OVERLAY_PREFIX) {
            Some(rest) => ([ESCAPED_PREFIX, rest].concat(), v),
            None => (k, v),
        })
        .collect();
}

/// External files (content not in the image) get a metacopy xattr with
/// their digest, and a redirect to their object when they have a payload.
fn add_metacopy(inode: &mut Inode) {
    if inode.mode & S_IFMT != S_IFREG || inode.size == 0 || inode.content.is_some() {
        return;
    }
    let value = match &inode.digest {
        Some(d) => {
            let mut v = vec![0, 36, 0, METACOPY_SHA256];
            v.extend_from_slice(d);
            v
        }
        None => Vec::new(),
    };
    inode.xattrs.insert(METACOPY.to_vec(), value);
    if let Some(payload) = inode.payload.as_deref().filter(|p| !p.is_empty()) {
        inode
            .xattrs
            .insert(REDIRECT.to_vec(), [b"/", payload].concat());
    }
}

/// Overlayfs with a data-only lower layer looks up `00`..`ff` in the root;
/// whiteouts there keep those lookups from reaching the layer below.
fn add_whiteout_stubs(tree: &mut Tree) {
    let root = tree.inodes[ROOT].clone();
    let selinux = root.xattrs.get(b"security.selinux".as_slice()).cloned();
    for i in 0..=255u8 {
        let name = format!("{i:02x}").into_bytes();
        if root.entries.contains_key(&name) {
            continue;
        }
        let mut stub = Inode::new(S_IFCHR | 0o644);
        stub.uid = root.uid;
        stub.gid = root.gid;
        stub.mtime = root.mtime;
        if let Some(label) = &selinux {
            stub.xattrs
                .insert(b"security.selinux".to_vec(), label.clone());
        }
        let id = tree.add_inode(stub);
        tree.inodes[ROOT].entries.insert(
            name,
            DirEntry {
                inode: id,
                hardlink: false,
            },
        );
    }
}
