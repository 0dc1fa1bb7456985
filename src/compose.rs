//! Building composefs images from a directory or a dumpfile, and turning
//! images back into dumpfiles: what `mkcomposefs` and `composefs-info dump`
//! do, as library calls.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dumpfile::{self, ParseError};
use crate::erofs::{self, ImageError, ImageOptions, ImagePlan, ReadError};
use crate::fsverity::{self, Digest};
use crate::lockfile::TEMP_PREFIX;
use crate::objects::ObjectStore;
use crate::tree::{SourceFilters, Tree};
use crate::walk::{self, WalkError, WalkOptions, WalkStats};

/// Where a tree comes from.
pub enum Source<'a> {
    /// A directory on disk, read recursively.
    Directory(&'a Path),
    /// A dumpfile; `-` is standard input.
    Dumpfile(&'a Path),
}

/// Everything `compose` needs besides the source.
#[derive(Default)]
pub struct ComposeOptions {
    pub image: ImageOptions,
    pub filters: SourceFilters,
    /// Hashing threads for directory sources (0: one per core).
    pub threads: usize,
    /// Object store to copy directory sources' file contents into.
    pub digest_store: Option<PathBuf>,
}

/// A tree read from its source, and how the walk went for a directory.
pub struct Composed {
    pub tree: Tree,
    pub walk: Option<WalkStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{}", path.display(), match error.line { Some(l) => format!("{l}: {}", error.message), None => format!(" {}", error.message) })]
    Parse { path: PathBuf, error: ParseError },
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("cannot build image")]
    Image(#[from] ImageError),
    #[error("{}", path.display())]
    ReadImage {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ComposeError + '_ {
    move |source| ComposeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read a tree from `source`, with the source filters applied.
pub fn compose(source: Source, options: &ComposeOptions) -> Result<Composed, ComposeError> {
    let (mut tree, walk) = match source {
        Source::Dumpfile(path) => (read_dumpfile(path)?, None),
        Source::Directory(path) => {
            let store = match &options.digest_store {
                Some(dir) => Some(ObjectStore::open(dir).map_err(io_err(dir))?),
                None => None,
            };
            let (tree, stats) = walk::read_dir_tree(
                path,
                &WalkOptions {
                    threads: options.threads,
                    store: store.as_ref(),
                    skip_xattrs: options.filters.skip_xattrs,
                    ..WalkOptions::default()
                },
            )?;
            (tree, Some(stats))
        }
    };
    tree.apply_filters(&options.filters);
    Ok(Composed { tree, walk })
}

/// Where [`emit_image`] puts an image.
pub enum ImageTarget<'a> {
    /// A file, replaced atomically.
    File(&'a Path),
    /// A stream, such as standard output.
    Stream(&'a mut dyn Write),
    /// Nowhere: only the digest is wanted.
    Nowhere,
}

/// Write the image of `tree` as it is made, and return its digest.
pub fn emit_image(
    tree: &Tree,
    options: &ImageOptions,
    target: ImageTarget,
) -> Result<Digest, ComposeError> {
    let plan = erofs::plan_image(tree, options)?;
    match target {
        ImageTarget::File(path) => {
            let written = write_image_temp(&plan, parent_dir(path))?;
            let digest = written.digest;
            written.persist(path)?;
            Ok(digest)
        }
        ImageTarget::Stream(out) => {
            let mut hashing = fsverity::HashingWriter::new(out);
            let stdout = Path::new("standard output");
            plan.write_to(&mut hashing).map_err(io_err(stdout))?;
            hashing.flush().map_err(io_err(stdout))?;
            Ok(hashing.hasher.finalize().0)
        }
        ImageTarget::Nowhere => Ok(image_digest(&plan)),
    }
}

/// Parse a dumpfile (`-` for standard input).
pub fn read_dumpfile(path: &Path) -> Result<Tree, ComposeError> {
    let parsed = if path == Path::new("-") {
        dumpfile::parse(io::stdin().lock())
    } else {
        let file = File::open(path).map_err(io_err(path))?;
        dumpfile::parse(BufReader::with_capacity(1 << 20, file))
    };
    parsed.map_err(|error| ComposeError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// Write `bytes` to `path` atomically: a temporary file beside it, synced,
/// then renamed, so `path` holds either its old content or all of the new.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), ComposeError> {
    let dir = parent_dir(path);
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    persist(tmp, path)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile, ComposeError> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err(dir))
}

/// Sync a written temporary file and rename it to `path`, in the same
/// directory, syncing that too.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<(), ComposeError> {
    tmp.as_file().sync_all().map_err(io_err(path))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// An image written under a temporary name, and its digest.
pub struct WrittenImage {
    file: tempfile::NamedTempFile,
    pub digest: Digest,
}

impl WrittenImage {
    /// Put the image at `path`, in the directory it was written in, so
    /// that `path` holds its old content or all of the new.
    pub fn persist(self, path: &Path) -> Result<(), ComposeError> {
        persist(self.file, path)
    }
}

/// Write the image `plan` lays out to a temporary file in `dir`, hashing
/// it on the way: the image is never held in memory.
pub fn write_image_temp(plan: &ImagePlan, dir: &Path) -> Result<WrittenImage, ComposeError> {
    let mut file = temp_file_in(dir)?;
    let mut hashing = fsverity::HashingWriter::new(file.as_file_mut());
    plan.write_to(&mut hashing).map_err(io_err(dir))?;
    let (digest, _) = hashing.hasher.finalize();
    Ok(WrittenImage { file, digest })
}

/// The fs-verity digest of the image `plan` lays out, written nowhere.
pub fn image_digest(plan: &ImagePlan) -> Digest {
    let mut hashing = fsverity::HashingWriter::new(io::sink());
    plan.write_to(&mut hashing)
        .expect("writing to a sink does not fail");
    hashing.hasher.finalize().0
}

/// Read a composefs image file back into a tree.
pub fn read_image_file(path: &Path) -> Result<Tree, ComposeError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    erofs::read_image(&bytes).map_err(|source| ComposeError::ReadImage {
        path: path.to_path_buf(),
        source,
    })
}

/// The dumpfile text of a composefs image.
pub fn dump_image(path: &Path) -> Result<Vec<u8>, ComposeError> {
    let tree = read_image_file(path)?;
    let mut out = Vec::new();
    dumpfile::write(&tree, &mut out).map_err(io_err(path))?;
    Ok(out)
}
