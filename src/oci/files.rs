//! Where an image layout's files are: a directory (`oci:`), or an
//! uncompressed tar archive of one (`oci-archive:`), whose members are
//! read in place, from their offsets, with nothing unpacked.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{invalid, OciError};
use crate::objects::open_regular;

pub enum Files {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        /// Member name (without a leading `./`) to offset and size.
        members: HashMap<String, (u64, u64)>,
        /// Members that are not regular files (links, directories).
        others: HashSet<String>,
    },
}

impl Files {
    /// The regular files of the archive at `path`, indexed.
    pub fn archive(path: &Path) -> Result<Files, OciError> {
        let fail = |e: std::io::Error| invalid(format!("{}: {e}", path.display()));
        let file = open_regular(path).map_err(fail)?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut others = HashSet::new();
        let entries = archive.entries().map_err(|e| {
            invalid(format!(
                "{}: {e} (an image archive is an uncompressed tar)",
                path.display()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                invalid(format!(
                    "{}: {} (an image archive is an uncompressed tar)",
                    path.display(),
                    e.to_string().escape_debug()
                ))
            })?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_string();
            if entry.header().entry_type() == tar::EntryType::Regular {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            } else {
                others.insert(name);
            }
        }
        Ok(Files::Archive {
            path: path.to_path_buf(),
            members,
            others,
        })
    }

    /// The size of the regular file `rel`.
    pub fn size(&self, rel: &str) -> Result<u64, OciError> {
        let fail = |what: String| invalid(format!("{}: {what}", self.name(rel)));
        match self {
            Files::Dir(dir) => open_regular(&dir.join(rel))
                .and_then(|f| f.metadata())
                .map(|m| m.len())
                .map_err(|e| fail(e.to_string())),
            Files::Archive { members, .. } => members
                .get(rel)
                .map(|&(_, size)| size)
                .ok_or_else(|| fail("not a regular file in the archive".into())),
        }
    }

    /// `rel` as messages name it.
    /// (`rel` comes from the image: escaped.)
    pub fn name(&self, rel: &str) -> String {
        let rel = rel.escape_debug();
        match self {
            Files::Dir(dir) => format!("{}/{rel}", dir.display()),
            Files::Archive { path, .. } => format!("{}:{rel}", path.display()),
        }
    }

    /// The file `rel` (a plain relative path): a regular file, not
    /// reached through a link.
    pub fn open(&self, rel: &str) -> Result<Box<dyn Read>, OciError> {
        let fail = |what: String| invalid(format!("{}: {what}", self.name(rel)));
        match self {
            Files::Dir(dir) => Ok(Box::new(
                open_regular(&dir.join(rel)).map_err(|e| fail(e.to_string()))?,
            )),
            Files::Archive {
                path,
                members,
                others,
            } => {
                let &(offset, size) = members.get(rel).ok_or_else(|| {
                    fail(if others.contains(rel) {
                        "not a regular file in the archive (links are not followed)".into()
                    } else {
                        "not in the archive".into()
                    })
                })?;
                let mut file = open_regular(path).map_err(|e| fail(e.to_string()))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Box::new(file.take(size)))
            }
        }
    }
}
