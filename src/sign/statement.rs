//! The statement a signature covers: canonical JSON naming a commit, its
//! branch and the composefs image digest that must be booted for it.
//! Canonical means keys sorted, no spaces; the bytes signed are exactly
//! the JSON text, and a statement that is not canonical is refused, so no
//! two texts can claim the same signature.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::detached::{sign_text, verify_text};
use super::{malformed, PublicKey, SecretKey, SignError, TrustedKeys};

/// What a signature vouches for. Fields are declared in sorted order,
/// which makes serde_json's compact output canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub branch: String,
    /// Git commit id, hex.
    pub commit: String,
    /// Security epoch: a machine that has booted (and blessed) a release
    /// of epoch N refuses releases below N (see `boot::epoch`). Epoch 0
    /// is left out of the text, so statements made before epochs existed
    /// keep their canonical form.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
    pub format_version: u32,
    /// fs-verity digest of the composefs image, hex.
    pub image_digest: String,
    /// The signer's public key, base64: lets a refusal name the key. It
    /// is covered by the signature but trusted for nothing.
    pub key: String,
    /// Seconds since the epoch when it was signed.
    pub timestamp: i64,
    /// Always [`STATEMENT_TYPE`]: a signature over anything else is no
    /// statement.
    #[serde(rename = "type")]
    pub kind: String,
    /// The commit's position in its branch's history (1 for the first),
    /// so a newer release always carries a larger number.
    pub version: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Epochs a statement may carry: raising the floor in the TPM costs one
/// command per epoch (`boot::tpm`), and epochs are rare events.
pub const MAX_EPOCH: u32 = 1000;

pub const STATEMENT_TYPE: &str = "sealtree-commit-v1";

/// A statement with its signature, as stored: the statement's exact bytes
/// (with a final newline) and the base64 signature (with a final newline).
#[derive(Debug, Clone)]
pub struct SignedStatement {
    pub statement: Statement,
    pub text: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Statement {
    fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a statement always serializes")
    }
}

/// Sign `statement` with `key`.
pub fn sign(statement: &Statement, key: &SecretKey) -> SignedStatement {
    let (text, signature) = sign_text(statement.canonical(), key);
    SignedStatement {
        statement: statement.clone(),
        text,
        signature,
    }
}

/// Check a stored statement (`text`, read from `text_path`) and its
/// signature (`signature`, from `sig_path`) against `trusted`. Returns the
/// statement and the key that signed it. The signature is checked
/// strictly (no malleable or small-order forms) before the text is parsed.
pub fn verify<'k>(
    text: &[u8],
    text_path: &Path,
    signature: &[u8],
    sig_path: &Path,
    trusted: &'k TrustedKeys,
) -> Result<(Statement, &'k PublicKey), SignError> {
    let (bytes, signer) = verify_text(text, text_path, signature, sig_path, trusted)?;
    let statement: Statement = serde_json::from_slice(bytes)
        .map_err(|e| malformed(text_path, format!("not a statement: {e}")))?;
    if statement.canonical() != bytes {
        return Err(malformed(text_path, "statement is not in canonical form"));
    }
    if statement.epoch > MAX_EPOCH {
        return Err(malformed(
            text_path,
            format!("epoch {} is above {MAX_EPOCH}", statement.epoch),
        ));
    }
    // The key it names is the key that signed: a statement may not
    // speak for another signer.
    if statement.key != signer.encoded() {
        return Err(malformed(
            text_path,
            format!(
                "statement names key {}, but key {} signed it",
                statement.key,
                signer.encoded()
            ),
        ));
    }
    if statement.kind != STATEMENT_TYPE {
        return Err(malformed(
            text_path,
            format!(
                "statement type is '{}', not '{STATEMENT_TYPE}'",
                statement.kind
            ),
        ));
    }
    Ok((statement, signer))
}
