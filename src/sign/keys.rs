//! Key files as ostree's ed25519 signing uses them: base64 of the raw key
//! bytes, one key per line. A public key is 32 bytes; a secret key is 64
//! bytes, the seed followed by the public key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::{io_err, malformed, SignError};

/// A secret (signing) key.
pub struct SecretKey(pub(super) SigningKey);

/// A public (verifying) key and where it came from.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub(super) key: VerifyingKey,
    /// The file it was read from, to say which key signed.
    pub origin: PathBuf,
}

impl PublicKey {
    /// A key from its 32 raw bytes; `None` if they are not a valid point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        Some(PublicKey {
            key: VerifyingKey::from_bytes(bytes).ok()?,
            origin: PathBuf::new(),
        })
    }

    /// The key as written in key files (base64).
    pub fn encoded(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }
}

impl SecretKey {
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.0.verifying_key(),
            origin: PathBuf::new(),
        }
    }
}

/// Keys a signature is checked against.
#[derive(Clone, Debug)]
pub struct TrustedKeys {
    pub keys: Vec<PublicKey>,
    /// The file or directory they were read from.
    pub source: PathBuf,
}

/// Make a new key pair; the secret file is created mode 0600 and never
/// overwrites an existing file.
pub fn generate(secret: &Path, public: &Path) -> Result<PublicKey, SignError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io_err(secret)(std::io::Error::other(e.to_string())))?;
    let key = SigningKey::from_bytes(&seed);
    let secret_line = format!("{}\n", STANDARD.encode(key.to_keypair_bytes()));
    let public_line = format!("{}\n", STANDARD.encode(key.verifying_key().as_bytes()));
    write_new(secret, secret_line.as_bytes(), 0o600)?;
    write_new(public, public_line.as_bytes(), 0o644)?;
    Ok(PublicKey {
        key: key.verifying_key(),
        origin: public.to_path_buf(),
    })
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), SignError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(data).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Read a secret key file: one key, readable by its owner only (as ssh
/// insists), so a key others could have copied is not used unnoticed.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, SignError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mode = file.metadata().map_err(io_err(path))?.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(malformed(
            path,
            format!(
                "secret key readable by group or others (mode {mode:04o}): refusing to sign with it; chmod 600 {}",
                path.display()
            ),
        ));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut text).map_err(io_err(path))?;
    let lines = parse_key_lines(&text, path)?;
    if lines.len() > 1 {
        return Err(malformed(
            path,
            format!(
                "{} keys (lines {}): a secret key file holds one",
                lines.len(),
                lines
                    .iter()
                    .map(|(l, _)| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let Some((line, bytes)) = lines.into_iter().next() else {
        return Err(malformed(path, "no key in the file"));
    };
    let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
        malformed(
            path,
            format!(
                "line {line}: a secret key is 64 bytes (seed and public key), not {}",
                b.len()
            ),
        )
    })?;
    let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| {
        malformed(
            path,
            format!("line {line}: the public half does not belong to the seed"),
        )
    })?;
    Ok(SecretKey(key))
}

/// Read public keys from a file (one per line) or from every regular file
/// in a directory, in name order.
pub fn read_public_keys(path: &Path) -> Result<TrustedKeys, SignError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            let name = entry.file_name();
            // Editor backups and hidden files are not keys.
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut keys = Vec::new();
    for file in files {
        let text = fs::read(&file).map_err(io_err(&file))?;
        keys.extend(parse_public_keys(&text, &file)?);
    }
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys(path.to_path_buf()));
    }
    Ok(TrustedKeys {
        keys,
        source: path.to_path_buf(),
    })
}

/// The public keys in the text of a key file (`file` names it in errors).
pub fn parse_public_keys(text: &[u8], file: &Path) -> Result<Vec<PublicKey>, SignError> {
    let mut keys = Vec::new();
    {
        for (line, bytes) in parse_key_lines(text, file)? {
            let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                malformed(
                    file,
                    format!("line {line}: a public key is 32 bytes, not {}", b.len()),
                )
            })?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                malformed(file, format!("line {line}: not a valid ed25519 public key"))
            })?;
            keys.push(PublicKey {
                key,
                origin: file.to_path_buf(),
            });
        }
    }
    Ok(keys)
}

/// The decoded non-empty lines of a key file, with their line numbers.
fn parse_key_lines(text: &[u8], path: &Path) -> Result<Vec<(usize, Vec<u8>)>, SignError> {
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let bytes = STANDARD
            .decode(line)
            .map_err(|e| malformed(path, format!("line {}: not base64: {e}", i + 1)))?;
        out.push((i + 1, bytes));
    }
    Ok(out)
}
