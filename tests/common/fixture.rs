//! A tree with every kind of entry the format stores, and ways to read
//! back every attribute of one.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

pub fn write(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    fs::write(path, data).unwrap();
}

/// Build a tree with every kind of entry the format stores.
pub fn make_tree(root: &Path) {
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
pub fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
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

pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    xattr::list(path)
        .unwrap()
        .map(|n| {
            let v = xattr::get(path, &n).unwrap().unwrap_or_default();
            (n.as_bytes().to_vec(), v)
        })
        .collect()
}

/// Every attribute of one path, for comparing trees.
#[derive(Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub nlink: u64,
    pub rdev: u64,
    /// Size of regular files and symlinks.
    pub size: Option<u64>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub target: Option<PathBuf>,
    pub content: Option<Vec<u8>>,
    /// Names in a directory.
    pub names: Option<Vec<std::ffi::OsString>>,
}

pub fn attrs(path: &Path) -> Attrs {
    let m = path.symlink_metadata().unwrap();
    let ft = m.file_type();
    Attrs {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        nlink: m.nlink(),
        rdev: m.rdev(),
        size: (ft.is_file() || ft.is_symlink()).then_some(m.len()),
        xattrs: xattrs(path),
        target: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
        content: ft.is_file().then(|| fs::read(path).unwrap()),
        names: ft.is_dir().then(|| {
            let mut n: Vec<_> = fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            n.sort();
            n
        }),
    }
}

/// Assert that two trees are equal in every attribute of every path.
pub fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(attrs(b), attrs(a), "/ differs");
    let mut paths = Vec::new();
    collect(a, &mut paths);
    for p in paths {
        let rel = p.strip_prefix(a).unwrap();
        assert!(
            b.join(rel).symlink_metadata().is_ok(),
            "{} missing",
            rel.display()
        );
        assert_eq!(attrs(&b.join(rel)), attrs(&p), "{} differs", rel.display());
    }
}
