//! Reading a composefs dumpfile into a [`Tree`], with the checks and limits
//! of the reference mkcomposefs so the same inputs are accepted and refused.

use std::collections::HashMap;
use std::io::BufRead;

use super::escape::{unescape, unescape_optional};
use super::ParseError;
use crate::erofs::format::{chunking, MAX_CHUNKS};
use crate::fsverity;
use crate::tree::{
    DirEntry, FileType, Inode, InodeId, Mtime, Name, Tree, MAX_INLINE_CONTENT, MAX_NAME_LEN,
    MAX_PATH_LEN, ROOT,
};

/// Largest xattr name, as the kernel's XATTR_NAME_MAX.
const MAX_XATTR_NAME: usize = 255;
/// Budget for one inode's xattrs read from a dumpfile (the reference's
/// LCFS_INODE_EXTERNAL_XATTR_MAX), counted as the reference counts it.
const MAX_XATTR_BUDGET: usize = u16::MAX as usize / 2;
/// The text after the fixed fields is capped to bound the work per line.
const MAX_XATTR_TEXT: usize = u16::MAX as usize;

/// Parse a whole dumpfile.
pub fn parse(mut input: impl BufRead) -> Result<Tree, ParseError> {
    let mut parser = Parser::default();
    let mut line = Vec::with_capacity(256);
    let mut lineno = 0usize;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| ParseError::io(lineno + 1, e))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        parser
            .line(&line)
            .map_err(|message| ParseError::at(lineno, message))?;
    }
    parser.finish()
}

/// A hard link line whose target is resolved once every line is read.
struct Fixup {
    line: usize,
    dir: InodeId,
    name: Vec<u8>,
    target: Vec<u8>,
}

#[derive(Default)]
struct Parser {
    tree: Option<Tree>,
    /// Per inode, the xattr budget used so far (see MAX_XATTR_BUDGET).
    xattr_budget: Vec<u16>,
    /// Placeholder inodes standing for hard link lines, by id.
    placeholders: HashMap<InodeId, usize>,
    fixups: Vec<Fixup>,
    lines: usize,
    /// The directory the last entry went into.
    last_dir: Option<InodeId>,
    /// Directories rebuilt by `pack`, and their sizes then.
    packed: HashMap<InodeId, usize>,
}

impl Parser {
    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        self.lines += 1;
        if let Some(pos) = line.iter().position(|&b| b == 0) {
            return Err(format!("embedded NUL byte at column {}", pos + 1));
        }
        let mut rest = line;
        let mut fields: [Option<&[u8]>; 11] = [None; 11];
        for field in fields.iter_mut() {
            if rest.is_empty() {
                break;
            }
            *field = Some(split_field(&mut rest));
        }
        // Fields are checked in order, each when first needed, so a short
        // hard link line (which ends at its target) is complete.
        const NAMES: [&str; 11] = [
            "PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT",
            "DIGEST",
        ];
        let field = |i: usize| fields[i].ok_or_else(|| format!("missing {} field", NAMES[i]));
        let path = field(0)?;
        let mode = field(2)?;
        let path = unescape(path).map_err(|e| format!("path: {e}"))?;
        if path.is_empty() {
            return Err("empty path".into());
        }
        let (is_hardlink, mode_text) = match mode.strip_prefix(b"@") {
            Some(m) => (true, m),
            None => (false, mode),
        };
        let mode = parse_octal(mode_text).map_err(|e| format!("mode: {e}"))?;
        let Some(file_type) = FileType::from_mode(mode) else {
            return Err(format!("mode {mode:o} has no valid file type"));
        };

        if is_hardlink {
            if file_type == FileType::Directory {
                return Err("a directory cannot be a hard link".into());
            }
            let target = unescape_optional(field(8)?)
                .map_err(|e| format!("hard link target: {e}"))?
                .ok_or("hard link has no target path")?;
            let (dir, name) = self.locate(&path)?;
            let id = self.insert(dir, name.clone(), Inode::new(mode), true, &path)?;
            self.placeholders.insert(id, self.fixups.len());
            self.fixups.push(Fixup {
                line: self.lines,
                dir,
                name,
                target,
            });
            return Ok(());
        }

        let mut inode = Inode::new(mode);
        let size = parse_u64(field(1)?).map_err(|e| format!("size: {e}"))?;
        inode.nlink = parse_u32(field(3)?).map_err(|e| format!("nlink: {e}"))?;
        inode.uid = parse_u32(field(4)?).map_err(|e| format!("uid: {e}"))?;
        inode.gid = parse_u32(field(5)?).map_err(|e| format!("gid: {e}"))?;
        let rdev = parse_u32(field(6)?).map_err(|e| format!("rdev: {e}"))?;
        inode.mtime = parse_mtime(field(7)?).map_err(|e| format!("mtime: {e}"))?;
        let payload = unescape_optional(field(8)?).map_err(|e| format!("payload: {e}"))?;
        let content = unescape_optional(field(9)?).map_err(|e| format!("content: {e}"))?;
        if let Some(c) = &content {
            if c.len() as u64 != size {
                return Err(format!("content is {} bytes but size says {size}", c.len()));
            }
            if c.len() > MAX_INLINE_CONTENT {
                return Err(format!(
                    "inline content of {} bytes exceeds the maximum of {MAX_INLINE_CONTENT}",
                    c.len()
                ));
            }
        }
        let digest =
            match unescape_optional(field(10)?).map_err(|e| format!("digest: {e}"))? {
                Some(d) => Some(fsverity::parse_hex(&d).ok_or_else(|| {
                    format!("digest '{}' is not 64 hex digits", &d.escape_ascii())
                })?),
                None => None,
            };
        if file_type == FileType::Regular && content.is_none() && size > 0 {
            let chunks = chunking(size).1;
            if chunks > MAX_CHUNKS {
                return Err(format!(
                    "file of {size} bytes is too large for a composefs image"
                ));
            }
        }
        if matches!(file_type, FileType::BlockDevice | FileType::CharDevice) {
            inode.rdev = rdev;
        }
        if file_type == FileType::Symlink {
            let target = payload
                .filter(|p| !p.is_empty())
                .ok_or("symlink has no target")?;
            check_path_len(&target, "symlink target")?;
            inode.size = target.len() as u64;
            inode.payload = Some(target.into());
        } else {
            inode.size = size;
            if let Some(p) = &payload {
                check_path_len(p, "payload")?;
            }
            inode.payload = payload.map(Into::into);
            inode.content = content.filter(|c| !c.is_empty()).map(Into::into);
        }
        inode.digest = digest;

        if rest.len() > MAX_XATTR_TEXT {
            return Err(format!(
                "xattrs take {} bytes of text, more than the maximum of {MAX_XATTR_TEXT}",
                rest.len()
            ));
        }
        let id = self.add(&path, inode)?;
        while !rest.is_empty() {
            let xattr = split_field(&mut rest);
            self.set_xattr(id, xattr)?;
        }
        Ok(())
    }

    /// Insert `inode` at `path`, returning its id.
    fn add(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, String> {
        if path == b"/" {
            if self.tree.is_some() {
                return Err("a second root directory".into());
            }
            if !inode.is_dir() {
                return Err("the root must be a directory".into());
            }
            self.tree = Some(Tree::new(inode));
            self.xattr_budget.push(0);
            return Ok(ROOT);
        }
        let (dir, name) = self.locate(path)?;
        self.insert(dir, name, inode, false, path)
    }

    fn insert(
        &mut self,
        dir: InodeId,
        name: Vec<u8>,
        inode: Inode,
        hardlink: bool,
        path: &[u8],
    ) -> Result<InodeId, String> {
        if let Some(last) = self.last_dir.replace(dir).filter(|&last| last != dir) {
            self.pack(last);
        }
        let tree = self.tree.as_mut().expect("locate checked the root");
        if tree.inodes[dir].entries.contains_key(name.as_slice()) {
            return Err(format!("{} is listed twice", path.escape_ascii()));
        }
        let id = tree.add_inode(inode);
        self.xattr_budget.push(0);
        tree.inodes[dir].entries.insert(
            Name::from_slice(&name),
            DirEntry {
                inode: id,
                hardlink,
            },
        );
        Ok(id)
    }

    /// Rebuild the entries of a directory the parser has left, once it
    /// has doubled since last rebuilt. A dumpfile lists names in order,
    /// and a B-tree filled in order leaves its nodes about half full; one
    /// built from a sorted list has them full, which saves a quarter of
    /// the memory names take. Doubling keeps the rebuilds linear in all.
    fn pack(&mut self, dir: InodeId) {
        let tree = self.tree.as_mut().expect("a directory was filled");
        let entries = &mut tree.inodes[dir].entries;
        let before = self.packed.get(&dir).copied().unwrap_or(0);
        if entries.len() > 2 * before.max(8) {
            *entries = std::mem::take(entries).into_iter().collect();
            self.packed.insert(dir, entries.len());
        }
    }

    /// The directory that holds `path` and the final name in it.
    fn locate(&self, path: &[u8]) -> Result<(InodeId, Vec<u8>), String> {
        let shown = || path.escape_ascii().to_string();
        let tree = self
            .tree
            .as_ref()
            .ok_or("the root directory must come first")?;
        let mut dir = ROOT;
        let mut rest = trim_slashes(path);
        loop {
            match rest.iter().position(|&b| b == b'/') {
                Some(end) => {
                    let component = &rest[..end];
                    let entry = tree.inodes[dir]
                        .entries
                        .get(component)
                        .ok_or_else(|| format!("parent directory of {} is missing", shown()))?;
                    if !tree.inodes[entry.inode].is_dir() {
                        return Err(format!("parent of {} is not a directory", shown()));
                    }
                    dir = entry.inode;
                    rest = trim_slashes(&rest[end..]);
                }
                None => {
                    let name = rest;
                    if name.is_empty() {
                        return Err(format!("{} has an empty file name", shown()));
                    }
                    if name == b"." || name == b".." {
                        return Err(format!("{} names . or ..", shown()));
                    }
                    if name.len() > MAX_NAME_LEN {
                        return Err(format!(
                            "file name of {} bytes is longer than {MAX_NAME_LEN}",
                            name.len()
                        ));
                    }
                    if !tree.inodes[dir].is_dir() {
                        return Err(format!("parent of {} is not a directory", shown()));
                    }
                    return Ok((dir, name.to_vec()));
                }
            }
        }
    }

    fn set_xattr(&mut self, id: InodeId, text: &[u8]) -> Result<(), String> {
        let eq = text
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("xattr '{}' has no '='", text.escape_ascii()))?;
        let key = unescape(&text[..eq]).map_err(|e| format!("xattr name: {e}"))?;
        let value = unescape(&text[eq + 1..]).map_err(|e| format!("xattr value: {e}"))?;
        if key.is_empty() {
            return Err("empty xattr name".into());
        }
        if key.contains(&0) {
            return Err("xattr name contains a NUL byte".into());
        }
        if key.len() > MAX_XATTR_NAME {
            return Err(format!(
                "xattr name of {} bytes is longer than {MAX_XATTR_NAME}",
                key.len()
            ));
        }
        if value.len() > u16::MAX as usize {
            return Err(format!(
                "xattr value of {} bytes is longer than {}",
                value.len(),
                u16::MAX
            ));
        }
        let tree = self.tree.as_mut().expect("inode exists");
        let xattrs = &mut tree.inodes[id].xattrs;
        let mut budget = usize::from(self.xattr_budget[id]);
        // Accounting as the reference does it: 7 bytes of worst-case entry
        // overhead per xattr plus a 12-byte header for the first.
        if let Some(old) = xattrs.remove(&key) {
            budget = if xattrs.is_empty() {
                0
            } else {
                budget.saturating_sub(7 + key.len() + old.len())
            };
        }
        let mut cost = 7 + key.len() + value.len();
        if xattrs.is_empty() {
            cost += 12;
        }
        if budget + cost > MAX_XATTR_BUDGET {
            return Err(format!(
                "xattrs of this file exceed {MAX_XATTR_BUDGET} bytes"
            ));
        }
        // At most MAX_XATTR_BUDGET: a u16 holds it.
        self.xattr_budget[id] = (budget + cost) as u16;
        xattrs.insert(key, value);
        Ok(())
    }

    /// Resolve hard links and hand out the tree.
    fn finish(self) -> Result<Tree, ParseError> {
        let mut tree = self.tree.ok_or_else(|| ParseError::whole("no entries"))?;
        for fixup in &self.fixups {
            let err = |m: String| ParseError::at(fixup.line, m);
            let shown = &fixup.target.escape_ascii().to_string();
            let mut target = lookup(&tree, &fixup.target)
                .ok_or_else(|| err(format!("hard link target {shown} does not exist")))?;
            let own = tree.inodes[fixup.dir].entries[fixup.name.as_slice()].inode;
            if target == own {
                return Err(err(format!("hard link {shown} points to itself")));
            }
            // Follow links to links, refusing cycles.
            let mut steps = 0;
            while let Some(&next) = self.placeholders.get(&target) {
                steps += 1;
                if steps > self.fixups.len() {
                    return Err(err(format!("hard link {shown} is part of a cycle")));
                }
                let next = &self.fixups[next];
                target = lookup(&tree, &next.target).ok_or_else(|| {
                    err(format!(
                        "hard link target {} does not exist",
                        &next.target.escape_ascii()
                    ))
                })?;
            }
            if tree.inodes[target].is_dir() {
                return Err(err(format!("hard link {shown} points to a directory")));
            }
            let entry = tree.inodes[fixup.dir]
                .entries
                .get_mut(fixup.name.as_slice())
                .expect("fixup entry exists");
            entry.inode = target;
        }
        Ok(tree)
    }
}

/// Find the inode at an absolute path, following directory entries as given.
fn lookup(tree: &Tree, path: &[u8]) -> Option<InodeId> {
    let mut id = ROOT;
    for component in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        id = tree.inodes[id].entries.get(component)?.inode;
    }
    Some(id)
}

fn trim_slashes(mut s: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Take the text up to the next space (or the end) off `rest`.
fn split_field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    match rest.iter().position(|&b| b == b' ') {
        Some(i) => {
            let field = &rest[..i];
            *rest = &rest[i + 1..];
            field
        }
        None => std::mem::take(rest),
    }
}

fn check_path_len(p: &[u8], what: &str) -> Result<(), String> {
    if p.len() > MAX_PATH_LEN {
        return Err(format!(
            "{what} of {} bytes is longer than {MAX_PATH_LEN}",
            p.len()
        ));
    }
    Ok(())
}

fn parse_number(text: &[u8], radix: u32) -> Result<u64, String> {
    let shown = || text.escape_ascii().to_string();
    if text.is_empty() {
        return Err("missing number".into());
    }
    let s = std::str::from_utf8(text).map_err(|_| format!("'{}' is not a number", shown()))?;
    if !s.bytes().all(|b| (b as char).is_digit(radix)) {
        return Err(format!("'{}' is not a number", shown()));
    }
    u64::from_str_radix(s, radix).map_err(|_| format!("'{}' is too large", shown()))
}

fn parse_u64(text: &[u8]) -> Result<u64, String> {
    parse_number(text, 10)
}

fn parse_u32(text: &[u8]) -> Result<u32, String> {
    let v = parse_number(text, 10)?;
    u32::try_from(v).map_err(|_| format!("{v} does not fit in 32 bits"))
}

fn parse_octal(text: &[u8]) -> Result<u32, String> {
    let v = parse_number(text, 8)?;
    u32::try_from(v)
        .ok()
        .filter(|&m| m <= 0o177777)
        .ok_or_else(|| format!("{v:o} is not a file mode"))
}

fn parse_mtime(text: &[u8]) -> Result<Mtime, String> {
    let dot = text
        .iter()
        .position(|&b| b == b'.')
        .ok_or("expected SECONDS.NANOSECONDS")?;
    let (sec, nsec) = (&text[..dot], &text[dot + 1..]);
    let sec = match sec.strip_prefix(b"-") {
        Some(abs) => -i64::try_from(parse_u64(abs)?).map_err(|_| "seconds out of range")?,
        None => i64::try_from(parse_u64(sec)?).map_err(|_| "seconds out of range")?,
    };
    let nsec = parse_u64(nsec)?;
    if nsec >= 1_000_000_000 {
        return Err(format!("{nsec} nanoseconds is not below one second"));
    }
    Ok(Mtime {
        sec,
        nsec: nsec as u32,
    })
}
