//! Remotes: a repository published as plain files by any static HTTP
//! server, and pulling from it.

mod http;
mod publish;
mod pull;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use http::{FetchError, Fetcher};
pub use publish::publish;
pub use pull::{pull, PullOptions, PullReport};

use crate::repo::{Repo, RepoError};
use crate::sign::TrustedKeys;

/// Why a remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    #[error("{0}")]
    Invalid(String),
}

/// `remotes/NAME/config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub url: String,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    60
}

/// A configured remote and the keys its statements must verify against.
pub struct Remote {
    pub name: String,
    pub config: RemoteConfig,
    pub trusted: TrustedKeys,
}

fn remote_dir(repo: &Repo, name: &str) -> Result<PathBuf, RemoteError> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(RemoteError::Invalid(format!(
            "invalid remote name '{name}'"
        )));
    }
    Ok(repo.root().join("remotes").join(name))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RemoteError + '_ {
    move |e| RemoteError::Invalid(format!("{}: {e}", path.display()))
}

/// Add a remote. Its statements must verify against `trusted` (a key
/// file or a directory of them), which are copied into the repository.
pub fn add(
    repo: &Repo,
    name: &str,
    url: &str,
    trusted: &Path,
    timeout_secs: Option<u64>,
) -> Result<(), RemoteError> {
    let dir = remote_dir(repo, name)?;
    if dir.exists() {
        return Err(RemoteError::Invalid(format!(
            "remote '{name}' exists already"
        )));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(RemoteError::Invalid(format!(
            "{url}: not an http:// or https:// URL"
        )));
    }
    // Refused before anything is written if they are not keys.
    crate::sign::read_public_keys(trusted)?;
    let tmp = dir.with_file_name(format!(".tmp-{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let keys = tmp.join("trusted.d");
    fs::create_dir_all(&keys).map_err(io(&keys))?;
    let sources: Vec<PathBuf> = if trusted.is_dir() {
        fs::read_dir(trusted)
            .map_err(io(trusted))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
            .collect()
    } else {
        vec![trusted.to_path_buf()]
    };
    for src in sources {
        let dest = keys.join(src.file_name().expect("a file has a name"));
        fs::copy(&src, &dest).map_err(io(&src))?;
    }
    let config = RemoteConfig {
        url: url.trim_end_matches('/').to_string(),
        timeout_secs: timeout_secs.unwrap_or_else(default_timeout),
    };
    let json = serde_json::to_vec_pretty(&config).expect("config serializes");
    fs::write(tmp.join("config.json"), json).map_err(io(&tmp))?;
    fs::create_dir_all(dir.parent().expect("remotes/")).map_err(io(&dir))?;
    fs::rename(&tmp, &dir).map_err(io(&dir))?;
    Ok(())
}

pub fn open(repo: &Repo, name: &str) -> Result<Remote, RemoteError> {
    let dir = remote_dir(repo, name)?;
    let path = dir.join("config.json");
    let text =
        fs::read(&path).map_err(|_| RemoteError::Invalid(format!("no remote named '{name}'")))?;
    let config = serde_json::from_slice(&text)
        .map_err(|e| RemoteError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Remote {
        name: name.to_string(),
        config,
        trusted: crate::sign::read_public_keys(&dir.join("trusted.d"))?,
    })
}

/// Remote names and URLs.
pub fn list(repo: &Repo) -> Result<Vec<(String, String)>, RemoteError> {
    let dir = repo.root().join("remotes");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for entry in entries {
        let name = entry
            .map_err(io(&dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with('.') {
            continue;
        }
        out.push((name.clone(), open(repo, &name)?.config.url));
    }
    out.sort();
    Ok(out)
}

pub fn remove(repo: &Repo, name: &str) -> Result<(), RemoteError> {
    let dir = remote_dir(repo, name)?;
    if !dir.exists() {
        return Err(RemoteError::Invalid(format!("no remote named '{name}'")));
    }
    fs::remove_dir_all(&dir).map_err(io(&dir))
}
