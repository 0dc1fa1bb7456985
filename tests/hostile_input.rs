//! Corrupted images and dumpfiles are refused with an error, never a panic,
//! and whatever is accepted round-trips. Deterministic mutations of the
//! reference inputs; the coverage-guided fuzzers go further.

mod common;

use common::Rng;
use sealtree::{dumpfile, erofs, erofs::ImageOptions};

const SAMPLE: &[u8] = b"/ 4096 40755 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 user.foo2=bar-2
/blockdev 0 60777 1 0 0 107690 1633950376.0 - - - trusted.bar=bar-2
/chardev 0 20777 1 0 0 10769 1633950376.0 - - - trusted.foo=bar-2
/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\\n user.foo=bar-2
/fifo 0 10777 1 0 0 0 1633950376.0 - - - trusted.bar=bar-2
/inline 15 100777 1 0 0 0 1633950376.0 - FOOBAR\\nINAFILE\\n - user.foo=bar-2
/dir 4096 40755 2 0 0 0 1633950376.0 - - - user.foo=bar-2
/dir/ext 70000 100644 2 7 8 0 1633950377.5 ab/cdef - 0101010101010101010101010101010101010101010101010101010101010101
/dir/link 0 @100644 2 0 0 0 0.0 /dir/ext - -
/symlink 7 120777 1 0 0 0 1633950376.0 /inline - - trusted.sym=1
/whiteout 0 20777 1 0 0 0 1633950376.0 - - -
";

#[test]
fn corrupted_images_are_refused_or_read() {
    let tree = dumpfile::parse(SAMPLE).unwrap();
    let image = erofs::write_image(&tree, &ImageOptions::default())
        .unwrap()
        .bytes;
    let mut rng = Rng(0x5eed);
    let (mut read, mut refused) = (0, 0);
    for _ in 0..4000 {
        let mut bytes = image.clone();
        for _ in 0..1 + rng.below(16) {
            // Mostly the metadata at the front, where the structure is.
            let limit = if rng.below(2) == 0 {
                bytes.len()
            } else {
                bytes.len().min(8192)
            };
            let i = rng.below(limit);
            bytes[i] = rng.next() as u8;
        }
        if rng.below(10) == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        match erofs::read_image(&bytes) {
            Ok(tree) => {
                read += 1;
                let mut out = Vec::new();
                dumpfile::write(&tree, &mut out).unwrap();
            }
            Err(_) => refused += 1,
        }
    }
    assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
}

#[test]
fn corrupted_dumpfiles_are_refused_or_round_trip() {
    let mut rng = Rng(0xfeed);
    let alphabet = b" \\@-=x/0123456789.\n\0abc";
    let (mut built, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut text = SAMPLE.to_vec();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(text.len());
            match rng.below(3) {
                0 => text[i] = alphabet[rng.below(alphabet.len())],
                1 => {
                    text.remove(i);
                }
                _ => text.insert(i, rng.next() as u8),
            }
        }
        let tree = match dumpfile::parse(&text[..]) {
            Ok(tree) => tree,
            Err(e) => {
                assert!(!e.message.contains('\n'), "multi-line error: {e}");
                refused += 1;
                continue;
            }
        };
        let Ok(image) = erofs::write_image(&tree, &ImageOptions::default()) else {
            refused += 1;
            continue;
        };
        built += 1;
        let mut dump = Vec::new();
        dumpfile::write(&erofs::read_image(&image.bytes).unwrap(), &mut dump).unwrap();
        let again = erofs::write_image(
            &dumpfile::parse(&dump[..]).unwrap(),
            &ImageOptions::default(),
        )
        .unwrap();
        assert!(
            image.bytes == again.bytes,
            "round trip differs for:\n{}",
            text.escape_ascii()
        );
    }
    assert!(built > 0 && refused > 0, "built {built}, refused {refused}");
}
