//! `/etc/sealtree/prepare-root.conf` in the initramfs:
//!
//! ```text
//! # signature: required | optional
//! signature = required
//! # verity: require | on | off   (overlayfs verity= for every file)
//! verity = require
//! ```
//!
//! Without the file the strictest policy holds.

use std::path::Path;

/// Whether the deployment must carry a valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignaturePolicy {
    Required,
    /// Unsigned deployments boot; a signature that is present must still
    /// verify.
    Optional,
}

/// overlayfs `verity=`: whether each file's fs-verity digest is checked
/// when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerityPolicy {
    /// Every file must have fs-verity and match (`verity=require`).
    Require,
    /// Checked where the file has fs-verity (`verity=on`).
    On,
    Off,
}

impl VerityPolicy {
    pub fn mount_option(self) -> Option<&'static str> {
        match self {
            VerityPolicy::Require => Some("verity=require"),
            VerityPolicy::On => Some("verity=on"),
            VerityPolicy::Off => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub signature: SignaturePolicy,
    pub verity: VerityPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            signature: SignaturePolicy::Required,
            verity: VerityPolicy::Require,
        }
    }
}

impl Policy {
    /// Read the policy file; a missing file gives the default.
    pub fn load(path: &Path) -> Result<Policy, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Policy::parse(&text).map_err(|e| format!("{}:{e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parse the text; errors are `LINE: what`.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{n}: expected KEY = VALUE, found '{line}'"))?;
            match (key, value) {
                ("signature", "required") => policy.signature = SignaturePolicy::Required,
                ("signature", "optional") => policy.signature = SignaturePolicy::Optional,
                ("verity", "require") => policy.verity = VerityPolicy::Require,
                ("verity", "on") => policy.verity = VerityPolicy::On,
                ("verity", "off") => policy.verity = VerityPolicy::Off,
                ("signature", v) => {
                    return Err(format!(
                        "{n}: signature is 'required' or 'optional', not '{v}'"
                    ))
                }
                ("verity", v) => {
                    return Err(format!(
                        "{n}: verity is 'require', 'on' or 'off', not '{v}'"
                    ))
                }
                (k, _) => return Err(format!("{n}: unknown setting '{k}'")),
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = Policy::parse("# c\nsignature = optional\n verity=on \n").unwrap();
        assert_eq!(p.signature, SignaturePolicy::Optional);
        assert_eq!(p.verity, VerityPolicy::On);
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
        assert_eq!(
            Policy::parse("verity = maybe").unwrap_err(),
            "1: verity is 'require', 'on' or 'off', not 'maybe'"
        );
        assert_eq!(
            Policy::parse("\nfoo = 1").unwrap_err(),
            "2: unknown setting 'foo'"
        );
        assert!(Policy::parse("signature")
            .unwrap_err()
            .starts_with("1: expected"));
    }
}
