//! Making a repository servable as plain files. `refs.json` names each
//! branch's commit; with a signing key, `index.json` and `index.sig` say
//! the same, with each branch's version and an expiry, signed (see
//! `sign::Index`). Everything else a client reads is already there: loose
//! git objects, signatures and objects by digest.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use gix::ObjectId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RemoteError;
use crate::delta;
use crate::repo::Repo;
use crate::sign::{self, Index, IndexedBranch, IndexedDelta, SecretKey};

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
    /// Branches left out of the index, and why (no statement to pull).
    pub unindexed: Vec<(String, String)>,
    /// The static deltas the index lists.
    pub deltas: Vec<delta::Generated>,
    /// Deltas not made, and why (an ancestor whose content is not here).
    pub skipped_deltas: Vec<(String, String)>,
}

/// Write `refs.json` (atomically) for the current branches, and with
/// `signing` (a key, and seconds the index stays valid) the signed index,
/// listing for each indexed branch static deltas to its commit from its
/// last `deltas` ancestors (made unless they are there).
pub fn publish(
    repo: &Repo,
    signing: Option<(&SecretKey, i64)>,
    deltas: usize,
) -> Result<Published, RemoteError> {
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
    for (_, id) in &branches {
        make_readable(repo, *id)?;
    }
    let refs = PublishedRefs {
        branches: branches
            .iter()
            .map(|(name, id)| (name.clone(), id.to_string()))
            .collect(),
    };
    let mut unindexed = Vec::new();
    let mut made = Vec::new();
    let mut skipped_deltas = Vec::new();
    let index = match signing {
        Some((key, valid_for)) => {
            // Strictly later than the index before, even within one
            // second: clients refuse an index not newer than one seen
            // with other contents.
            let before = std::fs::read(&index_path)
                .ok()
                .and_then(|t| serde_json::from_slice::<Index>(&t).ok())
                .map_or(i64::MIN, |i| i.published);
            let published = crate::clock::now().max(before.saturating_add(1));
            let mut indexed = BTreeMap::new();
            for (name, id) in &branches {
                match indexed_branch(repo, name, *id)? {
                    Ok(entry) => {
                        indexed.insert(name.clone(), entry);
                    }
                    Err(why) => unindexed.push((name.clone(), why)),
                }
            }
            for name in indexed.keys() {
                let tip = branches
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("an indexed branch is a branch")
                    .1;
                for from in ancestors(repo, tip, deltas)? {
                    match delta::generate(repo, from, tip) {
                        Ok(generated) => made.push(generated),
                        Err(e) => skipped_deltas.push((format!("{from}..{tip}"), e.to_string())),
                    }
                }
            }
            made.sort_by(|a, b| a.name.cmp(&b.name));
            made.dedup_by(|a, b| a.name == b.name);
            let index = Index {
                branches: indexed,
                deltas: made
                    .iter()
                    .map(|g| {
                        let entry = IndexedDelta {
                            sha256: g.superblock_sha256.clone(),
                            size: g.superblock_size,
                        };
                        (g.name.clone(), entry)
                    })
                    .collect(),
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
    // Deltas the index no longer lists go (a client holding the index
    // before falls back to objects), as do any a killed publish left.
    if let Some(index) = &index {
        remove_unlisted_deltas(repo, &index.deltas)?;
    }
    Ok(Published {
        refs,
        index,
        unindexed,
        deltas: made,
        skipped_deltas,
    })
}

fn remove_unlisted_deltas(
    repo: &Repo,
    listed: &BTreeMap<String, IndexedDelta>,
) -> Result<(), RemoteError> {
    let dir = repo.root().join("deltas");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| RemoteError::Invalid(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| listed.contains_key(n)) {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// Up to `count` first-parent ancestors of `tip` whose content is here
/// and whose image differs from the tip's: the commits clients update
/// from.
fn ancestors(repo: &Repo, tip: ObjectId, count: usize) -> Result<Vec<ObjectId>, RemoteError> {
    let history = repo.history()?;
    let image = history.info(tip)?.meta.image_digest;
    let mut out = Vec::new();
    let mut next = history.info(tip)?.parents.first().copied();
    while let Some(id) = next.filter(|_| out.len() < count) {
        if !history.has_object(id) || repo.is_partial(id) {
            break;
        }
        let info = history.info(id)?;
        if info.meta.image_digest != image {
            out.push(id);
        }
        next = info.parents.first().copied();
    }
    Ok(out)
}

/// The index entry of branch `name` at `commit`, or why it has none: a
/// client pulls a commit only with its statement, for that branch.
fn indexed_branch(
    repo: &Repo,
    name: &str,
    commit: ObjectId,
) -> Result<Result<IndexedBranch, String>, RemoteError> {
    let Some(stored) = repo.stored_statement(commit)? else {
        return Ok(Err(format!("commit {commit} is not signed")));
    };
    let path = repo.statement_paths(commit).0;
    let statement = stored
        .parse()
        .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?;
    if statement.branch != name {
        return Ok(Err(format!(
            "commit {commit} is signed for branch '{}'",
            statement.branch
        )));
    }
    Ok(Ok(IndexedBranch {
        commit: commit.to_string(),
        statement: hex::encode(Sha256::digest(&stored.text)),
        version: statement.version,
    }))
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
        // A look without opening for most; the few to change are opened
        // (no link followed, regular only) and changed through the file.
        let meta = std::fs::symlink_metadata(&path).map_err(fail)?;
        if meta.is_file() && meta.permissions().mode() & 0o044 == 0o044 {
            continue;
        }
        let file = repo.objects().open_object(digest).map_err(fail)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    Ok(())
}
