//! `/etc/sealtree/prepare-root.conf` in the initramfs:
//!
//! ```text
//! # signature: required | optional
//! signature = required
//! # verity: require | on | off   (overlayfs verity= for every file)
//! verity = require
//! # branch: which branches may boot (repeatable, `*` matches anything);
//! # none: any branch the trusted keys sign
//! branch = os/stable
//! branch = os/stable-*
//! # etc: persistent (the deployment's merged /etc) | transient (a tmpfs
//! # over the image's /etc, empty at each boot)
//! etc = persistent
//! # epoch: require-tpm (no TPM, no boot) | best-effort (without a TPM
//! # the floor is not kept; a warning on the console)
//! epoch = best-effort
//! ```
//!
//! Without the file the strictest policy holds for signatures and verity,
//! with any branch, epoch best-effort and a
//! persistent /etc.

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

/// What the booted system's /etc is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtcPolicy {
    /// The deployment's own etc/, merged at deploy time, kept across boots.
    #[default]
    Persistent,
    /// The image's /etc with a tmpfs over it: changes last one boot.
    Transient,
}

/// What the epoch floor needs (see `boot::epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpochPolicy {
    /// A machine without a usable TPM does not boot.
    RequireTpm,
    /// Without a TPM the floor is not kept, and the console says so.
    #[default]
    BestEffort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub signature: SignaturePolicy,
    pub verity: VerityPolicy,
    /// Patterns a statement's branch must match; empty: any branch.
    pub branches: Vec<String>,
    pub etc: EtcPolicy,
    pub epoch: EpochPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            signature: SignaturePolicy::Required,
            verity: VerityPolicy::Require,
            branches: Vec::new(),
            etc: EtcPolicy::Persistent,
            epoch: EpochPolicy::BestEffort,
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
                ("etc", "persistent") => policy.etc = EtcPolicy::Persistent,
                ("etc", "transient") => policy.etc = EtcPolicy::Transient,
                ("epoch", "require-tpm") => policy.epoch = EpochPolicy::RequireTpm,
                ("epoch", "best-effort") => policy.epoch = EpochPolicy::BestEffort,
                ("epoch", v) => {
                    return Err(format!(
                        "{n}: epoch is 'require-tpm' or 'best-effort', not '{v}'"
                    ))
                }
                ("branch", "") => return Err(format!("{n}: branch needs a pattern")),
                ("branch", pattern) => policy.branches.push(pattern.to_string()),
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
                ("etc", v) => {
                    return Err(format!(
                        "{n}: etc is 'persistent' or 'transient', not '{v}'"
                    ))
                }
                (k, _) => return Err(format!("{n}: unknown setting '{k}'")),
            }
        }
        Ok(policy)
    }

    /// Whether statements of `branch` may boot.
    pub fn allows_branch(&self, branch: &str) -> bool {
        self.branches.is_empty() || self.branches.iter().any(|p| glob_match(p, branch))
    }
}

/// `*` matches any run of characters (slashes too); everything else
/// matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
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
        let p = Policy::parse("branch = os/stable\nbranch = os/lts-*\netc = transient").unwrap();
        assert_eq!(p.branches, ["os/stable", "os/lts-*"]);
        assert_eq!(p.etc, EtcPolicy::Transient);
        assert_eq!(p.epoch, EpochPolicy::BestEffort);
        let p = Policy::parse("epoch = require-tpm").unwrap();
        assert_eq!(p.epoch, EpochPolicy::RequireTpm);
        assert!(Policy::parse("epoch = 3").is_err());
        assert_eq!(
            Policy::parse("branch =").unwrap_err(),
            "1: branch needs a pattern"
        );
    }

    #[test]
    fn branch_patterns() {
        let p = Policy::parse("branch = os/stable\nbranch = os/lts-*-x\nbranch = *debug").unwrap();
        for yes in [
            "os/stable",
            "os/lts-1-x",
            "os/lts--x",
            "os/lts-a/b-x",
            "debug",
            "x/debug",
        ] {
            assert!(p.allows_branch(yes), "{yes}");
        }
        for no in [
            "os/stable2",
            "os/stabl",
            "os/lts-x",
            "os/lts-1-xy",
            "debug/x",
            "",
        ] {
            assert!(!p.allows_branch(no), "{no}");
        }
        assert!(Policy::default().allows_branch("anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("**", "x"));
    }
}
