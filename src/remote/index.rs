//! Which commit a remote's branch is at, and whether the remote is fresh:
//! the signed index (`index.json`, `index.sig`) is verified against the
//! remote's keys, refused once expired or when dated in the future, and
//! refused when not newer than the newest index this repository has
//! accepted from the remote (kept as `remotes/NAME/index.json`), so a
//! mirror can neither freeze the repository nor replay an old one. A
//! remote added with `--unsigned-index` is read from `refs.json` alone,
//! without freshness, until it serves a signed index.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use gix::ObjectId;

use super::fetch::Fetcher;
use super::publish::PublishedRefs;
use super::{Remote, RemoteError};
use crate::clock::{format_utc, now};
use crate::repo::Repo;
use crate::sign::{self, Index, IndexedDelta};

/// An index is a few lines per branch.
const INDEX_LIMIT: u64 = 16 << 20;
/// How far in the future an index may be dated: clocks differ by
/// seconds, and an index from the future would make every honest index
/// after it look like a replay.
const CLOCK_SKEW: i64 = 3600;

/// Where a branch's commit came from.
pub struct BranchTip {
    pub commit: ObjectId,
    /// What the signed index says of the branch (none for a remote added
    /// with `--unsigned-index` that serves no index).
    pub indexed: Option<Indexed>,
    /// The static deltas the signed index lists, by name.
    pub deltas: BTreeMap<String, IndexedDelta>,
}

/// A branch as a verified index names it.
pub struct Indexed {
    /// The statement's version.
    pub version: u64,
    /// SHA-256 of the statement text, hex.
    pub statement: String,
    /// When the index was published, and when it expires.
    pub published: i64,
    pub expires: i64,
}

fn seen_path(repo: &Repo, remote: &Remote) -> PathBuf {
    repo.root()
        .join("remotes")
        .join(&remote.name)
        .join("index.json")
}

fn invalid(what: String) -> RemoteError {
    RemoteError::Invalid(what)
}

/// The newest index accepted from `remote`, and its text.
fn seen_index(repo: &Repo, remote: &Remote) -> Result<Option<(Index, Vec<u8>)>, RemoteError> {
    let path = seen_path(repo, remote);
    match fs::read(&path) {
        Ok(text) => {
            let index = serde_json::from_slice(text.strip_suffix(b"\n").unwrap_or(&text))
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            Ok(Some((index, text)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(invalid(format!("{}: {e}", path.display()))),
    }
}

/// The commit `branch` of `remote` is at. `allow_expired` takes an
/// expired or future-dated index (a machine without a good clock, old
/// media); an index older than one seen is refused all the same.
pub fn branch_tip(
    repo: &Repo,
    remote: &Remote,
    fetcher: &Fetcher,
    branch: &str,
    allow_expired: bool,
) -> Result<BranchTip, RemoteError> {
    let seen = seen_index(repo, remote)?;
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
                Some((s, _)) => format!(
                    "this remote served a signed index before (published {})",
                    format_utc(s.published)
                ),
                None => "the remote was not added with --unsigned-index".to_string(),
            };
            return Err(invalid(format!(
                "{}: no signed index, and {why}: refused",
                fetcher.url(missing)
            )));
        }
    };
    let url = fetcher.url("index.json");
    let (index, _key) = sign::verify_index(
        &text,
        url.as_ref(),
        &sig,
        fetcher.url("index.sig").as_ref(),
        &remote.trusted,
    )?;
    if let Some((s, seen_text)) = &seen {
        // Publishers date each index later than the one before; the same
        // date with other contents is a replay too.
        if index.published < s.published || (index.published == s.published && &text != seen_text) {
            return Err(invalid(format!(
                "{url}: the index was published {}, not after the index already seen from this remote (published {}): refusing a replayed index",
                format_utc(index.published),
                format_utc(s.published)
            )));
        }
    }
    let now = now();
    if index.published > now + CLOCK_SKEW && !allow_expired {
        return Err(invalid(format!(
            "{url}: the index is dated {}, later than now ({}): this machine's clock or the publisher's is wrong; --allow-expired to take it anyway",
            format_utc(index.published),
            format_utc(now)
        )));
    }
    if now >= index.expires && !allow_expired {
        return Err(invalid(format!(
            "{url}: the index expired {} (published {}, now {}): the mirror may be frozen; --allow-expired to take it anyway",
            format_utc(index.expires),
            format_utc(index.published),
            format_utc(now)
        )));
    }
    // Authentic and fresh: kept as the newest seen at once, whatever
    // becomes of this pull, so a mirror cannot go back to an older index
    // (or to none) by making a pull fail first.
    if seen
        .as_ref()
        .is_none_or(|(s, _)| index.published > s.published)
    {
        let path = seen_path(repo, remote);
        crate::compose::write_file_atomic(&path, &text)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    }
    let entry = index
        .branches
        .get(branch)
        .ok_or_else(|| invalid(format!("{url}: no branch '{branch}'")))?;
    Ok(BranchTip {
        commit: entry
            .commit
            .parse()
            .map_err(|e| invalid(format!("{url}: {e}")))?,
        indexed: Some(Indexed {
            version: entry.version,
            statement: entry.statement.clone(),
            published: index.published,
            expires: index.expires,
        }),
        deltas: index.deltas,
    })
}

fn unsigned_tip(fetcher: &Fetcher, branch: &str) -> Result<BranchTip, RemoteError> {
    let url = fetcher.url("refs.json");
    let refs: PublishedRefs = serde_json::from_slice(&fetcher.get("refs.json", INDEX_LIMIT)?)
        .map_err(|e| invalid(format!("{url}: {e}")))?;
    let commit = refs
        .branches
        .get(branch)
        .ok_or_else(|| invalid(format!("{url}: no branch '{branch}'")))?
        .parse()
        .map_err(|e| invalid(format!("{url}: {e}")))?;
    Ok(BranchTip {
        commit,
        indexed: None,
        deltas: BTreeMap::new(),
    })
}
