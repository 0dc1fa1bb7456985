//! Which commit a remote's branch is at, and whether the remote is fresh:
//! the signed index (`index.json`, `index.sig`) is verified against the
//! remote's keys, refused once expired, and refused when older than the
//! newest index this repository has accepted from the remote (kept as
//! `remotes/NAME/index.json`), so a mirror can neither freeze the
//! repository nor replay an old one. A remote added with
//! `--unsigned-index` is read from `refs.json` alone, without freshness.

use std::fs;

use gix::ObjectId;

use super::fetch::Fetcher;
use super::publish::PublishedRefs;
use super::{Remote, RemoteError};
use crate::clock::{format_utc, now};
use crate::repo::Repo;
use crate::sign::{self, Index};

/// An index is a few lines per branch.
const INDEX_LIMIT: u64 = 16 << 20;

/// Where a branch's commit came from.
pub struct BranchTip {
    pub commit: ObjectId,
    /// The version the signed index names, which the statement must carry.
    pub version: Option<u64>,
    /// The index it was read from: when published, when it expires.
    pub index: Option<(i64, i64)>,
    /// The index's text, to keep as the newest seen once the pull is done.
    newer_index: Option<Vec<u8>>,
}

impl BranchTip {
    /// Keep the index as the newest seen from `remote`: called once the
    /// pull succeeded, so a failed pull changes nothing.
    pub fn record(&self, repo: &Repo, remote: &Remote) -> Result<(), RemoteError> {
        let Some(text) = &self.newer_index else {
            return Ok(());
        };
        let path = seen_path(repo, remote);
        crate::compose::write_file_atomic(&path, text)
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))
    }
}

fn seen_path(repo: &Repo, remote: &Remote) -> std::path::PathBuf {
    repo.root()
        .join("remotes")
        .join(&remote.name)
        .join("index.json")
}

/// The commit `branch` of `remote` is at.
pub fn branch_tip(
    repo: &Repo,
    remote: &Remote,
    fetcher: &Fetcher,
    branch: &str,
    allow_expired: bool,
) -> Result<BranchTip, RemoteError> {
    let seen_path = seen_path(repo, remote);
    let seen: Option<Index> = match fs::read(&seen_path) {
        Ok(text) => Some(
            serde_json::from_slice(&text)
                .map_err(|e| RemoteError::Invalid(format!("{}: {e}", seen_path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(RemoteError::Invalid(format!(
                "{}: {e}",
                seen_path.display()
            )))
        }
    };
    let text = match fetcher.get("index.json", INDEX_LIMIT) {
        Ok(text) => Some(text),
        // Nothing published there at all: say so, not that it is unsigned.
        Err(e) if e.not_found && fetcher.get_optional("refs.json", INDEX_LIMIT)?.is_none() => {
            return Err(e.into())
        }
        Err(e) if e.not_found => None,
        Err(e) => return Err(e.into()),
    };
    let sig = fetcher.get_optional("index.sig", 4096)?;
    let (text, sig) = match (text, sig) {
        (Some(text), Some(sig)) => (text, sig),
        (None, None) if seen.is_none() && remote.config.unsigned_index => {
            return unsigned_tip(fetcher, branch)
        }
        (text, _) => {
            let missing = if text.is_none() {
                "index.json"
            } else {
                "index.sig"
            };
            let why = match &seen {
                Some(s) => format!(
                    "this remote served a signed index before (published {})",
                    format_utc(s.published)
                ),
                None => "the remote was not added with --unsigned-index".to_string(),
            };
            return Err(RemoteError::Invalid(format!(
                "{}: no signed index, and {why}: refused",
                fetcher.url(missing)
            )));
        }
    };
    let text_url = fetcher.url("index.json");
    let (index, _key) = sign::verify_index(
        &text,
        text_url.as_ref(),
        &sig,
        fetcher.url("index.sig").as_ref(),
        &remote.trusted,
    )?;
    if let Some(seen) = &seen {
        if index.published < seen.published {
            return Err(RemoteError::Invalid(format!(
                "{text_url}: the index was published {}, before the index already seen from this remote (published {}): refusing a replayed index",
                format_utc(index.published),
                format_utc(seen.published)
            )));
        }
    }
    let now = now();
    if now >= index.expires && !allow_expired {
        return Err(RemoteError::Invalid(format!(
            "{text_url}: the index expired {} (published {}, now {}): the mirror may be frozen; --allow-expired to take it anyway",
            format_utc(index.expires),
            format_utc(index.published),
            format_utc(now)
        )));
    }
    let newer = seen.as_ref().is_none_or(|s| index.published > s.published);
    let entry = index
        .branches
        .get(branch)
        .ok_or_else(|| RemoteError::Invalid(format!("{text_url}: no branch '{branch}'")))?;
    Ok(BranchTip {
        commit: entry
            .commit
            .parse()
            .map_err(|e| RemoteError::Invalid(format!("{text_url}: {e}")))?,
        version: Some(entry.version),
        index: Some((index.published, index.expires)),
        newer_index: newer.then_some(text),
    })
}

fn unsigned_tip(fetcher: &Fetcher, branch: &str) -> Result<BranchTip, RemoteError> {
    let url = fetcher.url("refs.json");
    let refs: PublishedRefs = serde_json::from_slice(&fetcher.get("refs.json", INDEX_LIMIT)?)
        .map_err(|e| RemoteError::Invalid(format!("{url}: {e}")))?;
    let commit = refs
        .branches
        .get(branch)
        .ok_or_else(|| RemoteError::Invalid(format!("{url}: no branch '{branch}'")))?
        .parse()
        .map_err(|e| RemoteError::Invalid(format!("{url}: {e}")))?;
    Ok(BranchTip {
        commit,
        version: None,
        index: None,
        newer_index: None,
    })
}
