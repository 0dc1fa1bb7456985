//! Making a repository servable as plain files: `refs.json` names each
//! branch's commit, so a client needs no git protocol. Everything else a
//! client reads is already there: loose git objects, signatures and
//! objects by digest.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use serde::{Deserialize, Serialize};

use super::RemoteError;
use crate::repo::Repo;

/// `refs.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedRefs {
    pub branches: BTreeMap<String, String>,
}

/// Write `refs.json` (atomically) for the current branches.
pub fn publish(repo: &Repo) -> Result<PublishedRefs, RemoteError> {
    let _lock = repo.lock()?;
    let history = repo.history()?;
    let refs = PublishedRefs {
        branches: history
            .branches()?
            .into_iter()
            .map(|(name, id)| (name, id.to_string()))
            .collect(),
    };
    // Packed git objects are not reachable by path; refuse rather than
    // publish something clients cannot read.
    for id in history.reachable(&[])? {
        if !history.is_loose(id) {
            return Err(RemoteError::Invalid(format!(
                "commit {id} is in a git pack; clients read loose objects only (git unpack-objects)"
            )));
        }
    }
    // Objects of files others could not read are private (mode 0600);
    // publishing a branch publishes its content, so the objects its
    // commit needs are made readable.
    for (_, id) in history.branches()? {
        let tree = repo.tree(id)?;
        for inode in &tree.inodes {
            if inode.content.is_some() || inode.size == 0 {
                continue;
            }
            let Some(digest) = &inode.digest else {
                continue;
            };
            let path = repo.objects().path(digest);
            let file = repo
                .objects()
                .open_object(digest)
                .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?;
            let mode = file
                .metadata()
                .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?
                .permissions()
                .mode();
            if mode & 0o044 != 0o044 {
                file.set_permissions(std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?;
            }
        }
    }
    let json = serde_json::to_vec_pretty(&refs).expect("refs serialize");
    crate::compose::write_file_atomic(&repo.root().join("refs.json"), &json)
        .map_err(|e| RemoteError::Invalid(e.to_string()))?;
    Ok(refs)
}
