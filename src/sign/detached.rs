//! Detached signatures over canonical JSON texts: the bytes signed are the
//! text without its final newline; the signature file is base64 of the 64
//! signature bytes and a newline. Statements and indexes share this form.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer};

use super::{malformed, PublicKey, SecretKey, SignError, TrustedKeys};

/// `canonical` with a final newline, and its signature file's bytes.
pub fn sign_text(canonical: Vec<u8>, key: &SecretKey) -> (Vec<u8>, Vec<u8>) {
    let signature = key.0.sign(&canonical);
    let mut text = canonical;
    text.push(b'\n');
    let sig = format!("{}\n", STANDARD.encode(signature.to_bytes())).into_bytes();
    (text, sig)
}

/// The trusted key whose signature `signature` (read from `sig_path`) is
/// over `text` (from `text_path`), and the signed bytes. The signature is
/// checked strictly (no malleable or small-order forms) before anything
/// parses the text.
pub fn verify_text<'k, 't>(
    text: &'t [u8],
    text_path: &Path,
    signature: &[u8],
    sig_path: &Path,
    trusted: &'k TrustedKeys,
) -> Result<(&'t [u8], &'k PublicKey), SignError> {
    let bytes = text.strip_suffix(b"\n").unwrap_or(text);
    let sig = STANDARD
        .decode(signature.trim_ascii())
        .map_err(|e| malformed(sig_path, format!("not base64: {e}")))?;
    let sig: [u8; 64] = sig.try_into().map_err(|s: Vec<u8>| {
        malformed(
            sig_path,
            format!("an ed25519 signature is 64 bytes, not {}", s.len()),
        )
    })?;
    let sig = Signature::from_bytes(&sig);
    let signer = trusted
        .keys
        .iter()
        .find(|k| k.key.verify_strict(bytes, &sig).is_ok())
        .ok_or_else(|| SignError::Untrusted {
            what: text_path.display().to_string(),
            claimed: serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("key")?.as_str().map(str::to_string)),
            checked: trusted.keys.len(),
            keys: trusted.source.clone(),
        })?;
    Ok((bytes, signer))
}
