//! The repository: the content store where every OS version lives.
//!
//! ```text
//! REPO/objects/XX/YYYY…   file contents by fs-verity digest
//! REPO/images/DIGEST      composefs images by fs-verity digest
//! REPO/git/               bare git repository: one commit per OS commit
//! REPO/signatures/      COMMIT.json statements and COMMIT.sig signatures
//! REPO/statcache          file identity -> digest, to skip unchanged files
//! REPO/lock               held by every writer
//! ```
//!
//! Writers publish in dependency order (objects, image, git objects, then
//! the branch ref, each made durable before the next), so a crash leaves
//! every ref naming a complete commit.

mod checkout;
mod commit;
mod diff;
mod dump_blob;
mod fsck;
mod history;
mod meta;
mod prune;
mod signatures;

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

pub use checkout::{checkout, materialize};
pub use commit::{commit, CommitOptions, CommitSource, Committed};
pub use diff::{diff, Change, ChangeKind};
pub use fsck::{fsck, FsckReport};
pub use history::{CommitInfo, History};
pub use meta::CommitMeta;
pub use prune::{prune, PruneReport};
pub use signatures::{branch_of, sign_commit, StoredStatement};

use crate::objects::ObjectStore;

/// Format version of the images a repository records.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

/// A repository operation that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    // The cause is in the message, so not also a source: printed as a
    // chain, it would be said twice.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{0} is not a sealtree repository (run `sealtree init`)")]
    NotARepo(String),
    #[error("git: {0}")]
    Git(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Compose(#[from] crate::compose::ComposeError),
    #[error(transparent)]
    Walk(#[from] crate::walk::WalkError),
    #[error(transparent)]
    Image(#[from] crate::erofs::ImageError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |error| RepoError::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub(crate) fn git_err(e: impl std::fmt::Display) -> RepoError {
    RepoError::Git(e.to_string())
}

/// An opened repository.
pub struct Repo {
    root: PathBuf,
    objects: ObjectStore,
}

impl Repo {
    /// Create a repository at `root` (which may exist, empty or not).
    pub fn init(root: &Path) -> Result<Repo, RepoError> {
        // Never writable by all, whatever the umask: a store any user
        // may write to is refused. Its group may write where the umask
        // lets it.
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true).mode(0o775);
        for sub in ["objects", "images"] {
            dirs.create(root.join(sub)).map_err(io_err(root))?;
        }
        let git = root.join("git");
        if !git.join("HEAD").exists() {
            gix::init_bare(&git).map_err(git_err)?;
        }
        File::create(root.join("lock")).map_err(io_err(root))?;
        sync_dir(root)?;
        Repo::open(root)
    }

    /// Open the repository at `root`.
    pub fn open(root: &Path) -> Result<Repo, RepoError> {
        if !root.join("git").join("HEAD").is_file() || !root.join("objects").is_dir() {
            return Err(RepoError::NotARepo(root.display().to_string()));
        }
        Ok(Repo {
            root: root.to_path_buf(),
            objects: ObjectStore::open(root.join("objects")).map_err(io_err(root))?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// Layers of images committed before (`oci::LayerCache`).
    pub fn layer_cache_dir(&self) -> PathBuf {
        self.root.join("oci-layers")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn image_path(&self, digest: &crate::fsverity::Digest) -> PathBuf {
        self.images_dir().join(hex::encode(digest))
    }

    /// The tree recorded in a commit.
    pub fn tree(&self, commit: gix::ObjectId) -> Result<crate::tree::Tree, RepoError> {
        let dump = self.history()?.dump(commit)?;
        crate::dumpfile::parse(&dump[..])
            .map_err(|e| RepoError::Invalid(format!("commit {commit}: dump {e}")))
    }

    pub fn history(&self) -> Result<History, RepoError> {
        History::open(&self.root.join("git"))
    }

    /// Take the writer lock, waiting for another writer to finish. Any
    /// temporary file a writer leaves is then from one that died: it goes.
    pub fn lock(&self) -> Result<Flock<File>, RepoError> {
        let lock = self.lock_only()?;
        // git's own lock files, left by a writer killed while moving a ref,
        // would refuse every later update of that ref.
        let git = self.root.join("git");
        let mut dirs = vec![git.join("refs")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "lock") {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        for name in ["packed-refs.lock", "HEAD.lock"] {
            let _ = fs::remove_file(git.join(name));
        }
        for dir in [
            self.images_dir(),
            self.root.join("signatures"),
            self.root.clone(),
        ] {
            crate::lockfile::remove_temporaries(&dir);
        }
        Ok(lock)
    }

    fn lock_only(&self) -> Result<Flock<File>, RepoError> {
        let path = self.root.join("lock");
        crate::lockfile::lock_waiting(
            &path,
            &format!("another writer to finish with {}", self.root.display()),
        )
        .map_err(io_err(&path))
    }

    /// Make everything written to the repository's filesystem durable.
    pub(crate) fn sync(&self) -> Result<(), RepoError> {
        let f = File::open(&self.root).map_err(io_err(&self.root))?;
        nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| io_err(&self.root)(e.into()))
    }
}

fn sync_dir(dir: &Path) -> Result<(), RepoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
