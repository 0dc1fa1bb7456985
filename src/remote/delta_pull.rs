//! Pulling through a static delta (see `crate::delta`): chosen when the
//! signed index lists one from the image of a commit here, its superblock
//! checked against the index and each part against the superblock before
//! anything is rebuilt from it. Parts are downloaded into
//! `incoming/NAME/` and kept until the pull completes, so an interrupted
//! pull resumes them where they stopped (an HTTP range) and does not
//! fetch again a part whose objects it stored already.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gix::ObjectId;
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::fetch::Fetcher;
use super::RemoteError;
use crate::delta::{self, Output, Part, Source, Superblock};
use crate::fsverity::Digest;
use crate::repo::Repo;
use crate::sign::IndexedDelta;

/// Parts downloaded and applied at once.
const MAX_PARTS_AT_ONCE: usize = 4;

fn invalid(what: String) -> RemoteError {
    RemoteError::Invalid(what)
}

/// The delta to image `to` this repository can apply, if the index lists
/// one: from the image of the commit pulled before (`previous`), else of
/// the branch pulled from another remote, a local branch or a
/// deployment, whichever is complete here.
pub fn choose(
    repo: &Repo,
    deltas: &BTreeMap<String, IndexedDelta>,
    branch: &str,
    to: &str,
    previous: Option<ObjectId>,
) -> Result<Option<(String, IndexedDelta)>, RemoteError> {
    // The name is a path here too: only digests make it.
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if deltas.is_empty() || !hex(to) {
        return Ok(None);
    }
    let history = repo.history()?;
    let mut commits: Vec<ObjectId> = previous.into_iter().collect();
    for (remote, _) in super::list(repo)? {
        commits.extend(history.remote_ref(&remote, branch)?);
    }
    commits.extend(history.branches()?.into_iter().map(|(_, c)| c));
    commits.extend(history.deployment_refs()?.into_iter().map(|(_, c)| c));
    for commit in commits {
        if !history.has_object(commit) || repo.is_partial(commit) {
            continue;
        }
        let from = history.info(commit)?.meta.image_digest;
        let name = delta::name(&from, to);
        if let Some(entry) = deltas.get(&name).filter(|_| hex(&from)) {
            return Ok(Some((name, entry.clone())));
        }
    }
    Ok(None)
}

/// A delta being pulled.
pub struct DeltaPull {
    name: String,
    superblock: Superblock,
    /// `incoming/NAME/`: its parts as they arrive.
    dir: PathBuf,
    /// Bytes downloaded (parts arrive in parallel).
    bytes: AtomicU64,
    /// Objects rebuilt and stored.
    rebuilt: AtomicU64,
}

impl DeltaPull {
    /// Fetch and check the superblock of delta `name`, listed as `entry`.
    pub fn start(
        repo: &Repo,
        fetcher: &Fetcher,
        name: &str,
        entry: &IndexedDelta,
    ) -> Result<DeltaPull, RemoteError> {
        let path = format!("deltas/{name}/superblock");
        let url = fetcher.url(&path);
        let bytes = fetcher.get(&path, entry.size)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if sha256 != entry.sha256 {
            return Err(invalid(format!(
                "{url}: sha256 {sha256}, the signed index names {}: refused",
                entry.sha256
            )));
        }
        let (from, to) = name.split_once('-').unwrap_or_default();
        let superblock = delta::read_superblock(&bytes, &url, from, to)?;
        // Parts of any other delta left by an interrupted pull are of no
        // more use. Nothing here is followed if it is a link.
        let incoming = repo.root().join("incoming");
        let dir = incoming.join(name);
        let made = real_dir(&incoming).and_then(|()| {
            for entry in fs::read_dir(&incoming)? {
                let entry = entry?;
                if entry.file_name() != name {
                    remove_any(&entry.path())?;
                }
            }
            real_dir(&dir)
        });
        made.map_err(|e| invalid(format!("{}: {e}", incoming.display())))?;
        Ok(DeltaPull {
            name: name.to_string(),
            superblock,
            dir,
            bytes: AtomicU64::new(bytes.len() as u64),
            rebuilt: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rebuild the target commit's dumpfile into git from the source
    /// commit's, if the delta has it and this repository has the source:
    /// fetching the commit's history then finds it here. A blob is
    /// written only under the id the delta names for it, and the commit's
    /// tree says whether it is the one it needs.
    pub fn rebuild_dump(&mut self, repo: &Repo, fetcher: &Fetcher) -> Result<(), RemoteError> {
        let history = repo.history()?;
        let found = self
            .superblock
            .parts
            .iter()
            .enumerate()
            .find_map(|(i, part)| {
                let mut offset = 0;
                for frame in &part.frames {
                    if let (Some(Source::Blob(source)), Output::Blob(target)) =
                        (&frame.source, &frame.output)
                    {
                        return Some((i, offset, frame.clone(), source.clone(), target.clone()));
                    }
                    offset += frame.len;
                }
                None
            });
        let Some((i, offset, frame, source, target)) = found else {
            return Ok(());
        };
        let what = self.part_url(fetcher, i);
        let parse = |id: &str| {
            id.parse::<ObjectId>()
                .map_err(|e| invalid(format!("{what}: '{id}': {e}")))
        };
        let (source, target) = (parse(&source)?, parse(&target)?);
        if history.has_object(target) || !history.has_object(source) {
            return Ok(());
        }
        let mut file = self.download(fetcher, i)?;
        let dump = delta::rebuild_blob(
            &mut file,
            offset,
            &frame,
            &history.blob(source)?,
            // Bounded like a dumpfile fetched whole.
            super::pull::DUMP_FALLBACK_LIMIT,
            &what,
        )?;
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &dump)
            .map_err(|e| invalid(format!("{what}: {e}")))?;
        if id != target {
            return Err(invalid(format!(
                "{what}: the dumpfile rebuilt is blob {id}, not {target}: refused"
            )));
        }
        history.write_raw(gix::objs::Kind::Blob, &dump)?;
        Ok(())
    }

    /// Rebuild the objects of the parts that make some still missing,
    /// `jobs` parts at once, each part's objects made durable and
    /// published once it is done. `wanted`: every object the target
    /// commit needs, and its size. What was rebuilt stays rebuilt when
    /// another part fails.
    pub fn apply(
        &mut self,
        repo: &Repo,
        fetcher: &Fetcher,
        wanted: &HashMap<Digest, u64>,
        jobs: usize,
    ) -> Result<(), RemoteError> {
        let store = repo.objects();
        // Its descriptors closed before the parts, which hold their own.
        let todo: Vec<usize> = {
            let stored = store.lookup();
            (0..self.superblock.parts.len())
                .filter(|&i| missing_some(&self.superblock.parts[i], |d| stored.contains(d)))
                .collect()
        };
        // Each part in flight holds a patch's source in memory.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.clamp(1, MAX_PARTS_AT_ONCE))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let this = &*self;
        pool.install(|| {
            todo.par_iter().try_for_each(|&i| {
                let what = this.part_url(fetcher, i);
                let mut file = this.download(fetcher, i)?;
                let staging = store
                    .staging()
                    .map_err(|e| invalid(format!("{}: {e}", store.root().display())))?;
                let applied = delta::apply_frames(
                    &this.superblock.parts[i],
                    &mut file,
                    store,
                    &staging,
                    wanted,
                    &what,
                )?;
                staging
                    .commit()
                    .map_err(|e| invalid(format!("{}: {e}", store.root().display())))?;
                this.rebuilt.fetch_add(applied.objects, Ordering::Relaxed);
                Ok::<_, RemoteError>(())
            })
        })
    }

    fn part_url(&self, fetcher: &Fetcher, i: usize) -> String {
        fetcher.url(&format!("deltas/{}/{i}", self.name))
    }

    /// Part `i`, downloaded into `incoming/NAME/i` (resuming what an
    /// earlier pull left there) and checked against the superblock. A
    /// part that does not match is deleted, so the next pull starts it
    /// over.
    fn download(&self, fetcher: &Fetcher, i: usize) -> Result<File, RemoteError> {
        let part = &self.superblock.parts[i];
        let path = self.dir.join(i.to_string());
        let url = self.part_url(fetcher, i);
        let local = |e: std::io::Error| invalid(format!("{}: {e}", path.display()));
        let mut file = open_part(&path).map_err(local)?;
        let mut have = file.metadata().map_err(local)?.len();
        if have > part.size {
            file.set_len(0).map_err(local)?;
            have = 0;
        }
        if have != part.size {
            let (body, start) = fetcher.open_at(&format!("deltas/{}/{i}", self.name), have)?;
            file.set_len(start).map_err(local)?;
            file.seek(SeekFrom::Start(start)).map_err(local)?;
            // No more than the superblock says it has. What arrives stays
            // however the download ends: the next pull resumes from it.
            let mut body = CountingReader {
                inner: body.take((part.size - start).saturating_add(1)),
                count: &self.bytes,
            };
            std::io::copy(&mut body, &mut file).map_err(|e| invalid(format!("{url}: {e}")))?;
            file.flush().map_err(local)?;
        }
        let sha256 = sha256_of(&mut file).map_err(local)?;
        if sha256 != part.sha256 {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(invalid(format!(
                "{url}: delta part {i} has sha256 {sha256}, the delta's superblock names {}: refused",
                part.sha256
            )));
        }
        Ok(file)
    }

    /// Bytes downloaded: the superblock and what came of the parts.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Objects rebuilt and stored.
    pub fn rebuilt(&self) -> u64 {
        self.rebuilt.load(Ordering::Relaxed)
    }
}

/// Counts what it reads into `count`.
struct CountingReader<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Make `path` a directory of its own: anything else there (a link, a
/// file) is removed first, so nothing written beneath it lands elsewhere.
fn real_dir(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir(path)
}

/// Remove `path`, whatever it is; a link goes, not what it names.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A part's download file, created if need be: a regular file in its
/// own right, never through a link (refused by `O_NOFOLLOW`, then
/// replaced), a FIFO or device (`O_NONBLOCK`, then replaced) or a hard
/// link (replaced).
fn open_part(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc_flags())
            .open(path)
    };
    // Nor a second name of a file elsewhere (a hard link).
    let own = |file: &File| file.metadata().map(|m| m.is_file() && m.nlink() == 1);
    if let Ok(file) = open() {
        if own(&file)? {
            return Ok(file);
        }
    }
    remove_any(path)?;
    let file = open()?;
    if !own(&file)? {
        return Err(std::io::Error::other("not a regular file of its own"));
    }
    Ok(file)
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}

/// Once a pull is done, no delta's parts are of use: `incoming/` goes
/// (a link there is removed, not followed).
pub fn clear_incoming(repo: &Repo) {
    let _ = remove_any(&repo.root().join("incoming"));
}

/// Whether `part` makes an object `have` says is not here.
fn missing_some(part: &Part, have: impl Fn(&Digest) -> bool) -> bool {
    part.frames.iter().any(|frame| match &frame.output {
        Output::Objects(names) => names
            .iter()
            .any(|n| delta::parse_digest(n).is_none_or(|d| !have(&d))),
        Output::Blob(_) => false,
    })
}

fn sha256_of(file: &mut File) -> std::io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    std::io::copy(file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
