//! Inspecting and changing the set of deployments: status, rollback,
//! undeploy, pinning, kernel arguments and cleanup. Every change to the
//! boot entries goes through `entries::write`, so it is atomic.

use std::collections::HashSet;
use std::fs;

use serde::Serialize;

use super::entries::{self, BootEntry};
use super::{io_err, Sysroot, SysrootError};
use crate::sign;

/// A deployment's signature as checked now against the trusted keys.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SignatureState {
    Valid { key: String },
    Unsigned,
    Invalid { error: String },
}

/// One deployment in `admin status`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    pub commit: String,
    pub branch: Option<String>,
    pub image_digest: String,
    pub kernel: String,
    pub booted: bool,
    pub default: bool,
    pub rollback: bool,
    pub pinned: bool,
    pub staged: bool,
    /// Boot counting: tries left and tries done, if the entry is not
    /// blessed yet (systemd-boot counts a try as it starts the entry).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    /// The entry used all its tries without a good boot: the loader now
    /// skips it.
    pub failed: bool,
    pub kargs: Vec<String>,
    pub signature: SignatureState,
    /// The security epoch of its valid statement (0: unsigned or invalid).
    pub epoch: u32,
    /// Whether the machine's epoch floor lets it boot; None where no
    /// floor is known.
    pub floor_allows: Option<bool>,
    pub etc_conflicts: Vec<String>,
}

/// `admin status`: deployments in boot order, the staged one last.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub deployments: Vec<DeploymentStatus>,
    /// The epoch floor the machine's TPM keeps, if known.
    pub floor: Option<u32>,
}

impl Status {
    /// Judge every deployment against `floor`.
    pub fn with_floor(mut self, floor: Option<u32>) -> Status {
        self.floor = floor;
        for d in &mut self.deployments {
            d.floor_allows = floor.map(|f| d.epoch >= f);
        }
        self
    }
}

pub fn status(sysroot: &Sysroot) -> Result<Status, SysrootError> {
    sysroot.check_boot_mounted()?;
    let current = entries::read(&sysroot.boot_dir())?;
    let staged = sysroot.staged_id()?;
    let mut out = Vec::new();
    let ids: Vec<(Option<&BootEntry>, String)> = current
        .iter()
        .map(|e| (Some(e), e.id.clone()))
        .chain(staged.clone().map(|s| (None, s)))
        .collect();
    for (i, (entry, id)) in ids.into_iter().enumerate() {
        let info = match sysroot.deployment(&id) {
            Ok(info) => info,
            // An entry for a deployment that is not there: the loader
            // cannot boot it past prepare-root either.
            Err(e) if entry.is_some() => {
                eprintln!("sealtree: boot entry of {id} names no deployment: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let (signature, signed) = signature_state(sysroot, &id, &info.commit);
        out.push(DeploymentStatus {
            booted: sysroot.booted() == Some(id.as_str()),
            default: i == 0 && entry.is_some_and(|e| !e.failed()),
            rollback: i == 1 && entry.is_some_and(|e| !e.failed()),
            pinned: sysroot.is_pinned(&id),
            staged: entry.is_none(),
            tries_left: entry.and_then(|e| e.tries.map(|t| t.0)),
            tries_done: entry.and_then(|e| e.tries.map(|t| t.1)),
            failed: entry.is_some_and(BootEntry::failed),
            kargs: entry.map(|e| e.options.clone()).unwrap_or_default(),
            signature: signature.clone(),
            epoch: signed.as_ref().map_or(0, |s| s.epoch),
            floor_allows: None,
            // What was signed, where there is a valid statement: that is
            // what prepare-root boots.
            commit: signed.as_ref().map_or(info.commit, |s| s.commit.clone()),
            branch: signed.map_or(info.branch, |s| Some(s.branch)),
            image_digest: info.image_digest,
            kernel: info.kernel,
            etc_conflicts: info.etc_conflicts,
            id,
        });
    }
    Ok(Status {
        deployments: out,
        floor: None,
    })
}

/// The deployment's signature as checked now, and its statement when it
/// verifies and is the deployment's own (see `check_statement_binding`).
fn signature_state(
    sysroot: &Sysroot,
    id: &str,
    recorded: &str,
) -> (SignatureState, Option<sign::Statement>) {
    let dir = sysroot.deployment_dir(id);
    let (text_path, sig_path) = (dir.join("statement.json"), dir.join("statement.sig"));
    let (Ok(text), Ok(sig)) = (fs::read(&text_path), fs::read(&sig_path)) else {
        return (SignatureState::Unsigned, None);
    };
    let invalid = |error: String| (SignatureState::Invalid { error }, None);
    let keys = match sysroot.trusted_keys() {
        Ok(Some(k)) => k,
        Ok(None) => return invalid("no trusted keys installed".into()),
        Err(e) => return invalid(e.to_string()),
    };
    match sign::verify(&text, &text_path, &sig, &sig_path, &keys) {
        Ok((statement, key)) => {
            match super::check_statement_binding(id, recorded, &statement.commit) {
                Ok(()) => (
                    SignatureState::Valid { key: key.encoded() },
                    Some(statement),
                ),
                Err(e) => invalid(e),
            }
        }
        Err(e) => invalid(e.to_string()),
    }
}

/// Make the rollback deployment (second in boot order) the default.
/// Returns the new default.
pub fn rollback(sysroot: &Sysroot) -> Result<String, SysrootError> {
    let _lock = sysroot.lock()?;
    let mut current = entries::read(&sysroot.boot_dir())?;
    if current.len() < 2 || current[1].failed() {
        return Err(SysrootError::Refused(
            "there is no rollback deployment that can still boot".into(),
        ));
    }
    current.swap(0, 1);
    entries::write(&sysroot.boot_dir(), &current)?;
    super::deploy::cancel_staged(sysroot)?;
    Ok(current[0].id.clone())
}

/// Remove one deployment (not the booted one).
pub fn undeploy(sysroot: &Sysroot, id: &str) -> Result<(), SysrootError> {
    check_id(id)?;
    let _lock = sysroot.lock()?;
    if sysroot.booted() == Some(id) {
        return Err(SysrootError::Refused(format!(
            "deployment {id} is booted: refusing to remove it"
        )));
    }
    let mut current = entries::read(&sysroot.boot_dir())?;
    let before = current.len();
    current.retain(|e| e.id != id);
    let staged = sysroot.staged_id()?;
    if current.len() == before && staged.as_deref() != Some(id) {
        return Err(SysrootError::Refused(format!("no deployment {id}")));
    }
    if current.is_empty() {
        return Err(SysrootError::Refused(format!(
            "deployment {id} is the only one: refusing to leave nothing to boot"
        )));
    }
    if current.len() != before {
        entries::write(&sysroot.boot_dir(), &current)?;
    }
    if staged.as_deref() == Some(id) {
        let path = sysroot.staged_path();
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    let _repo_lock = sysroot.repo().lock()?;
    remove_deployment_files(sysroot, id)
}

/// Pin (or unpin) a deployment: cleanup keeps pinned ones.
pub fn pin(sysroot: &Sysroot, id: &str, pinned: bool) -> Result<(), SysrootError> {
    check_id(id)?;
    let _lock = sysroot.lock()?;
    sysroot.deployment(id)?;
    let marker = sysroot.deployment_dir(id).join("pinned");
    if pinned {
        super::write_atomic(&marker, b"")?;
    } else {
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&marker)(e)),
        }
    }
    Ok(())
}

/// Change the default deployment's kernel arguments: remove every
/// argument equal to, or with the key of, each of `delete`; then append
/// `append`. Returns the new command line.
pub fn kargs(
    sysroot: &Sysroot,
    append: &[String],
    delete: &[String],
) -> Result<Vec<String>, SysrootError> {
    super::check_kargs(append)?;
    let _lock = sysroot.lock()?;
    let mut current = entries::read(&sysroot.boot_dir())?;
    let Some(first) = current.first_mut() else {
        return Err(SysrootError::Refused("there is no deployment".into()));
    };
    if first.uki.is_some() {
        return Err(SysrootError::Refused(format!(
            "deployment {} boots from a signed UKI, whose command line is sealed inside it",
            first.id
        )));
    }
    for d in delete.iter().chain(append) {
        if d.starts_with("sealtree=") || d == "sealtree" {
            return Err(SysrootError::Refused(
                "sealtree= names the deployment and cannot be changed".into(),
            ));
        }
    }
    first.options.retain(|arg| {
        !delete
            .iter()
            .any(|d| arg == d || arg.split_once('=').is_some_and(|(k, _)| k == d))
    });
    // Keep sealtree=ID last.
    let id_arg = first
        .options
        .iter()
        .position(|a| a.starts_with("sealtree="));
    let id_arg = id_arg.map(|p| first.options.remove(p));
    first.options.extend(append.iter().cloned());
    first.options.extend(id_arg);
    let options = first.options.clone();
    entries::write(&sysroot.boot_dir(), &current)?;
    Ok(options)
}

/// Mark the booted deployment's entry as good, dropping its boot counter
/// as systemd-bless-boot does. Returns whether anything changed.
pub fn bless(sysroot: &Sysroot) -> Result<bool, SysrootError> {
    let _lock = sysroot.lock()?;
    match sysroot.booted() {
        Some(id) => entries::bless(&sysroot.boot_dir(), id),
        None => Ok(false),
    }
}

fn check_id(id: &str) -> Result<(), SysrootError> {
    if super::is_deployment_id(id) {
        Ok(())
    } else {
        Err(SysrootError::Refused(format!(
            "'{id}' is not a deployment id (12 hex digits, a dot, a number)"
        )))
    }
}

/// What cleanup removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub prune: crate::repo::PruneReport,
}

/// Keep the default, the booted, the pinned, the staged and one rollback
/// deployment; remove the rest, then everything no deployment or branch
/// needs from the store.
pub fn cleanup(sysroot: &Sysroot) -> Result<CleanupReport, SysrootError> {
    let _lock = sysroot.lock()?;
    let current = entries::read(&sysroot.boot_dir())?;
    if current.is_empty() {
        // Wrong filesystem at boot/, or entries lost: keeping nothing
        // would remove every deployment.
        return Err(SysrootError::Refused(format!(
            "no boot entries in {}: refusing to remove deployments",
            sysroot.boot_dir().display()
        )));
    }
    let booted = sysroot.booted();
    let keep: Vec<BootEntry> = current
        .iter()
        .enumerate()
        .filter(|(i, e)| *i < 2 || Some(e.id.as_str()) == booted || sysroot.is_pinned(&e.id))
        .map(|(_, e)| e.clone())
        .collect();
    if keep.len() != current.len() {
        entries::write(&sysroot.boot_dir(), &keep)?;
    }
    let mut live: HashSet<String> = keep.iter().map(|e| e.id.clone()).collect();
    live.extend(sysroot.staged_id()?);
    // The running system's files are never removed under it.
    live.extend(booted.map(str::to_string));
    let mut report = CleanupReport::default();
    // Everything in deploy/ and boot/sealtree/ not live: removed entries,
    // and the leftovers of deploys that died before their entry existed.
    let mut names = HashSet::new();
    for dir in [sysroot.deploy_dir(), sysroot.boot_dir().join("sealtree")] {
        for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
            names.insert(
                item.map_err(io_err(&dir))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    let mut names: Vec<String> = names.into_iter().filter(|n| !live.contains(n)).collect();
    names.sort();
    {
        // Deployment refs are the store's: edited under its lock.
        let _repo_lock = sysroot.repo().lock()?;
        for name in names {
            remove_deployment_files(sysroot, &name)?;
            if !name.starts_with('.') {
                report.removed.push(name);
            }
        }
        // Refs of deployments that are gone (a deploy that died after its ref).
        let history = sysroot.repo().history()?;
        for (id, _) in history.deployment_refs()? {
            if !live.contains(&id) {
                history.delete_deployment_ref(&id)?;
            }
        }
    }
    report.prune = crate::repo::prune(sysroot.repo(), false)?;
    Ok(report)
}

fn remove_deployment_files(sysroot: &Sysroot, id: &str) -> Result<(), SysrootError> {
    if !id.starts_with('.') {
        sysroot.repo().history()?.delete_deployment_ref(id)?;
    }
    for dir in [sysroot.deployment_dir(id), sysroot.kernel_dir(id)] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    Ok(())
}
