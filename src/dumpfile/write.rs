//! Writing a [`Tree`] as a dumpfile: depth-first, names in bytewise order,
//! hard links as `@MODE` lines naming their target's path.

use std::collections::HashMap;
use std::io::{self, Write};

use super::escape::{escape, escape_optional, Style};
use crate::tree::{Inode, Tree};

/// Write `tree` in dumpfile form.
pub fn write(tree: &Tree, out: impl Write) -> io::Result<()> {
    // A hard link's line names its primary's path, which may come later
    // in the dumpfile: the paths of linked inodes are found first.
    let mut linked = vec![false; tree.inodes.len()];
    for entry in tree.inodes.iter().flat_map(|inode| inode.entries.values()) {
        if entry.hardlink {
            linked[entry.inode] = true;
        }
    }
    let mut primary_path = HashMap::new();
    if linked.contains(&true) {
        tree.walk(|path, id, hardlink| {
            if !hardlink && linked[id] {
                let mut joined = Vec::new();
                join(&mut joined, path);
                primary_path.insert(id, joined);
            }
        });
    }

    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let (mut line, mut path_buf) = (Vec::with_capacity(512), Vec::with_capacity(256));
    let mut result = Ok(());
    tree.walk(|path, id, hardlink| {
        if result.is_err() {
            return;
        }
        let link_target = match hardlink {
            true => primary_path.get(&id).map(Vec::as_slice),
            false => None,
        };
        join(&mut path_buf, path);
        write_line(&mut line, &path_buf, &tree.inodes[id], link_target);
        result = out.write_all(&line);
    });
    result?;
    out.flush()
}

fn write_line(line: &mut Vec<u8>, path: &[u8], inode: &Inode, link_target: Option<&[u8]>) {
    line.clear();
    escape(line, path, Style::Standard);
    // Numbers by hand: through `write!`, they were a fifth of the time
    // an unchanged commit spends writing its dumpfile.
    line.push(b' ');
    push_number(line, inode.size, 10);
    line.extend_from_slice(if link_target.is_some() { b" @" } else { b" " });
    push_number(line, inode.mode.into(), 8);
    for n in [inode.nlink, inode.uid, inode.gid, inode.rdev] {
        line.push(b' ');
        push_number(line, n.into(), 10);
    }
    line.push(b' ');
    if inode.mtime.sec < 0 {
        line.push(b'-');
    }
    push_number(line, inode.mtime.sec.unsigned_abs(), 10);
    line.push(b'.');
    push_number(line, inode.mtime.nsec.into(), 10);
    line.push(b' ');
    escape_optional(line, link_target.or(inode.payload.as_deref()));
    line.push(b' ');
    escape_optional(line, inode.content.as_deref());
    line.push(b' ');
    match &inode.digest {
        Some(d) => line.extend_from_slice(crate::fsverity::Hex::new(d).as_str().as_bytes()),
        None => line.push(b'-'),
    }
    for (key, value) in &inode.xattrs {
        line.push(b' ');
        escape(line, key, Style::Equal);
        line.push(b'=');
        escape(line, value, Style::Equal);
    }
    line.push(b'\n');
}

/// Append `n` in base `radix` (8 or 10).
fn push_number(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut digits = [0u8; 22];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % radix) as u8;
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `components` as an absolute path, into `path`.
fn join(path: &mut Vec<u8>, components: &[&[u8]]) {
    path.clear();
    if components.is_empty() {
        path.push(b'/');
    }
    for c in components {
        path.push(b'/');
        path.extend_from_slice(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Mtime;

    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for (size, mode, id, sec, nsec) in [
            (0, 0o100644, 0, 0, 0),
            (u64::MAX, u32::MAX, u32::MAX, i64::MAX, 999_999_999),
            (4096, 0o40755, 1000, -1, 1),
            (7, 0o120777, 65534, i64::MIN, u32::MAX),
        ] {
            let mut inode = Inode::new(mode);
            (inode.size, inode.nlink, inode.uid, inode.gid, inode.rdev) = (size, id, id, id, id);
            inode.mtime = Mtime { sec, nsec };
            let mut line = Vec::new();
            write_line(&mut line, b"/a", &inode, Some(b"/b"));
            let expected = format!("/a {size} @{mode:o} {id} {id} {id} {id} {sec}.{nsec} /b - -\n");
            assert_eq!(String::from_utf8(line).unwrap(), expected);
        }
    }
}
