//! Turning fs-verity on for everything a sysroot boots from, after the
//! sysroot was copied onto a filesystem that has it (an image built on a
//! machine without fs-verity, say). Each file's digest, measured by the
//! kernel once verity is on, must equal its name or record: enabling
//! verity on a damaged file makes the damage permanent, never trusted.

use std::fs;
use std::path::PathBuf;

use super::{io_err, Sysroot, SysrootError};
use crate::fsverity::{self, EnableOutcome};

/// What enabling found.
#[derive(Debug, Default)]
pub struct VerityReport {
    /// Files verity was turned on for now.
    pub enabled: u64,
    /// Files that had it already.
    pub already: u64,
    /// Files whose measured digest is not the expected one.
    pub mismatched: Vec<PathBuf>,
}

/// Enable fs-verity on every object, image and deployment image.
pub fn enable_verity(sysroot: &Sysroot) -> Result<VerityReport, SysrootError> {
    let _lock = sysroot.lock_store()?;
    let repo = sysroot.repo();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let listing = repo
        .objects()
        .list()
        .map_err(io_err(repo.objects().root()))?;
    files.extend(
        listing
            .objects
            .into_iter()
            .map(|(d, p, _)| (p, hex::encode(d))),
    );
    let images = repo.images_dir();
    for entry in fs::read_dir(&images).map_err(io_err(&images))? {
        let entry = entry.map_err(io_err(&images))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if fsverity::parse_hex(name.as_bytes()).is_some() {
            files.push((entry.path(), name));
        }
    }
    let deploy = sysroot.deploy_dir();
    for entry in fs::read_dir(&deploy).map_err(io_err(&deploy))? {
        let id = entry
            .map_err(io_err(&deploy))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if id.starts_with('.') {
            continue;
        }
        let info = sysroot.deployment(&id)?;
        files.push((
            sysroot.deployment_dir(&id).join("image.cfs"),
            info.image_digest,
        ));
    }

    let mut report = VerityReport::default();
    for (path, want) in files {
        let file = crate::objects::open_regular(&path).map_err(io_err(&path))?;
        match fsverity::enable(&file).map_err(|e| io_err(&path)(e.into()))? {
            EnableOutcome::Unsupported => {
                return Err(SysrootError::Refused(format!(
                    "{}: the filesystem has no fs-verity",
                    path.display()
                )))
            }
            EnableOutcome::Enabled => report.enabled += 1,
            EnableOutcome::AlreadyEnabled => report.already += 1,
        }
        let measured = fsverity::measure(&file).map_err(|e| io_err(&path)(e.into()))?;
        if measured.map(hex::encode).as_deref() != Some(want.as_str()) {
            report.mismatched.push(path);
        }
    }
    sysroot.sync()?;
    if report.mismatched.is_empty() {
        // The first boot's work is done (see install.rs).
        let marker = sysroot.root().join("sealtree").join(super::VERITY_PENDING);
        match fs::remove_file(&marker) {
            Ok(()) => super::entries::sync_dir(marker.parent().expect("has a parent"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&marker)(e)),
        }
    }
    Ok(report)
}
