//! Reading a blob while checking it against its descriptor: SHA-256 as
//! it is read, no more than the declared size, and the digest compared
//! once the reader is done with it.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// A reader of at most `size` bytes of a blob, hashing them.
pub struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    size: u64,
}

impl<R: Read> Verifying<R> {
    pub fn new(inner: R, size: u64) -> Verifying<R> {
        Verifying {
            inner,
            hasher: Sha256::new(),
            read: 0,
            size,
        }
    }

    /// Read what is left, then check length and digest (`sha256:HEX`).
    /// Err says what differs.
    pub fn finish(mut self, digest: &str) -> Result<(), String> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| e.to_string())?;
        // One byte past the declared size tells a longer blob.
        let mut extra = [0u8; 1];
        if self.inner.read(&mut extra).map_err(|e| e.to_string())? > 0 {
            return Err(format!(
                "longer than the {} bytes its descriptor gives",
                self.size
            ));
        }
        if self.read != self.size {
            return Err(format!(
                "{} bytes, its descriptor gives {}",
                self.read, self.size
            ));
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != digest {
            return Err(format!("its content has digest {actual}"));
        }
        Ok(())
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.read;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
