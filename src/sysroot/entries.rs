//! Boot entries, one file each, switched without symlinks, so the same
//! code serves an ext4 /boot, a vfat ESP and an XBOOTLDR partition:
//! Boot Loader Specification type 1 entries, and type 2 entries (a
//! signed UKI, `boot::uki`, whose command line is inside it).
//!
//! ```text
//! BOOT/loader/loader.conf                         timeout; no default: the order decides
//! BOOT/loader/entries/sealtree-GEN-ID+L-D.conf    a type 1 entry (counter as systemd-boot names it)
//! BOOT/sealtree/ID/vmlinuz, initramfs.img         what it boots
//! BOOT/EFI/Linux/sealtree-GEN-ID+L-D.efi          a type 2 entry: the deployment's UKI
//! ```
//!
//! The loader sorts entries as systemd-boot does: those with no tries
//! left last, then by sort key, then by version, then by id (the file
//! name), each highest first. Every entry here has the sort key
//! `sealtree` (`sort-key` in a type 1 entry, `IMAGE_ID` in a UKI's
//! .osrel) and no version, so the name decides: `GEN`, a generation
//! number that only grows, leads it. The default is the entry with the
//! highest generation that still has tries left, a deployment that used
//! up its tries falls behind the previous one by itself, and type 1 and
//! type 2 entries interleave by generation. (Entries written before
//! generations led the name carry `version GEN`; the loader puts
//! versioned entries first, so the next change rewrites them all.)
//!
//! A change never edits an entry in place. It creates whole new entry
//! files (written under a `.tmp-` name, synced, renamed, the directory
//! synced), the new default first, and then removes the files no longer
//! wanted. So a crash at any point leaves a set of complete entries whose
//! first is the old default or the new one; an entry left twice (old and
//! new generation) is harmless and the next change removes it. Files an
//! entry names are written and synced before the entry exists, and
//! removed only after it is gone.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io_err, SysrootError};

/// Tries a new entry gets before systemd-boot gives up on it.
pub const BOOT_TRIES: u32 = 3;

/// What loader.conf says: a short menu timeout and no default, so the
/// entry order (and boot counting) decides.
const LOADER_CONF: &str = "timeout 3\n";

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
    /// A type 2 entry: the UKI its bytes are copied from (the store's
    /// copy for a new entry, the entry file itself for one read from
    /// disk). Title, kernel, initramfs and options are then empty: they
    /// are inside the signed UKI.
    pub uki: Option<PathBuf>,
}

impl BootEntry {
    fn file_name(&self, generation: u64) -> String {
        let stem = format!("sealtree-{generation}-{}", self.id);
        let suffix = if self.uki.is_some() { "efi" } else { "conf" };
        match self.tries {
            Some((left, 0)) => format!("{stem}+{left}.{suffix}"),
            Some((left, done)) => format!("{stem}+{left}-{done}.{suffix}"),
            None => format!("{stem}.{suffix}"),
        }
    }

    fn text(&self) -> String {
        format!(
            "title {}\nsort-key sealtree\nlinux {}\ninitrd {}\noptions {}\n",
            self.title,
            self.linux,
            self.initrd,
            self.options.join(" ")
        )
    }

    /// Whether the loader has given up on it.
    pub fn failed(&self) -> bool {
        matches!(self.tries, Some((0, _)))
    }

    /// The same entry apart from its boot counter.
    fn same_boot(&self, other: &BootEntry) -> bool {
        self.id == other.id
            && self.title == other.title
            && self.linux == other.linux
            && self.initrd == other.initrd
            && self.options == other.options
            && self.uki.is_some() == other.uki.is_some()
    }
}

/// An entry file as found on disk.
#[derive(Debug, Clone)]
struct OnDisk {
    entry: BootEntry,
    generation: u64,
    path: PathBuf,
    /// A type 1 entry with a `version` line (written before generations
    /// led the name): the loader sorts it before every unversioned one.
    versioned: bool,
}

fn entries_dir(boot: &Path) -> PathBuf {
    boot.join("loader").join("entries")
}

/// Where type 2 entries live.
pub fn uki_dir(boot: &Path) -> PathBuf {
    boot.join("EFI").join("Linux")
}

/// Every sealtree entry file, in the loader's order; for an id found
/// twice (a change that died before removing the old file) the copy the
/// loader prefers comes first.
fn scan(boot: &Path) -> Result<Scan, SysrootError> {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (dir, suffix) in [(entries_dir(boot), ".conf"), (uki_dir(boot), ".efi")] {
        let listing = match fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for item in listing {
            let item = item.map_err(io_err(&dir))?;
            let file = item.file_name().to_string_lossy().into_owned();
            let Some(stem) = file
                .strip_prefix("sealtree-")
                .and_then(|n| n.strip_suffix(suffix))
            else {
                continue;
            };
            match parse(&item.path(), stem) {
                Ok(d) => found.push(d),
                // The loader skips what it cannot read; so does this, so
                // that a damaged or planted file (a power cut on vfat can
                // leave one empty) cannot stop every command. The next
                // change removes it.
                Err(e) => {
                    eprintln!("sealtree: ignoring boot entry: {e}");
                    unreadable.push(item.path());
                }
            }
        }
    }
    // systemd-boot: no tries left last, then versioned before unversioned
    // (equal sort keys), then version or name (generation) highest first;
    // for equal generations more tries left, fewer done first.
    found.sort_by(|a, b| {
        a.entry
            .failed()
            .cmp(&b.entry.failed())
            .then(b.versioned.cmp(&a.versioned))
            .then(b.generation.cmp(&a.generation))
            .then_with(|| {
                let tries = |d: &OnDisk| d.entry.tries.map(|(l, n)| (u32::MAX - l, n));
                tries(a).cmp(&tries(b))
            })
    });
    Ok(Scan { found, unreadable })
}

/// What `scan` found: the entries, and the `sealtree-*` entry files that
/// are not readable entries.
struct Scan {
    found: Vec<OnDisk>,
    unreadable: Vec<PathBuf>,
}

fn parse(path: &Path, stem: &str) -> Result<OnDisk, SysrootError> {
    let bad = |what: String| SysrootError::Refused(format!("{}: {what}", path.display()));
    let (name, tries) = match stem.split_once('+') {
        None => (stem, None),
        Some((name, counter)) => {
            let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
            let number = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| bad(format!("bad boot counter '+{counter}'")))
            };
            (name, Some((number(left)?, number(done)?)))
        }
    };
    let is_uki = path.extension().is_some_and(|e| e == "efi");
    // GEN-ID; entries written before generations led the name are ID-GEN
    // or ID, with the generation in their version line.
    let (id, named_generation) = match name.split_once('-') {
        Some((g, id)) if super::is_deployment_id(id) && g.bytes().all(|b| b.is_ascii_digit()) => {
            (id, g.parse::<u32>().ok().map(u64::from))
        }
        _ if is_uki => return Err(bad("not named sealtree-GEN-ID".into())),
        _ => match name.rsplit_once('-') {
            Some((id, g)) if g.bytes().all(|b| b.is_ascii_digit()) => (id, None),
            _ => (name, None),
        },
    };
    if !super::is_deployment_id(id) {
        return Err(bad(format!("'{id}' is not a deployment id")));
    }
    let mut entry = BootEntry {
        id: id.to_string(),
        title: String::new(),
        linux: String::new(),
        initrd: String::new(),
        options: Vec::new(),
        tries,
        uki: None,
    };
    if is_uki {
        entry.uki = Some(path.to_path_buf());
        let generation = named_generation.ok_or_else(|| bad("generation out of range".into()))?;
        return Ok(OnDisk {
            entry,
            generation,
            path: path.to_path_buf(),
            versioned: false,
        });
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut version = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "title" => entry.title = value.to_string(),
            // At most u32::MAX: generations grow by one per change, and a
            // bound leaves room above any real one.
            "version" => {
                version = Some(
                    value
                        .trim()
                        .parse::<u32>()
                        .map(u64::from)
                        .map_err(|_| bad(format!("version '{value}' is not a generation")))?,
                )
            }
            "linux" => entry.linux = value.to_string(),
            "initrd" => entry.initrd = value.to_string(),
            "options" => entry.options = value.split_ascii_whitespace().map(String::from).collect(),
            _ => {}
        }
    }
    let generation = version
        .or(named_generation)
        .ok_or_else(|| bad("no generation in its name or version line".into()))?;
    if super::booted_id(&entry.options.join(" ")).as_deref() != Some(id) {
        return Err(bad(format!("options do not name sealtree={id}")));
    }
    Ok(OnDisk {
        entry,
        generation,
        path: path.to_path_buf(),
        versioned: version.is_some(),
    })
}

/// The entries in effect, in the order the loader tries them: the
/// default first, entries with no tries left last.
pub fn read(boot: &Path) -> Result<Vec<BootEntry>, SysrootError> {
    let mut seen = std::collections::HashSet::new();
    Ok(scan(boot)?
        .found
        .into_iter()
        .filter(|d| seen.insert(d.entry.id.clone()))
        .map(|d| d.entry)
        .collect())
}

/// Make `wanted` the entry set, the first being the default and the rest
/// in the order given. Entries already in a fitting order stay as they
/// are (their boot counters untouched); the others are written anew with
/// higher generations, the default first; then the files of entries no
/// longer wanted are removed.
pub fn write(boot: &Path, wanted: &[BootEntry]) -> Result<(), SysrootError> {
    // Whatever reached here (a config.json edited by hand included), an
    // entry's options never carry a line of their own.
    for w in wanted {
        super::check_kargs(&w.options)?;
    }
    let dir = entries_dir(boot);
    let ukis = uki_dir(boot);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    if wanted.iter().any(|w| w.uki.is_some()) {
        fs::create_dir_all(&ukis).map_err(io_err(&ukis))?;
    }
    remove_temporaries(&dir)?;
    remove_temporaries(&ukis)?;
    write_loader_conf(boot)?;
    let Scan {
        found: on_disk,
        unreadable,
    } = scan(boot)?;
    // The copy of each id the loader would use.
    let mut current: HashMap<&str, &OnDisk> = HashMap::new();
    for d in &on_disk {
        current.entry(d.entry.id.as_str()).or_insert(d);
    }
    let top = on_disk.iter().map(|d| d.generation).max().unwrap_or(0);
    if top + wanted.len() as u64 > u64::from(u32::MAX) {
        return Err(SysrootError::Refused(format!(
            "{}: boot entry generations are used up (an entry has version {top})",
            dir.display()
        )));
    }

    // The longest tail of `wanted` whose files exist with the same content
    // and strictly rising generations toward the front stays; the rest is
    // written anew. Entries with no tries left sort last whatever their
    // generation, so they do not take part in the order.
    let mut keep_from = wanted.len();
    let mut floor = 0;
    for (i, w) in wanted.iter().enumerate().rev() {
        match current.get(w.id.as_str()) {
            Some(d) if d.entry.same_boot(w) && d.entry.tries == w.tries && !d.versioned => {
                if !d.entry.failed() {
                    if d.generation <= floor {
                        break;
                    }
                    floor = d.generation;
                }
                keep_from = i;
            }
            _ => break,
        }
    }
    let mut kept: Vec<PathBuf> = wanted[keep_from..]
        .iter()
        .map(|w| current[w.id.as_str()].path.clone())
        .collect();
    // Highest generation to the default, written first.
    for (i, w) in wanted[..keep_from].iter().enumerate() {
        let generation = top + (keep_from - i) as u64;
        let name = w.file_name(generation);
        match &w.uki {
            None => write_entry(&dir, &name, w.text().as_bytes())?,
            Some(source) => copy_entry(&ukis, &name, source)?,
        }
        kept.push(match w.uki {
            None => dir.join(name),
            Some(_) => ukis.join(name),
        });
    }
    let stale = on_disk
        .iter()
        .map(|d| &d.path)
        .filter(|p| !kept.contains(p));
    for path in stale.chain(&unreadable) {
        fs::remove_file(path).map_err(io_err(path))?;
    }
    sync_dir(&dir)?;
    if ukis.is_dir() {
        sync_dir(&ukis)?;
    }
    Ok(())
}

/// Write one entry file: complete and synced under a name the loader
/// ignores, then renamed into place, made durable.
fn write_entry(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SysrootError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    write_synced(&tmp, bytes)?;
    rename_durably(&tmp, &dir.join(name))
}

/// A type 2 entry: the UKI copied whole and synced under a name the
/// loader ignores, then renamed into place.
fn copy_entry(dir: &Path, name: &str, source: &Path) -> Result<(), SysrootError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut input = crate::objects::open_regular(source).map_err(io_err(source))?;
    let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
    std::io::copy(&mut input, &mut out).map_err(io_err(&tmp))?;
    out.sync_all().map_err(io_err(&tmp))?;
    rename_durably(&tmp, &dir.join(name))
}

/// Rename and make the result durable. On vfat a rename writes the new
/// directory entry with no clusters; they reach the disk with the file's
/// own inode, so the file is synced too, not only the directory.
fn rename_durably(from: &Path, to: &Path) -> Result<(), SysrootError> {
    fs::rename(from, to).map_err(io_err(to))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io_err(to))?;
    sync_dir(to.parent().expect("an entry has a directory"))
}

/// loader.conf, when there is none; one there already is the owner's
/// (a menu timeout, `editor no`) and stays as it is.
fn write_loader_conf(boot: &Path) -> Result<(), SysrootError> {
    let path = boot.join("loader").join("loader.conf");
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_file_name(".tmp-loader.conf");
    write_synced(&tmp, LOADER_CONF.as_bytes())?;
    rename_durably(&tmp, &path)
}

/// Leftovers of a change that died while writing (callers hold the
/// sysroot lock).
fn remove_temporaries(dir: &Path) -> Result<(), SysrootError> {
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for item in listing {
        let item = item.map_err(io_err(dir))?;
        if item.file_name().to_string_lossy().starts_with(".tmp-") {
            fs::remove_file(item.path()).map_err(io_err(&item.path()))?;
        }
    }
    Ok(())
}

/// Mark the entry of `id` as good: drop its boot counter by a rename, as
/// systemd-bless-boot does. Only the copy the loader prefers: a stale or
/// planted file with the same id (a failed copy, say) must not become a
/// good entry. Returns whether anything changed.
pub fn bless(boot: &Path, id: &str) -> Result<bool, SysrootError> {
    let Some(d) = scan(boot)?.found.into_iter().find(|d| d.entry.id == id) else {
        return Ok(false);
    };
    if d.entry.tries.is_none() {
        return Ok(false);
    }
    let blessed = BootEntry {
        tries: None,
        ..d.entry.clone()
    };
    let to = d.path.with_file_name(blessed.file_name(d.generation));
    rename_durably(&d.path, &to)?;
    Ok(true)
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
