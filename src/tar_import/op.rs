//! One entry of an archive, decoded: what it does to the tree. Applying
//! a layer is decoding its entries, then applying them in order; the
//! layer cache keeps a layer's decoded entries as lines of text (fields
//! escaped as in a composefs dumpfile) so that a layer seen before is
//! applied again without being read.

use std::collections::BTreeMap;

use crate::dumpfile::escape::{escape, escape_optional, unescape, unescape_optional, Style};
use crate::fsverity;
use crate::tree::{Inode, Mtime};

/// Path components, each a plain name (no `/`, `.` or `..`).
pub type Components = Vec<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A directory: its metadata; what is already beneath it stays.
    Dir { path: Components, inode: Inode },
    /// A regular file, symlink, device or fifo.
    Node { path: Components, inode: Inode },
    /// A hard link to what `target` names when it is applied.
    HardLink {
        path: Components,
        target: Components,
    },
    /// A whiteout in directory `dir`: of `name`, or (None) an opaque one.
    Whiteout {
        dir: Components,
        name: Option<Vec<u8>>,
    },
}

impl Op {
    /// The op as one line (with its newline).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Dir { path, inode } => {
                out.extend_from_slice(b"D ");
                push_path(out, path);
                push_numbers(
                    out,
                    &[inode.mode.into(), inode.uid.into(), inode.gid.into()],
                );
                push_mtime(out, inode.mtime);
                push_xattrs(out, &inode.xattrs);
            }
            Op::Node { path, inode } => {
                out.extend_from_slice(b"N ");
                push_path(out, path);
                push_numbers(
                    out,
                    &[
                        inode.mode.into(),
                        inode.uid.into(),
                        inode.gid.into(),
                        inode.rdev.into(),
                        inode.size,
                    ],
                );
                push_mtime(out, inode.mtime);
                out.push(b' ');
                match &inode.digest {
                    Some(d) => out.extend_from_slice(hex::encode(d).as_bytes()),
                    None => out.push(b'-'),
                }
                out.push(b' ');
                escape_optional(out, inode.content.as_deref());
                out.push(b' ');
                escape_optional(out, inode.payload.as_deref());
                push_xattrs(out, &inode.xattrs);
            }
            Op::HardLink { path, target } => {
                out.extend_from_slice(b"L ");
                push_path(out, path);
                out.push(b' ');
                push_path(out, target);
            }
            Op::Whiteout { dir, name } => {
                out.extend_from_slice(b"W ");
                push_path(out, dir);
                out.push(b' ');
                escape_optional(out, name.as_deref());
            }
        }
        out.push(b'\n');
    }

    /// Read back a line `encode` wrote (without its newline).
    pub fn decode(line: &[u8]) -> Result<Op, String> {
        let mut fields = line.split(|&b| b == b' ');
        let mut next = |what: &str| fields.next().ok_or(format!("no {what}"));
        let kind = next("kind")?;
        let path = parse_path(next("path")?)?;
        let op = match kind {
            b"D" | b"N" => {
                let mut inode = Inode::new(0);
                inode.mode = number(next("mode")?)?;
                inode.uid = number(next("uid")?)?;
                inode.gid = number(next("gid")?)?;
                if kind == b"N" {
                    inode.rdev = number(next("rdev")?)?;
                    inode.size = number(next("size")?)?;
                }
                inode.mtime = Mtime {
                    sec: number(next("mtime")?)?,
                    nsec: number(next("mtime nsec")?)?,
                };
                if kind == b"N" {
                    inode.digest = match next("digest")? {
                        b"-" => None,
                        hex => Some(fsverity::parse_hex(hex).ok_or("bad digest")?),
                    };
                    inode.content = unescape_optional(next("content")?)?.map(Into::into);
                    inode.payload = unescape_optional(next("payload")?)?.map(Into::into);
                }
                for xattr in fields {
                    let (name, value) = xattr
                        .iter()
                        .position(|&b| b == b'=')
                        .map(|i| (&xattr[..i], &xattr[i + 1..]))
                        .ok_or("an xattr without '='")?;
                    inode.xattrs.insert(unescape(name)?, unescape(value)?);
                }
                if kind == b"D" {
                    Op::Dir { path, inode }
                } else {
                    Op::Node { path, inode }
                }
            }
            b"L" => Op::HardLink {
                path,
                target: parse_path(next("target")?)?,
            },
            b"W" => Op::Whiteout {
                dir: path,
                name: unescape_optional(next("name")?)?,
            },
            _ => return Err("unknown kind".into()),
        };
        Ok(op)
    }
}

fn push_path(out: &mut Vec<u8>, path: &[Vec<u8>]) {
    out.push(b'/');
    escape(out, &path.join(&b'/'), Style::Standard);
}

fn push_numbers(out: &mut Vec<u8>, numbers: &[u64]) {
    for n in numbers {
        out.push(b' ');
        out.extend_from_slice(n.to_string().as_bytes());
    }
}

fn push_mtime(out: &mut Vec<u8>, mtime: Mtime) {
    out.extend_from_slice(format!(" {} {}", mtime.sec, mtime.nsec).as_bytes());
}

fn push_xattrs(out: &mut Vec<u8>, xattrs: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (name, value) in xattrs {
        out.push(b' ');
        escape(out, name, Style::Equal);
        out.push(b'=');
        escape(out, value, Style::Equal);
    }
}

/// Components of an encoded path, checked as an archive's are.
fn parse_path(field: &[u8]) -> Result<Components, String> {
    let raw = unescape(field)?;
    let rel = raw
        .strip_prefix(b"/")
        .ok_or("a path not starting with '/'")?;
    super::clean_path(rel)
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Result<T, String> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {}", field.escape_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_read_back_as_written() {
        let mut file = Inode::new(0o104755);
        file.uid = 7;
        file.size = 100;
        file.mtime = Mtime { sec: -5, nsec: 9 };
        file.digest = Some([0xab; 32]);
        file.payload = Some(b"ab/abab".as_slice().into());
        file.xattrs
            .insert(b"user.a=b".to_vec(), b"x y\n\0".to_vec());
        let mut tiny = Inode::new(0o100644);
        tiny.content = Some(b"-".as_slice().into());
        tiny.payload = None;
        let ops = [
            Op::Node {
                path: vec![b"usr".to_vec(), b"a b\\c".to_vec()],
                inode: file,
            },
            Op::Node {
                path: vec![b"-".to_vec()],
                inode: tiny,
            },
            Op::Dir {
                path: vec![],
                inode: Inode::new(0o40755),
            },
            Op::HardLink {
                path: vec![b"x".to_vec()],
                target: vec![b"usr".to_vec(), b"y".to_vec()],
            },
            Op::Whiteout {
                dir: vec![b"etc".to_vec()],
                name: Some(b"-".to_vec()),
            },
            Op::Whiteout {
                dir: vec![],
                name: None,
            },
        ];
        for op in ops {
            let mut line = Vec::new();
            op.encode(&mut line);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let back = Op::decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(back, op, "{}", line.escape_ascii());
        }
        assert!(Op::decode(b"N /../etc 0 0 0 0 0 0 0 - - -").is_err());
        assert!(Op::decode(b"N usr 0 0 0 0 0 0 0 - - -").is_err());
        assert!(Op::decode(b"Q /").is_err());
    }
}
