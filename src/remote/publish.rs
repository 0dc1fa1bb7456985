//! Making a repository servable as plain files. `refs.json` names each
//! branch's commit; with a signing key, `index.json` and `index.sig` say
//! the same, with each branch's version and an expiry, signed (see
//! `sign::Index`). Everything else a client reads is already there: loose
//! git objects, signatures and objects by digest.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::RemoteError;
use crate::repo::Repo;
use crate::sign::{self, Index, IndexedBranch, SecretKey};

/// `refs.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedRefs {
    pub branches: BTreeMap<String, String>,
}

/// What a publish wrote.
pub struct Published {
    pub refs: PublishedRefs,
    /// The signed index, when a key was given.
    pub index: Option<Index>,
}

/// Write `refs.json` (atomically) for the current branches, and with
/// `signing` (a key, and seconds the index stays valid) the signed index.
pub fn publish(repo: &Repo, signing: Option<(&SecretKey, i64)>) -> Result<Published, RemoteError> {
    let _lock = repo.lock()?;
    let history = repo.history()?;
    let index_path = repo.root().join("index.json");
    if signing.is_none() && index_path.exists() {
        return Err(RemoteError::Invalid(format!(
            "{}: this repository publishes a signed index; give --sign-key, or clients that read it will refuse the update",
            index_path.display()
        )));
    }
    let branches = history.branches()?;
    // Packed git objects are not reachable by path; refuse rather than
    // publish something clients cannot read.
    for id in history.reachable(&[])? {
        if !history.is_loose(id) {
            return Err(RemoteError::Invalid(format!(
                "commit {id} is in a git pack; clients read loose objects only (git unpack-objects)"
            )));
        }
    }
    // Tips published before had their objects opened then.
    let before: Vec<String> = std::fs::read(repo.root().join("refs.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<PublishedRefs>(&t).ok())
        .map(|r| r.branches.into_values().collect())
        .unwrap_or_default();
    for (_, id) in &branches {
        if !before.contains(&id.to_string()) {
            make_readable(repo, *id)?;
        }
    }
    let refs = PublishedRefs {
        branches: branches
            .iter()
            .map(|(name, id)| (name.clone(), id.to_string()))
            .collect(),
    };
    let index = match signing {
        Some((key, valid_for)) => {
            let published = crate::clock::now();
            let mut indexed = BTreeMap::new();
            for (name, id) in &branches {
                let version = history.log(*id)?.len() as u64;
                indexed.insert(
                    name.clone(),
                    IndexedBranch {
                        commit: id.to_string(),
                        version,
                    },
                );
            }
            let index = Index {
                branches: indexed,
                expires: published + valid_for,
                key: key.public().encoded(),
                published,
                kind: sign::INDEX_TYPE.to_string(),
            };
            let (text, sig) = sign::sign_index(&index, key);
            // The signature first: a client reading between the two
            // renames sees a mismatch and fails, never a wrong answer.
            write(repo, "index.sig", &sig)?;
            write(repo, "index.json", &text)?;
            Some(index)
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(&refs).expect("refs serialize");
    write(repo, "refs.json", &json)?;
    Ok(Published { refs, index })
}

fn write(repo: &Repo, name: &str, bytes: &[u8]) -> Result<(), RemoteError> {
    crate::compose::write_file_atomic(&repo.root().join(name), bytes)
        .map_err(|e| RemoteError::Invalid(e.to_string()))
}

/// Objects of files others could not read are private (mode 0600);
/// publishing a branch publishes its content, so the objects its commit
/// needs are made readable.
fn make_readable(repo: &Repo, commit: ObjectId) -> Result<(), RemoteError> {
    let tree = repo.tree(commit)?;
    for inode in &tree.inodes {
        if inode.content.is_some() || inode.size == 0 {
            continue;
        }
        let Some(digest) = &inode.digest else {
            continue;
        };
        let path = repo.objects().path(digest);
        let fail = |e: std::io::Error| RemoteError::Invalid(format!("{}: {e}", path.display()));
        let file = repo.objects().open_object(digest).map_err(fail)?;
        let mode = file.metadata().map_err(fail)?.permissions().mode();
        if mode & 0o044 != 0o044 {
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(fail)?;
        }
    }
    Ok(())
}
