//! Remotes: a repository published as plain files by any static HTTP
//! server, or a copy of one in a local directory (`file://`: a USB stick
//! or a second disk, for offline updates), and pulling from it.

mod batches;
mod delta_pull;
mod fetch;
mod http;
mod index;
mod local;
mod publish;
mod pull;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fetch::{FetchError, Fetcher};
pub use publish::{publish, Published};
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
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    #[error("{0}")]
    Invalid(String),
}

/// `remotes/NAME/config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `http://`, `https://` or `file:///absolute/path`.
    pub url: String,
    /// Seconds one HTTP request may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// HTTPS trusts only `ca.pem` beside the config (`remote add --ca`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ca: bool,
    /// The publisher signs no index: the branch's commit is read from
    /// `refs.json`, and nothing detects a mirror serving an old one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsigned_index: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How `remote add` sets a remote up.
#[derive(Debug, Default)]
pub struct AddOptions<'a> {
    /// Seconds one HTTP request may take (default 60).
    pub timeout_secs: Option<u64>,
    /// For https://, the only CA certificates to trust (a PEM file).
    pub ca: Option<&'a Path>,
    /// Take the branches from `refs.json`, for a publisher that signs no
    /// index.
    pub unsigned_index: bool,
}

fn default_timeout() -> u64 {
    60
}

/// A configured remote and the keys its statements must verify against.
pub struct Remote {
    pub name: String,
    pub config: RemoteConfig,
    pub trusted: TrustedKeys,
    /// `remotes/NAME/ca.pem`, when it was added with `--ca`: the only CA
    /// its HTTPS server's certificate may chain to.
    pub ca: Option<PathBuf>,
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

/// The URL stored for what `remote add` was given: an `http://` or
/// `https://` URL; a `file://` URL; or a path, stored as a `file://` URL
/// (a relative one made absolute, so it must exist).
fn normalize_url(url: &str) -> Result<String, RemoteError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let path = if url.starts_with("file:") {
        local::parse_file_url(url).map_err(|e| RemoteError::Invalid(format!("{url}: {e}")))?
    } else if url.is_empty() || url.contains("://") {
        return Err(RemoteError::Invalid(format!(
            "{url}: not an http://, https:// or file:// URL, nor a path"
        )));
    } else if Path::new(url).is_absolute() {
        PathBuf::from(url)
    } else {
        fs::canonicalize(url).map_err(|e| {
            RemoteError::Invalid(format!(
                "{url}: not a URL, and as a relative path it cannot be made absolute: {e}"
            ))
        })?
    };
    Ok(local::file_url(&path))
}

/// Add a remote. Its statements must verify against `trusted` (a key
/// file or a directory of them), which are copied into the repository.
pub fn add(
    repo: &Repo,
    name: &str,
    url: &str,
    trusted: &Path,
    options: &AddOptions,
) -> Result<(), RemoteError> {
    let dir = remote_dir(repo, name)?;
    if dir.exists() {
        return Err(RemoteError::Invalid(format!(
            "remote '{name}' exists already"
        )));
    }
    let url = normalize_url(url)?;
    // Refused before anything is written if they are not keys.
    crate::sign::read_public_keys(trusted)?;
    // The bytes checked are the bytes kept: the file is read once.
    let ca_pem = match options.ca {
        Some(_) if !url.starts_with("https://") => {
            return Err(RemoteError::Invalid(format!(
                "--ca is for https:// remotes, not {url}"
            )))
        }
        Some(ca) => {
            let pem = fs::read(ca).map_err(io(ca))?;
            http::parse_ca(&pem, ca).map_err(RemoteError::Invalid)?;
            Some(pem)
        }
        None => None,
    };
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
    if let Some(pem) = &ca_pem {
        let dest = tmp.join("ca.pem");
        fs::write(&dest, pem).map_err(io(&dest))?;
    }
    let config = RemoteConfig {
        url,
        timeout_secs: options.timeout_secs.unwrap_or_else(default_timeout),
        ca: ca_pem.is_some(),
        unsigned_index: options.unsigned_index,
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
    let config: RemoteConfig = config;
    // A remote added with --ca trusts that CA only: without its file it
    // has no CA at all, rather than the system's.
    let ca = dir.join("ca.pem");
    if config.ca && !ca.is_file() {
        return Err(RemoteError::Invalid(format!(
            "{}: missing; remote '{name}' trusts only the CA it was added with",
            ca.display()
        )));
    }
    Ok(Remote {
        name: name.to_string(),
        trusted: crate::sign::read_public_keys(&dir.join("trusted.d"))?,
        ca: (config.ca || ca.is_file()).then_some(ca),
        config,
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
