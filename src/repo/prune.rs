//! Removing objects and images no branch's history needs.

use std::collections::HashSet;
use std::fs;

use super::{io_err, Repo, RepoError};
use crate::fsverity::{self, Digest};

/// What prune removed (or would remove).
#[derive(Debug, Default)]
pub struct PruneReport {
    pub objects_removed: u64,
    pub images_removed: u64,
    pub bytes_freed: u64,
    pub dry_run: bool,
}

/// Remove every object and image not reachable from a branch.
pub fn prune(repo: &Repo, dry_run: bool) -> Result<PruneReport, RepoError> {
    let _lock = repo.lock()?;
    let history = repo.history()?;
    let mut objects: HashSet<Digest> = HashSet::new();
    let mut images: HashSet<Digest> = HashSet::new();
    for id in history.reachable(&[])? {
        let info = history.info(id)?;
        if let Some(d) = fsverity::parse_hex(info.meta.image_digest.as_bytes()) {
            images.insert(d);
        }
        let tree = repo.tree(id)?;
        objects.extend(
            tree.inodes
                .iter()
                .filter(|i| i.content.is_none())
                .filter_map(|i| i.digest),
        );
    }

    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let store_root = repo.objects().root().to_path_buf();
    for (digest, path, size) in repo.objects().list().map_err(io_err(&store_root))?.objects {
        if objects.contains(&digest) {
            continue;
        }
        if !dry_run {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        report.objects_removed += 1;
        report.bytes_freed += size;
    }
    let images_dir = repo.images_dir();
    for entry in fs::read_dir(&images_dir).map_err(io_err(&images_dir))? {
        let entry = entry.map_err(io_err(&images_dir))?;
        let Some(d) = fsverity::parse_hex(entry.file_name().as_encoded_bytes()) else {
            continue;
        };
        if images.contains(&d) {
            continue;
        }
        let size = entry.metadata().map_err(io_err(&entry.path()))?.len();
        if !dry_run {
            fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
        report.images_removed += 1;
        report.bytes_freed += size;
    }
    if !dry_run {
        repo.sync()?;
    }
    Ok(report)
}
