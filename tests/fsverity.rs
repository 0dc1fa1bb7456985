//! fs-verity digests agree with Debian's `fsverity digest`, and the
//! kernel's fs-verity ioctls fail soft where the kernel has none.

mod common;

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use common::*;
use sealtree::fsverity;

fn reference_digest(path: &Path) -> String {
    let out = Command::new("fsverity")
        .args(["digest", "--compact"])
        .arg(path)
        .output()
        .expect("run fsverity");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn digests_agree_with_fsverity_utils() {
    if !have_command("fsverity") {
        return missing("the fsverity command (Debian package fsverity)");
    }
    let dir = tempfile::tempdir().unwrap();
    let sizes: [u64; 6] = [0, 1, 4095, 4096, 4097, 1024 * 1024 + 1];
    for size in sizes {
        let path = dir.path().join(format!("f{size}"));
        let data: Vec<u8> = (0..size).map(|i| (i * 131 % 253) as u8).collect();
        fs::write(&path, &data).unwrap();
        let ours = fsverity::digest_reader(File::open(&path).unwrap())
            .unwrap()
            .0;
        assert_eq!(hex::encode(ours), reference_digest(&path), "size {size}");
        assert_eq!(ours, fsverity::digest_bytes(&data), "size {size}");
    }
    // A sparse 100 MiB file with data at both ends.
    let path = dir.path().join("sparse");
    let f = File::create(&path).unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"end", 100 * 1024 * 1024 - 3).unwrap();
    drop(f);
    let ours = fsverity::digest_reader(File::open(&path).unwrap())
        .unwrap()
        .0;
    assert_eq!(hex::encode(ours), reference_digest(&path), "sparse file");
}

#[test]
fn empty_file_root_hash_is_zero() {
    // The digest covers a descriptor whose root hash is all zeros.
    use sha2::Digest;
    let mut descriptor = [0u8; 256];
    descriptor[0] = 1; // version
    descriptor[1] = 1; // SHA-256
    descriptor[2] = 12; // log2 block size
    let want: [u8; 32] = sha2::Sha256::digest(descriptor).into();
    assert_eq!(fsverity::digest_bytes(b""), want);
}

/// Enabling and measuring must report "unsupported" rather than fail where
/// the filesystem or kernel has no fs-verity, and agree where it has.
#[test]
fn kernel_verity_is_used_or_reported_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"hello world\n").unwrap();
    let f = File::open(&path).unwrap();
    match fsverity::enable(&f).unwrap() {
        fsverity::EnableOutcome::Unsupported => {
            assert_eq!(fsverity::measure(&f).unwrap(), None);
        }
        _ => {
            assert_eq!(
                fsverity::measure(&f).unwrap(),
                Some(fsverity::digest_bytes(b"hello world\n"))
            );
        }
    }
}
