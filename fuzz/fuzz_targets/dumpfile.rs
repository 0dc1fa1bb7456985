//! The dumpfile parser: never a panic; whatever it accepts writes a
//! dumpfile that parses and writes the same text again, and builds an
//! image or refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtree::erofs::{write_image, ImageOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = sealtree::dumpfile::parse(data) {
        let mut text = Vec::new();
        sealtree::dumpfile::write(&tree, &mut text).expect("writing to memory");
        let again = sealtree::dumpfile::parse(&text[..]).expect("own output parses");
        let mut text2 = Vec::new();
        sealtree::dumpfile::write(&again, &mut text2).expect("writing to memory");
        assert_eq!(text, text2);
        let _ = write_image(&tree, &ImageOptions::default());
    }
});
