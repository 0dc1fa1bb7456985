//! Boot Loader Specification type 1 entries, switched atomically.
//!
//! `boot/loader` is a symlink to `loader.0` or `loader.1`. A change builds
//! the complete new set (entries and `loader.conf`) in the other directory,
//! syncs it, and renames a new symlink over `boot/loader`: a crash at any
//! point leaves the old set or the new one, whole. Entries are ordered by
//! their `version` field, highest first, and `loader.conf` names the first
//! as the default. New entries carry systemd-boot's boot counter (`+3` in
//! the file name), so a deployment that keeps failing to boot is skipped.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{io_err, SysrootError};

/// Tries a new entry gets before systemd-boot gives up on it.
pub const BOOT_TRIES: u32 = 3;

/// One boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The deployment it boots.
    pub id: String,
    pub title: String,
    /// Kernel and initramfs paths as the boot loader sees them.
    pub linux: String,
    pub initrd: String,
    /// The kernel command line, `sealtree=ID` included.
    pub options: Vec<String>,
    /// Boot counting: (tries left, tries done); `None` once blessed.
    pub tries: Option<(u32, u32)>,
}

impl BootEntry {
    fn file_name(&self) -> String {
        match self.tries {
            Some((left, 0)) => format!("sealtree-{}+{left}.conf", self.id),
            Some((left, done)) => format!("sealtree-{}+{left}-{done}.conf", self.id),
            None => format!("sealtree-{}.conf", self.id),
        }
    }

    fn text(&self, version: usize) -> String {
        format!(
            "title {}\nversion {version}\nsort-key sealtree\nlinux {}\ninitrd {}\noptions {}\n",
            self.title,
            self.linux,
            self.initrd,
            self.options.join(" ")
        )
    }
}

/// The entries in effect, default first.
pub fn read(boot: &Path) -> Result<Vec<BootEntry>, SysrootError> {
    let link = boot.join("loader");
    let dir = match fs::read_link(&link) {
        Ok(target) => boot.join(target).join("entries"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&link)(e)),
    };
    let mut found = Vec::new();
    for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let item = item.map_err(io_err(&dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_prefix("sealtree-")
            .and_then(|n| n.strip_suffix(".conf"))
        else {
            continue;
        };
        let path = item.path();
        let (entry, version) = parse(&path, stem)?;
        found.push((version, entry));
    }
    found.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

fn parse(path: &Path, stem: &str) -> Result<(BootEntry, u64), SysrootError> {
    let bad = |what: String| SysrootError::Refused(format!("{}: {what}", path.display()));
    let (id, tries) = match stem.split_once('+') {
        None => (stem, None),
        Some((id, counter)) => {
            let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
            let left = left
                .parse()
                .map_err(|_| bad(format!("bad boot counter '+{counter}'")))?;
            let done = done
                .parse()
                .map_err(|_| bad(format!("bad boot counter '+{counter}'")))?;
            (id, Some((left, done)))
        }
    };
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut entry = BootEntry {
        id: id.to_string(),
        title: String::new(),
        linux: String::new(),
        initrd: String::new(),
        options: Vec::new(),
        tries,
    };
    let mut version = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "title" => entry.title = value.to_string(),
            "version" => version = value.parse().ok(),
            "linux" => entry.linux = value.to_string(),
            "initrd" => entry.initrd = value.to_string(),
            "options" => entry.options = value.split_ascii_whitespace().map(String::from).collect(),
            _ => {}
        }
    }
    let version = version.ok_or_else(|| bad("no numeric version line".into()))?;
    if super::booted_id(&entry.options.join(" ")).as_deref() != Some(id) {
        return Err(bad(format!("options do not name sealtree={id}")));
    }
    Ok((entry, version))
}

/// Replace the entry set with `entries`, the first being the default.
pub fn write(boot: &Path, entries: &[BootEntry]) -> Result<(), SysrootError> {
    let link = boot.join("loader");
    let current = match fs::read_link(&link) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&link)(e)),
    };
    let next = if current.as_deref() == Some(Path::new("loader.0")) {
        "loader.1"
    } else {
        "loader.0"
    };
    let dir = boot.join(next);
    // Left by a run that died before switching: never in use.
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    let entries_dir = dir.join("entries");
    fs::create_dir_all(&entries_dir).map_err(io_err(&entries_dir))?;
    let count = entries.len();
    for (i, entry) in entries.iter().enumerate() {
        write_synced(
            &entries_dir.join(entry.file_name()),
            entry.text(count - i).as_bytes(),
        )?;
    }
    let mut conf = String::from("timeout 3\n");
    if let Some(first) = entries.first() {
        // A glob, so the name still matches after boot counting renames it.
        conf.push_str(&format!("default sealtree-{}*\n", first.id));
    }
    write_synced(&dir.join("loader.conf"), conf.as_bytes())?;
    sync_dir(&entries_dir)?;
    sync_dir(&dir)?;

    let tmp = boot.join("loader.tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    symlink(next, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &link).map_err(io_err(&link))?;
    sync_dir(boot)
}

/// Where the live entries are (for renames by boot counting).
pub fn live_entries_dir(boot: &Path) -> Result<Option<PathBuf>, SysrootError> {
    let link = boot.join("loader");
    match fs::read_link(&link) {
        Ok(t) => Ok(Some(boot.join(t).join("entries"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&link)(e)),
    }
}

/// Mark the entry of `id` as good: drop its boot counter, as
/// systemd-bless-boot does. Returns whether anything changed.
pub fn bless(boot: &Path, id: &str) -> Result<bool, SysrootError> {
    let Some(dir) = live_entries_dir(boot)? else {
        return Ok(false);
    };
    for entry in read(boot)? {
        if entry.id == id && entry.tries.is_some() {
            let blessed = BootEntry {
                tries: None,
                ..entry.clone()
            };
            let from = dir.join(entry.file_name());
            let to = dir.join(blessed.file_name());
            fs::rename(&from, &to).map_err(io_err(&from))?;
            sync_dir(&dir)?;
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SysrootError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), SysrootError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
