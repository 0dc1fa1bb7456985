//! The dumpfile parser: never a panic; whatever it accepts writes back
//! and re-parses to the same tree, and builds an image or refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtree::erofs::{write_image, ImageOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = sealtree::dumpfile::parse(data) {
        let mut text = Vec::new();
        sealtree::dumpfile::write(&tree, &mut text).expect("writing to memory");
        let again = sealtree::dumpfile::parse(&text[..]).expect("own output parses");
        assert_eq!(again, tree);
        let _ = write_image(&tree, &ImageOptions::default());
    }
});
