//! The three-way merge of /etc on upgrade: the old deployment's defaults
//! (`usr/etc` of its commit), the new defaults, and the /etc the old
//! deployment actually has. A file changed locally is kept; a default
//! nobody touched follows the new commit (added, updated or removed);
//! where both sides changed the same path the local version is kept and
//! the path is reported as a conflict.

use std::collections::BTreeSet;

use crate::tree::{DirEntry, Inode, InodeId, Name, Tree};

/// One side of the merge: a directory in some tree.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub tree: &'a Tree,
    pub dir: InodeId,
}

/// The merged /etc and what happened on the way.
pub struct EtcMerge {
    pub tree: Tree,
    /// Paths changed on both sides; the local version was kept.
    pub conflicts: Vec<String>,
    /// Paths where a local change was carried over.
    pub kept_local: Vec<String>,
}

type Node<'a> = Option<(&'a Tree, InodeId)>;

/// Merge `current` (the running /etc) from `old` defaults to `new` ones.
/// Without an old deployment, /etc is simply the new defaults.
pub fn merge(old: Option<Side>, new: Side, current: Option<Side>) -> EtcMerge {
    let root = copy_meta(&new.tree.inodes[new.dir]);
    let mut m = EtcMerge {
        tree: Tree::new(root),
        conflicts: Vec::new(),
        kept_local: Vec::new(),
    };
    merge_dir(
        &mut m,
        crate::tree::ROOT,
        "/etc",
        old.map(|s| (s.tree, s.dir)),
        Some((new.tree, new.dir)),
        current.map(|s| (s.tree, s.dir)),
    );
    m
}

fn merge_dir<'a>(
    m: &mut EtcMerge,
    out: InodeId,
    path: &str,
    o: Node<'a>,
    n: Node<'a>,
    c: Node<'a>,
) {
    let mut names = BTreeSet::new();
    for (tree, id) in [o, n, c].into_iter().flatten() {
        names.extend(tree.inodes[id].entries.keys().cloned());
    }
    for name in names {
        let child = |side: Node<'a>| -> Node<'a> {
            side.and_then(|(t, d)| t.inodes[d].entries.get(&name).map(|e| (t, e.inode)))
        };
        let (o2, n2, c2) = (child(o), child(n), child(c));
        let child_path = format!("{path}/{}", String::from_utf8_lossy(&name));
        if is_dir(n2) && is_dir(c2) {
            // Both sides keep a directory: merge inside it; its own
            // metadata is merged like a file's.
            let chosen = decide(m, &child_path, o2, n2, c2, false);
            let (t, id) = chosen.expect("both sides have the directory");
            let dir = add(m, out, &name, copy_meta(&t.inodes[id]));
            merge_dir(m, dir, &child_path, o2.filter(|_| is_dir(o2)), n2, c2);
            continue;
        }
        let chosen = decide(m, &child_path, o2, n2, c2, true);
        if let Some((t, id)) = chosen {
            copy_subtree(m, out, &name, t, id);
        }
    }
}

/// Which version of a path survives. `deep`: directories are compared
/// with everything in them (else by their own metadata, when their
/// entries are merged one by one).
fn decide<'a>(
    m: &mut EtcMerge,
    path: &str,
    o: Node<'a>,
    n: Node<'a>,
    c: Node<'a>,
    deep: bool,
) -> Node<'a> {
    let same = |a, b| same(a, b, deep);
    if same(c, o) {
        n
    } else if same(n, c) {
        c
    } else if same(n, o) {
        m.kept_local.push(path.to_string());
        c
    } else {
        m.conflicts.push(path.to_string());
        c
    }
}

fn is_dir(node: Node) -> bool {
    node.is_some_and(|(t, id)| t.inodes[id].is_dir())
}

/// Equal in everything an /etc file is: type, mode, owner, xattrs,
/// content or target, device; directories, when `deep`, also in all
/// their entries.
fn same(a: Node, b: Node, deep: bool) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some((ta, a)), Some((tb, b))) => {
            let (x, y) = (&ta.inodes[a], &tb.inodes[b]);
            if !same_inode(x, y) {
                return false;
            }
            if !x.is_dir() || !deep {
                return true;
            }
            x.entries.len() == y.entries.len()
                && x.entries.iter().all(|(name, e)| {
                    y.entries
                        .get(name)
                        .is_some_and(|f| same(Some((ta, e.inode)), Some((tb, f.inode)), true))
                })
        }
        _ => false,
    }
}

fn same_inode(x: &Inode, y: &Inode) -> bool {
    x.mode == y.mode
        && x.uid == y.uid
        && x.gid == y.gid
        && x.rdev == y.rdev
        && x.xattrs == y.xattrs
        && (x.is_dir()
            || (x.size == y.size
                && content_digest(x) == content_digest(y)
                && (x.file_type() != Some(crate::tree::FileType::Symlink)
                    || x.payload == y.payload)))
}

/// A regular file's content digest, whether it was recorded or the
/// content is inline (trees from dumpfiles need not carry both).
fn content_digest(x: &Inode) -> Option<crate::fsverity::Digest> {
    x.digest
        .or_else(|| x.content.as_deref().map(crate::fsverity::digest_bytes))
}

fn copy_meta(inode: &Inode) -> Inode {
    Inode {
        entries: Default::default(),
        nlink: 1,
        ..inode.clone()
    }
}

fn add(m: &mut EtcMerge, dir: InodeId, name: &[u8], inode: Inode) -> InodeId {
    let id = m.tree.add_inode(inode);
    m.tree.inodes[dir].entries.insert(
        Name::from_slice(name),
        DirEntry {
            inode: id,
            hardlink: false,
        },
    );
    id
}

fn copy_subtree(m: &mut EtcMerge, out: InodeId, name: &[u8], t: &Tree, id: InodeId) {
    let new = add(m, out, name, copy_meta(&t.inodes[id]));
    let children: Vec<_> = t.inodes[id]
        .entries
        .iter()
        .map(|(n, e)| (n.clone(), e.inode))
        .collect();
    for (child_name, child) in children {
        copy_subtree(m, new, &child_name, t, child);
    }
}
