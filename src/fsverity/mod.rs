//! fs-verity digests: computed in user space, and enabled or measured by the
//! kernel where the filesystem supports it.

mod ioctl;

use std::io::{self, Read};

use fs_verity::FsVeritySha256;
use sha2::Digest as _;

pub use ioctl::{enable, measure, EnableOutcome};

/// A SHA-256 fs-verity digest (4096-byte blocks, no salt).
pub type Digest = [u8; 32];

/// The fs-verity digest of `data`.
pub fn digest_bytes(data: &[u8]) -> Digest {
    let mut hasher = FsVeritySha256::new();
    hasher.update(data);
    hasher.finalize().into()
}

/// Size of the read buffer [`digest_reader`] uses per thread.
const READ_BUFFER: usize = 256 * 1024;

thread_local! {
    // Reused across calls: zeroing a fresh buffer per small file costs
    // more than hashing it.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fs-verity digest of everything `reader` yields and its length, read
/// in large chunks so a file of any size is hashed in bounded memory.
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    BUFFER.with_borrow_mut(|buf| {
        if buf.len() < READ_BUFFER {
            buf.resize(READ_BUFFER, 0);
        }
        digest_with_buffer(reader, buf)
    })
}

fn digest_with_buffer(mut reader: impl Read, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut hasher = FsVeritySha256::new();
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}

/// An fs-verity digest computed incrementally.
pub struct Hasher {
    inner: fs_verity::FsVerityDigest<sha2::Sha256>,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            inner: fs_verity::FsVerityDigest::new(),
            len: 0,
        }
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }

    /// The digest and the number of bytes hashed.
    pub fn finalize(self) -> (Digest, u64) {
        (self.inner.finalize().into(), self.len)
    }
}

/// A writer that hashes what it passes on to `inner`.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Parse 64 hex digits into a digest.
pub fn parse_hex(text: &[u8]) -> Option<Digest> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            hex::encode(digest_bytes(b"hello world\n")),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
        );
        assert_eq!(
            hex::encode(digest_bytes(b"foo bar baz\n")),
            "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"
        );
    }

    #[test]
    fn reader_matches_bytes_across_chunk_boundaries() {
        let data: Vec<u8> = (0..(600 * 1024 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (d, n) = digest_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, digest_bytes(&data));
    }

    #[test]
    fn parse_hex_rejects_bad_input() {
        assert!(parse_hex(b"00").is_none());
        assert!(parse_hex(&[b'g'; 64]).is_none());
        assert_eq!(parse_hex(&[b'a'; 64]), Some([0xaa; 32]));
    }
}
