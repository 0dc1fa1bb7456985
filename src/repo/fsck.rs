//! Checking a repository: every object and image re-hashed against its
//! name, every reachable commit's objects and image present, and each
//! commit's image rebuilt to the digest it recorded.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use rayon::prelude::*;

use super::{io_err, Repo, RepoError, IMAGE_FORMAT_VERSION};
use crate::erofs::{self, ImageOptions};
use crate::fsverity::{self, Digest};
use crate::tree::FileType;

/// What fsck found (and repaired).
#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub images_checked: u64,
    pub commits_checked: u64,
    /// Objects whose content does not match their name.
    pub corrupt_objects: Vec<Digest>,
    /// Objects a reachable commit needs that are absent: (digest, commit, path).
    pub missing_objects: Vec<(Digest, String, String)>,
    pub corrupt_images: Vec<Digest>,
    /// Images of reachable commits that are absent: (digest, commit).
    pub missing_images: Vec<(Digest, String)>,
    /// Commits whose dumpfile does not rebuild the recorded image.
    pub bad_commits: Vec<(String, String)>,
    /// Staging directories the next writer clears.
    pub temporary: Vec<PathBuf>,
    /// Files in the store that are not objects.
    pub strays: Vec<PathBuf>,
    /// What --repair did.
    pub repaired: Vec<String>,
}

impl FsckReport {
    /// No problem found, temporary files aside.
    pub fn is_clean(&self) -> bool {
        self.corrupt_objects.is_empty()
            && self.missing_objects.is_empty()
            && self.corrupt_images.is_empty()
            && self.missing_images.is_empty()
            && self.bad_commits.is_empty()
            && self.strays.is_empty()
    }
}

/// Check `repo`; with `repair`, move corrupt objects to REPO/quarantine
/// and rebuild missing or corrupt images of reachable commits.
pub fn fsck(repo: &Repo, repair: bool) -> Result<FsckReport, RepoError> {
    let _lock = if repair { Some(repo.lock()?) } else { None };
    let mut report = FsckReport::default();
    let store_root = repo.objects().root().to_path_buf();
    let listing = repo.objects().list().map_err(io_err(&store_root))?;
    report.temporary = listing.staging;
    report.strays = listing.strays;

    let bad: Vec<(Digest, PathBuf)> = listing
        .objects
        .par_iter()
        .filter_map(|(d, path, _)| match hash_file(path) {
            Some(actual) if actual == *d => None,
            _ => Some((*d, path.clone())),
        })
        .collect();
    report.objects_checked = listing.objects.len() as u64;
    let quarantine = repo.root().join("quarantine");
    for (d, path) in bad {
        report.corrupt_objects.push(d);
        if repair {
            fs::create_dir_all(&quarantine).map_err(io_err(&quarantine))?;
            let to = quarantine.join(hex::encode(d));
            fs::rename(&path, &to).map_err(io_err(&path))?;
            report.repaired.push(format!(
                "moved corrupt object {} to {}",
                hex::encode(d),
                to.display()
            ));
        }
    }
    report.corrupt_objects.sort();

    let images_dir = repo.images_dir();
    let mut images_ok = HashSet::new();
    for entry in fs::read_dir(&images_dir).map_err(io_err(&images_dir))? {
        let entry = entry.map_err(io_err(&images_dir))?;
        let name = entry.file_name();
        let Some(d) = fsverity::parse_hex(name.as_encoded_bytes()) else {
            // A writer's temporary file (the next writer removes it).
            if name
                .as_encoded_bytes()
                .starts_with(crate::lockfile::TEMP_PREFIX.as_bytes())
            {
                report.temporary.push(entry.path());
            } else {
                report.strays.push(entry.path());
            }
            continue;
        };
        report.images_checked += 1;
        if hash_file(&entry.path()) == Some(d) {
            images_ok.insert(d);
        } else {
            report.corrupt_images.push(d);
            if repair {
                fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
    }

    let history = repo.history()?;
    let present: HashSet<Digest> = listing.objects.iter().map(|(d, _, _)| *d).collect();
    let corrupt: HashSet<Digest> = report.corrupt_objects.iter().copied().collect();
    for id in history.reachable(&[])? {
        report.commits_checked += 1;
        let info = history.info(id)?;
        let tree = repo.tree(id)?;
        let mut needed = Vec::new();
        // Pulled history without its content: nothing to miss.
        let partial = repo.is_partial(id);
        tree.walk(|path, inode_id, hardlink| {
            let inode = &tree.inodes[inode_id];
            if !hardlink
                && inode.file_type() == Some(FileType::Regular)
                && inode.size > 0
                && inode.content.is_none()
            {
                let p: Vec<u8> = path.join(&b'/');
                needed.push((inode.digest, format!("/{}", p.escape_ascii())));
            }
        });
        for (digest, path) in needed {
            match digest {
                Some(d) if present.contains(&d) && !corrupt.contains(&d) => {}
                Some(_) if partial => {}
                Some(d) => report.missing_objects.push((d, id.to_string(), path)),
                None => report
                    .bad_commits
                    .push((id.to_string(), format!("{path} has no digest"))),
            }
        }
        let plan = erofs::plan_image(
            &tree,
            &ImageOptions {
                min_version: IMAGE_FORMAT_VERSION,
                max_version: IMAGE_FORMAT_VERSION,
            },
        )?;
        let digest = crate::compose::image_digest(&plan);
        if hex::encode(digest) != info.meta.image_digest {
            report.bad_commits.push((
                id.to_string(),
                format!(
                    "dumpfile rebuilds image {} but the commit records {}",
                    hex::encode(digest),
                    info.meta.image_digest
                ),
            ));
            continue;
        }
        if !images_ok.contains(&digest) {
            if repair {
                let written = crate::compose::write_image_temp(&plan, &repo.images_dir())?;
                if written.digest != digest {
                    return Err(RepoError::Invalid(format!(
                        "the image of commit {id} came out as {} on a second writing",
                        hex::encode(written.digest)
                    )));
                }
                written.persist(&repo.image_path(&digest))?;
                images_ok.insert(digest);
                report
                    .repaired
                    .push(format!("rebuilt image {}", hex::encode(digest)));
            } else if !report.corrupt_images.contains(&digest) && !partial {
                report.missing_images.push((digest, id.to_string()));
            }
        }
    }
    if repair {
        // Corrupt images of reachable commits were rebuilt above.
        report.corrupt_images.retain(|d| !images_ok.contains(d));
        repo.sync()?;
    }
    Ok(report)
}

fn hash_file(path: &std::path::Path) -> Option<Digest> {
    let f = crate::objects::open_regular(path).ok()?;
    fsverity::digest_reader(f).ok().map(|(d, _)| d)
}
