//! Layers seen before, kept by their digest as the entries they decoded
//! to (`tar_import::Op`, one line each), with contents already in the
//! object store: an image sharing its base layers with one committed
//! before reads (and from a registry, fetches) only its new layers.
//!
//! A record is written to a temporary name while its layer is read and
//! renamed into place only once the commit that stored its contents is
//! done. It is used only when every content object it names is still
//! stored (`prune` may have removed some); otherwise the layer is read.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::objects::ObjectStore;
use crate::tar_import::Op;

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
            if let Op::Node { inode, .. } = &op {
                if inode.content.is_none()
                    && inode.mode & crate::tree::S_IFMT == crate::tree::S_IFREG
                {
                    if let Some(d) = &inode.digest {
                        if !self.store.contains(d) {
                            return None;
                        }
                    }
                }
            }
            ops.push(op);
        }
        None
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
