//! Tar import (plain, gzip or zstd by magic), as an archive and as two
//! image layers (whiteouts): never a panic, and nothing escapes the tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtree::tar_import::{read_tar_from, TarImport};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.tar");
    let _ = read_tar_from(data, path, None);
    // The same bytes twice as layers: the second's whiteouts meet the
    // first's entries.
    let mut layers = TarImport::new(None);
    if layers.apply(data, path, true).is_ok() && layers.apply(data, path, true).is_ok() {
        let _ = layers.finish(path);
    }
});
