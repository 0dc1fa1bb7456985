//! Building composefs images from a directory or a dumpfile, and turning
//! images back into dumpfiles: what `mkcomposefs` and `composefs-info dump`
//! do, as library calls.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dumpfile::{self, ParseError};
use crate::erofs::{self, Image, ImageError, ImageOptions, ReadError};
use crate::fsverity::{self, Digest};
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

/// A built image with its fs-verity digest.
pub struct Composed {
    pub tree: Tree,
    pub image: Image,
    pub digest: Digest,
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

/// Read a tree from `source` and build its image.
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
                    cache: None,
                    progress: None,
                },
            )?;
            (tree, Some(stats))
        }
    };
    tree.apply_filters(&options.filters);
    let image = erofs::write_image(&tree, &options.image)?;
    let digest = fsverity::digest_bytes(&image.bytes);
    Ok(Composed {
        tree,
        image,
        digest,
        walk,
    })
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

/// Files being written have this prefix until renamed into place.
pub const TEMP_PREFIX: &str = ".sealtree-";

/// Write `bytes` to `path` atomically: a temporary file beside it, synced,
/// then renamed, so `path` holds either its old content or all of the new.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), ComposeError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
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
