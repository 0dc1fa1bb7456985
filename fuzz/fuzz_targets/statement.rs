//! Statement and signature parsing: never a panic, never accepted (the
//! key is fixed and the input is not signed by it), key files too.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sealtree::sign;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (text, sig) = data.split_at(split);
    let keys = sign::TrustedKeys {
        keys: vec![sign::PublicKey::from_bytes(&[
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ])
        .expect("RFC 8032 test key")],
        source: "fuzz".into(),
    };
    let verdict = sign::verify(text, Path::new("s.json"), sig, Path::new("s.sig"), &keys);
    assert!(verdict.is_err(), "accepted an unsigned statement");
    let _ = sign::parse_public_keys(data, Path::new("fuzz.pub"));
});
