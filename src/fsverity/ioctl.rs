//! The kernel's fs-verity ioctls, issued through nix so errno is kept.

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

use super::Digest;

const FS_VERITY_HASH_ALG_SHA256: u32 = 1;
const BLOCK_SIZE: u32 = 4096;

/// `struct fsverity_enable_arg` from linux/fsverity.h.
#[repr(C)]
struct EnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

/// `struct fsverity_digest` followed by room for the largest digest.
#[repr(C)]
struct MeasureArg {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; 64],
}

nix::ioctl_write_ptr!(fs_ioc_enable_verity, b'f', 133, EnableArg);
// The kernel's request number encodes only the 4-byte header.
nix::ioctl_readwrite_bad!(
    fs_ioc_measure_verity,
    nix::request_code_readwrite!(b'f', 134, 4),
    MeasureArg
);

/// What became of a request to enable fs-verity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableOutcome {
    Enabled,
    AlreadyEnabled,
    /// The kernel or filesystem has no fs-verity; the file is unchanged.
    Unsupported,
}

/// Enable fs-verity (SHA-256, 4096-byte blocks, no salt) on a file opened
/// read-only with no writable descriptors open anywhere.
pub fn enable(file: &impl AsFd) -> nix::Result<EnableOutcome> {
    let arg = EnableArg {
        version: 1,
        hash_algorithm: FS_VERITY_HASH_ALG_SHA256,
        block_size: BLOCK_SIZE,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    // SAFETY: `arg` is a fully initialised fsverity_enable_arg with no
    // salt or signature pointers, valid for the duration of the call.
    match unsafe { fs_ioc_enable_verity(file.as_fd().as_raw_fd(), &arg) } {
        Ok(_) => Ok(EnableOutcome::Enabled),
        Err(Errno::EEXIST) => Ok(EnableOutcome::AlreadyEnabled),
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::ENOSYS) => Ok(EnableOutcome::Unsupported),
        Err(e) => Err(e),
    }
}

/// The kernel's fs-verity digest of a file, or `None` when fs-verity is not
/// enabled on it (or not supported at all).
pub fn measure(file: &impl AsFd) -> nix::Result<Option<Digest>> {
    let mut arg = MeasureArg {
        digest_algorithm: 0,
        digest_size: 64,
        digest: [0; 64],
    };
    // SAFETY: `arg` has room for the header and a 64-byte digest, which the
    // kernel is told through digest_size.
    match unsafe { fs_ioc_measure_verity(file.as_fd().as_raw_fd(), &mut arg) } {
        Ok(_) => {}
        Err(Errno::ENODATA | Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::ENOSYS) => return Ok(None),
        Err(e) => return Err(e),
    }
    if arg.digest_algorithm as u32 != FS_VERITY_HASH_ALG_SHA256 || arg.digest_size != 32 {
        return Err(Errno::EINVAL);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&arg.digest[..32]);
    Ok(Some(out))
}
