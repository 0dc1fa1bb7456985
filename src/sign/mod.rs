//! ed25519 keys and signed statements: what ties a commit to the image
//! digest that the initramfs checks before it mounts the root.

mod detached;
mod index;
mod keys;
mod statement;

pub use index::{sign_index, verify_index, Index, IndexedBranch, IndexedDelta, INDEX_TYPE};
pub use keys::{
    generate, parse_public_keys, read_public_keys, read_secret_key, PublicKey, SecretKey,
    TrustedKeys,
};
pub use statement::{sign, verify, SignedStatement, Statement, MAX_EPOCH, STATEMENT_TYPE};

use std::path::PathBuf;

/// Why a key, statement or signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not what it should be, and why.
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    #[error("no trusted key in {}", .0.display())]
    NoTrustedKeys(PathBuf),
    #[error("signature over {what} is not from a trusted key: it claims key {}, checked {checked} key(s) from {}", claimed.as_deref().unwrap_or("(none)"), keys.display())]
    Untrusted {
        what: String,
        /// The key the statement names (unverified, for the message).
        claimed: Option<String>,
        checked: usize,
        keys: PathBuf,
    },
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &std::path::Path, what: impl Into<String>) -> SignError {
    SignError::Malformed {
        path: path.to_path_buf(),
        what: what.into(),
    }
}
