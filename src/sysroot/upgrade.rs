//! `admin upgrade`: pull the booted deployment's branch and stage the new
//! commit, to become the default at shutdown.

use super::{deploy, DeployOptions, Sysroot, SysrootError};
use crate::remote::{self, PullOptions, RemoteError};
use crate::repo::Change;

/// What an upgrade found and did.
#[derive(Debug)]
pub struct UpgradeReport {
    pub remote: String,
    pub branch: String,
    /// The commit running (or default) now.
    pub from: String,
    /// The newest commit of the branch.
    pub to: String,
    /// The staged deployment, if one was made.
    pub staged: Option<String>,
    /// What differs between the two, when there is something new.
    pub changes: Vec<Change>,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
}

/// How to upgrade.
#[derive(Debug, Default)]
pub struct UpgradeOptions<'a> {
    /// The remote to pull from (else the only one).
    pub remote: Option<&'a str>,
    /// Only find out whether there is an update.
    pub check: bool,
    /// The machine's epoch floor: a commit below it is refused.
    pub floor: Option<u32>,
    /// Take an expired signed index.
    pub allow_expired: bool,
}

/// Pull the branch of the booted (else default) deployment and stage it,
/// unless `check`.
pub fn upgrade(
    sysroot: &Sysroot,
    options: &UpgradeOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<UpgradeReport, SysrootError> {
    let (remote_name, check, floor) = (options.remote, options.check, options.floor);
    let repo = sysroot.repo();
    let current = super::entries::read(&sysroot.boot_dir())?;
    let base = sysroot
        .booted()
        .map(str::to_string)
        .or_else(|| current.first().map(|e| e.id.clone()))
        .ok_or_else(|| SysrootError::Refused("nothing is deployed to upgrade".into()))?;
    let info = sysroot.deployment(&base)?;
    let branch = info
        .branch
        .clone()
        .ok_or_else(|| SysrootError::Refused(format!("deployment {base} records no branch")))?;
    let remote_name = match remote_name {
        Some(r) => r.to_string(),
        None => {
            let all = remote::list(repo).map_err(refused)?;
            match all.as_slice() {
                [(only, _)] => only.clone(),
                [] => return Err(SysrootError::Refused("no remote configured".into())),
                _ => {
                    return Err(SysrootError::Refused(
                        "several remotes: name one with --remote".into(),
                    ))
                }
            }
        }
    };
    let remote = remote::open(repo, &remote_name).map_err(refused)?;
    let pulled = remote::pull(
        repo,
        &remote,
        &branch,
        &PullOptions {
            check_only: check,
            progress,
            allow_expired: options.allow_expired,
            ..PullOptions::default()
        },
    )
    .map_err(refused)?;
    let mut report = UpgradeReport {
        remote: remote_name.clone(),
        branch: branch.clone(),
        from: info.commit.clone(),
        to: pulled.commit.to_string(),
        staged: None,
        changes: Vec::new(),
        objects_fetched: pulled.objects_fetched,
        bytes_fetched: pulled.bytes_fetched,
    };
    if report.to == report.from {
        return Ok(report);
    }
    let history = repo.history()?;
    let old = repo.tree(history.resolve(&info.commit)?)?;
    let new = repo.tree(pulled.commit)?;
    report.changes = crate::repo::diff(&old, &new);
    if !check {
        let done = deploy(
            sysroot,
            &format!("{remote_name}/{branch}"),
            &DeployOptions {
                kargs: Vec::new(),
                stage: true,
                floor,
            },
        )?;
        report.staged = Some(done.info.id);
    }
    Ok(report)
}

fn refused(e: RemoteError) -> SysrootError {
    SysrootError::Refused(e.to_string())
}
