//! Signed statements kept beside the history: `signatures/COMMIT.json`
//! (the statement) and `signatures/COMMIT.sig` (its ed25519 signature).

use std::fs;
use std::path::PathBuf;

use gix::ObjectId;

use super::{io_err, Repo, RepoError};
use crate::compose::write_file_atomic;
use crate::sign::{self, SecretKey, SignedStatement, Statement};

/// A statement and signature as stored, not yet verified.
pub struct StoredStatement {
    pub text: Vec<u8>,
    pub signature: Vec<u8>,
}

impl StoredStatement {
    /// The statement the text holds, unverified (for what was verified
    /// when it was stored).
    pub fn parse(&self) -> Result<Statement, serde_json::Error> {
        serde_json::from_slice(self.text.strip_suffix(b"\n").unwrap_or(&self.text))
    }
}

impl Repo {
    fn signatures_dir(&self) -> PathBuf {
        self.root().join("signatures")
    }

    /// Where the statement and signature of `commit` live.
    pub fn statement_paths(&self, commit: ObjectId) -> (PathBuf, PathBuf) {
        let dir = self.signatures_dir();
        (
            dir.join(format!("{commit}.json")),
            dir.join(format!("{commit}.sig")),
        )
    }

    /// Keep a statement and signature received for `commit` (already
    /// verified by the caller).
    pub fn store_statement(
        &self,
        commit: ObjectId,
        text: &[u8],
        sig: &[u8],
    ) -> Result<(), RepoError> {
        let dir = self.signatures_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let (text_path, sig_path) = self.statement_paths(commit);
        write_file_atomic(&sig_path, sig)?;
        write_file_atomic(&text_path, text)?;
        Ok(())
    }

    /// Mark `commit` as partial (its history is here, its content not
    /// all), or clear the mark.
    pub fn set_partial(&self, commit: ObjectId, partial: bool) -> Result<(), RepoError> {
        let dir = self.root().join("partial");
        let marker = dir.join(commit.to_string());
        if partial {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            fs::write(&marker, b"").map_err(io_err(&marker))
        } else {
            match fs::remove_file(&marker) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&marker)(e)),
            }
        }
    }

    pub fn is_partial(&self, commit: ObjectId) -> bool {
        self.root()
            .join("partial")
            .join(commit.to_string())
            .exists()
    }

    /// The stored statement of `commit`, if signed.
    pub fn stored_statement(&self, commit: ObjectId) -> Result<Option<StoredStatement>, RepoError> {
        let (text, sig) = self.statement_paths(commit);
        match (fs::read(&text), fs::read(&sig)) {
            (Ok(text), Ok(signature)) => Ok(Some(StoredStatement { text, signature })),
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) => Err(io_err(&text)(e)),
            (_, Err(e)) => Err(io_err(&sig)(e)),
        }
    }
}

/// Sign `commit` of `branch` with `key` and store the statement. The
/// epoch is `epoch`, else the one the commit was signed with before, else
/// its parent's. Each file is replaced atomically; a crash between the
/// two leaves a pair that fails verification, never one that passes
/// wrongly.
pub fn sign_commit(
    repo: &Repo,
    commit: ObjectId,
    branch: &str,
    key: &SecretKey,
    epoch: Option<u32>,
) -> Result<SignedStatement, RepoError> {
    let history = repo.history()?;
    let info = history.info(commit)?;
    let epoch = match epoch {
        Some(e) if e > sign::MAX_EPOCH => {
            return Err(RepoError::Invalid(format!(
                "epoch {e} is above {}, the highest sealtree takes",
                sign::MAX_EPOCH
            )))
        }
        Some(e) => e,
        None => match stored_epoch(repo, commit, key)? {
            Some(e) => e,
            None => match info.parents.first() {
                Some(&parent) => stored_epoch(repo, parent, key)?.unwrap_or(0),
                None => 0,
            },
        },
    };
    let statement = Statement {
        branch: branch.to_string(),
        commit: commit.to_string(),
        epoch,
        format_version: info.meta.format_version,
        image_digest: info.meta.image_digest.clone(),
        key: key.public().encoded(),
        timestamp: crate::clock::now(),
        kind: sign::STATEMENT_TYPE.to_string(),
        version: history.log(commit)?.len() as u64,
    };
    let signed = sign::sign(&statement, key);
    let dir = repo.signatures_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let (text_path, sig_path) = repo.statement_paths(commit);
    write_file_atomic(&sig_path, &signed.signature)?;
    write_file_atomic(&text_path, &signed.text)?;
    Ok(signed)
}

/// The epoch of `commit`'s stored statement, if it has one. It becomes
/// the default of a statement `key` signs, so it must be `key`'s own: a
/// statement that does not verify with it (changed on disk, or signed
/// by another key) is refused, and `--epoch` has to say.
fn stored_epoch(repo: &Repo, commit: ObjectId, key: &SecretKey) -> Result<Option<u32>, RepoError> {
    let Some(stored) = repo.stored_statement(commit)? else {
        return Ok(None);
    };
    let (text_path, sig_path) = repo.statement_paths(commit);
    let own = sign::TrustedKeys {
        keys: vec![key.public()],
        source: text_path.clone(),
    };
    sign::verify(&stored.text, &text_path, &stored.signature, &sig_path, &own)
        .map(|(statement, _)| Some(statement.epoch))
        .map_err(|e| {
            RepoError::Invalid(format!(
                "the epoch to sign with comes from commit {commit}'s statement, which does not verify with this key ({e}): give --epoch"
            ))
        })
}

/// The branch a commit belongs to: the branch named `spec`, else the first
/// branch whose history holds the commit.
pub fn branch_of(repo: &Repo, spec: &str, commit: ObjectId) -> Result<String, RepoError> {
    let history = repo.history()?;
    if history.branch(spec).ok().flatten() == Some(commit) {
        return Ok(spec.to_string());
    }
    for (name, tip) in history.branches()? {
        if history.log(tip)?.iter().any(|c| c.id == commit) {
            return Ok(name);
        }
    }
    Err(RepoError::Invalid(format!(
        "commit {commit} is on no branch; name one with --branch"
    )))
}
