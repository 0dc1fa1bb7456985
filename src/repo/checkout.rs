//! Materializing a commit's tree as a directory, every attribute restored.
//! The tree is built under a temporary name beside the destination and
//! renamed into place, so the destination appears complete or not at all.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::{io_err, Repo, RepoError};
use crate::tree::{FileType, Inode, InodeId, Tree};

/// Write the tree of `commit` to `dest`, which must not exist.
pub fn checkout(repo: &Repo, commit: ObjectId, dest: &Path) -> Result<(), RepoError> {
    if dest.symlink_metadata().is_ok() {
        return Err(RepoError::Invalid(format!(
            "{} already exists",
            dest.display()
        )));
    }
    let tree = repo.tree(commit)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sealtree-checkout-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    materialize(repo, &tree, tmp.path())?;
    let tmp = tmp.keep();
    fs::rename(&tmp, dest).map_err(io_err(dest))?;
    Ok(())
}

/// Write `tree` into the existing directory `root`, every attribute
/// restored (the root's own metadata too).
pub fn materialize(repo: &Repo, tree: &Tree, root: &Path) -> Result<(), RepoError> {
    let mut first_path: Vec<Option<PathBuf>> = vec![None; tree.inodes.len()];
    // Directories get their metadata last, deepest first: creating their
    // entries would change their mtime.
    let mut dirs: Vec<(PathBuf, InodeId)> = Vec::new();
    // Hard links are made once every primary entry exists.
    let mut links: Vec<(PathBuf, InodeId)> = Vec::new();
    let mut result: Result<(), RepoError> = Ok(());
    tree.walk(|components, id, hardlink| {
        if result.is_err() {
            return;
        }
        let mut path = root.to_path_buf();
        for c in components {
            path.push(std::ffi::OsStr::from_bytes(c));
        }
        let inode = &tree.inodes[id];
        result = (|| {
            if hardlink {
                links.push((path, id));
                return Ok(());
            }
            if components.is_empty() {
                dirs.push((path, id));
                return Ok(());
            }
            create(repo, inode, &path)?;
            if inode.is_dir() {
                dirs.push((path.clone(), id));
            } else {
                apply_metadata(inode, &path)?;
            }
            first_path[id] = Some(path);
            Ok(())
        })();
    });
    result?;
    for (path, id) in links {
        let target = first_path[id].as_ref().ok_or_else(|| {
            RepoError::Invalid(format!("{}: hard link to nothing", path.display()))
        })?;
        fs::hard_link(target, &path).map_err(io_err(&path))?;
    }
    for (path, id) in dirs.iter().rev() {
        apply_metadata(&tree.inodes[*id], path)?;
    }
    Ok(())
}

fn create(repo: &Repo, inode: &Inode, path: &Path) -> Result<(), RepoError> {
    let err = io_err(path);
    match inode.file_type() {
        Some(FileType::Directory) => fs::create_dir(path).map_err(err),
        Some(FileType::Regular) => {
            let mut out = File::create_new(path).map_err(io_err(path))?;
            match (&inode.content, &inode.digest) {
                (Some(data), _) => out.write_all(data).map_err(io_err(path)),
                (None, _) if inode.size == 0 => Ok(()),
                (None, Some(d)) => {
                    let object = repo.objects().path(d);
                    let mut src = repo.objects().open_object(d).map_err(io_err(&object))?;
                    io::copy(&mut src, &mut out).map_err(io_err(path))?;
                    Ok(())
                }
                (None, None) => Err(RepoError::Invalid(format!(
                    "{}: no content and no digest",
                    path.display()
                ))),
            }
        }
        Some(FileType::Symlink) => {
            let target = inode.payload.as_deref().unwrap_or_default();
            symlink(std::ffi::OsStr::from_bytes(target), path).map_err(err)
        }
        Some(ty) => {
            let kind = match ty {
                FileType::CharDevice => SFlag::S_IFCHR,
                FileType::BlockDevice => SFlag::S_IFBLK,
                FileType::Fifo => SFlag::S_IFIFO,
                _ => SFlag::S_IFSOCK,
            };
            let rdev = decode_dev(inode.rdev);
            mknod(path, kind, Mode::from_bits_truncate(0o600), rdev).map_err(|e| err(e.into()))
        }
        None => Err(RepoError::Invalid(format!(
            "{}: unknown file type",
            path.display()
        ))),
    }
}

/// Owner, then mode (chown clears set-id bits), xattrs (chown clears
/// capabilities), then mtime.
fn apply_metadata(inode: &Inode, path: &Path) -> Result<(), RepoError> {
    let err = || io_err(path);
    lchown(path, Some(inode.uid), Some(inode.gid)).map_err(err())?;
    if inode.file_type() != Some(FileType::Symlink) {
        fs::set_permissions(path, fs::Permissions::from_mode(inode.mode & 0o7777)).map_err(err())?;
    }
    for (k, v) in &inode.xattrs {
        xattr::set(path, std::ffi::OsStr::from_bytes(k), v).map_err(err())?;
    }
    let t = TimeSpec::new(inode.mtime.sec, inode.mtime.nsec as i64);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|e| err()(e.into()))?;
    Ok(())
}

/// The kernel's `new_decode_dev` of a 32-bit device number.
fn decode_dev(dev: u32) -> u64 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    nix::sys::stat::makedev(major as u64, minor as u64)
}
