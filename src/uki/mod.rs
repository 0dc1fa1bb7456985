//! Unified kernel images: systemd-stub with the kernel, an initramfs,
//! os-release and a command line as PE sections, signed for Secure Boot
//! as one file, so firmware that verifies it verifies all of them.
//!
//! ```text
//! .osrel    the tree's os-release, IMAGE_ID=sealtree, no version fields
//! .cmdline  the command line (what the loader passes is then ignored
//!           under Secure Boot: systemd-stub uses its own)
//! .initrd   the tree's initramfs + a cpio that seals it (below)
//! .linux    the kernel
//! ```
//!
//! The seal, appended to the initramfs: `/etc/sealtree/uki-cmdline`
//! (the command line's words, which prepare-root then requires and which
//! make it take the deployment from the boot loader's entry rather than
//! `sealtree=`), `/etc/sealtree/uki-epoch` (its security epoch, held to
//! the TPM's floor as a statement's is), and drop-ins that run
//! prepare-root and enable-verity
//! whatever the command line says and turn a refusal into a reboot, so
//! the loader counts the failed try and falls back.
//!
//! The .osrel makes the loader order UKIs as sealtree's type 1 entries
//! (`sysroot::entries`): sort key `sealtree`, no version, so the file
//! name (the generation) decides.

pub mod cpio;
mod initramfs;
mod pe;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A UKI that cannot be built, read or signed.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing with sbsign: {0}")]
    Sign(String),
}

/// Where the seal puts the UKI's command line in the initramfs.
pub const SEALED_CMDLINE: &str = "/etc/sealtree/uki-cmdline";
/// Where the seal puts the UKI's security epoch.
pub const SEALED_EPOCH: &str = "/etc/sealtree/uki-epoch";

/// os-release keys the loader takes a version from.
const VERSION_KEYS: [&str; 4] = ["IMAGE_VERSION", "VERSION", "VERSION_ID", "BUILD_ID"];

/// What a UKI is made of.
pub struct Parts<'a> {
    pub stub: &'a [u8],
    pub kernel: &'a [u8],
    pub initramfs: &'a [u8],
    pub os_release: &'a str,
    /// The command line's words.
    pub cmdline: &'a [String],
    /// The security epoch sealed with it.
    pub epoch: u32,
}

/// What an initramfs holds for sealtree, read from the image itself.
#[derive(Debug, Default)]
pub struct Holds {
    /// `etc/sealtree/trusted.d/*.pub`, by name.
    pub keys: Vec<String>,
    /// `etc/sealtree/prepare-root.conf`, if there is one.
    pub policy: Option<String>,
    pub sealtree: bool,
    pub prepare_root_unit: bool,
    /// Local unit configuration under etc/systemd/system that would
    /// override the seal's drop-ins for sealtree's units or the root.
    pub overrides: Vec<String>,
}

/// Read what `image` (an initramfs) holds for sealtree.
pub fn initramfs_holds(image: &[u8]) -> Result<Holds, String> {
    let overriding = |p: &str| {
        p.strip_prefix("etc/systemd/system/")
            .is_some_and(|u| u.starts_with("sealtree-") || u.starts_with("initrd-root-fs.target"))
    };
    // Merged /usr or not, as the building machine's dracut laid it out.
    const BINARY: [&str; 2] = ["usr/bin/sealtree", "bin/sealtree"];
    const UNIT: [&str; 2] = [
        "usr/lib/systemd/system/sealtree-prepare-root.service",
        "lib/systemd/system/sealtree-prepare-root.service",
    ];
    let found = initramfs::files(image, &|p| {
        p.starts_with("etc/sealtree/") || BINARY.contains(&p) || UNIT.contains(&p) || overriding(p)
    })?;
    Ok(Holds {
        keys: found
            .keys()
            .filter_map(|p| p.strip_prefix("etc/sealtree/trusted.d/"))
            .filter(|n| n.ends_with(".pub"))
            .map(String::from)
            .collect(),
        policy: found
            .get("etc/sealtree/prepare-root.conf")
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        sealtree: found.contains_key("usr/bin/sealtree"),
        prepare_root_unit: found
            .contains_key("usr/lib/systemd/system/sealtree-prepare-root.service"),
        overrides: found.keys().filter(|p| overriding(p)).cloned().collect(),
    })
}

/// The unsigned UKI. `stub` names the stub file in errors.
pub fn assemble(parts: &Parts, stub: &Path) -> Result<Vec<u8>, UkiError> {
    // systemd-boot also ends lines at \r and stops at NUL: a line that
    // reads one way here and another there could carry a version.
    if let Some(c) = parts
        .os_release
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(UkiError::Malformed {
            path: "os-release".into(),
            message: format!("control character {c:?}: the boot loader would read it differently"),
        });
    }
    let osrel = sealtree_os_release(parts.os_release);
    let cmdline = parts.cmdline.join(" ");
    let mut initrd = parts.initramfs.to_vec();
    cpio::pad4(&mut initrd);
    initrd.extend(seal(&cmdline, parts.epoch));
    pe::add_sections(
        parts.stub,
        &[
            (".osrel", osrel.as_bytes()),
            (".cmdline", cmdline.as_bytes()),
            (".initrd", &initrd),
            (".linux", parts.kernel),
        ],
    )
    .map_err(|message| UkiError::Malformed {
        path: stub.to_path_buf(),
        message,
    })
}

/// The seal cpio: see the module documentation.
fn seal(cmdline: &str, epoch: u32) -> Vec<u8> {
    const PREPARE_ROOT: &str = "\
# sealtree uki build: this initramfs is sealed inside a signed UKI. Run
# whatever the command line says (prepare-root checks it against
# /etc/sealtree/uki-cmdline), and restart on a refusal so the boot
# loader counts the try and falls back.
[Unit]
ConditionKernelCommandLine=
ConditionPathExists=/etc/initrd-release
OnFailure=
FailureAction=reboot
";
    const ENABLE_VERITY: &str = "\
# sealtree uki build: sealed inside a signed UKI, as prepare-root.
[Unit]
ConditionKernelCommandLine=
ConditionPathExists=/etc/initrd-release
ConditionPathExists=/sysroot/sealtree/verity-pending
OnFailure=
FailureAction=reboot
";
    // And the root may not be reached without it: a masked or missing
    // prepare-root fails the target instead of leaving the physical root.
    const ROOT_FS: &str = "\
# sealtree uki build: the root is the one prepare-root verified, or none;
# a root that cannot be reached restarts the machine, as a refusal does.
[Unit]
Requires=sealtree-prepare-root.service
OnFailure=
FailureAction=reboot
";
    let words = format!("{cmdline}\n");
    let epoch = format!("{epoch}\n");
    let units = "usr/lib/systemd/system";
    let files: [(String, &[u8]); 5] = [
        (SEALED_CMDLINE[1..].to_string(), words.as_bytes()),
        (SEALED_EPOCH[1..].to_string(), epoch.as_bytes()),
        (
            format!("{units}/sealtree-prepare-root.service.d/sealed.conf"),
            PREPARE_ROOT.as_bytes(),
        ),
        (
            format!("{units}/sealtree-enable-verity.service.d/sealed.conf"),
            ENABLE_VERITY.as_bytes(),
        ),
        (
            format!("{units}/initrd-root-fs.target.d/sealtree-sealed.conf"),
            ROOT_FS.as_bytes(),
        ),
    ];
    // Each file after its directories (the kernel creates no parents).
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in &files {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            at += slash;
            let dir = path[..at].to_string();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            at += 1;
        }
    }
    let mut items: Vec<cpio::Item> = dirs
        .iter()
        .map(|path| cpio::Item::Dir { path, mode: 0o755 })
        .collect();
    items.extend(files.iter().map(|(path, data)| cpio::Item::File {
        path,
        mode: 0o644,
        data,
    }));
    cpio::archive(&items)
}

/// The tree's os-release with `IMAGE_ID=sealtree` and no version fields.
fn sealtree_os_release(text: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| {
            let key = l.split_once('=').map_or("", |(k, _)| k.trim());
            key != "IMAGE_ID" && !VERSION_KEYS.contains(&key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("IMAGE_ID=sealtree\n");
    out
}

/// Whether the loader will order this UKI by its file name, as sealtree's
/// entries need: its .osrel names the sort key `sealtree` and no version.
pub fn check_sort_order(image: &[u8]) -> Result<(), String> {
    let osrel = pe::section(image, ".osrel")?
        .ok_or("no .osrel section: the boot loader would not list it")?;
    if osrel
        .iter()
        .any(|&b| b != b'\n' && b != b'\t' && b.is_ascii_control())
    {
        return Err(".osrel has control characters: the boot loader would read it differently than this check".into());
    }
    let osrel = String::from_utf8_lossy(osrel);
    let value = |key: &str| {
        osrel.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    let sort_key = value("IMAGE_ID").or_else(|| value("ID"));
    if sort_key.as_deref() != Some("sealtree") {
        return Err(format!(
            ".osrel gives the sort key {}, not 'sealtree': the loader would not order it with sealtree's entries (build it with `sealtree uki build`)",
            sort_key.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(k) = VERSION_KEYS.iter().find(|k| value(k).is_some()) {
        return Err(format!(
            ".osrel has {k}: the loader would order it by that, not by its entry's generation (build it with `sealtree uki build`)"
        ));
    }
    Ok(())
}

/// The command line a UKI carries.
pub fn cmdline(image: &[u8]) -> Result<Option<String>, String> {
    Ok(pe::section(image, ".cmdline")?.map(|c| String::from_utf8_lossy(c).into_owned()))
}

/// A section's bytes, for inspection.
pub fn section<'a>(image: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    pe::section(image, name)
}

/// Sign `unsigned` for Secure Boot into `signed` with sbsign.
pub fn sign(unsigned: &Path, key: &Path, cert: &Path, signed: &Path) -> Result<(), UkiError> {
    let out = Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--output")
        .arg(signed)
        .arg(unsigned)
        .output()
        .map_err(|e| UkiError::Sign(format!("cannot run sbsign (package sbsigntool): {e}")))?;
    if !out.status.success() {
        return Err(UkiError::Sign(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_is_ordered_by_name() {
        let o = sealtree_os_release("PRETTY_NAME=\"Debian 12\"\nID=debian\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nIMAGE_ID=x\n");
        assert_eq!(
            o,
            "PRETTY_NAME=\"Debian 12\"\nID=debian\nIMAGE_ID=sealtree\n"
        );
    }
}
