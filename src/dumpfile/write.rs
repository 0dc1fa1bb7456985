//! Writing a [`Tree`] as a dumpfile: depth-first, names in bytewise order,
//! hard links as `@MODE` lines naming their target's path.

use std::io::{self, Write};

use super::escape::{escape, escape_optional, Style};
use crate::tree::{Inode, Tree};

/// Write `tree` in dumpfile form.
pub fn write(tree: &Tree, out: impl Write) -> io::Result<()> {
    let mut primary_path: Vec<Option<Vec<u8>>> = vec![None; tree.inodes.len()];
    tree.walk(|path, id, hardlink| {
        if !hardlink {
            primary_path[id] = Some(join(path));
        }
    });

    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let mut line = Vec::with_capacity(512);
    let mut result = Ok(());
    tree.walk(|path, id, hardlink| {
        if result.is_err() {
            return;
        }
        let link_target = if hardlink {
            primary_path[id].as_deref()
        } else {
            None
        };
        write_line(&mut line, &join(path), &tree.inodes[id], link_target);
        result = out.write_all(&line);
    });
    result?;
    out.flush()
}

fn write_line(line: &mut Vec<u8>, path: &[u8], inode: &Inode, link_target: Option<&[u8]>) {
    use std::io::Write as _;
    line.clear();
    escape(line, path, Style::Standard);
    let at = if link_target.is_some() { "@" } else { "" };
    let _ = write!(
        line,
        " {} {at}{:o} {} {} {} {} {}.{} ",
        inode.size,
        inode.mode,
        inode.nlink,
        inode.uid,
        inode.gid,
        inode.rdev,
        inode.mtime.sec,
        inode.mtime.nsec
    );
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

fn join(components: &[&[u8]]) -> Vec<u8> {
    if components.is_empty() {
        return b"/".to_vec();
    }
    let mut p = Vec::new();
    for c in components {
        p.push(b'/');
        p.extend_from_slice(c);
    }
    p
}
