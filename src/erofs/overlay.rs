//! How a tree's inodes are stored for overlayfs in a composefs lower layer:
//! the tree's own `trusted.overlay.*` xattrs escaped, metacopy and redirect
//! xattrs on external files, whiteouts escaped, the root made opaque and
//! given whiteout stubs `00`..`ff`. Computed as a view; the tree is not
//! changed.

use std::borrow::Cow;

use crate::tree::{Inode, Mtime, S_IFCHR, S_IFMT, S_IFREG};

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
const SELINUX: &[u8] = b"security.selinux";

/// fs-verity hash algorithm number of SHA-256 in a metacopy xattr.
const METACOPY_SHA256: u8 = 1;

/// Names of the root's whiteout stubs: `00` to `ff`.
pub static STUB_NAMES: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut names = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        names[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    names
};

/// An xattr as stored: names and values borrowed from the tree where they
/// are unchanged.
pub type Xattr<'t> = (Cow<'t, [u8]>, Cow<'t, [u8]>);

/// One inode as the image stores it.
pub struct Stored<'t> {
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub mtime: Mtime,
    pub payload: Option<&'t [u8]>,
    pub content: Option<&'t [u8]>,
    /// Sorted by name, names unique.
    pub xattrs: Vec<Xattr<'t>>,
}

/// What the image needs to know about an inode's place in the tree.
pub struct Context {
    pub version: u32,
    pub is_root: bool,
    /// The directory directly holds a whiteout.
    pub holds_whiteouts: bool,
}

/// The format version to write: raised from `min` towards `max` only when
/// the tree needs it (whiteouts are handled better from version 1).
pub fn choose_version(has_whiteouts: bool, min: u32, max: u32) -> u32 {
    if min < 1 && max.max(min) >= 1 && has_whiteouts {
        1
    } else {
        min
    }
}

/// How `inode` is stored.
pub fn stored<'t>(inode: &'t Inode, cx: &Context) -> Stored<'t> {
    let mut s = Stored {
        mode: inode.mode,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev,
        size: inode.size,
        mtime: inode.mtime,
        payload: inode.payload.as_deref(),
        content: inode.content.as_deref(),
        // `trusted.overlay.X` becomes `trusted.overlay.overlay.X`, which
        // overlayfs shows as `trusted.overlay.X` again. Escaping keeps the
        // names in order: every escaped name gains the same infix.
        xattrs: inode
            .xattrs
            .iter()
            .map(|(k, v)| {
                let k = match k.strip_prefix(OVERLAY_PREFIX) {
                    Some(rest) => Cow::Owned([ESCAPED_PREFIX, rest].concat()),
                    None => Cow::Borrowed(k.as_slice()),
                };
                (k, Cow::Borrowed(v.as_slice()))
            })
            .collect(),
    };
    let external = inode.mode & S_IFMT == S_IFREG && inode.size > 0 && inode.content.is_none();
    if external {
        let value = match &inode.digest {
            Some(d) => [&[0, 36, 0, METACOPY_SHA256][..], d].concat(),
            None => Vec::new(),
        };
        set(&mut s.xattrs, METACOPY, value);
        if let Some(payload) = s.payload.filter(|p| !p.is_empty()) {
            set(&mut s.xattrs, REDIRECT, [b"/", payload].concat());
        }
    }
    if inode.is_whiteout() {
        s.size = 0;
        s.mode = S_IFREG | (inode.mode & !S_IFMT);
        set(&mut s.xattrs, ESCAPED_WHITEOUT, Vec::new());
        set(&mut s.xattrs, USER_WHITEOUT, Vec::new());
    }
    if cx.holds_whiteouts {
        set(&mut s.xattrs, ESCAPED_WHITEOUTS, Vec::new());
        set(&mut s.xattrs, USER_WHITEOUTS, Vec::new());
        if cx.version >= 1 {
            set(&mut s.xattrs, ESCAPED_OPAQUE, b"x".to_vec());
            set(&mut s.xattrs, USER_OPAQUE, b"x".to_vec());
        }
    }
    if cx.is_root {
        set(&mut s.xattrs, OPAQUE, b"y".to_vec());
    }
    s
}

/// A whiteout stub in the root: overlayfs with a data-only lower layer
/// looks up `00`..`ff` there, and these keep such lookups from going on.
pub fn stub(root: &Inode) -> Stored<'_> {
    Stored {
        mode: S_IFCHR | 0o644,
        nlink: 1,
        uid: root.uid,
        gid: root.gid,
        rdev: 0,
        size: 0,
        mtime: root.mtime,
        payload: None,
        content: None,
        xattrs: root
            .xattrs
            .get_key_value(SELINUX)
            .map(|(k, v)| (Cow::Borrowed(k.as_slice()), Cow::Borrowed(v.as_slice())))
            .into_iter()
            .collect(),
    }
}

/// Set `name` to `value`, keeping the list sorted.
fn set<'t>(xattrs: &mut Vec<Xattr<'t>>, name: &'static [u8], value: Vec<u8>) {
    let value = Cow::Owned(value);
    match xattrs.binary_search_by(|(k, _)| k.as_ref().cmp(name)) {
        Ok(i) => xattrs[i].1 = value,
        Err(i) => xattrs.insert(i, (Cow::Borrowed(name), value)),
    }
}
