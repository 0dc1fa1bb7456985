//! Committing a tree: contents into the object store, the image into
//! images/, the dumpfile and metadata into a git commit, then the branch.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use gix::ObjectId;

use super::dump_blob::DumpFile;
use super::history::History;
use super::meta::CommitMeta;
use super::{io_err, Repo, RepoError, IMAGE_FORMAT_VERSION};
use crate::compose::{read_dumpfile, write_image_temp, WrittenImage};
use crate::erofs::{self, ImageOptions};
use crate::fsverity;
use crate::statcache::{self, StatCache};
use crate::tar_import;
use crate::tree::{object_path, FileType, Tree};
use crate::walk::{self, WalkOptions, WalkStats};

/// What to commit.
pub enum CommitSource<'a> {
    /// A directory tree on disk.
    Directory(&'a Path),
    /// A tar archive, optionally gzip or zstd compressed.
    Tar(&'a Path),
    /// A composefs dumpfile whose contents are already in the store.
    Dump(&'a Path),
    /// An OCI image (`oci:DIR[:TAG]`, `docker://…`): its layers
    /// applied in order.
    Oci {
        reference: &'a str,
        registry: &'a crate::oci::RegistryOptions,
        /// Read every layer, and keep no record of them.
        no_layer_cache: bool,
    },
}

/// The result of a commit.
pub struct Committed {
    pub id: ObjectId,
    pub meta: CommitMeta,
    /// Present for directory sources.
    pub walk: Option<WalkStats>,
    /// For images: each layer, and whether the layer cache had it.
    pub layers: Vec<crate::oci::LayerRead>,
}

/// How to commit.
#[derive(Default)]
pub struct CommitOptions<'a> {
    /// Threads for hashing (0: one per core).
    pub threads: usize,
    /// Shows bytes hashed; hidden unless drawing to a terminal.
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// Sign the commit; the statement is stored before the branch moves,
    /// so the branch never names an unsigned commit meant to be signed.
    pub sign_key: Option<&'a crate::sign::SecretKey>,
    /// The statement's security epoch (default: the parent's).
    pub epoch: Option<u32>,
}

/// Commit `source` onto `branch`.
pub fn commit(
    repo: &Repo,
    source: CommitSource,
    branch: &str,
    message: &str,
    options: &CommitOptions,
) -> Result<Committed, RepoError> {
    let history = repo.history()?;
    // Refuse a bad branch name before any work is done.
    history.branch(branch)?;
    let _lock = repo.lock()?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);

    let statcache_path = repo.root().join("statcache");
    let mut image_source = None;
    let mut layers = Vec::new();
    let mut layer_records = Vec::new();
    let mut stamps = None;
    // Contents read from a directory, still to be published.
    let mut staged = None;
    let (tree, mut walk) = match source {
        CommitSource::Directory(dir) => {
            let cache = StatCache::load(&statcache_path);
            // Only a hint for the next commit: without it, nothing is lost.
            stamps = Some(Mutex::new(statcache::Writer::new(&statcache_path, started)));
            let (tree, stats, staging) = walk::read_dir_tree_staged(
                dir,
                &WalkOptions {
                    threads: options.threads,
                    store: Some(repo.objects()),
                    skip_xattrs: false,
                    cache: Some(&cache),
                    progress: options.progress,
                    stamps: stamps.as_ref(),
                },
            )?;
            staged = staging;
            (tree, Some(stats))
        }
        CommitSource::Tar(archive) => {
            let staging = repo
                .objects()
                .staging()
                .map_err(io_err(repo.objects().root()))?;
            let tree = tar_import::read_tar(archive, Some(&staging))
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            staging.commit().map_err(io_err(repo.objects().root()))?;
            (tree, None)
        }
        CommitSource::Oci {
            reference,
            registry,
            no_layer_cache,
        } => {
            let staging = repo
                .objects()
                .staging()
                .map_err(io_err(repo.objects().root()))?;
            let cache = crate::oci::LayerCache::new(repo.layer_cache_dir(), repo.objects());
            let image = crate::oci::read(
                reference,
                Some(&staging),
                &crate::oci::ReadOptions {
                    cache: (!no_layer_cache).then_some(&cache),
                    registry: registry.clone(),
                },
            )
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
            staging.commit().map_err(io_err(repo.objects().root()))?;
            layer_records = image.pending;
            image_source = Some(image.source);
            layers = image.layers;
            (image.tree, None)
        }
        CommitSource::Dump(path) => {
            let mut tree = read_dumpfile(path)?;
            // As for tar archives: no link may lead out of a checkout.
            if let Some((name, message)) = tree.link_climbing_out() {
                return Err(RepoError::Invalid(format!(
                    "{}: {}: {message}",
                    path.display(),
                    name.escape_ascii()
                )));
            }
            require_objects(repo, &mut tree)?;
            (tree, None)
        }
    };

    let parent = history.branch(branch)?;
    // Most commits of a branch change its tree little or not at all; only
    // a guess (0 in commits older than the field).
    let likely_len = parent
        .and_then(|parent| history.info(parent).ok())
        .map(|info| info.meta.dump_size)
        .filter(|&len| len > 0);
    let (dump, digest) = std::thread::scope(|scope| {
        // The copied contents are made durable and published meanwhile,
        // before the commit naming them is written.
        let publishing = staged.map(|staging| scope.spawn(move || staging.commit()));
        let dump = DumpFile::write(&tree, repo.root(), likely_len).map_err(io_err(repo.root()))?;
        let walk = &mut walk;
        let published = move || -> Result<(), RepoError> {
            if let Some(publishing) = publishing {
                let stats = joined(publishing).map_err(io_err(repo.objects().root()))?;
                if let Some(walk) = walk.as_mut() {
                    walk.store = stats;
                }
            }
            Ok(())
        };
        let digest = match unchanged(repo, &history, parent, dump.id)? {
            Some(digest) => {
                published()?;
                digest
            }
            None => {
                // Not beside the dumpfile's writing: both hold much memory
                // for a large tree, storing its blob little.
                let image = scope.spawn(|| build_image(repo, &tree));
                history.store_dump(&dump)?;
                let image = joined(image)?;
                // Kept only once the contents are: a failed commit leaves
                // no image.
                published()?;
                keep_image(repo, image)?
            }
        };
        Ok::<_, RepoError>((dump, digest))
    })?;
    let mut meta = CommitMeta::describe(&tree, dump.len, &digest, IMAGE_FORMAT_VERSION);
    // Freeing a large tree takes as long as the rest of the commit: done
    // beside it, on a thread nothing waits for.
    let _ = std::thread::Builder::new().spawn(move || drop(tree));
    meta.image_source = image_source;
    let id = history.write_commit(dump.id, &meta, message, parent, crate::clock::now())?;
    if let Some(key) = options.sign_key {
        super::sign_commit(repo, id, branch, key, options.epoch)?;
    }
    // The commit's objects must be on disk before a ref can name it.
    repo.sync()?;
    history.set_branch(branch, id, parent)?;
    repo.sync()?;
    // Records of the layers read, now that a commit holds their contents.
    for record in layer_records {
        record.persist().map_err(io_err(&repo.layer_cache_dir()))?;
    }

    if let Some(Ok(stamps)) = stamps.map(Mutex::into_inner) {
        let _ = stamps.persist();
    }
    Ok(Committed {
        id,
        meta,
        walk,
        layers,
    })
}

/// The image digest of `parent` when its dumpfile is the blob `dump` and
/// its image is stored: the image is a function of the dumpfile, so
/// neither needs writing again.
fn unchanged(
    repo: &Repo,
    history: &History,
    parent: Option<ObjectId>,
    dump: ObjectId,
) -> Result<Option<fsverity::Digest>, RepoError> {
    let Some(parent) = parent else {
        return Ok(None);
    };
    if history.dump_id(parent)? != dump {
        return Ok(None);
    }
    let meta = history.info(parent)?.meta;
    let digest = match fsverity::parse_hex(meta.image_digest.as_bytes()) {
        Some(d) if meta.format_version == IMAGE_FORMAT_VERSION => d,
        _ => return Ok(None),
    };
    if !repo.image_path(&digest).exists() {
        return Ok(None);
    }
    Ok(Some(digest))
}

/// What a scoped thread returned; its panic goes on in the caller.
fn joined<T>(thread: std::thread::ScopedJoinHandle<T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Write the tree's image under a temporary name in images/.
fn build_image(repo: &Repo, tree: &Tree) -> Result<WrittenImage, RepoError> {
    let plan = erofs::plan_image(
        tree,
        &ImageOptions {
            min_version: IMAGE_FORMAT_VERSION,
            max_version: IMAGE_FORMAT_VERSION,
        },
    )?;
    Ok(write_image_temp(&plan, &repo.images_dir())?)
}

/// Store a written image under its digest (unless it is there already).
fn keep_image(repo: &Repo, image: WrittenImage) -> Result<fsverity::Digest, RepoError> {
    let digest = image.digest;
    let image_path = repo.image_path(&digest);
    if !image_path.exists() {
        image.persist(&image_path)?;
    }
    Ok(digest)
}

/// A dumpfile names contents by digest; each must already be stored.
fn require_objects(repo: &Repo, tree: &mut Tree) -> Result<(), RepoError> {
    let mut problems = Vec::new();
    let mut paths = Vec::new();
    tree.walk(|path, id, hardlink| {
        if !hardlink {
            paths.push((id, path.join(&b'/')));
        }
    });
    let stored = repo.objects().lookup();
    for (id, path) in paths {
        let inode = &mut tree.inodes[id];
        if inode.file_type() != Some(FileType::Regular)
            || inode.size == 0
            || inode.content.is_some()
        {
            continue;
        }
        match inode.digest {
            Some(d) if stored.contains(&d) => {
                inode.payload = Some(object_path(&d).into_bytes().into());
            }
            Some(d) => problems.push(format!(
                "/{}: object {} is not in the store ({})",
                path.escape_ascii(),
                hex::encode(d),
                repo.objects().why_not_stored(&d)
            )),
            None => problems.push(format!("/{}: no digest", path.escape_ascii())),
        }
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(RepoError::Invalid(problems.remove(0))),
        n => Err(RepoError::Invalid(format!(
            "{} (and {} more)",
            problems[0],
            n - 1
        ))),
    }
}
