//! What the scan learns of an entry on disk: its metadata, taken by name
//! relative to its open directory or from the entry itself open, and the
//! listing of an open directory.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, SFlag};
use rayon::prelude::*;

use crate::statcache::FileStamp;

/// An entry's metadata, whichever call it came from.
#[derive(Clone, Debug)]
pub(super) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stat {
    /// Its device and inode number: what it is, whatever its name.
    pub fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    pub fn is_dir(&self) -> bool {
        self.mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
    }

    pub fn is_regular(&self) -> bool {
        self.mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
    }

    pub fn stamp(&self) -> FileStamp {
        FileStamp {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

impl From<&Metadata> for Stat {
    fn from(meta: &Metadata) -> Stat {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            nlink: meta.nlink(),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// The entry `name` of the open directory `dir` itself, not what a link
/// there leads to.
pub(super) fn stat_at(dir: &File, name: &OsStr) -> io::Result<Stat> {
    let st = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(st.into())
}

/// An open file's metadata.
pub(super) fn stat_of(file: &File) -> io::Result<Stat> {
    Ok(nix::sys::stat::fstat(file.as_raw_fd())?.into())
}

/// The xattrs (names and values) of the entry `name` of the open
/// directory `dir`, not of what a link there leads to. Looked up in
/// `dir`, never along a path from the root, which a link put in place of
/// a directory on the way would lead elsewhere: by listxattrat and
/// getxattrat (Linux 6.13), or else through `dir`'s /proc/self/fd entry.
pub(super) fn xattrs_at(dir: &File, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    let cname = CString::new(name.as_bytes())?;
    if AT_CALLS && !UNSUPPORTED.load(Ordering::Relaxed) {
        match xattrs_by_at_calls(dir, &cname) {
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOSYS | nix::libc::EPERM)) => {
                // A kernel without them, or a sandbox that forbids calls
                // it does not know.
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            result => return result,
        }
    }
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    let mut xattrs = Vec::new();
    for attr in xattr::list(&path)? {
        // One removed between listing and reading is simply gone.
        if let Some(value) = xattr::get(&path, &attr)? {
            xattrs.push((attr, value));
        }
    }
    Ok(xattrs)
}

/// [`xattrs_at`] by listxattrat and getxattrat.
fn xattrs_by_at_calls(dir: &File, name: &CStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let list = read_sized(|buf| {
        // SAFETY: `name` is a C string and `buf` has `buf.len()` writable
        // bytes, which the kernel does not write past.
        unsafe {
            nix::libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                nix::libc::AT_SYMLINK_NOFOLLOW,
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    })?;
    let mut xattrs = Vec::new();
    for attr in list.split(|&b| b == 0).filter(|a| !a.is_empty()) {
        let cattr = CString::new(attr)?;
        let value = read_sized(|buf| {
            let mut args = XattrArgs {
                value: buf.as_mut_ptr() as u64,
                size: buf.len() as u32,
                flags: 0,
            };
            // SAFETY: as above; `args` is the kernel's struct xattr_args,
            // its value pointing at `buf.len()` writable bytes.
            unsafe {
                nix::libc::syscall(
                    SYS_GETXATTRAT,
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    nix::libc::AT_SYMLINK_NOFOLLOW,
                    cattr.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        });
        match value {
            Ok(value) => xattrs.push((OsStr::from_bytes(attr).to_owned(), value)),
            // One removed between listing and reading is simply gone.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(xattrs)
}

/// What `call` writes into a buffer (its length returned, or -1 and
/// errno), with a larger buffer where the first is too small.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> nix::libc::c_long) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let len = call(&mut buf);
        if len >= 0 {
            // Kept in the tree for the whole commit: no spare capacity.
            buf.truncate(len as usize);
            buf.shrink_to_fit();
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(nix::libc::ERANGE) if buf.len() < XATTR_SIZE_MAX => buf.resize(XATTR_SIZE_MAX, 0),
            _ => return Err(e),
        }
    }
}

/// The kernel's struct xattr_args.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// listxattrat(2)'s and getxattrat(2)'s numbers: new system calls have
/// one number on every architecture, and the libc crate does not name
/// these here yet.
/// (Alpha and MIPS number them apart: they go through /proc.)
const AT_CALLS: bool = cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
));
const SYS_GETXATTRAT: nix::libc::c_long = 464;
const SYS_LISTXATTRAT: nix::libc::c_long = 465;

/// The largest xattr value, and list of names, the kernel returns.
const XATTR_SIZE_MAX: usize = 65536;

/// Open the directory at `path` to list it and open what it holds;
/// through a link at its last step only if `follow`.
pub(super) fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = OFlag::O_DIRECTORY;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
}

/// The names in a directory, in one buffer: a listing of thousands of
/// names is two allocations, not one per name among the scan's
/// long-lived ones.
pub(super) struct Listing {
    names: Vec<u8>,
    /// Where each name lies in `names`, with its type if the listing
    /// gives it.
    entries: Vec<(usize, usize, Option<Type>)>,
}

impl Listing {
    /// The names in the open directory `dir` (without `.` and `..`).
    pub fn read(dir: &File) -> io::Result<Listing> {
        // Listed through a descriptor of its own: `dir` stays shared, for
        // opening what it holds, while this one is read and closed.
        let listing = Dir::from(dir.try_clone()?)?;
        let mut names = Vec::new();
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                entries.push((names.len(), name.len(), entry.file_type()));
                names.extend_from_slice(name);
            }
        }
        Ok(Listing { names, entries })
    }

    /// Put the entries in name order.
    pub fn sort(&mut self) {
        let names = &self.names;
        self.entries
            .sort_unstable_by_key(|&(start, len, _)| &names[start..start + len]);
    }

    /// Each entry's name and type, in order.
    pub fn entries(&self) -> impl IndexedParallelIterator<Item = (&OsStr, Option<Type>)> {
        self.entries
            .par_iter()
            .map(|&(start, len, kind)| (OsStr::from_bytes(&self.names[start..start + len]), kind))
    }
}
