//! The tree from the scanned entries, in name order, so hard links
//! resolve the same way on every run.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{changed, Content, LinkedContent, Scanned, WalkError};
use crate::tree::{object_path, DirEntry, FileType, Inode, InodeId, Tree};

/// Whether two scans of one file saw the same metadata.
fn same_metadata(a: &Inode, b: &Inode) -> bool {
    (a.mode, a.uid, a.gid, a.size, &a.mtime, &a.xattrs)
        == (b.mode, b.uid, b.gid, b.size, &b.mtime, &b.xattrs)
}

/// Give `inode` the content read for it.
pub(super) fn set_content(inode: &mut Inode, (digest, content): Content) {
    inode.digest = Some(digest);
    inode.payload = Some(object_path(&digest).into_bytes().into());
    inode.content = content.map(Into::into);
}

/// Builds the tree from scanned entries in name order.
pub(super) struct Builder {
    pub(super) tree: Tree,
    /// [`Reader::linked`], once every file is read.
    pub(super) linked: HashMap<(u64, u64), Option<LinkedContent>>,
    /// (device, inode) of multiply-linked files already seen.
    pub(super) links: HashMap<(u64, u64), InodeId>,
}

impl Builder {
    pub(super) fn dir(
        &mut self,
        dir: InodeId,
        dir_path: &Path,
        entries: Vec<Scanned>,
    ) -> Result<(), WalkError> {
        // Names come sorted: a B-tree built from a sorted list has full
        // nodes, where one filled in order has them about half full.
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries {
            let Scanned {
                name,
                key,
                mut inode,
                children,
            } = entry;
            let nlink = inode.nlink;
            let is_dir = inode.is_dir();
            if !is_dir && nlink > 1 {
                if let Some(&id) = self.links.get(&key) {
                    self.tree.inodes[id].nlink += 1;
                    names.push((
                        name,
                        DirEntry {
                            inode: id,
                            hardlink: true,
                        },
                    ));
                    continue;
                }
            }
            inode.nlink = 1;
            let read = inode.file_type() == Some(FileType::Regular) && inode.size > 0;
            if read && inode.digest.is_none() {
                // Read through whichever of its links was scanned first:
                // its metadata then must be this link's, or the file
                // changed (its mode, say, or its size) in between.
                let path = || dir_path.join(OsStr::from_bytes(&name));
                let (content, read_as) = self
                    .linked
                    .remove(&key)
                    .flatten()
                    .ok_or_else(|| changed(&path()))?;
                if !same_metadata(&inode, &read_as) {
                    return Err(changed(&path()));
                }
                set_content(&mut inode, content);
            }
            let id = self.tree.add_inode(inode);
            names.push((
                name.clone(),
                DirEntry {
                    inode: id,
                    hardlink: false,
                },
            ));
            if !is_dir && nlink > 1 {
                self.links.insert(key, id);
            }
            if is_dir {
                self.dir(id, &dir_path.join(OsStr::from_bytes(&name)), children)?;
            }
        }
        self.tree.inodes[dir].entries = names.into_iter().collect();
        Ok(())
    }
}
