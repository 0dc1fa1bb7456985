//! Importing a tar archive (plain, gzip or zstd) into a [`Tree`], with
//! file contents hashed on the fly and optionally staged into an object
//! store. Entries that would escape the tree are refused.

mod op;

pub use op::Op;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::fsverity;
use crate::objects::Staging;
use crate::tree::{
    object_path, DirEntry, Inode, InodeId, Mtime, Name, Tree, DEFAULT_INLINE_THRESHOLD,
    MAX_NAME_LEN, MAX_PATH_LEN, ROOT, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG,
};

/// A tar archive that could not be imported.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", archive.display(), entry.as_ref().map(|e| format!("{e}: ")).unwrap_or_default())]
pub struct TarError {
    pub archive: std::path::PathBuf,
    /// The entry at fault, escaped.
    pub entry: Option<String>,
    pub message: String,
}

/// Read the archive at `path` into a tree, staging file contents larger
/// than the inline threshold into `staging` when given.
pub fn read_tar(path: &Path, staging: Option<&Staging>) -> Result<Tree, TarError> {
    let file = File::open(path).map_err(|e| TarError {
        archive: path.to_path_buf(),
        entry: None,
        message: e.to_string(),
    })?;
    read_tar_from(BufReader::with_capacity(1 << 20, file), path, staging)
}

/// [`read_tar`] of an archive read from `input`; `path` names it in errors.
pub fn read_tar_from(
    input: impl BufRead,
    path: &Path,
    staging: Option<&Staging>,
) -> Result<Tree, TarError> {
    let mut import = TarImport::new(staging);
    import.apply(input, path, false)?;
    import.finish(path)
}

/// A tree built from tar archives applied in order: one archive, or the
/// layers of a container image, where later layers replace and delete
/// (whiteouts) what earlier ones made.
pub struct TarImport<'s, 'o> {
    import: Import<'s, 'o>,
    /// Entries read in all: each costs memory until the end, even when
    /// a later entry or layer replaces or deletes it.
    entries: u64,
}

/// Entries all archives of one import may hold (an OS tree has about
/// half a million at most).
const MAX_ENTRIES: u64 = 4_000_000;

impl<'s, 'o> TarImport<'s, 'o> {
    /// An empty tree; contents larger than the inline threshold are
    /// staged into `staging` when given.
    pub fn new(staging: Option<&'s Staging<'o>>) -> TarImport<'s, 'o> {
        let mut root = Inode::new(S_IFDIR | 0o755);
        root.nlink = 1;
        TarImport {
            import: Import {
                tree: Tree::new(root),
                staging,
                layer: None,
            },
            entries: 0,
        }
    }

    /// Apply the archive (plain, gzip or zstd) read from `input`; `path`
    /// names it in errors. As a `layer`, whiteout entries (`.wh.NAME`,
    /// `.wh..wh..opq`) delete what earlier layers made, as the OCI image
    /// specification says.
    pub fn apply(&mut self, input: impl BufRead, path: &Path, layer: bool) -> Result<(), TarError> {
        self.apply_recorded(input, path, layer, |_| Ok(()))
    }

    /// [`apply`](Self::apply), handing each entry as applied to `record`.
    pub fn apply_recorded(
        &mut self,
        mut input: impl BufRead,
        path: &Path,
        layer: bool,
        mut record: impl FnMut(&Op) -> Result<(), String>,
    ) -> Result<(), TarError> {
        let fail = |entry: Option<&[u8]>, message: String| TarError {
            archive: path.to_path_buf(),
            entry: entry.map(|e| e.escape_ascii().to_string()),
            message,
        };
        let magic = input.fill_buf().map_err(|e| fail(None, e.to_string()))?;
        let reader: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| fail(None, e.to_string()))?,
            )
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(reader);
        let import = &mut self.import;
        import.layer = layer.then(HashSet::new);
        // Raw mode: PAX and GNU long-name records are read here, by their
        // length prefixes, so names and values may hold any byte.
        let entries = archive
            .entries()
            .map_err(|e| fail(None, e.to_string()))?
            .raw(true);
        let mut pending = Extensions::default();
        // Bytes of extension records read for the next entry.
        let mut pending_bytes = 0u64;
        for entry in entries {
            // The tar crate's words may quote the archive's bytes.
            let mut entry = entry.map_err(|e| {
                fail(
                    None,
                    format!("unreadable entry: {}", e.to_string().escape_debug()),
                )
            })?;
            let mut data = Vec::new();
            // What the header says; a bad field reads as too large.
            let declared = entry.header().entry_size().unwrap_or(u64::MAX);
            match entry.header().entry_type() {
                tar::EntryType::XHeader => {
                    read_record(&mut entry, declared, &mut data, &mut pending_bytes, "PAX")
                        .map_err(|m| fail(None, m))?;
                    let records = parse_pax(&data).map_err(|m| fail(None, m))?;
                    pending.pax.extend(records);
                }
                tar::EntryType::XGlobalHeader => {}
                tar::EntryType::GNULongName => {
                    read_record(
                        &mut entry,
                        declared,
                        &mut data,
                        &mut pending_bytes,
                        "GNU long name",
                    )
                    .map_err(|m| fail(None, m))?;
                    pending.long_name = Some(trim_nul(data));
                }
                tar::EntryType::GNULongLink => {
                    read_record(
                        &mut entry,
                        declared,
                        &mut data,
                        &mut pending_bytes,
                        "GNU long link",
                    )
                    .map_err(|m| fail(None, m))?;
                    pending.long_link = Some(trim_nul(data));
                }
                _ => {
                    self.entries += 1;
                    if self.entries > MAX_ENTRIES {
                        return Err(fail(None, too_many()));
                    }
                    let ext = std::mem::take(&mut pending);
                    pending_bytes = 0;
                    let name = ext
                        .pax_value(b"path")
                        .map(<[u8]>::to_vec)
                        .or(ext.long_name.clone())
                        .unwrap_or_else(|| entry.header().path_bytes().into_owned());
                    if name.len() > MAX_PATH {
                        return Err(fail(
                            None,
                            format!(
                                "an entry's path is {} bytes (at most {MAX_PATH})",
                                name.len()
                            ),
                        ));
                    }
                    let op = import
                        .decode(&mut entry, &name, &ext)
                        .and_then(|op| import.apply(&op).map(|()| op))
                        .map_err(|m| fail(Some(&name), m))?;
                    record(&op).map_err(|m| fail(Some(&name), m))?;
                }
            }
        }
        import.layer = None;
        Ok(())
    }

    /// Apply a layer's entries as [`apply_recorded`](Self::apply_recorded)
    /// handed them out; `path` names the layer in errors.
    pub fn replay(&mut self, ops: &[Op], path: &Path) -> Result<(), TarError> {
        let fail = |message: String| TarError {
            archive: path.to_path_buf(),
            entry: None,
            message,
        };
        self.entries += ops.len() as u64;
        if self.entries > MAX_ENTRIES {
            return Err(fail(too_many()));
        }
        let import = &mut self.import;
        import.layer = Some(HashSet::new());
        for op in ops {
            import.apply(op).map_err(&fail)?;
        }
        import.layer = None;
        Ok(())
    }

    /// The tree; `path` names the source in errors.
    pub fn finish(mut self, path: &Path) -> Result<Tree, TarError> {
        let tree = &mut self.import.tree;
        tree.count_links();
        tree.canonicalize_hardlinks();
        if let Some((name, message)) = tree.link_climbing_out() {
            return Err(TarError {
                archive: path.to_path_buf(),
                entry: Some(name.escape_ascii().to_string()),
                message,
            });
        }
        Ok(self.import.tree)
    }
}

fn too_many() -> String {
    format!("more than {MAX_ENTRIES} entries in all")
}

/// One PAX record: key and value.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// PAX and GNU records that apply to the next entry.
#[derive(Default)]
struct Extensions {
    pax: Vec<PaxRecord>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Extensions {
    fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// PAX records: `LENGTH KEY=VALUE\n`, LENGTH counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > space + 1 && l <= data.len())
            .ok_or("malformed PAX record length")?;
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or("PAX record without newline")?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// GNU tar writes `%` and `=` in xattr names as `%25` and `%3D`.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() && s[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            let hex = std::str::from_utf8(&s[i + 1..i + 3]).expect("hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

struct Import<'s, 'o> {
    tree: Tree,
    staging: Option<&'s Staging<'o>>,
    /// Applying a layer: the names (directory, name) this layer made,
    /// which its opaque whiteouts keep.
    layer: Option<HashSet<(InodeId, Vec<u8>)>>,
}

/// A whiteout's prefix; `.wh..wh..opq` hides a directory's lower contents.
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

impl Import<'_, '_> {
    /// What an archive entry does; contents are hashed (and staged) here.
    fn decode(
        &self,
        entry: &mut tar::Entry<impl Read>,
        name: &[u8],
        ext: &Extensions,
    ) -> Result<Op, String> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        let components = clean_path(name)?;
        if self.layer.is_some() {
            if let Some((last, parents)) = components.split_last() {
                if parents.iter().any(|p| p.starts_with(WHITEOUT)) {
                    return Err("a whiteout name as a directory".into());
                }
                if let Some(hidden) = last.strip_prefix(WHITEOUT) {
                    return Ok(Op::Whiteout {
                        dir: parents.to_vec(),
                        name: (last != OPAQUE).then(|| hidden.to_vec()),
                    });
                }
            }
        }
        let header = entry.header();
        let perms = header.mode().map_err(|e| e.to_string())? & 0o7777;
        let mut inode = Inode::new(0);
        inode.uid = header.uid().map_err(|e| e.to_string())? as u32;
        inode.gid = header.gid().map_err(|e| e.to_string())? as u32;
        inode.mtime = Mtime {
            sec: header.mtime().map_err(|e| e.to_string())? as i64,
            nsec: 0,
        };
        {
            for (key, value) in &ext.pax {
                let (key, value) = (key.as_slice(), value.as_slice());
                if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                    inode.xattrs.insert(percent_decode(xattr), value.to_vec());
                } else if key == b"mtime" {
                    inode.mtime = parse_pax_time(value).ok_or("invalid PAX mtime")?;
                } else if key == b"uid" || key == b"gid" {
                    let v: u32 = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or("invalid PAX uid/gid")?;
                    if key == b"uid" {
                        inode.uid = v;
                    } else {
                        inode.gid = v;
                    }
                } else if key == b"size" {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok());
                    if size != Some(entry.header().entry_size().unwrap_or(u64::MAX)) {
                        return Err("sizes beyond the tar header's range are not supported".into());
                    }
                }
            }
        }
        let link_name = ext
            .pax_value(b"linkpath")
            .map(<[u8]>::to_vec)
            .or(ext.long_link.clone())
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        let header = entry.header();
        match kind {
            T::Directory => {
                inode.mode = S_IFDIR | perms;
                return Ok(Op::Dir {
                    path: components,
                    inode,
                });
            }
            T::Regular | T::Continuous => {
                inode.mode = S_IFREG | perms;
                self.read_content(entry, &mut inode)?;
            }
            T::Symlink => {
                inode.mode = S_IFLNK | 0o777;
                let target = link_name.clone().ok_or("symlink without a target")?;
                if target.is_empty() {
                    return Err("symlink without a target".into());
                }
                if target.len() > MAX_PATH_LEN {
                    return Err(format!(
                        "symlink target of {} bytes (at most {MAX_PATH_LEN})",
                        target.len()
                    ));
                }
                check_symlink(&components, &target)?;
                inode.size = target.len() as u64;
                inode.payload = Some(target.into());
            }
            T::Link => {
                let target = link_name.clone().ok_or("hard link without a target")?;
                let target = clean_path(&target)
                    .map_err(|e| format!("hard link target {}: {e}", target.escape_ascii()))?;
                return Ok(Op::HardLink {
                    path: components,
                    target,
                });
            }
            T::Char | T::Block => {
                let major = header
                    .device_major()
                    .map_err(|e| e.to_string())?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| e.to_string())?
                    .unwrap_or(0);
                if major >= 1 << 12 || minor >= 1 << 20 {
                    return Err(format!(
                        "device {major}:{minor} does not fit the image format"
                    ));
                }
                inode.rdev = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                inode.mode = if kind == T::Char { S_IFCHR } else { S_IFBLK } | perms;
            }
            T::Fifo => inode.mode = S_IFIFO | perms,
            other => return Err(format!("unsupported entry type {other:?}")),
        }
        Ok(Op::Node {
            path: components,
            inode,
        })
    }

    /// Apply what one entry does to the tree.
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Dir { path, inode } => self.add_dir(path, inode.clone()),
            Op::Node { path, inode } => {
                let id = self.tree.add_inode(inode.clone());
                self.link(path, id, false)
            }
            Op::HardLink { path, target } => {
                let id = self.lookup(target).ok_or_else(|| {
                    format!(
                        "hard link target {} is not in the archive before it",
                        target.join(&b'/').escape_ascii()
                    )
                })?;
                if self.tree.inodes[id].is_dir() {
                    return Err("hard link to a directory".into());
                }
                self.tree.inodes[id].nlink += 1;
                self.link(path, id, true)
            }
            Op::Whiteout { dir, name } => self.whiteout(dir, name.as_deref()),
        }
    }

    fn read_content(
        &self,
        entry: &mut tar::Entry<impl Read>,
        inode: &mut Inode,
    ) -> Result<(), String> {
        let size = entry.size();
        if size <= DEFAULT_INLINE_THRESHOLD {
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
            inode.size = data.len() as u64;
            if !data.is_empty() {
                inode.digest = Some(fsverity::digest_bytes(&data));
                inode.content = Some(data.into());
            }
        } else {
            let (digest, len) = match self.staging {
                Some(staging) => staging
                    .add_reader(entry, crate::objects::is_private(inode.mode))
                    .map_err(|e| e.to_string())?,
                None => fsverity::digest_reader(entry).map_err(|e| e.to_string())?,
            };
            inode.size = len;
            inode.digest = Some(digest);
        }
        if let Some(d) = &inode.digest {
            inode.payload = Some(object_path(d).into_bytes().into());
        }
        Ok(())
    }

    fn add_dir(&mut self, components: &[Vec<u8>], mut inode: Inode) -> Result<(), String> {
        inode.nlink = 1;
        let existing = match components.split_last() {
            None => Some(ROOT),
            Some(_) => self
                .lookup(components)
                .filter(|&id| self.tree.inodes[id].is_dir()),
        };
        match existing {
            // A directory listed again, or after its contents: keep the
            // contents, take the metadata.
            Some(id) => {
                let old = std::mem::take(&mut self.tree.inodes[id].entries);
                inode.entries = old;
                self.tree.inodes[id] = inode;
                self.note_made(components);
                Ok(())
            }
            None => {
                let id = self.tree.add_inode(inode);
                self.link(components, id, false)
            }
        }
    }

    /// Enter `id` under `components`, creating missing parent directories.
    fn link(&mut self, components: &[Vec<u8>], id: InodeId, hardlink: bool) -> Result<(), String> {
        let Some((name, parents)) = components.split_last() else {
            return Err("only a directory can be the root".into());
        };
        if name.len() > MAX_NAME_LEN {
            return Err(format!("file name longer than {MAX_NAME_LEN} bytes"));
        }
        let mut dir = ROOT;
        for part in parents {
            dir = match self.tree.inodes[dir].entries.get(part.as_slice()) {
                Some(e) if self.tree.inodes[e.inode].is_dir() && !e.hardlink => e.inode,
                Some(_) => {
                    return Err(format!("parent {} is not a directory", part.escape_ascii()));
                }
                None => {
                    let mut implicit = Inode::new(S_IFDIR | 0o755);
                    implicit.nlink = 1;
                    let new = self.tree.add_inode(implicit);
                    self.tree.inodes[dir].entries.insert(
                        Name::from_slice(part),
                        DirEntry {
                            inode: new,
                            hardlink: false,
                        },
                    );
                    new
                }
            };
        }
        self.note_made(components);
        // A later entry replaces an earlier one of the same name, as
        // extraction would.
        self.tree.inodes[dir].entries.insert(
            Name::from_slice(name),
            DirEntry {
                inode: id,
                hardlink,
            },
        );
        Ok(())
    }

    /// In a layer, note each name along `components` as made by it: its
    /// opaque whiteouts keep them (the name itself may not exist yet).
    fn note_made(&mut self, components: &[Vec<u8>]) {
        let Some(made) = &mut self.layer else {
            return;
        };
        let mut dir = ROOT;
        for part in components {
            made.insert((dir, part.clone()));
            match self.tree.inodes[dir].entries.get(part.as_slice()) {
                Some(e) if self.tree.inodes[e.inode].is_dir() && !e.hardlink => dir = e.inode,
                _ => return,
            }
        }
    }

    /// A whiteout in directory `parents`: of `name`, or (None) an opaque
    /// one. Whiteouts apply to lower layers only: what this layer made
    /// stays, with whatever lower layers had put beneath it hidden. A
    /// whiteout of something no layer made deletes nothing.
    fn whiteout(&mut self, parents: &[Vec<u8>], name: Option<&[u8]>) -> Result<(), String> {
        let Some(dir) = self
            .lookup(parents)
            .filter(|&d| self.tree.inodes[d].is_dir())
        else {
            return Ok(());
        };
        let made = self.layer.as_ref().expect("whiteouts are for layers");
        let hide_from = match name {
            None => dir,
            Some(name) if name.is_empty() || name == b"." || name == b".." => {
                return Err("a whiteout of no name".into())
            }
            Some(name) => {
                if !made.contains(&(dir, name.to_vec())) {
                    self.tree.inodes[dir].entries.remove(name);
                    return Ok(());
                }
                match self.tree.inodes[dir].entries.get(name) {
                    Some(e) if self.tree.inodes[e.inode].is_dir() && !e.hardlink => e.inode,
                    _ => return Ok(()),
                }
            }
        };
        // Hide lower entries under `hide_from`, all the way down.
        let tree = &mut self.tree;
        let mut stack = vec![hide_from];
        while let Some(d) = stack.pop() {
            let mut entries = std::mem::take(&mut tree.inodes[d].entries);
            entries.retain(|n, _| made.contains(&(d, n.to_vec())));
            for e in entries.values() {
                if !e.hardlink && tree.inodes[e.inode].is_dir() {
                    stack.push(e.inode);
                }
            }
            tree.inodes[d].entries = entries;
        }
        Ok(())
    }

    fn lookup(&self, components: &[Vec<u8>]) -> Option<InodeId> {
        let mut id = ROOT;
        for c in components {
            id = self.tree.inodes[id].entries.get(c.as_slice())?.inode;
        }
        Some(id)
    }
}

/// Extension records (PAX, GNU long names) for one entry, in all: names
/// and attributes, never file data.
const MAX_RECORDS: u64 = 1 << 20;
/// Longest entry path (PATH_MAX), which also bounds its depth.
const MAX_PATH: usize = 4096;

/// Read an extension record whose size the header declares, refused
/// before anything is read when the entry's records would pass
/// MAX_RECORDS.
fn read_record(
    entry: &mut impl Read,
    header_size: u64,
    data: &mut Vec<u8>,
    pending_bytes: &mut u64,
    what: &str,
) -> Result<(), String> {
    *pending_bytes = pending_bytes.saturating_add(header_size);
    if *pending_bytes > MAX_RECORDS {
        return Err(format!(
            "{what} record of {header_size} bytes: an entry's extension records may hold at most {MAX_RECORDS} bytes"
        ));
    }
    entry
        .take(header_size)
        .read_to_end(data)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The components of an archive path, refusing absolute paths and `..`.
fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..'".into()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Refuse a relative symlink target that climbs above the tree's root.
/// Absolute targets resolve inside the tree once it is the root.
fn check_symlink(components: &[Vec<u8>], target: &[u8]) -> Result<(), String> {
    if target.starts_with(b"/") {
        return Ok(());
    }
    let mut depth = components.len() as i64 - 1;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink target {} points outside the tree",
                        target.escape_ascii()
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// A PAX time: seconds with an optional fraction.
fn parse_pax_time(value: &[u8]) -> Option<Mtime> {
    let text = std::str::from_utf8(value).ok()?;
    let (sec, frac) = text.split_once('.').unwrap_or((text, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec = 0u32;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nsec = digits.parse().ok()?;
    }
    Some(Mtime { sec, nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer of (path, kind, content or link target).
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match kind {
                tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn apply_layers(layers: &[Vec<u8>]) -> Tree {
        let mut import = TarImport::new(None);
        for l in layers {
            import.apply(&l[..], Path::new("layer"), true).unwrap();
        }
        import.finish(Path::new("image")).unwrap()
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        use tar::EntryType::{Directory as D, Link as L, Regular as F};
        let lower = layer(&[
            ("a/b/c/bar", F, "bar"),
            ("a/other", F, "other"),
            ("x", F, "lower x"),
            ("gone", F, "gone"),
            ("keep/f", F, "f"),
            ("tool", F, "tool"),
        ]);
        let upper = layer(&[
            ("a/", D, ""),
            ("a/b/", D, ""),
            ("a/b/c/", D, ""),
            ("a/b/c/foo", F, "foo"),
            ("a/.wh..wh..opq", F, ""),
            ("x", F, "upper x"),
            (".wh.x", F, ""),
            (".wh.gone", F, ""),
            (".wh.never-there", F, ""),
            ("tool-link", L, "tool"),
        ]);
        let tree = apply_layers(&[lower, upper]);
        let present = |p: &str| tree.lookup(p.as_bytes()).is_some();
        assert!(present("a/b/c/foo"));
        assert!(!present("a/b/c/bar"), "the opaque whiteout hides lower a/…");
        assert!(!present("a/other"));
        assert!(
            present("x"),
            "a whiteout does not delete its own layer's file"
        );
        assert_eq!(
            tree.inodes[tree.lookup(b"x").unwrap()].content.as_deref(),
            Some(&b"upper x"[..])
        );
        assert!(!present("gone") && present("keep/f"));
        let tool = tree.lookup(b"tool").unwrap();
        assert_eq!(tree.lookup(b"tool-link"), Some(tool));
        assert_eq!(tree.inodes[tool].nlink, 2);
        // Deleting one name of a hard-linked pair leaves one link.
        let tree2 = apply_layers(&[
            layer(&[("t", F, "t"), ("u", L, "t")]),
            layer(&[(".wh.t", F, "")]),
        ]);
        assert_eq!(tree2.inodes[tree2.lookup(b"u").unwrap()].nlink, 1);
    }

    #[test]
    fn whiteout_names_are_files_outside_layers() {
        let mut import = TarImport::new(None);
        let archive = layer(&[(".wh.x", tar::EntryType::Regular, "")]);
        import
            .apply(&archive[..], Path::new("t.tar"), false)
            .unwrap();
        let tree = import.finish(Path::new("t.tar")).unwrap();
        assert!(tree.lookup(b".wh.x").is_some());
        // In a layer, a whiteout name cannot be a directory.
        let mut import = TarImport::new(None);
        let bad = layer(&[(".wh.x/y", tar::EntryType::Regular, "")]);
        let err = import
            .apply(&bad[..], Path::new("l.tar"), true)
            .unwrap_err();
        assert!(
            err.to_string().contains("whiteout name as a directory"),
            "{err}"
        );
    }
}
