//! Inputs the fuzzers (fuzz/) found problems with, kept so they stay
//! fixed.

use std::fs;
use std::path::Path;

fn input(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz_regressions")
            .join(name),
    )
    .unwrap()
}

/// A hard-link line whose own mode differs from its target's: the text
/// written back must parse to the same text.
#[test]
fn dumpfile_hard_link_with_its_own_mode_round_trips() {
    let data = input("dumpfile-hardlink-mode.dump");
    let tree = sealtree::dumpfile::parse(&data[..]).unwrap();
    let mut text = Vec::new();
    sealtree::dumpfile::write(&tree, &mut text).unwrap();
    let again = sealtree::dumpfile::parse(&text[..]).unwrap();
    let mut text2 = Vec::new();
    sealtree::dumpfile::write(&again, &mut text2).unwrap();
    assert_eq!(text, text2);
}

/// An image with an empty symlink target: refused, not read into a tree
/// no dumpfile can describe.
#[test]
fn image_with_an_empty_symlink_is_refused() {
    let data = input("image-empty-symlink.cfs");
    let err = sealtree::erofs::read_image(&data).unwrap_err();
    assert!(
        err.to_string().contains("symlink without a target"),
        "{err}"
    );
}

/// An image whose mtime has a billion nanoseconds or more: refused.
#[test]
fn image_with_out_of_range_nanoseconds_is_refused() {
    let data = input("image-mtime-nanoseconds.cfs");
    let err = sealtree::erofs::read_image(&data).unwrap_err();
    assert!(err.to_string().contains("nanoseconds"), "{err}");
}

/// An image with an xattr of empty name: refused.
#[test]
fn image_with_an_empty_xattr_name_is_refused() {
    let data = input("image-empty-xattr-name.cfs");
    let err = sealtree::erofs::read_image(&data).unwrap_err();
    assert!(err.to_string().contains("invalid xattr name"), "{err}");
}

/// An image with a 353-byte file name: refused.
#[test]
fn image_with_an_overlong_name_is_refused() {
    let data = input("image-long-name.cfs");
    let err = sealtree::erofs::read_image(&data).unwrap_err();
    assert!(
        err.to_string().contains("invalid directory entry name"),
        "{err}"
    );
}

/// An image claiming a file of 17 exabytes: refused as the writer would.
#[test]
fn image_with_an_impossible_file_size_is_refused() {
    let data = input("image-huge-size.cfs");
    let err = sealtree::erofs::read_image(&data).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}
