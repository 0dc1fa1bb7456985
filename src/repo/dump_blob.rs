//! A tree's dumpfile as the git blob a commit records: written to a
//! temporary file rather than held in memory (a million entries make
//! 130 MB of it), and its blob id.
//!
//! The id hashes a header holding the blob's length before its bytes, so
//! it is normally computed once the dumpfile is written, reading it back.
//! Given the length the dumpfile probably has (its parent's: most commits
//! of a tree change nothing or little), the id is instead hashed on
//! another thread while the dumpfile is written, and kept only if the
//! guess was right.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, SyncSender};

use gix::ObjectId;

use crate::tree::Tree;

/// Written chunks queued for the hashing thread: enough to keep it busy,
/// few enough that a slow hasher holds a few MiB at most.
const QUEUED: usize = 4;

pub struct DumpFile {
    file: tempfile::NamedTempFile,
    pub len: u64,
    pub id: ObjectId,
}

impl DumpFile {
    /// Write the dumpfile of `tree` under a temporary name in `dir`;
    /// `likely_len` is the length it probably has, if one is known.
    pub fn write(tree: &Tree, dir: &Path, likely_len: Option<u64>) -> io::Result<DumpFile> {
        let mut file = tempfile::Builder::new()
            .prefix(crate::lockfile::TEMP_PREFIX)
            .tempfile_in(dir)?;
        let guessed = std::thread::scope(|scope| {
            let (copies, hashing) = match likely_len {
                Some(len) => {
                    let (tx, rx) = mpsc::sync_channel(QUEUED);
                    let hashing = scope.spawn(move || blob_id(&mut Chunks::new(rx), len).ok());
                    (Some(tx), Some(hashing))
                }
                None => (None, None),
            };
            // Buffered by the writer: each write a chunk of its buffer.
            let mut out = Tee {
                file: file.as_file_mut(),
                copies,
            };
            crate::dumpfile::write(tree, &mut out)?;
            // Its end, for the hashing thread.
            drop(out);
            let id = hashing.and_then(|h| h.join().ok().flatten());
            io::Result::Ok(id)
        })?;
        let len = file.as_file().metadata()?.len();
        let id = match guessed {
            Some(id) if Some(len) == likely_len => id,
            _ => blob_id(&mut file.reopen()?, len)?,
        };
        Ok(DumpFile { file, len, id })
    }

    /// The dumpfile, open for reading from its start.
    pub fn reopen(&self) -> io::Result<File> {
        self.file.reopen()
    }
}

/// The git blob id of `len` bytes read from `from`.
fn blob_id(from: &mut dyn Read, len: u64) -> io::Result<ObjectId> {
    gix::objs::compute_stream_hash(
        gix::hash::Kind::Sha1,
        gix::objs::Kind::Blob,
        from,
        len,
        &mut gix::features::progress::Discard,
        &AtomicBool::new(false),
    )
    .map_err(io::Error::other)
}

/// Writes to a file, with a copy of each write queued for hashing until
/// the hasher stops taking them.
struct Tee<'a> {
    file: &'a mut File,
    copies: Option<SyncSender<Vec<u8>>>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(copies) = &self.copies {
            // A hasher that stopped (it had its length) wants no more.
            if copies.send(buf[..n].to_vec()).is_err() {
                self.copies = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The chunks a [`Tee`] queues, read as one stream that ends when the
/// writer is done.
struct Chunks {
    queue: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Chunks {
    fn new(queue: Receiver<Vec<u8>>) -> Chunks {
        Chunks {
            queue,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.queue.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{DirEntry, Inode, Name, Tree};

    /// A tree whose dumpfile spans several chunks.
    fn sample() -> Tree {
        let mut tree = Tree::new(Inode::new(0o40755));
        for i in 0..20_000 {
            let mut file = Inode::new(0o100644);
            file.size = 3;
            file.content = Some(b"abc".to_vec().into());
            let id = tree.add_inode(file);
            let name = Name::from_slice(format!("file-{i}").as_bytes());
            let entry = DirEntry {
                inode: id,
                hardlink: false,
            };
            tree.inodes[crate::tree::ROOT].entries.insert(name, entry);
        }
        tree
    }

    #[test]
    fn a_wrong_or_missing_guess_gives_the_same_blob_id() {
        let tree = sample();
        let dir = tempfile::tempdir().unwrap();
        let plain = DumpFile::write(&tree, dir.path(), None).unwrap();
        let mut bytes = Vec::new();
        plain.reopen().unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, plain.len);
        // Several chunks of the writer's 256 KiB buffer.
        assert!(plain.len > 512 << 10, "{} bytes", plain.len);
        let expected =
            gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &bytes).unwrap();
        assert_eq!(plain.id, expected);
        for guess in [plain.len, plain.len - 1, plain.len + 1, 0, 10, u64::MAX / 2] {
            let dump = DumpFile::write(&tree, dir.path(), Some(guess)).unwrap();
            assert_eq!((dump.len, dump.id), (plain.len, expected), "guess {guess}");
        }
    }
}
