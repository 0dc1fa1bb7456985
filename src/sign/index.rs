//! The index a publisher signs: each branch's commit and version, when it
//! was published and until when clients may believe it. A client refuses
//! an expired index, or one older than an index it has seen, so a mirror
//! cannot serve a frozen repository for ever (the timestamp role of TUF).
//! Canonical JSON, signed like statements.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::detached::{sign_text, verify_text};
use super::{malformed, PublicKey, SecretKey, SignError, TrustedKeys};

/// Fields are declared in sorted order, so serde_json's compact output
/// is canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub branches: BTreeMap<String, IndexedBranch>,
    /// Static deltas by name (`FROM-TO`, image digests): an index without
    /// any reads as before deltas existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deltas: BTreeMap<String, IndexedDelta>,
    /// Seconds since the epoch after which the index is stale.
    pub expires: i64,
    /// The signer's public key, base64 (for messages; trusted for nothing).
    pub key: String,
    /// Seconds since the epoch when it was signed.
    pub published: i64,
    /// Always [`INDEX_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// A branch as the index names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedBranch {
    /// Git commit id, hex.
    pub commit: String,
    /// SHA-256 of the commit's statement text, hex: the index vouches for
    /// that statement, so a mirror cannot pair the commit with another
    /// one (of a lower epoch, say).
    pub statement: String,
    /// The version of the commit's signed statement.
    pub version: u64,
}

/// A static delta as the index names it: its superblock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedDelta {
    /// SHA-256 of `deltas/NAME/superblock`, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

pub const INDEX_TYPE: &str = "sealtree-index-v1";

impl Index {
    fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serializes")
    }
}

/// The index's text (with a final newline) and its signature file.
pub fn sign_index(index: &Index, key: &SecretKey) -> (Vec<u8>, Vec<u8>) {
    sign_text(index.canonical(), key)
}

/// Check an index (`text` from `text_path`) and its signature against
/// `trusted`: the index, and the key that signed it. Freshness is the
/// caller's to judge.
pub fn verify_index<'k>(
    text: &[u8],
    text_path: &Path,
    signature: &[u8],
    sig_path: &Path,
    trusted: &'k TrustedKeys,
) -> Result<(Index, &'k PublicKey), SignError> {
    let (bytes, signer) = verify_text(text, text_path, signature, sig_path, trusted)?;
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| malformed(text_path, format!("not an index: {e}")))?;
    if index.canonical() != bytes {
        return Err(malformed(text_path, "index is not in canonical form"));
    }
    if index.kind != INDEX_TYPE {
        return Err(malformed(
            text_path,
            format!("index type is '{}', not '{INDEX_TYPE}'", index.kind),
        ));
    }
    if index.key != signer.encoded() {
        return Err(malformed(
            text_path,
            format!(
                "index names key {}, but key {} signed it",
                index.key,
                signer.encoded()
            ),
        ));
    }
    if index.expires <= index.published {
        return Err(malformed(
            text_path,
            "index expires before it was published",
        ));
    }
    Ok((index, signer))
}
