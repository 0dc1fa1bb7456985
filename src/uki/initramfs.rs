//! Reading an initramfs as the kernel unpacks it: cpio archives ("newc")
//! one after another, each plain or compressed (gzip, zstd), zeros
//! between them; a later file of the same name replaces an earlier one.
//! `uki build` reads what it is about to sign from here rather than from
//! the tree: the keys, the policy and the units that are in the image.

use std::collections::BTreeMap;
use std::io::Read;

/// Files whose path `want` accepts, as the kernel would leave them.
pub fn files(
    image: &[u8],
    want: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    unpack(image, want, &mut out, 0)?;
    Ok(out)
}

fn unpack(
    mut buf: &[u8],
    want: &dyn Fn(&str) -> bool,
    out: &mut BTreeMap<String, Vec<u8>>,
    depth: u32,
) -> Result<(), String> {
    if depth > 4 {
        return Err("compressed archives nested too deep".into());
    }
    let start = buf.len();
    while !buf.is_empty() {
        let at = start - buf.len();
        if buf[0] == 0 {
            buf = &buf[1..];
        } else if buf.starts_with(b"07070") {
            buf = cpio(buf, at, want, out)?;
        } else if buf.starts_with(&[0x1f, 0x8b]) {
            let mut d = flate2::bufread::GzDecoder::new(buf);
            let mut inner = Vec::new();
            d.read_to_end(&mut inner)
                .map_err(|e| format!("gzip at offset {at}: {e}"))?;
            buf = d.into_inner();
            unpack(&inner, want, out, depth + 1)?;
        } else if buf.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut d = zstd::stream::read::Decoder::with_buffer(buf)
                .map_err(|e| format!("zstd at offset {at}: {e}"))?
                .single_frame();
            let mut inner = Vec::new();
            d.read_to_end(&mut inner)
                .map_err(|e| format!("zstd at offset {at}: {e}"))?;
            buf = d.finish();
            unpack(&inner, want, out, depth + 1)?;
        } else {
            return Err(format!(
                "offset {at}: neither cpio nor gzip nor zstd (bytes {:02x?}); rebuild it with dracut --compress gzip or zstd",
                &buf[..buf.len().min(4)]
            ));
        }
    }
    Ok(())
}

/// One archive from the start of `buf`; returns what follows it.
fn cpio<'a>(
    mut buf: &'a [u8],
    base: usize,
    want: &dyn Fn(&str) -> bool,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<&'a [u8], String> {
    let total = buf.len();
    loop {
        let at = base + (total - buf.len());
        let bad = |what: &str| format!("cpio at offset {at}: {what}");
        let header = buf.get(..110).ok_or_else(|| bad("truncated header"))?;
        if !header.starts_with(b"070701") && !header.starts_with(b"070702") {
            return Err(bad("bad magic"));
        }
        let field = |i: usize| {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad header field"))
        };
        let (mode, size, name_len) = (field(1)?, field(6)?, field(11)?);
        let name_end = 110usize
            .checked_add(name_len)
            .filter(|&e| e <= buf.len() && name_len > 0)
            .ok_or_else(|| bad("name runs past the end"))?;
        let name = String::from_utf8_lossy(&buf[110..name_end - 1]).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start
            .checked_add(size)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| bad(&format!("{name}: data runs past the end")))?;
        let next = data_end.div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return Ok(&buf[next.min(buf.len())..]);
        }
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        // Regular files only: a directory or link of the same name
        // replaces the file, as unpacking would.
        if mode & 0o170000 == 0o100000 && want(&name) {
            out.insert(name, buf[data_start..data_end].to_vec());
        } else {
            out.remove(&name);
        }
        buf = &buf[next.min(buf.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpio::{archive, pad4, Item};
    use super::*;
    use std::io::Write;

    #[test]
    fn later_archives_replace_earlier_ones() {
        let first = archive(&[
            Item::File {
                path: "etc/a",
                mode: 0o644,
                data: b"one",
            },
            Item::File {
                path: "etc/b",
                mode: 0o644,
                data: b"kept",
            },
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&first).unwrap();
        let mut image = gz.finish().unwrap();
        pad4(&mut image);
        image.extend(archive(&[Item::File {
            path: "etc/a",
            mode: 0o644,
            data: b"two",
        }]));
        let got = files(&image, &|p| p.starts_with("etc/")).unwrap();
        assert_eq!(got["etc/a"], b"two");
        assert_eq!(got["etc/b"], b"kept");
        assert!(files(b"junk", &|_| true)
            .unwrap_err()
            .contains("neither cpio"));
        let mut cut = archive(&[Item::File {
            path: "x",
            mode: 0o644,
            data: b"abc",
        }]);
        cut.truncate(113);
        assert!(files(&cut, &|_| true).unwrap_err().contains("runs past"));
    }
}
