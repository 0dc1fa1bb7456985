//! The object store: file contents named by their fs-verity digest in the
//! composefs `XX/YYYY…` layout (what overlayfs' data-only lower layer and
//! mkcomposefs' `--digest-store` use), each written once and never changed.
//!
//! New objects are written into a staging directory inside the store, made
//! durable with one `syncfs`, and only then renamed into place, so a crash
//! at any point leaves either no object or a complete one under each name.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{Mode, SFlag};
use rayon::prelude::*;

use crate::fsverity::{self, Digest, EnableOutcome, HashingWriter};
use crate::writeback::Writeback;

/// Prefix of staging directories; the store's owner may remove stale ones.
pub const STAGING_PREFIX: &str = ".staging-";

/// A directory of objects named by digest.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    root: PathBuf,
    /// Set once [`closed_to_others`] passed: checked by the first staging
    /// area, not by each of a pull's batches.
    closed_checked: OnceLock<()>,
}

/// Open a file the store or a deployment holds, for reading: never
/// through a symbolic link (O_NOFOLLOW) and only if it is a regular file,
/// so a link planted in objects/ or images/ cannot point a reader at
/// another file, and a FIFO or device cannot hang it.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_regular_with_metadata(path).map(|(file, _)| file)
}

/// [`open_regular`], with the metadata of the file opened.
pub fn open_regular_with_metadata(path: &Path) -> io::Result<(File, fs::Metadata)> {
    regular(open_at(
        None,
        path,
        OFlag::O_RDONLY | REGULAR_ONLY,
        Mode::empty(),
    ))
}

/// [`open_regular_with_metadata`] for `name` in the directory `dir`
/// (opened by [`open_dir`]): no path walked from the root again.
pub fn open_regular_in(dir: &File, name: &OsStr) -> io::Result<(File, fs::Metadata)> {
    regular(open_at(
        Some(dir),
        Path::new(name),
        OFlag::O_RDONLY | REGULAR_ONLY,
        Mode::empty(),
    ))
}

/// A directory, opened only to open files in it (O_PATH).
pub fn open_dir(path: &Path) -> io::Result<File> {
    open_at(
        None,
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
}

/// Never through a link at the last step, and never blocking on a FIFO.
const REGULAR_ONLY: OFlag = OFlag::O_NOFOLLOW.union(OFlag::O_NONBLOCK);

/// A directory, never through a link at the last step.
const DIR_NOFOLLOW: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW);

/// openat(2): `path` relative to `dir`, or to the working directory.
fn open_at(
    dir: Option<&File>,
    path: &(impl nix::NixPath + ?Sized),
    flags: OFlag,
    mode: Mode,
) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        path,
        flags | OFlag::O_CLOEXEC,
        mode,
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The file opened, if it is a regular file, with its metadata.
fn regular(opened: io::Result<File>) -> io::Result<(File, fs::Metadata)> {
    let file = opened.map_err(|e| match e.raw_os_error() {
        Some(nix::libc::ELOOP) => io::Error::other("a symbolic link, not a stored file"),
        _ => e,
    })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// The digests of the objects in a store, sorted: at a million objects,
/// half the memory of a hash set and no rehashing peak.
pub struct DigestSet {
    digests: Vec<Digest>,
    /// Where the digests of each 16-bit prefix begin (and, one past it,
    /// end): a lookup searches a run of a few, not the whole list (whose
    /// binary search, 16 probes at 44k objects, was 4% of an unchanged
    /// commit).
    starts: Vec<usize>,
}

impl DigestSet {
    /// The set of `digests`, sorted.
    fn new(digests: Vec<Digest>) -> DigestSet {
        let mut starts = vec![0; PREFIXES + 1];
        for digest in &digests {
            starts[prefix16(digest) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        DigestSet { digests, starts }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        let p = prefix16(digest);
        self.digests[self.starts[p]..self.starts[p + 1]]
            .binary_search(digest)
            .is_ok()
    }
}

const PREFIXES: usize = 1 << 16;

fn prefix16(digest: &Digest) -> usize {
    usize::from(u16::from_be_bytes([digest[0], digest[1]]))
}

impl ObjectStore {
    /// Open the store at `root`, creating the directory if needed (never
    /// writable by all, whatever the umask: see [`closed_to_others`]).
    pub fn open(root: impl Into<PathBuf>) -> io::Result<ObjectStore> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o775)
            .create(&root)?;
        Ok(ObjectStore {
            root,
            closed_checked: OnceLock::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object with `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(crate::tree::object_path(digest))
    }

    /// The object with `digest`, opened for reading (see `open_regular`):
    /// in its prefix directory itself, not through a link in its place.
    pub fn open_object(&self, digest: &Digest) -> io::Result<File> {
        let hex = fsverity::Hex::new(digest);
        let (prefix, name) = hex.as_str().split_at(2);
        match self.open_prefix(prefix)? {
            Some(dir) => open_regular_in(&dir, OsStr::new(name)).map(|(file, _)| file),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{prefix}: no prefix directory (missing, or a link or file in its place)"),
            )),
        }
    }

    /// Why the object with `digest` is not in the store, as opening it
    /// says (for messages).
    pub fn why_not_stored(&self, digest: &Digest) -> String {
        match self.open_object(digest) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => "missing".to_string(),
            Err(e) => e.to_string(),
            // Published by another writer since it was looked up.
            Ok(_) => "not stored when it was looked up".to_string(),
        }
    }

    /// Whether an object named `digest` is in the store: a regular file
    /// in its prefix directory itself, not through a link planted in its
    /// place. For many, [`ObjectStore::lookup`] opens each directory once.
    pub fn contains(&self, digest: &Digest) -> bool {
        let hex = fsverity::Hex::new(digest);
        let (prefix, name) = hex.as_str().split_at(2);
        matches!(self.open_prefix(prefix), Ok(Some(dir)) if is_object_at(dir.as_raw_fd(), name))
    }

    /// Look objects up as [`ObjectStore::contains`] does, each prefix
    /// directory opened once: one call per object.
    pub fn lookup(&self) -> Lookup<'_> {
        Lookup {
            store: self,
            dirs: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The prefix directory `prefix` (two hex digits) itself, if there
    /// is one: not a link in its place.
    fn open_prefix(&self, prefix: &str) -> io::Result<Option<File>> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        match open_at(None, &self.root.join(prefix), flags, Mode::empty()) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if no_fanout(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The digests of all stored objects (names only, nothing is read).
    /// The prefix directories are listed in parallel: at 40k objects, one
    /// after another, the listing took a fifth of an unchanged commit.
    pub fn digests(&self) -> io::Result<DigestSet> {
        let per_prefix: Vec<Vec<Digest>> = (0..=255u8)
            .into_par_iter()
            .map(|first| self.digests_under(first))
            .collect::<io::Result<_>>()?;
        let mut digests = Vec::with_capacity(per_prefix.iter().map(Vec::len).sum());
        for some in per_prefix {
            digests.extend_from_slice(&some);
        }
        Ok(DigestSet::new(digests))
    }

    /// The digests in the prefix directory of those starting with `first`,
    /// sorted. None where it is missing or not a directory; a link in its
    /// place is not followed.
    fn digests_under(&self, first: u8) -> io::Result<Vec<Digest>> {
        let mut name = [0u8; 64];
        hex::encode_to_slice([first], &mut name[..2]).expect("two digits for a byte");
        let prefix = std::str::from_utf8(&name[..2]).expect("hex digits are ASCII");
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = match Dir::open(&self.root.join(prefix), flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let fd = dir.as_raw_fd();
        let mut digests = Vec::new();
        for entry in dir {
            let entry = entry?;
            let rest = entry.file_name().to_bytes();
            if rest.len() != name.len() - 2 {
                continue;
            }
            let regular = is_listed_file(fd, entry.file_name(), entry.file_type());
            name[2..].copy_from_slice(rest);
            digests.extend(digest_of_name(&name).filter(|_| regular));
        }
        digests.sort_unstable();
        Ok(digests)
    }

    /// Everything in the store: objects by digest, and entries that are
    /// not objects (staging directories of runs in progress or killed, and
    /// anything else).
    pub fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing::default();
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            let name = sub.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(STAGING_PREFIX) {
                listing.staging.push(sub.path());
                continue;
            }
            let is_fanout = name.len() == 2
                && name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !is_fanout || !sub.file_type()?.is_dir() {
                listing.strays.push(sub.path());
                continue;
            }
            for obj in fs::read_dir(sub.path())? {
                let obj = obj?;
                let full = format!("{name}{}", obj.file_name().to_string_lossy());
                match digest_of_name(full.as_bytes()) {
                    Some(d) if obj.file_type()?.is_file() => {
                        listing.objects.push((d, obj.path(), obj.metadata()?.len()))
                    }
                    _ => listing.strays.push(obj.path()),
                }
            }
        }
        listing.objects.sort();
        Ok(listing)
    }

    /// Begin adding objects; nothing is visible until [`Staging::commit`].
    pub fn staging(&self) -> io::Result<Staging<'_>> {
        let durable = File::open(&self.root)?;
        if self.closed_checked.get().is_none() {
            closed_to_others(&durable)?;
            let _ = self.closed_checked.set(());
        }
        self.remove_abandoned_staging()?;
        let dir = StagingDir::make(&self.root)?;
        Ok(Staging {
            store: self,
            store_empty: !self.has_objects()?,
            durable,
            dir,
            fanout: std::array::from_fn(|_| OnceLock::new()),
            stored: self.lookup(),
            modes_hold: [OnceLock::new(), OnceLock::new()],
            claimed: Mutex::new(HashSet::new()),
            scratch_names: AtomicU64::new(0),
            staged: Mutex::new(Vec::new()),
            public: Mutex::new(HashSet::new()),
            verity_unsupported: AtomicBool::new(false),
            writeback: OnceLock::new(),
        })
    }
}

impl ObjectStore {
    /// Whether any object is stored: stops at the first one found.
    fn has_objects(&self) -> io::Result<bool> {
        for byte in 0..=255u8 {
            match fs::read_dir(self.root.join(format!("{byte:02x}"))) {
                Ok(mut dir) => {
                    if dir.next().is_some() {
                        return Ok(true);
                    }
                }
                Err(e) if no_fanout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Remove staging directories whose writer has died (a crash or kill
    /// mid-run): their objects were never published.
    fn remove_abandoned_staging(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(Errno::ESRCH)
            });
            if alive {
                continue;
            }
            // A file or link by that name is removed as itself. Errors
            // leave an entry for fsck to report: a commit goes on.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_file(entry.path());
            } else if let Some(dir) = open_abandoned_staging(&entry.path()) {
                // Emptied through the directory checked, then removed by
                // name only if it is still there: another run's new, empty
                // staging directory moved over the name is left to it.
                empty_staging(&dir);
                remove_dir_if_still(&entry.path(), &dir);
            }
        }
        Ok(())
    }
}

/// The directory at `path` (not followed), open and locked, if it can be
/// an abandoned staging directory of ours: this user's and private, locked by
/// no run, and holding no file named like an object, as a prefix
/// directory renamed to a staging name by whoever can write to objects/
/// would. What is not is left for fsck to report, never emptied.
fn open_abandoned_staging(path: &Path) -> Option<Flock<File>> {
    let dir = open_at(None, path, DIR_NOFOLLOW, Mode::empty()).ok()?;
    // Locked by a run (or on a filesystem without locks): left alone.
    let dir = Flock::lock(dir, FlockArg::LockExclusiveNonblock).ok()?;
    let entries = entries_in(dir.as_raw_fd()).ok()?;
    let no_object = entries.iter().all(|(name, _)| name.to_bytes().len() != 62);
    (is_private_dir_of_ours(&dir).ok()? && no_object).then_some(dir)
}

/// The entries of the directory open as `dir` (not `.` and `..`), with
/// their types where the filesystem lists them.
fn entries_in(dir: RawFd) -> io::Result<Vec<(CString, Option<Type>)>> {
    let flags = DIR_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut listing = Dir::openat(Some(dir), ".", flags, Mode::empty())?;
    let mut entries = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            entries.push((entry.file_name().to_owned(), entry.file_type()));
        }
    }
    Ok(entries)
}

/// Whether reading a fanout directory failed for want of one: missing,
/// or a stray file or a link in its place (fsck reports it), holding no
/// object.
fn no_fanout(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ELOOP)
    )
}

/// Refuse a store any user may write to, or one of its prefix
/// directories (made so by an older version under a umask of 000): any
/// user could make entries there holding what they like under an
/// object's name, and take away what a commit publishes. Its group may
/// write: a repository shared by a group (umask 002), whose members are
/// trusted as the owner is.
fn closed_to_others(store: &File) -> io::Result<()> {
    let open_to_all = |mode: u32| {
        io::Error::other(format!(
            "any user may write to it (mode {:o}): anyone could plant or take \
             objects; `chmod -R o-w` it",
            mode & 0o7777
        ))
    };
    let mode = store.metadata()?.mode();
    if mode & 0o002 != 0 {
        return Err(open_to_all(mode));
    }
    for first in 0..=255u8 {
        let name = format!("{first:02x}");
        let flags = AtFlags::AT_SYMLINK_NOFOLLOW;
        let st = match nix::sys::stat::fstatat(Some(store.as_raw_fd()), name.as_str(), flags) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(io::Error::from(e)),
        };
        // A link or a file in its place holds no object (fsck reports it).
        let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
        if is_dir && st.st_mode & 0o002 != 0 {
            return Err(io::Error::other(format!(
                "{name}: {}",
                open_to_all(st.st_mode)
            )));
        }
    }
    Ok(())
}

/// Objects looked up in a store, each prefix directory opened on first
/// use (from [`ObjectStore::lookup`]). A prefix directory made after its
/// first use is not seen: this is for one pass.
pub struct Lookup<'s> {
    store: &'s ObjectStore,
    dirs: [OnceLock<Option<File>>; 256],
}

impl Lookup<'_> {
    /// [`ObjectStore::contains`].
    pub fn contains(&self, digest: &Digest) -> bool {
        let hex = fsverity::Hex::new(digest);
        let (prefix, name) = hex.as_str().split_at(2);
        let slot = &self.dirs[digest[0] as usize];
        let dir = match slot.get() {
            Some(dir) => dir,
            // Only an answer is kept: an error (out of descriptors, say)
            // is "not there" this once, and asked again next time.
            None => match self.store.open_prefix(prefix) {
                Ok(dir) => slot.get_or_init(|| dir),
                Err(_) => return false,
            },
        };
        dir.as_ref()
            .is_some_and(|dir| is_object_at(dir.as_raw_fd(), name))
    }
}

/// The digest an object is stored under `name` for (its prefix and the
/// rest joined): lower-case hex only, as the store names objects.
fn digest_of_name(name: &[u8]) -> Option<Digest> {
    let lower = name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    fsverity::parse_hex(name).filter(|_| lower)
}

/// Whether `name` in the prefix directory open as `dir` is an object: a
/// regular file, not a link or anything else planted there.
fn is_object_at(dir: RawFd, name: &(impl nix::NixPath + ?Sized)) -> bool {
    nix::sys::stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits())
}

/// Whether `name`, listed in the directory open as `dir` with the type
/// `listed`, is a regular file, as `contains` asks: the type listed, or
/// asked of the file where the filesystem lists none.
fn is_listed_file(dir: RawFd, name: &std::ffi::CStr, listed: Option<Type>) -> bool {
    match listed {
        Some(kind) => kind == Type::File,
        None => is_object_at(dir, name),
    }
}

/// An object's mode: readable by all, unless it came from a file others
/// could not read.
fn object_mode(private: bool) -> u32 {
    if private {
        0o600
    } else {
        0o644
    }
}

/// Copy everything `reader` yields into `out`, hashing the very bytes
/// written: their digest and length.
fn copy_hashing(reader: &mut impl Read, out: &mut File) -> io::Result<(Digest, u64)> {
    let mut hasher = fsverity::Hasher::default();
    // Filled before each write: io::copy would read 8 KiB at a time.
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..filled]);
        io::Write::write_all(out, &buf[..filled])?;
    }
}

/// Whether a file of `mode` is private: others may not read it.
pub fn is_private(mode: u32) -> bool {
    mode & 0o004 == 0
}

/// The contents of an object store directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// (digest, path, size) of each object.
    pub objects: Vec<(Digest, PathBuf, u64)>,
    pub staging: Vec<PathBuf>,
    pub strays: Vec<PathBuf>,
}

/// Objects written but not yet published. Dropping it discards them.
pub struct Staging<'s> {
    store: &'s ObjectStore,
    /// The store held no object when staging began: nothing to look up
    /// per object (one another writer publishes meanwhile is found by the
    /// rename at commit), and no content worth hashing before it is
    /// copied.
    store_empty: bool,
    /// The store, opened before anything is written, for the final
    /// `syncfs`: a write error is reported to each open file once, and
    /// only to files open when it happened (once another `syncfs`, such
    /// as the writeback's, has seen it).
    durable: File,
    dir: StagingDir,
    /// The per-first-byte subdirectories made so far, each opened once:
    /// objects are created relative to it, not by a path walked each
    /// time. One per byte keeps concurrent writers from contending on a
    /// single directory; made on first use, as an unchanged tree needs
    /// none.
    fanout: [OnceLock<File>; 256],
    /// The store's objects (a prefix directory the store gains meanwhile
    /// is not seen: its objects are found by the rename at commit).
    stored: Lookup<'s>,
    /// Whether objects come out of their create with the mode asked for,
    /// public and private: a umask or a default ACL on objects/ may take
    /// bits. Checked on the first of each; every object is made in a
    /// directory made alike, so the first answers for the rest.
    modes_hold: [OnceLock<bool>; 2],
    claimed: Mutex<HashSet<Digest>>,
    /// Numbers the named scratch files of [`Staging::add_reader`].
    scratch_names: AtomicU64,
    /// Staged objects, whether the kernel enabled fs-verity on each, and
    /// whether it was staged private.
    staged: Mutex<Vec<(Digest, bool, bool)>>,
    /// Content added again, from a file others may read, after it was
    /// claimed: its object is not private, whichever file came first.
    public: Mutex<HashSet<Digest>>,
    /// Set once the filesystem has said it has no fs-verity.
    verity_unsupported: AtomicBool,
    /// Started with the first object copied: an unchanged tree copies none.
    writeback: OnceLock<Writeback>,
}

/// What committing a staging area did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    /// Objects newly added to the store.
    pub added: u64,
    /// Objects with fs-verity enabled by the kernel.
    pub verity_enabled: u64,
}

impl Staging<'_> {
    /// Copy `source` (already hashed to `digest`) into the staging area
    /// unless the store or this staging area has it. Returns whether it was
    /// copied. Where the filesystem has fs-verity, it is enabled on the
    /// copy and the kernel's digest must equal `digest`. A `private`
    /// object (from a file others may not read) is mode 0600, so the
    /// store never makes readable what was not.
    pub fn add_copy(&self, source: &mut File, digest: &Digest, private: bool) -> io::Result<bool> {
        // The copy is hashed as it is written: the source may have been
        // rewritten since it was hashed (even with its mtime put back),
        // and where there is no fs-verity nothing else would notice.
        self.stage_new(digest, private, |out| {
            source.seek(SeekFrom::Start(0))?;
            let (actual, _) = copy_hashing(source, out)?;
            if actual != *digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the file changed while it was copied (its copy has digest {}, not {})",
                        hex::encode(actual),
                        hex::encode(digest)
                    ),
                ));
            }
            Ok(())
        })
    }

    /// As [`Staging::add_copy`], for content read whole into memory and
    /// hashed to `digest` there: the copy is of the very bytes hashed, so
    /// a file is read once.
    pub fn add_bytes(&self, data: &[u8], digest: &Digest, private: bool) -> io::Result<bool> {
        self.stage_new(digest, private, |out| io::Write::write_all(out, data))
    }

    /// Stage content named `digest` by writing it with `write`, unless the
    /// store or this staging area has it; returns whether it was written.
    /// A failed write leaves nothing staged.
    fn stage_new(
        &self,
        digest: &Digest,
        private: bool,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<bool> {
        if self.stored(digest) {
            return Ok(false);
        }
        if !self.claimed.lock().unwrap().insert(*digest) {
            self.note_public(digest, private);
            return Ok(false);
        }
        self.start_writeback();
        let written = (|| {
            let mut out = self.create_staged(digest, private)?;
            write(&mut out)?;
            self.settle_mode(&out, private)
        })();
        if let Err(e) = written {
            self.remove_staged(digest);
            self.claimed.lock().unwrap().remove(digest);
            return Err(e);
        }
        let verity =
            !self.verity_unsupported.load(Ordering::Relaxed) && self.enable_verity(digest)?;
        self.staged.lock().unwrap().push((*digest, verity, private));
        Ok(true)
    }

    /// An unnamed scratch file beside the staged objects (on the store's
    /// filesystem, not in memory), gone once closed.
    pub fn scratch_file(&self) -> io::Result<File> {
        let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_EXCL;
        match open_at(
            Some(&self.dir.fd),
            Path::new("."),
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
        ) {
            // A filesystem without O_TMPFILE: named, and unlinked at once.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::ENOENT)
                ) =>
            {
                let (name, file) = self.named_scratch()?;
                self.dir.remove(&name);
                Ok(file)
            }
            opened => opened,
        }
    }

    /// A new file in the staging directory, by a name no other has.
    fn named_scratch(&self) -> io::Result<(String, File)> {
        let name = format!("tmp-{}", self.scratch_names.fetch_add(1, Ordering::Relaxed));
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let file = open_at(
            Some(&self.dir.fd),
            Path::new(&name),
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?;
        Ok((name, file))
    }

    /// Write everything `reader` yields into the staging area, hashing it on
    /// the way; returns its digest and length. Content the store or this
    /// staging area already has is dropped again.
    pub fn add_reader(
        &self,
        reader: &mut impl io::Read,
        private: bool,
    ) -> io::Result<(Digest, u64)> {
        let (name, mut file) = self.named_scratch()?;
        let staged = copy_hashing(reader, &mut file).and_then(|(digest, len)| {
            let moved = self.stage_file(&name, &file, digest, private)?;
            Ok((digest, len, moved))
        });
        // Not moved under its digest: not needed.
        if !matches!(staged, Ok((_, _, true))) {
            self.dir.remove(&name);
        }
        staged.map(|(digest, len, _)| (digest, len))
    }

    /// Write what `reader` yields into the staging area if it hashes to
    /// `expected`; returns its length, or the digest it really has (and
    /// stages nothing). For content from untrusted sources: nothing enters
    /// the store under a name it does not match.
    pub fn add_expected(
        &self,
        reader: &mut impl io::Read,
        expected: &Digest,
    ) -> io::Result<Result<u64, Digest>> {
        // Content already here, or claimed by another writer: hashed and
        // checked, not kept.
        if self.stored(expected) || !self.claimed.lock().unwrap().insert(*expected) {
            let mut hashing = HashingWriter::new(io::sink());
            io::copy(reader, &mut hashing)?;
            let (digest, len) = hashing.hasher.finalize();
            return Ok(if &digest == expected {
                Ok(len)
            } else {
                Err(digest)
            });
        }
        // Written straight under the name it must have (the staging area
        // is private until committed), and removed unless it has it.
        let written = (|| {
            let mut file = self.create_staged(expected, false)?;
            let hashed = {
                // Below malloc's mmap threshold (128 KiB): a larger buffer
                // is mapped and unmapped per object, and with many threads
                // each unmap waits on the others' page faults and flushes
                // their TLBs.
                let mut hashing =
                    HashingWriter::new(io::BufWriter::with_capacity(64 * 1024, &mut file));
                io::copy(reader, &mut hashing)?;
                io::Write::flush(&mut hashing.inner)?;
                hashing.hasher.finalize()
            };
            self.settle_mode(&file, false)?;
            Ok::<_, io::Error>(hashed)
        })();
        match written {
            Ok((digest, len)) if &digest == expected => {
                let verity = !self.verity_unsupported.load(Ordering::Relaxed)
                    && self.enable_verity(&digest)?;
                self.staged.lock().unwrap().push((digest, verity, false));
                Ok(Ok(len))
            }
            other => {
                self.remove_staged(expected);
                self.claimed.lock().unwrap().remove(expected);
                other.map(|(digest, _)| Err(digest))
            }
        }
    }

    /// Stage the scratch file `name` (open as `file`), whose content has
    /// `digest`, under that digest, unless the store or this staging
    /// area has it already. Whether it was moved.
    fn stage_file(
        &self,
        name: &str,
        file: &File,
        digest: Digest,
        private: bool,
    ) -> io::Result<bool> {
        if self.stored(&digest) {
            return Ok(false);
        }
        if !self.claimed.lock().unwrap().insert(digest) {
            self.note_public(&digest, private);
            return Ok(false);
        }
        let moved = (|| {
            let to_dir = self.fanout_dir(digest[0])?;
            self.start_writeback();
            file.set_permissions(fs::Permissions::from_mode(object_mode(private)))?;
            let hex = fsverity::Hex::new(&digest);
            nix::fcntl::renameat(
                Some(self.dir.fd.as_raw_fd()),
                name,
                Some(to_dir.as_raw_fd()),
                &hex.as_str()[2..],
            )
            .map_err(io::Error::from)
        })();
        if let Err(e) = moved {
            self.claimed.lock().unwrap().remove(&digest);
            return Err(e);
        }
        let verity =
            !self.verity_unsupported.load(Ordering::Relaxed) && self.enable_verity(&digest)?;
        self.staged.lock().unwrap().push((digest, verity, private));
        Ok(true)
    }

    /// Whether the store has `digest` (never, if it was empty).
    pub fn stored(&self, digest: &Digest) -> bool {
        !self.store_empty && self.stored.contains(digest)
    }

    /// Whether the store held no object when staging began: content is
    /// then new unless it repeats within this staging area.
    pub fn store_was_empty(&self) -> bool {
        self.store_empty
    }

    /// The staging directory's device and inode: a walk of a tree that
    /// holds the store leaves it out, as objects are written to it.
    pub fn dir_id(&self) -> io::Result<(u64, u64)> {
        let meta = self.dir.fd.metadata()?;
        Ok((meta.dev(), meta.ino()))
    }

    /// Content claimed already, perhaps from a private file, now also
    /// from one others may read: the object is not private.
    fn note_public(&self, digest: &Digest, private: bool) {
        if !private {
            self.public.lock().unwrap().insert(*digest);
        }
    }

    /// Write back in the background from the first object on (see
    /// [`Writeback`]). Pulls, which make batches durable as they go, do
    /// without.
    fn start_writeback(&self) {
        self.writeback
            .get_or_init(|| Writeback::start(&self.store.root));
    }

    /// The staging subdirectory for objects whose digest starts with
    /// `first`, made and opened on first use.
    fn fanout_dir(&self, first: u8) -> io::Result<&File> {
        let slot = &self.fanout[first as usize];
        if let Some(dir) = slot.get() {
            return Ok(dir);
        }
        let name = format!("{first:02x}");
        let at = Some(self.dir.fd.as_raw_fd());
        // Never writable by all, whatever the umask: objects in it are
        // trusted by name. Its group may write where the umask lets it.
        match nix::sys::stat::mkdirat(at, name.as_str(), Mode::from_bits_truncate(0o775)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let dir = open_at(Some(&self.dir.fd), Path::new(&name), flags, Mode::empty())?;
        // Another thread may have opened it meanwhile: either will do.
        let _ = slot.set(dir);
        Ok(slot.get().expect("set above"))
    }

    /// Create the staged file for `digest`, new, with its object's mode
    /// (as far as the umask lets: see [`Staging::settle_mode`]).
    fn create_staged(&self, digest: &Digest, private: bool) -> io::Result<File> {
        let hex = fsverity::Hex::new(digest);
        let name = &hex.as_str()[2..];
        open_at(
            Some(self.fanout_dir(digest[0])?),
            Path::new(name),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(object_mode(private)),
        )
    }

    /// Give a staged object its mode where its create did not: set, not
    /// left to the umask or a default ACL.
    fn settle_mode(&self, file: &File, private: bool) -> io::Result<()> {
        let want = object_mode(private);
        let slot = &self.modes_hold[usize::from(private)];
        let holds = match slot.get() {
            Some(holds) => *holds,
            None => {
                let holds = file.metadata()?.mode() & 0o7777 == want;
                *slot.get_or_init(|| holds)
            }
        };
        if !holds {
            file.set_permissions(fs::Permissions::from_mode(want))?;
        }
        Ok(())
    }

    /// Remove a staged object written in part (relative to its
    /// directory: no path is made per object).
    fn remove_staged(&self, digest: &Digest) {
        let hex = fsverity::Hex::new(digest);
        if let Ok(dir) = self.fanout_dir(digest[0]) {
            let _ = nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                &hex.as_str()[2..],
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }

    /// Enable fs-verity on a staged copy and check the kernel's digest.
    fn enable_verity(&self, digest: &Digest) -> io::Result<bool> {
        let hex = fsverity::Hex::new(digest);
        let copy = open_at(
            Some(self.fanout_dir(digest[0])?),
            Path::new(&hex.as_str()[2..]),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(match fsverity::enable(&copy).map_err(io::Error::from)? {
            EnableOutcome::Unsupported => {
                self.verity_unsupported.store(true, Ordering::Relaxed);
                false
            }
            EnableOutcome::Enabled | EnableOutcome::AlreadyEnabled => {
                let measured = fsverity::measure(&copy).map_err(io::Error::from)?;
                if measured.as_ref() != Some(digest) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "copy of object {} has fs-verity digest {}: the source changed while it was copied",
                            hex::encode(digest),
                            measured.map(hex::encode).unwrap_or_default()
                        ),
                    ));
                }
                true
            }
        })
    }

    /// Make every staged object durable, then publish it under its name.
    pub fn commit(self) -> io::Result<CommitStats> {
        let mut staged = std::mem::take(&mut *self.staged.lock().unwrap());
        // Nothing more is claimed: the set (60 MB for a million objects)
        // goes now, not when the staging area does.
        drop(std::mem::take(&mut *self.claimed.lock().unwrap()));
        let mut stats = CommitStats::default();
        if staged.is_empty() {
            return Ok(stats);
        }
        let public = std::mem::take(&mut *self.public.lock().unwrap());
        for (digest, _, private) in &staged {
            if *private && public.contains(digest) {
                let hex = fsverity::Hex::new(digest);
                nix::sys::stat::fchmodat(
                    Some(self.fanout_dir(digest[0])?.as_raw_fd()),
                    &hex.as_str()[2..],
                    Mode::from_bits_truncate(object_mode(false)),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?;
            }
        }
        drop(public);
        if let Some(writeback) = self.writeback.get() {
            writeback.stop();
        }
        nix::unistd::syncfs(self.durable.as_raw_fd()).map_err(io::Error::from)?;
        // Renamed relative to open directories, never through a link: a
        // link planted as a prefix directory (objects/ab -> /etc/cron.d)
        // must not take objects out of the store.
        let staging_dir = &self.dir.fd;
        let store_dir = open_dir(&self.store.root)?;
        staged.sort_unstable_by_key(|entry| entry.0[0]);
        for entries in staged.chunk_by(|a, b| a.0[0] == b.0[0]) {
            let prefix = format!("{:02x}", entries[0].0[0]);
            stats.verity_enabled += entries.iter().filter(|e| e.1).count() as u64;
            // A prefix directory the store does not have yet is renamed in
            // whole (one rename instead of one per object: a first commit
            // or pull fills all 256).
            match rename_new(staging_dir, &prefix, &store_dir, &prefix) {
                Ok(()) => {
                    stats.added += entries.len() as u64;
                    continue;
                }
                // The store has it: object by object.
                Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {}
                Err(e) => return Err(e.into()),
            }
            let from_dir = self.fanout[entries[0].0[0] as usize]
                .get()
                .expect("a staged object's directory is open");
            let to_dir = open_at(
                Some(&store_dir),
                Path::new(&prefix),
                DIR_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| match e.raw_os_error() {
                // Named under the store, whose path the caller gives.
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => io::Error::other(format!(
                    "{prefix}: not a directory (a link or file in its place)"
                )),
                _ => e,
            })?;
            // The staging directory itself, renamed there by whoever can
            // write to objects/: its emptying would take the objects.
            if same_file(&to_dir, staging_dir)? {
                return Err(io::Error::other(format!(
                    "{prefix}: the staging directory itself, moved there"
                )));
            }
            // Another run's staging directory (a pull's next batch, or a
            // dead run's being removed), moved there: its end would remove
            // what is published into it. The lock is held while publishing,
            // so neither can take it meanwhile. A lock held on a directory
            // others may read is anyone's, and no reason to stop.
            let _publishing = match Flock::lock(to_dir.try_clone()?, FlockArg::LockSharedNonblock) {
                Ok(held) => Some(held),
                Err((_, Errno::EWOULDBLOCK)) if is_private_dir_of_ours(&to_dir)? => {
                    return Err(io::Error::other(format!(
                        "{prefix}: a staging directory in use, moved there"
                    )));
                }
                // Or no locks on this filesystem.
                Err(_) => None,
            };
            for (digest, _, _) in entries {
                let hex = fsverity::Hex::new(digest);
                let name = &hex.as_str()[2..];
                match rename_new(from_dir, name, &to_dir, name) {
                    Ok(()) => stats.added += 1,
                    // Another writer published the same content first,
                    // or something else was planted under its name.
                    Err(Errno::EEXIST) if !is_object_at(to_dir.as_raw_fd(), name) => {
                        return Err(io::Error::other(format!(
                            "{prefix}/{name}: not an object (a link or other file in its place)"
                        )));
                    }
                    Err(Errno::EEXIST) => {
                        nix::unistd::unlinkat(
                            Some(from_dir.as_raw_fd()),
                            name,
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        )?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        nix::unistd::syncfs(self.durable.as_raw_fd()).map_err(io::Error::from)?;
        Ok(stats)
    }
}

/// A staging area's directory under objects/, held open from when it is
/// made: everything in it is reached through this handle, never by its
/// path, so whoever can write to objects/ and puts another directory or
/// a link in its place gets nothing written there.
struct StagingDir {
    path: PathBuf,
    fd: File,
    /// Held while in use (on a copy of `fd`, one open file): a directory
    /// another run holds, moved over this one's name before it was
    /// opened, is refused. None where the filesystem has no locks.
    _lock: Option<Flock<File>>,
}

impl StagingDir {
    /// Make a new staging directory in `store` and open it, checking the
    /// directory opened is the one made: ours, private and empty.
    fn make(store: &Path) -> io::Result<StagingDir> {
        let template = store.join(format!("{STAGING_PREFIX}{}-XXXXXX", std::process::id()));
        let path = nix::unistd::mkdtemp(&template)?;
        let replaced = || {
            io::Error::other(format!(
                "{}: replaced by another directory or a link as it was made",
                path.display()
            ))
        };
        let fd = open_at(None, &path, DIR_NOFOLLOW, Mode::empty()).map_err(|_| replaced())?;
        // Locked before it is checked: a directory another run could
        // still publish into would not stay empty unseen.
        let lock = match Flock::lock(fd.try_clone()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Some(lock),
            Err((_, Errno::EWOULDBLOCK)) => return Err(replaced()),
            Err(_) => None,
        };
        let empty = entries_in(fd.as_raw_fd()).is_ok_and(|e| e.is_empty());
        if !(is_private_dir_of_ours(&fd)? && empty) {
            return Err(replaced());
        }
        Ok(StagingDir {
            path,
            fd,
            _lock: lock,
        })
    }

    /// Remove the file `name` in it.
    fn remove(&self, name: &str) {
        let _ = nix::unistd::unlinkat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

impl Drop for StagingDir {
    /// Emptied through the handle, then removed by name if what is there
    /// is still this directory: another run's new one, moved over its name,
    /// is left to that run.
    fn drop(&mut self) {
        empty_staging(&self.fd);
        remove_dir_if_still(&self.path, &self.fd);
    }
}

/// Remove the (empty) directory at `path` if it is the one open as `dir`,
/// not another moved over its name since it was opened.
fn remove_dir_if_still(path: &Path, dir: &File) {
    let there = open_at(None, path, DIR_NOFOLLOW, Mode::empty());
    if there
        .and_then(|there| same_file(&there, dir))
        .unwrap_or(false)
    {
        let _ = fs::remove_dir(path);
    }
}

/// Remove what a staging directory open as `dir` holds, through it: its
/// files, and its fanout directories with their files.
fn empty_staging(dir: &File) {
    let at = dir.as_raw_fd();
    for (name, listed) in entries_in(at).unwrap_or_default() {
        if matches!(listed, Some(Type::Directory) | None) {
            if let Ok(sub) = open_at(Some(dir), name.as_c_str(), DIR_NOFOLLOW, Mode::empty()) {
                remove_files_in(sub.as_raw_fd());
                let _ = nix::unistd::unlinkat(
                    Some(at),
                    name.as_c_str(),
                    nix::unistd::UnlinkatFlags::RemoveDir,
                );
                continue;
            }
        }
        let _ = nix::unistd::unlinkat(
            Some(at),
            name.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Remove the files in the directory open as `dir`; what is not a file
/// stays, and so does the directory.
fn remove_files_in(dir: RawFd) {
    for (name, _) in entries_in(dir).unwrap_or_default() {
        let _ = nix::unistd::unlinkat(
            Some(dir),
            name.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Whether the directory open as `dir` is this user's and closed to
/// others, as a staging directory is.
fn is_private_dir_of_ours(dir: &File) -> io::Result<bool> {
    let meta = dir.metadata()?;
    Ok(meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0)
}

/// Whether `a` and `b` are open on the same file.
fn same_file(a: &File, b: &File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// Rename `from` in `from_dir` to `to` in `to_dir`, unless `to` exists.
fn rename_new(from_dir: &File, from: &str, to_dir: &File, to: &str) -> nix::Result<()> {
    nix::fcntl::renameat2(
        Some(from_dir.as_raw_fd()),
        from,
        Some(to_dir.as_raw_fd()),
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another run's staging directory, moved by whoever can write to
    /// objects/ to the name of a prefix this run publishes to, is not
    /// published into: that run's end would remove what it holds.
    #[test]
    fn a_staging_directory_in_use_moved_to_a_prefix_name_is_not_published_into() {
        let root = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(root.path().join("objects")).unwrap();
        let data = b"content published into another staging directory";
        let digest = fsverity::digest_bytes(data);
        let first = store.staging().unwrap();
        first.add_bytes(data, &digest, false).unwrap();
        let second = store.staging().unwrap();
        let prefix = store.root().join(format!("{:02x}", digest[0]));
        fs::rename(&second.dir.path, &prefix).unwrap();
        let err = first.commit().unwrap_err().to_string();
        assert!(
            err.contains("a staging directory in use, moved there"),
            "{err}"
        );
        drop(second);
        // What the second run held is gone; nothing was published into it.
        assert!(!store.contains(&digest));
    }

    /// A lock anyone who may read a prefix directory can take on it does
    /// not stop a commit publishing into it.
    #[test]
    fn a_lock_on_a_readable_prefix_directory_does_not_stop_publishing() {
        let root = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(root.path().join("objects")).unwrap();
        let content = |i: u32| format!("object {i}").into_bytes();
        let first = fsverity::digest_bytes(&content(0));
        let same_prefix = (1..)
            .find(|&i| fsverity::digest_bytes(&content(i))[0] == first[0])
            .unwrap();
        let staging = store.staging().unwrap();
        staging.add_bytes(&content(0), &first, false).unwrap();
        staging.commit().unwrap();
        let prefix = store.root().join(format!("{:02x}", first[0]));
        // Readable by others, whatever the umask made it.
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = File::open(prefix).unwrap();
        let _held = Flock::lock(prefix, FlockArg::LockExclusiveNonblock).unwrap();
        let data = content(same_prefix);
        let digest = fsverity::digest_bytes(&data);
        let staging = store.staging().unwrap();
        staging.add_bytes(&data, &digest, false).unwrap();
        assert_eq!(staging.commit().unwrap().added, 1);
        assert!(store.contains(&digest));
    }

    /// A staging area's end does not remove another run's new, still
    /// empty staging directory moved over its name by whoever can write
    /// to objects/: that run would fail writing into a removed directory.
    #[test]
    fn a_staging_area_ends_without_removing_a_directory_moved_over_its_name() {
        let root = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(root.path().join("objects")).unwrap();
        let first = store.staging().unwrap();
        let second = store.staging().unwrap();
        let first_path = first.dir.path.clone();
        fs::rename(&first_path, store.root().join("moved-away")).unwrap();
        fs::rename(&second.dir.path, &first_path).unwrap();
        drop(first);
        assert!(first_path.is_dir(), "the other run's directory was removed");
        let data = b"written by the run whose directory was moved";
        let digest = fsverity::digest_bytes(data);
        second.add_bytes(data, &digest, false).unwrap();
        assert!(second.dir.fd.metadata().unwrap().nlink() > 0);
    }

    /// Where a filesystem lists no entry types, each is asked its own.
    #[test]
    fn a_listing_without_types_asks_each_file_its_type() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let open = open_dir(dir.path()).unwrap();
        let fd = open.as_raw_fd();
        for (name, regular) in [
            (c"file", true),
            (c"dir", false),
            (c"link", false),
            (c"gone", false),
        ] {
            assert_eq!(is_listed_file(fd, name, None), regular, "{name:?}");
        }
        // A listed type is taken as listed.
        assert!(is_listed_file(fd, c"link", Some(Type::File)));
        assert!(!is_listed_file(fd, c"file", Some(Type::Symlink)));
    }

    /// Only a regular file under its lower-case name in a real prefix
    /// directory is an object, to every way of asking.
    #[test]
    fn only_a_regular_file_in_a_prefix_directory_is_an_object() {
        let root = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(root.path().join("objects")).unwrap();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let plant = |first: u8, what: &str| {
            let digest = [first; 32];
            let path = store.path(&digest);
            let dir = path.parent().unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            match what {
                "link as prefix" => {
                    fs::write(elsewhere.join(name), b"x").unwrap();
                    std::os::unix::fs::symlink(&elsewhere, dir).unwrap();
                    return digest;
                }
                _ => fs::create_dir(dir).unwrap(),
            }
            match what {
                "object" => fs::write(&path, b"x").unwrap(),
                "upper case" => fs::write(dir.join(name.to_uppercase()), b"x").unwrap(),
                "link as object" => {
                    fs::write(elsewhere.join("target"), b"x").unwrap();
                    std::os::unix::fs::symlink(elsewhere.join("target"), &path).unwrap();
                }
                "directory as object" => fs::create_dir(&path).unwrap(),
                _ => unreachable!(),
            }
            digest
        };
        let cases = [
            (0xab, "object", true),
            (0xac, "upper case", false),
            (0xad, "link as object", false),
            (0xae, "directory as object", false),
            (0xaf, "link as prefix", false),
        ];
        let planted: Vec<_> = cases
            .iter()
            .map(|&(first, what, _)| plant(first, what))
            .collect();
        let listed = store.digests().unwrap();
        let staging = store.staging().unwrap();
        let objects = store.list().unwrap().objects;
        for ((_, what, object), digest) in cases.iter().zip(&planted) {
            assert_eq!(store.contains(digest), *object, "contains: {what}");
            assert_eq!(listed.contains(digest), *object, "digests: {what}");
            assert_eq!(staging.stored(digest), *object, "stored: {what}");
            let in_list = objects.iter().any(|(d, _, _)| d == digest);
            assert_eq!(in_list, *object, "list: {what}");
        }
    }

    #[test]
    fn a_digest_set_finds_exactly_its_digests_at_every_prefix() {
        let digest = |first: u8, second: u8, last: u8| {
            let mut d = [0u8; 32];
            (d[0], d[1], d[31]) = (first, second, last);
            d
        };
        let mut held = Vec::new();
        for (first, second) in [(0, 0), (0, 1), (0x7f, 0xff), (0xff, 0xfe), (0xff, 0xff)] {
            held.extend([digest(first, second, 1), digest(first, second, 3)]);
        }
        held.sort_unstable();
        let set = DigestSet::new(held.clone());
        for d in &held {
            assert!(set.contains(d), "{}", hex::encode(d));
        }
        for (first, second) in [(0, 0), (0, 2), (0x7f, 0xff), (0x80, 0), (0xff, 0xff)] {
            for last in [0, 2, 4] {
                assert!(!set.contains(&digest(first, second, last)));
            }
        }
        assert!(!DigestSet::new(Vec::new()).contains(&digest(0, 0, 0)));
    }
}
