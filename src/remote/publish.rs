//! Making a repository servable as plain files: `refs.json` names each
//! branch's commit, so a client needs no git protocol. Everything else a
//! client reads is already there: loose git objects, signatures and
//! objects by digest.

use std::collections::BTreeMap;

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
    let json = serde_json::to_vec_pretty(&refs).expect("refs serialize");
    crate::compose::write_file_atomic(&repo.root().join("refs.json"), &json)
        .map_err(|e| RemoteError::Invalid(e.to_string()))?;
    Ok(refs)
}
