//! The image reader (composefs-dump of arbitrary bytes): never a panic;
//! an accepted image's tree writes a dumpfile that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = sealtree::erofs::read_image(data) {
        let mut text = Vec::new();
        sealtree::dumpfile::write(&tree, &mut text).expect("writing to memory");
        sealtree::dumpfile::parse(&text[..]).expect("the dump of a read image parses");
    }
});
