//! Layers seen before, kept by their digest as the entries they decoded
//! to (`tar_import::Op`, one line each), with contents already in the
//! object store: an image sharing its base layers with one committed
//! before reads (and from a registry, fetches) only its new layers.
//!
//! A record is written to a temporary name while its layer is read and
//! renamed into place only once the commit that stored its contents is
//! done. It is used only when every entry is one a tar layer could have
//! decoded to and every content object it names is still stored, with
//! the size the entry gives (`prune` may have removed some); otherwise
//! the layer is read. Like the stat cache, the records are part of the
//! repository the committer trusts: whoever can write them can change
//! what the next commit of an image holds (`--no-layer-cache` reads
//! every layer).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::fsverity;
use crate::objects::ObjectStore;
use crate::tar_import::Op;
use crate::tree::{
    object_path, Inode, DEFAULT_INLINE_THRESHOLD, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK,
    S_IFMT, S_IFREG,
};

/// First line of a record; the last is `end COUNT`.
const MAGIC: &str = "sealtree-layer-v1";

pub struct LayerCache<'a> {
    dir: PathBuf,
    store: &'a ObjectStore,
}

/// A record being written while its layer is read.
pub struct Recorder {
    file: BufWriter<tempfile::NamedTempFile>,
    dest: PathBuf,
    count: u64,
    line: Vec<u8>,
}

/// A complete record, put in place by `persist` once its contents are
/// committed; dropped, it is removed.
pub struct Pending {
    file: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl<'a> LayerCache<'a> {
    /// The cache in `dir` (created when first written to), for contents
    /// in `store`.
    pub fn new(dir: PathBuf, store: &'a ObjectStore) -> LayerCache<'a> {
        LayerCache { dir, store }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let plain = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        plain.then(|| self.dir.join(hex))
    }

    /// The entries of layer `digest`, when recorded whole and every
    /// content object they name is stored. Anything else is a miss: the
    /// layer is then read from its blob.
    pub fn load(&self, digest: &str) -> Option<Vec<Op>> {
        let file = crate::objects::open_regular(&self.path(digest)?).ok()?;
        let mut lines = BufReader::new(file).split(b'\n');
        let header = lines.next()?.ok()?;
        if header != format!("{MAGIC} {digest}").as_bytes() {
            return None;
        }
        let mut ops = Vec::new();
        for line in lines {
            let line = line.ok()?;
            if let Some(count) = line.strip_prefix(b"end ") {
                let complete = count == ops.len().to_string().as_bytes();
                return complete.then_some(ops);
            }
            let op = Op::decode(&line).ok()?;
            let sound = match &op {
                Op::Node { inode, .. } => self.sound(inode),
                Op::Dir { inode, .. } => {
                    inode.mode & S_IFMT == S_IFDIR
                        && inode.payload.is_none()
                        && inode.content.is_none()
                        && inode.digest.is_none()
                }
                Op::HardLink { .. } | Op::Whiteout { .. } => true,
            };
            if !sound {
                return None;
            }
            ops.push(op);
        }
        None
    }

    /// Whether `inode` is one the tar import could have made, with its
    /// content stored: an empty file has neither content nor digest; a
    /// small one its content inline, hashing to its digest; a larger one
    /// a stored object of its size; the redirect is the digest's path.
    fn sound(&self, inode: &Inode) -> bool {
        if inode.mode & !(S_IFMT | 0o7777) != 0 {
            return false;
        }
        let kind = inode.mode & S_IFMT;
        let no_data = inode.content.is_none() && inode.digest.is_none();
        match kind {
            S_IFREG => match (&inode.digest, &inode.content) {
                (None, None) => inode.size == 0 && inode.payload.is_none(),
                (Some(d), content) => {
                    let payload_ok = inode.payload.as_deref() == Some(object_path(d).as_bytes());
                    let content_ok = match content {
                        Some(c) => {
                            c.len() as u64 == inode.size
                                && inode.size <= DEFAULT_INLINE_THRESHOLD
                                && fsverity::digest_bytes(c) == *d
                        }
                        None => {
                            inode.size > DEFAULT_INLINE_THRESHOLD
                                && std::fs::symlink_metadata(self.store.path(d))
                                    .is_ok_and(|m| m.is_file() && m.len() == inode.size)
                        }
                    };
                    payload_ok && content_ok
                }
                (None, Some(_)) => false,
            },
            S_IFLNK => {
                no_data
                    && inode
                        .payload
                        .as_ref()
                        .is_some_and(|t| !t.is_empty() && t.len() as u64 == inode.size)
            }
            S_IFCHR | S_IFBLK | S_IFIFO => no_data && inode.payload.is_none() && inode.size == 0,
            _ => false,
        }
    }

    /// Start the record of layer `digest`.
    pub fn record(&self, digest: &str) -> io::Result<Recorder> {
        let dest = self
            .path(digest)
            .ok_or_else(|| io::Error::other(format!("{digest}: not sha256:<64 hex digits>")))?;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = BufWriter::new(
            tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)?,
        );
        writeln!(file, "{MAGIC} {digest}")?;
        Ok(Recorder {
            file,
            dest,
            count: 0,
            line: Vec::new(),
        })
    }
}

impl Recorder {
    pub fn write(&mut self, op: &Op) -> io::Result<()> {
        self.line.clear();
        op.encode(&mut self.line);
        self.count += 1;
        self.file.write_all(&self.line)
    }

    /// The record, complete and on disk under its temporary name.
    pub fn finish(mut self) -> io::Result<Pending> {
        writeln!(self.file, "end {}", self.count)?;
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.as_file().sync_all()?;
        Ok(Pending {
            file,
            dest: self.dest,
        })
    }
}

impl Pending {
    /// Put the record in place (its contents are committed).
    pub fn persist(self) -> io::Result<()> {
        let dir = self.dest.parent().map(Path::to_path_buf);
        self.file.persist(&self.dest).map_err(|e| e.error)?;
        if let Some(dir) = dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";

    /// A store holding one object of 100 bytes; the record of DIGEST
    /// made of `lines`, and what loading it gives.
    fn load(lines: &[String]) -> Option<Vec<Op>> {
        let t = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(t.path().join("objects")).unwrap();
        let object = store.path(&[7; 32]);
        std::fs::create_dir_all(object.parent().unwrap()).unwrap();
        std::fs::write(&object, [0u8; 100]).unwrap();
        let cache = LayerCache::new(t.path().join("oci-layers"), &store);
        let mut text = format!("{MAGIC} {DIGEST}\n");
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str(&format!("end {}\n", lines.len()));
        std::fs::create_dir_all(t.path().join("oci-layers")).unwrap();
        std::fs::write(cache.path(DIGEST).unwrap(), text).unwrap();
        cache.load(DIGEST)
    }

    #[test]
    fn only_records_a_layer_could_have_made_are_replayed() {
        let hex = hex::encode([7u8; 32]);
        let redirect = object_path(&[7; 32]);
        let tiny = fsverity::digest_bytes(b"hi");
        let file = |size: u64, digest: &str, content: &str, payload: &str| {
            format!("N /usr/f 33261 0 0 0 {size} 0 0 {digest} {content} {payload}")
        };
        let good = [
            file(100, &hex, "-", &redirect),
            file(2, &hex::encode(tiny), "hi", &object_path(&tiny)),
            file(0, "-", "-", "-"),
            "N /l 41471 0 0 0 3 0 0 - - abc".into(),
            "D /usr 16877 0 0 0 0".into(),
            "L /g /usr/f".into(),
            "W /usr -".into(),
        ];
        assert!(load(&good).is_some(), "{good:?}");
        for bad in [
            // A redirect that is not the digest's path.
            file(100, &hex, "-", "../../etc/passwd"),
            // A size other than the object's.
            file(99_999_999, &hex, "-", &redirect),
            // An object that is not stored.
            file(100, &"ab".repeat(32), "-", &object_path(&[0xab; 32])),
            // Inline content that does not hash to the digest, or of
            // another length than the size.
            file(2, &hex::encode(tiny), "ho", &object_path(&tiny)),
            file(3, &hex::encode(tiny), "hi", &object_path(&tiny)),
            // A file with neither content nor digest, yet a size.
            file(10, "-", "-", "-"),
            // A device with content; a directory that is a file.
            format!("N /mem 8630 0 0 257 0 0 0 {} - -", hex::encode(tiny)),
            "D /usr 33188 0 0 0 0".into(),
            // Mode bits beyond the file type and permissions.
            "N /x 1073807360 0 0 0 0 0 0 - - -".into(),
        ] {
            assert!(
                load(std::slice::from_ref(&bad)).is_none(),
                "replayed: {bad}"
            );
        }
    }
}
