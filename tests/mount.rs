//! A real mount: an image built from a directory holding every kind of
//! entry is mounted (file-backed EROFS, then overlayfs with the object
//! store as data-only lower layer) and compared, attribute by attribute,
//! with the directory it was built from.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

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

fn write(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    fs::write(path, data).unwrap();
}

/// Build a tree with every kind of entry the format stores.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/nested")).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::create_dir(root.join("whdir")).unwrap();
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("inline64", 64),
        ("ext65", 65),
        ("block4096", 4096),
        ("k5000", 5000),
        ("big", 300 * 1024),
        ("mib", 1024 * 1024 + 1),
        ("dir/nested/deep", 777),
        ("with space", 100),
        ("-dash", 10),
        ("!bang", 200),
        ("a=b", 3),
    ] {
        write(&root.join(name), len, name.len() as u8);
    }
    write(&root.join(OsStr::from_bytes(b"new\nline")), 70, 1);
    write(&root.join(OsStr::from_bytes(b"bin-\xff\xfe")), 90, 2);
    fs::write(
        root.join("dup-a"),
        b"same content in two files, long enough to be stored outside the image",
    )
    .unwrap();
    fs::write(
        root.join("dir/dup-b"),
        b"same content in two files, long enough to be stored outside the image",
    )
    .unwrap();

    fs::hard_link(root.join("ext65"), root.join("dir/ext65-link")).unwrap();
    fs::hard_link(root.join("ext65"), root.join("hl2")).unwrap();
    fs::hard_link(root.join("one"), root.join("dir/nested/one-link")).unwrap();

    symlink("one", root.join("link-short")).unwrap();
    symlink("x".repeat(3000), root.join("link-long")).unwrap();
    symlink("../one", root.join("dir/rel")).unwrap();

    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    mknod(
        &root.join("chr"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o620),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &root.join("blk"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(259, 70000),
    )
    .unwrap();
    // An overlay whiteout in the tree: stored escaped, shown as a marked file.
    mknod(
        &root.join("whdir/wh"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    )
    .unwrap();

    xattr::set(root.join("one"), "user.test", b"value").unwrap();
    xattr::set(root.join("dir"), "trusted.test", b"bin\0\xff").unwrap();
    xattr::set(root.join("big"), "trusted.overlay.custom", b"escaped").unwrap();
    xattr::set(root.join("ext65"), "user.shared", b"x").unwrap();
    xattr::set(root.join("k5000"), "user.shared", b"x").unwrap();
    xattr::set(root.join("link-short"), "trusted.sym", b"1").unwrap();
    xattr::set(root.join("with space"), "user.eq=key", b"a=b c\n").unwrap();

    fs::set_permissions(root.join("big"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("mib"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("a=b"), fs::Permissions::from_mode(0o000)).unwrap();
    std::os::unix::fs::lchown(root.join("big"), Some(100_000), Some(200_001)).unwrap();
    std::os::unix::fs::lchown(root.join("link-long"), Some(70_000), Some(3)).unwrap();
    std::os::unix::fs::lchown(root.join("dir/nested"), Some(65_536), Some(65_535)).unwrap();

    // Distinct mtimes with nanoseconds, children before their directory.
    let mut all = Vec::new();
    collect(root, &mut all);
    all.reverse();
    for (i, path) in all.iter().enumerate() {
        let t = TimeSpec::new(
            1_600_000_000 + i as i64 * 1000,
            (i as i64 * 7919 + 1) % 1_000_000_000,
        );
        utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }
}

/// Every path under `dir` (not `dir` itself), parents before children.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(name);
        out.push(p.clone());
        if p.symlink_metadata().unwrap().is_dir() {
            collect(&p, out);
        }
    }
}

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    xattr::list(path)
        .unwrap()
        .map(|n| {
            let v = xattr::get(path, &n).unwrap().unwrap_or_default();
            (n.as_bytes().to_vec(), v)
        })
        .collect()
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

    // Objects: one per distinct external content, each named by its digest.
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
            assert_eq!(obj.metadata().unwrap().mode() & 0o777, 0o644);
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
