//! A read-only loop device over an open file, for images that the
//! kernel cannot mount as files (a sealed in-memory copy lives on shmem,
//! which file-backed EROFS does not take).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const LO_FLAGS_READ_ONLY: u32 = 1;
/// Detach when the last user (the mount) goes away.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// An attached loop device; it detaches itself once nothing uses it.
pub struct LoopDevice {
    pub path: PathBuf,
    _device: File,
}

/// Attach `file` read-only to a free loop device.
pub fn attach(file: &File) -> io::Result<LoopDevice> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the free device between the two calls.
    for _ in 0..16 {
        // SAFETY: a request without arguments on the loop control device.
        let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(io::Error::from)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new().read(true).open(&path)?;
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                file_name: [0; 64],
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid loop_config that outlives the call.
        match unsafe { loop_configure(device.as_raw_fd(), &config) } {
            Ok(_) => {
                return Ok(LoopDevice {
                    path,
                    _device: device,
                })
            }
            Err(nix::errno::Errno::EBUSY) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free loop device"))
}
