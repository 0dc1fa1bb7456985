//! Images are a function of their input only: not of time, thread count
//! or the order in which a directory lists its entries.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use common::*;

fn build(src: &Path, image: &Path, threads: &str) -> Vec<u8> {
    run_ok(&[
        OsStr::new("mkcomposefs"),
        OsStr::new("--threads"),
        OsStr::new(threads),
        src.as_os_str(),
        image.as_os_str(),
    ]);
    fs::read(image).unwrap()
}

#[test]
fn same_input_same_bytes_across_runs_and_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for d in 0..20 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let data = vec![(d * 50 + f) as u8; 100 + f * 37];
            fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
    let one = build(&src, &tmp.path().join("1.img"), "1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = build(&src, &tmp.path().join("2.img"), "2");
    let again = build(&src, &tmp.path().join("3.img"), "2");
    assert!(one == two, "--threads=1 and --threads=2 differ");
    assert!(two == again, "two runs differ");

    // The same tree written in a different creation order.
    let src2 = tmp.path().join("src2");
    for d in (0..20).rev() {
        let dir = src2.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in (0..50).rev() {
            let data = vec![(d * 50 + f) as u8; 100 + f * 37];
            fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
    // Give both trees identical metadata, then compare images.
    for tree in [&src, &src2] {
        run_ok(&[
            OsStr::new("mkcomposefs"),
            OsStr::new("--use-epoch"),
            tree.as_os_str(),
            tmp.path()
                .join(format!(
                    "{}.epoch",
                    tree.file_name().unwrap().to_str().unwrap()
                ))
                .as_os_str(),
        ]);
    }
    let a = fs::read(tmp.path().join("src.epoch")).unwrap();
    let b = fs::read(tmp.path().join("src2.epoch")).unwrap();
    assert!(a == b, "creation order changed the image");
}
