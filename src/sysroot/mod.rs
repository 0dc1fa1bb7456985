//! A sysroot: the physical root filesystem that holds the repository, one
//! directory per deployment, the shared /var and the boot entries.
//!
//! ```text
//! SYSROOT/sealtree/repo/            the content store
//! SYSROOT/sealtree/config.json      policy: signatures required, base kargs
//! SYSROOT/sealtree/trusted.d/       public keys deployments are checked against
//! SYSROOT/sealtree/deploy/ID/       image.cfs, statement.json/.sig, deployment.json, etc/
//! SYSROOT/sealtree/staged.json      a deployment to switch to at shutdown
//! SYSROOT/sealtree/var/             the one /var all deployments share
//! SYSROOT/boot/loader/entries/      the boot entries (see entries.rs)
//! SYSROOT/boot/sealtree/ID/         vmlinuz, initramfs.img
//! ```
//!
//! `boot/` is a directory of the root filesystem, or the mount point of
//! the boot partition (an ESP or XBOOTLDR): `config.json` then names it
//! (`boot_partition`), and nothing is written to boot/ unless that
//! partition is mounted there, so entries never land on the wrong
//! filesystem.

mod admin;
mod deploy;
mod entries;
mod etc_merge;
mod install;
mod upgrade;
mod verity;

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

pub use admin::{
    bless, cleanup, kargs, pin, rollback, status, undeploy, CleanupReport, DeploymentStatus,
    SignatureState, Status,
};
pub use deploy::{deploy, finalize_staged, kernel_candidates, DeployOptions, Deployed};
pub use entries::BootEntry;
pub use etc_merge::EtcMerge;
pub use install::{install, InstallOptions, InstallTarget, DEFAULT_LOADER, VERITY_PENDING};
pub use upgrade::{upgrade, UpgradeOptions, UpgradeReport};
pub use verity::{enable_verity, VerityReport};

use crate::repo::{Repo, RepoError};
use crate::sign::{SignError, TrustedKeys};

/// A sysroot operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysrootError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a sealtree sysroot (run `sealtree admin init --sysroot {0}`)")]
    NotASysroot(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// A refusal: the deployment would not be safe or is not possible.
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SysrootError + '_ {
    move |source| SysrootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `config.json`: the sysroot's policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Refuse to deploy commits without a valid signature.
    #[serde(default)]
    pub require_signatures: bool,
    /// Kernel arguments every deployment starts from (`root=…` and such).
    #[serde(default)]
    pub kargs: Vec<String>,
    /// The boot partition mounted at boot/ (`PARTUUID=…`), when boot
    /// entries live on a partition of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_partition: Option<String>,
}

/// `deployment.json`: what a deployment is, written once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub id: String,
    pub commit: String,
    pub branch: Option<String>,
    pub image_digest: String,
    pub format_version: u32,
    pub kernel: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Who signed it, when it was deployed (the public key, base64).
    pub signed_by: Option<String>,
    /// /etc paths where a local change and a new default collided; the
    /// local version was kept.
    #[serde(default)]
    pub etc_conflicts: Vec<String>,
}

/// An opened sysroot.
pub struct Sysroot {
    root: PathBuf,
    /// Where the boot entries and kernels go: `root/boot`, unless given.
    boot: PathBuf,
    /// Whether `boot` was given (an installer's staging directory or a
    /// mounted ESP), so it is not checked against `boot_partition`.
    boot_given: bool,
    repo: Repo,
    config: Config,
    /// The deployment running now, from the kernel command line.
    booted: Option<String>,
}

impl Sysroot {
    /// Make `root` a sysroot (it may already hold other things).
    pub fn init(
        root: &Path,
        config: &Config,
        trusted: &[PathBuf],
    ) -> Result<Sysroot, SysrootError> {
        check_kargs(&config.kargs)?;
        let base = root.join("sealtree");
        for dir in ["deploy", "var", "trusted.d"] {
            let d = base.join(dir);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let boot = root.join("boot").join("sealtree");
        fs::create_dir_all(&boot).map_err(io_err(&boot))?;
        Repo::init(&base.join("repo"))?;
        private_store(&base)?;
        for key in trusted {
            // Checked before it is trusted: a file of keys, nothing else.
            crate::sign::read_public_keys(key)?;
            let name = key
                .file_name()
                .ok_or_else(|| SysrootError::Refused(format!("{}: not a file", key.display())))?;
            let bytes = fs::read(key).map_err(io_err(key))?;
            write_atomic(&base.join("trusted.d").join(name), &bytes)?;
        }
        let json = serde_json::to_vec_pretty(config).expect("config serializes");
        write_atomic(&base.join("config.json"), &json)?;
        Sysroot::open(root)
    }

    /// The store and the deployments, private to root (see
    /// [`private_store`]); deploy makes sure of it for sysroots made
    /// before.
    pub fn keep_private(&self) -> Result<(), SysrootError> {
        private_store(&self.root.join("sealtree"))
    }

    pub fn open(root: &Path) -> Result<Sysroot, SysrootError> {
        let base = root.join("sealtree");
        let config_path = base.join("config.json");
        let text = match fs::read(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SysrootError::NotASysroot(root.display().to_string()))
            }
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        let config = serde_json::from_slice(&text)
            .map_err(|e| SysrootError::Refused(format!("{}: {e}", config_path.display())))?;
        Ok(Sysroot {
            root: root.to_path_buf(),
            boot: root.join("boot"),
            boot_given: false,
            repo: Repo::open(&base.join("repo"))?,
            config,
            booted: None,
        })
    }

    /// Say which deployment is running, from its kernel command line
    /// (`/proc/cmdline` on a booted system).
    pub fn set_cmdline(&mut self, cmdline: &str) {
        self.booted = booted_id(cmdline);
    }

    /// Say which deployment is running, as prepare-root recorded it.
    pub fn set_booted(&mut self, id: &str) {
        self.booted = is_deployment_id(id).then(|| id.to_string());
    }

    pub fn booted(&self) -> Option<&str> {
        self.booted.as_deref()
    }

    pub fn is_pinned(&self, id: &str) -> bool {
        self.deployment_dir(id).join("pinned").exists()
    }

    /// The staged deployment, if any.
    pub fn staged_id(&self) -> Result<Option<String>, SysrootError> {
        let path = self.staged_path();
        match fs::read(&path) {
            Ok(text) => {
                let v: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| SysrootError::Refused(format!("{}: {e}", path.display())))?;
                match v.get("id").and_then(|i| i.as_str()) {
                    Some(id) if is_deployment_id(id) => Ok(Some(id.to_string())),
                    _ => Err(SysrootError::Refused(format!(
                        "{}: no valid deployment id",
                        path.display()
                    ))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn base(&self) -> PathBuf {
        self.root.join("sealtree")
    }

    pub fn deploy_dir(&self) -> PathBuf {
        self.base().join("deploy")
    }

    pub fn deployment_dir(&self, id: &str) -> PathBuf {
        self.deploy_dir().join(id)
    }

    pub fn boot_dir(&self) -> PathBuf {
        self.boot.clone()
    }

    /// Write boot entries and kernels to `dir` (a mounted ESP, or a
    /// directory an installer copies onto one) instead of boot/.
    pub fn set_boot_dir(&mut self, dir: &Path) {
        self.boot = dir.to_path_buf();
        self.boot_given = true;
    }

    pub fn var_dir(&self) -> PathBuf {
        self.base().join("var")
    }

    /// Refuse to touch boot/ when the boot partition should be mounted
    /// there and is not.
    pub fn check_boot_mounted(&self) -> Result<(), SysrootError> {
        let Some(partition) = &self.config.boot_partition else {
            return Ok(());
        };
        if self.boot_given {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt;
        // The device mounted at boot/ must be that very partition, not
        // merely another filesystem.
        let mounted = fs::metadata(&self.boot).map_err(io_err(&self.boot))?.dev();
        let device = match partition.split_once('=') {
            Some(("PARTUUID", uuid)) => {
                Path::new("/dev/disk/by-partuuid").join(uuid.to_lowercase())
            }
            Some(("UUID", uuid)) => Path::new("/dev/disk/by-uuid").join(uuid),
            _ => {
                return Err(SysrootError::Refused(format!(
                    "{}: boot_partition '{partition}' is neither PARTUUID=… nor UUID=…",
                    self.base().join("config.json").display()
                )))
            }
        };
        match fs::metadata(&device) {
            Ok(m) if m.rdev() == mounted => Ok(()),
            _ => Err(SysrootError::Refused(format!(
                "the boot partition {partition} is not mounted at {}",
                self.boot.display()
            ))),
        }
    }

    pub fn kernel_dir(&self, id: &str) -> PathBuf {
        self.boot_dir().join("sealtree").join(id)
    }

    pub fn trusted_dir(&self) -> PathBuf {
        self.base().join("trusted.d")
    }

    fn staged_path(&self) -> PathBuf {
        self.base().join("staged.json")
    }

    /// The keys deployments are checked against, if any are installed.
    pub fn trusted_keys(&self) -> Result<Option<TrustedKeys>, SysrootError> {
        match crate::sign::read_public_keys(&self.trusted_dir()) {
            Ok(keys) => Ok(Some(keys)),
            Err(SignError::NoTrustedKeys(_)) => Ok(None),
            Err(SignError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn deployment(&self, id: &str) -> Result<DeploymentInfo, SysrootError> {
        let path = self.deployment_dir(id).join("deployment.json");
        let text = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&text)
            .map_err(|e| SysrootError::Refused(format!("{}: {e}", path.display())))
    }

    /// Take the sysroot lock: one deploy, cleanup or boot-entry change at
    /// a time; a second waits.
    pub fn lock(&self) -> Result<Flock<File>, SysrootError> {
        let lock = self.lock_store()?;
        self.check_boot_mounted()?;
        Ok(lock)
    }

    /// The sysroot lock, for work that does not touch boot/ (enabling
    /// fs-verity in the initramfs, where the boot partition is not
    /// mounted).
    pub fn lock_store(&self) -> Result<Flock<File>, SysrootError> {
        let path = self.base().join("lock");
        let lock = crate::lockfile::lock_waiting(
            &path,
            &format!("another change to {} to finish", self.root.display()),
        )
        .map_err(io_err(&path))?;
        // Temporary files now are from a writer that died.
        crate::lockfile::remove_temporaries(&self.base());
        Ok(lock)
    }

    /// Make everything written so far durable (the boot partition too,
    /// when it is a separate filesystem).
    fn sync(&self) -> Result<(), SysrootError> {
        for dir in [self.root.clone(), self.boot_dir()] {
            let f = File::open(&dir).map_err(io_err(&dir))?;
            nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| io_err(&dir)(e.into()))?;
        }
        Ok(())
    }
}

/// Write `bytes` to `path` through a temporary name, synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SysrootError> {
    crate::compose::write_file_atomic(path, bytes).map_err(|e| SysrootError::Refused(e.to_string()))
}

/// Whether `id` has the form deployment ids have: the commit's first 12
/// hex digits, a dot and a serial number. Ids come from the command line,
/// boot entries and staged.json, and become paths: nothing else passes.
pub fn is_deployment_id(id: &str) -> bool {
    match id.split_once('.') {
        Some((commit, serial)) => {
            commit.len() == 12
                && commit
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && !serial.is_empty()
                && serial.len() <= 9
                && serial.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Kernel arguments as they may go into a boot entry: each one word,
/// without whitespace or control characters (a newline would add lines,
/// say `linux /other`, to the entry).
pub fn check_kargs(args: &[String]) -> Result<(), SysrootError> {
    for a in args {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SysrootError::Refused(format!(
                "kernel argument '{}': empty, or with whitespace or control characters",
                a.escape_debug()
            )));
        }
    }
    Ok(())
}

/// Whether a statement naming commit `signed` belongs to deployment `id`,
/// whose deployment.json records commit `recorded`: the id starts with the
/// commit's first 12 digits and both name the same commit. A refusal
/// names both commits.
pub fn check_statement_binding(id: &str, recorded: &str, signed: &str) -> Result<(), String> {
    let prefix = id.split_once('.').map_or(id, |(p, _)| p);
    if !signed.starts_with(prefix) || prefix.len() != 12 {
        return Err(format!(
            "deployment {id} is of commit {prefix}…, but its signed statement names commit {signed}: an image and statement of another deployment"
        ));
    }
    if recorded != signed {
        return Err(format!(
            "deployment {id}: deployment.json names commit {recorded}, its signed statement commit {signed}"
        ));
    }
    Ok(())
}

/// Make repo/ and deploy/ under `base` mode 0700. They hold the content
/// of every file of every deployment, the merged /etc (shadow, host
/// keys) included, small files inline in images and history: none of it
/// may become readable by users who could not read the file itself. The
/// booted system reads them through its mounts, made by root.
fn private_store(base: &Path) -> Result<(), SysrootError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in ["repo", "deploy"] {
        let d = base.join(dir);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).map_err(io_err(&d))?;
    }
    Ok(())
}

/// The deployment a UKI entry boots, from the entry's name as the boot
/// loader reports it (`sealtree-GEN-ID.efi`, with or without a boot
/// counter).
pub fn uki_entry_id(name: &str) -> Option<String> {
    name.ends_with(".efi")
        .then(|| loader_entry(name))
        .flatten()
        .map(|(id, _)| id)
}

/// A sealtree entry's deployment, and whether the entry still carries a
/// boot counter (a counter is dropped when the boot was blessed), from
/// its name as the loader reports it: `sealtree-GEN-ID[+L[-D]].conf|.efi`.
pub fn loader_entry(name: &str) -> Option<(String, bool)> {
    let stem = name.strip_prefix("sealtree-")?;
    let stem = stem
        .strip_suffix(".efi")
        .or_else(|| stem.strip_suffix(".conf"))?;
    let (stem, counted) = stem
        .split_once('+')
        .map_or((stem, false), |(s, _)| (s, true));
    let (generation, id) = stem.split_once('-')?;
    (generation.bytes().all(|b| b.is_ascii_digit())
        && generation.parse::<u32>().is_ok()
        && is_deployment_id(id))
    .then(|| (id.to_string(), counted))
}

/// The booted deployment, from `sealtree=ID` on a kernel command line.
pub fn booted_id(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|arg| arg.strip_prefix("sealtree="))
        .map(str::to_string)
}
