//! The object store behind --digest-store: objects are reused, and an
//! interrupted run publishes nothing partial.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn write(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    fs::write(path, data).unwrap();
}

#[test]
fn a_second_build_reuses_stored_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let store = tmp.path().join("store");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), 10_000, 1);
    write(&src.join("b"), 20_000, 2);
    let build = |image: &Path| {
        run_ok(&[
            OsStr::new("mkcomposefs"),
            OsStr::new("--digest-store"),
            store.as_os_str(),
            src.as_os_str(),
            image.as_os_str(),
        ])
    };
    build(&tmp.path().join("1.img"));
    let before: Vec<_> = walk_store(&store);
    assert_eq!(before.len(), 2);
    build(&tmp.path().join("2.img"));
    assert_eq!(walk_store(&store), before, "objects rewritten or added");
    assert_eq!(
        fs::read(tmp.path().join("1.img")).unwrap(),
        fs::read(tmp.path().join("2.img")).unwrap()
    );
    // No staging directory is left in the store.
    assert!(fs::read_dir(&store).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}

fn walk_store(store: &Path) -> Vec<(PathBuf, i64, i64)> {
    let mut out = Vec::new();
    for sub in fs::read_dir(store).unwrap() {
        for obj in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = obj.unwrap().path();
            let m = p.metadata().unwrap();
            out.push((p, m.ino() as i64, m.mtime_nsec()));
        }
    }
    out.sort();
    out
}

/// Every published object is complete: its content hashes to its name.
fn check_objects(store: &Path) -> usize {
    let mut n = 0;
    for sub in fs::read_dir(store).unwrap() {
        let sub = sub.unwrap().path();
        let sub_name = sub.file_name().unwrap().to_str().unwrap().to_string();
        if sub_name.starts_with('.') {
            continue;
        }
        for obj in fs::read_dir(&sub).unwrap() {
            let obj = obj.unwrap().path();
            let (d, _) = sealtree::fsverity::digest_reader(File::open(&obj).unwrap()).unwrap();
            let name = format!("{sub_name}{}", obj.file_name().unwrap().to_str().unwrap());
            assert_eq!(
                hex::encode(d),
                name,
                "{} is not what its name says",
                obj.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn killed_runs_publish_nothing_partial_and_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let store = tmp.path().join("store");
    fs::create_dir(&src).unwrap();
    for i in 0..150 {
        write(&src.join(format!("f{i}")), 200_000 + i, i as u8);
    }
    let image = tmp.path().join("out.img");
    for delay_ms in [5u64, 15, 30, 60, 120] {
        let mut child = sealtree()
            .arg("mkcomposefs")
            .arg("--digest-store")
            .arg(&store)
            .arg(&src)
            .arg(&image)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if store.exists() {
            check_objects(&store);
        }
    }
    run_ok(&[
        OsStr::new("mkcomposefs"),
        OsStr::new("--digest-store"),
        store.as_os_str(),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    assert_eq!(check_objects(&store), 150);
    let leftovers: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
