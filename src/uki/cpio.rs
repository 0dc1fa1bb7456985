//! A cpio archive in the "newc" format the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst): a
//! header of 13 eight-digit hex fields after "070701", the NUL-terminated
//! name, the data, each padded to 4 bytes; "TRAILER!!!" ends it. Appended
//! to another (compressed) archive, its files replace or join those.

/// What goes in: a directory, or a regular file with its bytes.
pub enum Item<'a> {
    Dir {
        path: &'a str,
        mode: u32,
    },
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

/// The archive of `items`, in order (parents before children), owned by
/// root, with zero timestamps so the same input gives the same bytes.
pub fn archive(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (path, mode, data, nlink): (&str, u32, &[u8], u32) = match item {
            Item::Dir { path, mode } => (path, S_IFDIR | mode, &[], 2),
            Item::File { path, mode, data } => (path, S_IFREG | mode, data, 1),
        };
        entry(&mut out, i as u32 + 1, path, mode, nlink, data);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, 1, &[]);
    out
}

fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, nlink: u32, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// Zeros up to a multiple of 4 bytes: where the kernel looks for the next
/// header, and what it skips between archives.
pub fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = archive(&[
            Item::Dir {
                path: "etc",
                mode: 0o755,
            },
            Item::File {
                path: "etc/x",
                mode: 0o644,
                data: b"hello",
            },
        ]);
        assert_eq!(&a[..6], b"070701");
        assert_eq!(a.len() % 4, 0);
        // Header 110 bytes, "etc\0" padded to 116, no data.
        assert_eq!(&a[110..114], b"etc\0");
        assert_eq!(&a[116..122], b"070701");
        // The file's mode and size fields.
        assert_eq!(&a[116 + 14..116 + 22], b"000081a4");
        assert_eq!(&a[116 + 54..116 + 62], b"00000005");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("hello"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
    }
}
