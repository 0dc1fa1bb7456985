//! A real mount: an image built from a directory holding every kind of
//! entry is mounted (file-backed EROFS, then overlayfs with the object
//! store as data-only lower layer) and compared, attribute by attribute,
//! with the directory it was built from.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::fixture::*;
use common::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn filesystems_available() -> bool {
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    fs.contains("erofs") && fs.contains("overlay")
}

/// Compare one path in the source with the same path through the mount.
fn compare(src: &Path, seen: &Path, rel: &Path) {
    let what = rel.display();
    let a = src.symlink_metadata().unwrap();
    let b = seen
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("{what}: missing through the mount: {e}"));
    let mut want_xattrs = xattrs(src);
    let is_whiteout = a.file_type().is_char_device_like() && a.rdev() == 0;
    if is_whiteout {
        // A whiteout in the tree reaches the mount as an empty file marked
        // for an overlay stacked above.
        assert!(b.is_file() && b.len() == 0, "{what}: whiteout not escaped");
        assert_eq!(b.mode() & 0o7777, a.mode() & 0o7777, "{what}: mode");
        want_xattrs.insert(b"trusted.overlay.whiteout".to_vec(), Vec::new());
        want_xattrs.insert(b"user.overlay.whiteout".to_vec(), Vec::new());
    } else {
        assert_eq!(b.mode(), a.mode(), "{what}: mode");
        assert_eq!(b.rdev(), a.rdev(), "{what}: rdev");
    }
    if rel == Path::new("whdir") {
        for (k, v) in [
            ("trusted.overlay.whiteouts", ""),
            ("trusted.overlay.opaque", "x"),
            ("user.overlay.whiteouts", ""),
            ("user.overlay.opaque", "x"),
        ] {
            want_xattrs.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
    }
    assert_eq!(b.uid(), a.uid(), "{what}: uid");
    assert_eq!(b.gid(), a.gid(), "{what}: gid");
    assert_eq!(
        (b.mtime(), b.mtime_nsec()),
        (a.mtime(), a.mtime_nsec()),
        "{what}: mtime"
    );
    assert_eq!(b.nlink(), a.nlink(), "{what}: link count");
    assert_eq!(xattrs(seen), want_xattrs, "{what}: xattrs");
    if a.file_type().is_symlink() {
        assert_eq!(
            fs::read_link(seen).unwrap(),
            fs::read_link(src).unwrap(),
            "{what}: target"
        );
        assert_eq!(b.len(), a.len(), "{what}: size");
    } else if a.is_file() {
        assert_eq!(b.len(), a.len(), "{what}: size");
        assert!(
            fs::read(seen).unwrap() == fs::read(src).unwrap(),
            "{what}: content"
        );
    } else if a.is_dir() {
        let mut x: Vec<_> = fs::read_dir(src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut y: Vec<_> = fs::read_dir(seen)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        x.sort();
        y.sort();
        assert_eq!(y, x, "{what}: directory listing");
    }
}

trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}

impl CharDevice for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

#[test]
fn image_mounts_and_shows_the_tree() {
    if !is_root() {
        return missing("root, to create devices and mount images");
    }
    if !filesystems_available() {
        return missing("erofs and overlay in /proc/filesystems");
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let store = tmp.path().join("store");
    let image = tmp.path().join("image.cfs");
    make_tree(&src);

    let out = run_ok(&[
        OsStr::new("mkcomposefs"),
        OsStr::new("--print-digest"),
        OsStr::new("--digest-store"),
        store.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let image_bytes = fs::read(&image).unwrap();
    assert_eq!(
        printed.trim(),
        hex::encode(sealtree::fsverity::digest_bytes(&image_bytes))
    );

    // Objects: one per distinct external content, each named by its
    // digest; private (0600) when every file with it is unreadable to
    // others.
    let mut public = std::collections::HashMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    for f in files {
        let meta = f.symlink_metadata().unwrap();
        if meta.is_file() && meta.len() > 64 {
            let d = hex::encode(sealtree::fsverity::digest_bytes(&fs::read(&f).unwrap()));
            *public.entry(d).or_insert(false) |= meta.mode() & 0o004 != 0;
        }
    }
    let mut objects = 0;
    for sub in fs::read_dir(&store).unwrap() {
        let sub = sub.unwrap().path();
        for obj in fs::read_dir(&sub).unwrap() {
            let obj = obj.unwrap().path();
            let (d, _) = sealtree::fsverity::digest_reader(File::open(&obj).unwrap()).unwrap();
            let name = format!(
                "{}{}",
                sub.file_name().unwrap().to_str().unwrap(),
                obj.file_name().unwrap().to_str().unwrap()
            );
            assert_eq!(hex::encode(d), name, "object named by its digest");
            let want = if public[&name] { 0o644 } else { 0o600 };
            assert_eq!(obj.metadata().unwrap().mode() & 0o777, want, "{name}");
            objects += 1;
        }
    }
    // ext65 (3 names), big, block4096, k5000, mib, deep, with space, !bang,
    // new\nline, bin-\xff\xfe, dup-a == dir/dup-b.
    assert_eq!(objects, 11, "distinct external contents");

    let lower = tmp.path().join("lower");
    let merged = tmp.path().join("merged");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&merged).unwrap();
    mount(
        Some(&image),
        &lower,
        Some("erofs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .expect("mount the image as a file-backed EROFS");
    let _lower = Mounted(lower.clone());
    let opts = format!(
        "metacopy=on,redirect_dir=on,lowerdir={}::{}",
        lower.display(),
        store.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .expect("mount overlayfs over the image and the object store");
    let _merged = Mounted(merged.clone());

    let mut paths = Vec::new();
    collect(&src, &mut paths);
    assert!(paths.len() > 30);
    compare(&src, &merged, Path::new("/"));
    for p in &paths {
        let rel = p.strip_prefix(&src).unwrap();
        compare(p, &merged.join(rel), rel);
    }
}
