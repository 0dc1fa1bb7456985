//! Tar import (plain, gzip or zstd by magic): never a panic, and nothing
//! escapes the tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sealtree::tar_import::read_tar_from(data, std::path::Path::new("fuzz.tar"), None);
});
