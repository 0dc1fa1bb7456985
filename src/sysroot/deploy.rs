//! Deploying a commit: verify, rebuild its image, write the deployment
//! directory and kernel, then switch the boot entries (or stage the switch
//! for shutdown). Everything a boot entry names is complete and synced
//! before the entry exists.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::entries::{self, write_synced, BootEntry, BOOT_TRIES};
use super::etc_merge::{self, Side};
use super::{io_err, write_atomic, DeploymentInfo, Sysroot, SysrootError};
use crate::erofs::{self, ImageOptions};
use crate::fsverity::{self, EnableOutcome};
use crate::repo::RepoError;
use crate::sign::{self, Statement};
use crate::tree::{FileType, InodeId, Tree};
use crate::walk::{self, WalkOptions};

/// How to deploy.
#[derive(Debug, Default, Clone)]
pub struct DeployOptions {
    /// Kernel arguments added to those the deployment inherits.
    pub kargs: Vec<String>,
    /// Write everything but leave the boot entries to
    /// `finalize_staged` (run at shutdown).
    pub stage: bool,
    /// The epoch floor this machine keeps: a commit signed with a lower
    /// epoch is refused, since prepare-root would refuse it at boot.
    pub floor: Option<u32>,
}

/// What a deploy did.
#[derive(Debug)]
pub struct Deployed {
    pub info: DeploymentInfo,
    /// Paths in /etc where a local change was carried over.
    pub etc_kept_local: Vec<String>,
    pub staged: bool,
}

/// A staged deployment: the entry to add at shutdown.
#[derive(Debug, Serialize, Deserialize)]
struct Staged {
    id: String,
    title: String,
    linux: String,
    initrd: String,
    options: Vec<String>,
    /// A UKI deployment: the UKI the entry is copied from.
    #[serde(default)]
    uki: Option<PathBuf>,
}

/// Deploy the commit `spec` names.
pub fn deploy(
    sysroot: &Sysroot,
    spec: &str,
    options: &DeployOptions,
) -> Result<Deployed, SysrootError> {
    super::check_kargs(&options.kargs)?;
    let _lock = sysroot.lock()?;
    sysroot.keep_private()?;
    let repo = sysroot.repo();
    // Also the store's: a prune must not remove what is being deployed
    // (local /etc files enter the store here). Always sysroot, then repo.
    let _repo_lock = repo.lock()?;
    let history = repo.history()?;
    let commit = history.resolve(spec)?;
    let meta = history.info(commit)?.meta;

    let signed = check_signature(sysroot, commit)?;
    if let Some(floor) = options.floor {
        let epoch = signed.as_ref().map_or(0, |v| v.statement.epoch);
        if epoch < floor {
            return Err(SysrootError::Refused(format!(
                "commit {commit} is of epoch {epoch}, below the floor {floor} this machine's TPM keeps: it would not boot (--allow-below-floor to deploy it anyway, for recovery media)"
            )));
        }
    }
    let tree = repo.tree(commit)?;
    let image = erofs::write_image(
        &tree,
        &ImageOptions {
            min_version: meta.format_version,
            max_version: meta.format_version,
        },
    )
    .map_err(RepoError::from)?;
    let digest = hex::encode(fsverity::digest_bytes(&image.bytes));
    if let Some(v) = &signed {
        if v.statement.image_digest != digest {
            return Err(SysrootError::Refused(format!(
                "image of commit {commit} has digest {digest}, but its signed statement names {}: refusing to deploy",
                v.statement.image_digest
            )));
        }
    }
    if meta.image_digest != digest {
        return Err(SysrootError::Refused(format!(
            "image of commit {commit} has digest {digest}, but the commit records {}: refusing to deploy",
            meta.image_digest
        )));
    }
    check_objects(sysroot, &tree)?;
    let (kernel_version, vmlinuz, initramfs) = find_kernel(&tree, commit)?;
    let uki = find_uki(sysroot, &tree, &kernel_version, commit)?;
    if uki.is_some() && !options.kargs.is_empty() {
        return Err(SysrootError::Refused(format!(
            "commit {commit} boots from a signed UKI (usr/lib/modules/{kernel_version}/uki.efi), whose command line is sealed inside it: kernel arguments cannot be added"
        )));
    }
    if !tree
        .lookup(b"sysroot")
        .is_some_and(|i| tree.inodes[i].is_dir())
    {
        return Err(SysrootError::Refused(format!(
            "commit {commit} has no /sysroot directory, where the booted system finds the physical root: add an empty one to the tree, as ostree and bootc images have"
        )));
    }

    let current = entries::read(&sysroot.boot_dir())?;
    let base = sysroot
        .booted()
        .filter(|b| current.iter().any(|e| &e.id == b))
        .map(str::to_string)
        .or_else(|| current.first().map(|e| e.id.clone()));
    let id = new_id(sysroot, commit)?;

    // The deployment directory, complete, under a temporary name.
    let tmp = sysroot.deploy_dir().join(format!(".tmp-{id}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    write_image_file(&tmp.join("image.cfs"), &image.bytes, &digest)?;
    if let Some(v) = &signed {
        write_synced(&tmp.join("statement.json"), &v.text)?;
        write_synced(&tmp.join("statement.sig"), &v.signature)?;
    }
    let merge = merge_etc(sysroot, base.as_deref(), &tree, commit)?;
    let etc = tmp.join("etc");
    fs::create_dir(&etc).map_err(io_err(&etc))?;
    crate::repo::materialize(repo, &merge.tree, &etc)?;
    let info = DeploymentInfo {
        id: id.clone(),
        commit: commit.to_string(),
        branch: match &signed {
            Some(v) => Some(v.statement.branch.clone()),
            None => crate::repo::branch_of(repo, spec, commit).ok(),
        },
        image_digest: digest,
        format_version: meta.format_version,
        kernel: kernel_version,
        created: crate::clock::now(),
        signed_by: signed.as_ref().map(|v| v.key.clone()),
        etc_conflicts: merge.conflicts.clone(),
    };
    let json = serde_json::to_vec_pretty(&info).expect("deployment info serializes");
    write_synced(&tmp.join("deployment.json"), &json)?;
    let dest = sysroot.deployment_dir(&id);
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    seed_var(sysroot, &tree)?;

    // Kernel and initramfs, likewise (a UKI entry is the UKI itself).
    if uki.is_none() {
        let kdir = sysroot.kernel_dir(&id);
        let ktmp = kdir.with_file_name(format!(".tmp-{id}"));
        if ktmp.exists() {
            fs::remove_dir_all(&ktmp).map_err(io_err(&ktmp))?;
        }
        fs::create_dir_all(&ktmp).map_err(io_err(&ktmp))?;
        copy_out(sysroot, &tree, vmlinuz, &ktmp.join("vmlinuz"))?;
        copy_out(sysroot, &tree, initramfs, &ktmp.join("initramfs.img"))?;
        fs::rename(&ktmp, &kdir).map_err(io_err(&kdir))?;
    }

    // The commit stays in the store as long as the deployment exists.
    history.set_deployment_ref(&id, commit)?;
    sysroot.sync()?;

    let mut kargs: Vec<String> = match base
        .as_ref()
        .and_then(|b| current.iter().find(|e| &e.id == b))
    {
        Some(e) => e.options.clone(),
        None => sysroot.config().kargs.clone(),
    };
    kargs.retain(|a| !a.starts_with("sealtree="));
    kargs.extend(options.kargs.iter().cloned());
    kargs.push(format!("sealtree={id}"));
    let prefix = boot_prefix(sysroot)?;
    let entry = match uki {
        Some(path) => BootEntry {
            id: id.clone(),
            title: String::new(),
            linux: String::new(),
            initrd: String::new(),
            options: Vec::new(),
            tries: Some((BOOT_TRIES, 0)),
            uki: Some(path),
        },
        None => BootEntry {
            id: id.clone(),
            title: format!(
                "sealtree {} ({id})",
                info.branch.as_deref().unwrap_or("detached")
            ),
            linux: format!("{prefix}/sealtree/{id}/vmlinuz"),
            initrd: format!("{prefix}/sealtree/{id}/initramfs.img"),
            options: kargs,
            tries: Some((BOOT_TRIES, 0)),
            uki: None,
        },
    };
    if options.stage {
        let staged = Staged {
            id: entry.id.clone(),
            title: entry.title.clone(),
            linux: entry.linux.clone(),
            initrd: entry.initrd.clone(),
            options: entry.options.clone(),
            uki: entry.uki.clone(),
        };
        let json = serde_json::to_vec_pretty(&staged).expect("staged serializes");
        write_atomic(&sysroot.staged_path(), &json)?;
    } else {
        entries::write(
            &sysroot.boot_dir(),
            &with_new_default(entry, current, sysroot.booted()),
        )?;
        // The newest explicit choice wins over one staged before it.
        cancel_staged(sysroot)?;
    }
    Ok(Deployed {
        info,
        etc_kept_local: merge.kept_local,
        staged: options.stage,
    })
}

/// Forget the staged deployment, if any (cleanup removes its files).
pub(crate) fn cancel_staged(sysroot: &Sysroot) -> Result<(), SysrootError> {
    let path = sysroot.staged_path();
    match fs::remove_file(&path) {
        Ok(()) => entries::sync_dir(path.parent().expect("staged.json has a parent")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Switch to the staged deployment, if there is one (run at shutdown).
/// Returns its id.
pub fn finalize_staged(sysroot: &Sysroot) -> Result<Option<String>, SysrootError> {
    let _lock = sysroot.lock()?;
    let path = sysroot.staged_path();
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let staged: Staged = serde_json::from_slice(&text)
        .map_err(|e| SysrootError::Refused(format!("{}: {e}", path.display())))?;
    if !super::is_deployment_id(&staged.id) {
        return Err(SysrootError::Refused(format!(
            "{}: '{}' is not a deployment id",
            path.display(),
            staged.id
        )));
    }
    if !sysroot
        .deployment_dir(&staged.id)
        .join("deployment.json")
        .exists()
    {
        return Err(SysrootError::Refused(format!(
            "{}: deployment {} does not exist",
            path.display(),
            staged.id
        )));
    }
    let entry = BootEntry {
        id: staged.id.clone(),
        title: staged.title,
        linux: staged.linux,
        initrd: staged.initrd,
        options: staged.options,
        tries: Some((BOOT_TRIES, 0)),
        uki: staged.uki,
    };
    let current = entries::read(&sysroot.boot_dir())?;
    remerge_etc(sysroot, &staged.id, &current)?;
    entries::write(
        &sysroot.boot_dir(),
        &with_new_default(entry, current, sysroot.booted()),
    )?;
    fs::remove_file(&path).map_err(io_err(&path))?;
    super::entries::sync_dir(path.parent().expect("staged.json has a parent"))?;
    Ok(Some(staged.id))
}

/// Merge /etc again for the staged deployment `id`, from the running
/// system's /etc as it is now, so that changes made after staging are
/// kept; the new etc/ replaces the staged one in one atomic exchange.
fn remerge_etc(sysroot: &Sysroot, id: &str, current: &[BootEntry]) -> Result<(), SysrootError> {
    let _repo_lock = sysroot.repo().lock()?;
    let mut info = sysroot.deployment(id)?;
    let commit = sysroot.repo().history()?.resolve(&info.commit)?;
    let tree = sysroot.repo().tree(commit)?;
    let base = sysroot
        .booted()
        .filter(|b| current.iter().any(|e| &e.id == b))
        .map(str::to_string)
        .or_else(|| current.first().map(|e| e.id.clone()));
    let merge = merge_etc(sysroot, base.as_deref(), &tree, commit)?;
    let dir = sysroot.deployment_dir(id);
    let fresh = dir.join(".etc-merged");
    if fresh.exists() {
        fs::remove_dir_all(&fresh).map_err(io_err(&fresh))?;
    }
    fs::create_dir(&fresh).map_err(io_err(&fresh))?;
    crate::repo::materialize(sysroot.repo(), &merge.tree, &fresh)?;
    sysroot.sync()?;
    let etc = dir.join("etc");
    nix::fcntl::renameat2(
        None,
        &fresh,
        None,
        &etc,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|e| io_err(&etc)(e.into()))?;
    entries::sync_dir(&dir)?;
    fs::remove_dir_all(&fresh).map_err(io_err(&fresh))?;
    info.etc_conflicts = merge.conflicts;
    let json = serde_json::to_vec_pretty(&info).expect("deployment info serializes");
    write_atomic(&dir.join("deployment.json"), &json)
}

/// The new entry first, then the booted one (the natural rollback), then
/// the rest in their order.
fn with_new_default(
    entry: BootEntry,
    mut current: Vec<BootEntry>,
    booted: Option<&str>,
) -> Vec<BootEntry> {
    current.retain(|e| e.id != entry.id);
    let mut out = vec![entry];
    if let Some(pos) = booted.and_then(|b| current.iter().position(|e| e.id == b)) {
        out.push(current.remove(pos));
    }
    out.extend(current);
    out
}

/// A statement that verified, as stored.
struct Verified {
    statement: Statement,
    /// The public key that signed it, base64.
    key: String,
    text: Vec<u8>,
    signature: Vec<u8>,
}

/// The verified statement of `commit`, or `None` when unsigned and the
/// policy allows that.
fn check_signature(sysroot: &Sysroot, commit: ObjectId) -> Result<Option<Verified>, SysrootError> {
    let repo = sysroot.repo();
    let Some(stored) = repo.stored_statement(commit)? else {
        if sysroot.config().require_signatures {
            return Err(SysrootError::Refused(format!(
                "commit {commit} is not signed, and this sysroot requires signatures: refusing to deploy"
            )));
        }
        return Ok(None);
    };
    let trusted = sysroot.trusted_keys()?.ok_or_else(|| {
        SysrootError::Refused(format!(
            "commit {commit} is signed, but no trusted keys are installed in {}",
            sysroot.trusted_dir().display()
        ))
    })?;
    let (text_path, sig_path) = repo.statement_paths(commit);
    let (statement, key) = sign::verify(
        &stored.text,
        &text_path,
        &stored.signature,
        &sig_path,
        &trusted,
    )?;
    if statement.commit.parse::<ObjectId>().ok() != Some(commit) {
        return Err(SysrootError::Refused(format!(
            "{}: the statement is for commit {}, not {commit}",
            text_path.display(),
            statement.commit
        )));
    }
    Ok(Some(Verified {
        statement,
        key: key.encoded(),
        text: stored.text,
        signature: stored.signature,
    }))
}

/// Every object the tree names must be in the store.
fn check_objects(sysroot: &Sysroot, tree: &Tree) -> Result<(), SysrootError> {
    let objects = sysroot.repo().objects();
    let stored = objects.lookup();
    for inode in &tree.inodes {
        if inode.file_type() == Some(FileType::Regular) && inode.content.is_none() && inode.size > 0
        {
            if let Some(d) = inode.digest {
                if !stored.contains(&d) {
                    let why = objects.why_not_stored(&d);
                    return Err(SysrootError::Refused(format!(
                        "object {} in {}: {why}: refusing to deploy",
                        hex::encode(d),
                        objects.root().display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The kernel version and its kernel and initramfs inodes, the highest
/// version when there are several. Where the tree keeps them: the kernel
/// in `usr/lib/modules/KVER/vmlinuz` (bootc, Fedora) or
/// `boot/vmlinuz-KVER` (Debian); the initramfs beside it as
/// `initramfs.img`, or `boot/initrd.img-KVER` (Debian) or
/// `boot/initramfs-KVER.img` (Fedora).
fn find_kernel(tree: &Tree, commit: ObjectId) -> Result<(String, InodeId, InodeId), SysrootError> {
    let regular = |path: &[u8]| {
        tree.lookup(path)
            .filter(|&i| tree.inodes[i].file_type() == Some(FileType::Regular))
    };
    let mut versions: Vec<Vec<u8>> = Vec::new();
    if let Some(modules) = tree.lookup(b"usr/lib/modules") {
        versions.extend(
            tree.inodes[modules]
                .entries
                .iter()
                .filter(|(_, e)| tree.inodes[e.inode].is_dir())
                .map(|(name, _)| name.to_vec()),
        );
    }
    if let Some(boot) = tree.lookup(b"boot") {
        versions.extend(
            tree.inodes[boot]
                .entries
                .keys()
                .filter_map(|name| name.strip_prefix(b"vmlinuz-"))
                .map(<[u8]>::to_vec),
        );
    }
    versions.sort_by(|a, b| version_cmp(a, b));
    versions.dedup();
    for kver in versions.into_iter().rev() {
        let kver = String::from_utf8_lossy(&kver).into_owned();
        let (kernels, initramfses) = kernel_candidates(&kver);
        let first = |paths: &[String]| paths.iter().find_map(|p| regular(p.as_bytes()));
        if let (Some(vmlinuz), Some(initramfs)) = (first(&kernels), first(&initramfses)) {
            return Ok((kver, vmlinuz, initramfs));
        }
    }
    Err(SysrootError::Refused(format!(
        "commit {commit} has no kernel with an initramfs (usr/lib/modules/KVER/vmlinuz and initramfs.img, or boot/vmlinuz-KVER and boot/initrd.img-KVER): nothing to boot"
    )))
}

/// The store's copy of the tree's signed UKI for kernel `kver`
/// (`usr/lib/modules/KVER/uki.efi`, where kernel-install looks for one),
/// checked to be ordered by the loader as sealtree's entries are.
fn find_uki(
    sysroot: &Sysroot,
    tree: &Tree,
    kver: &str,
    commit: ObjectId,
) -> Result<Option<PathBuf>, SysrootError> {
    let path = format!("usr/lib/modules/{kver}/uki.efi");
    let Some(inode) = tree
        .lookup(path.as_bytes())
        .filter(|&i| tree.inodes[i].file_type() == Some(FileType::Regular))
    else {
        // A UKI beside another kernel: booting that kernel would skip the
        // sealed chain the tree was built for.
        if let Some(modules) = tree.lookup(b"usr/lib/modules") {
            for (name, e) in &tree.inodes[modules].entries {
                let other = &tree.inodes[e.inode];
                if other.is_dir() && other.entries.contains_key(b"uki.efi".as_slice()) {
                    return Err(SysrootError::Refused(format!(
                        "commit {commit} has a UKI for kernel {}, but its newest kernel is {kver}: a tree with a UKI boots only from it",
                        String::from_utf8_lossy(name)
                    )));
                }
            }
        }
        return Ok(None);
    };
    let Some(digest) = tree.inodes[inode].digest else {
        return Err(SysrootError::Refused(format!(
            "commit {commit}: {path} is too small to be a UKI"
        )));
    };
    let object = sysroot.repo().objects().path(&digest);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut sysroot
            .repo()
            .objects()
            .open_object(&digest)
            .map_err(io_err(&object))?,
        &mut bytes,
    )
    .map_err(io_err(&object))?;
    crate::uki::check_sort_order(&bytes)
        .map_err(|e| SysrootError::Refused(format!("commit {commit}: {path}: {e}")))?;
    Ok(Some(object))
}

/// Where a tree keeps kernel `kver` and its initramfs, in the order
/// looked at (paths relative to the tree's root).
pub fn kernel_candidates(kver: &str) -> ([String; 2], [String; 3]) {
    (
        [
            format!("usr/lib/modules/{kver}/vmlinuz"),
            format!("boot/vmlinuz-{kver}"),
        ],
        [
            format!("usr/lib/modules/{kver}/initramfs.img"),
            format!("boot/initrd.img-{kver}"),
            format!("boot/initramfs-{kver}.img"),
        ],
    )
}

/// Kernel versions in the order of their numbers (`6.1.0-10` after
/// `6.1.0-9`): runs of digits compare as numbers, the rest bytewise.
fn version_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    fn runs(v: &[u8]) -> impl Iterator<Item = &[u8]> {
        v.chunk_by(|x, y| x.is_ascii_digit() == y.is_ascii_digit())
    }
    for (x, y) in runs(a).zip(runs(b)) {
        let order = if x[0].is_ascii_digit() && y[0].is_ascii_digit() {
            let trim = |d: &[u8]| {
                d.iter()
                    .position(|&c| c != b'0')
                    .map_or(&[][..], |p| &d[p..])
                    .to_vec()
            };
            let (x, y) = (trim(x), trim(y));
            x.len().cmp(&y.len()).then_with(|| x.cmp(&y))
        } else {
            x.cmp(y)
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// A deployment id not used yet: the commit's first 12 hex digits and a
/// serial number.
fn new_id(sysroot: &Sysroot, commit: ObjectId) -> Result<String, SysrootError> {
    let short = &commit.to_string()[..12];
    let dir = sysroot.deploy_dir();
    let mut used = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        used.push(entry.map_err(io_err(&dir))?.file_name());
    }
    let staged = sysroot.staged_id()?;
    (0..)
        .map(|n| format!("{short}.{n}"))
        .find(|id| {
            !used.iter().any(|u| u == id.as_str())
                && staged.as_deref() != Some(id)
                && !sysroot.kernel_dir(id).exists()
        })
        .ok_or_else(|| SysrootError::Refused("no deployment id left".into()))
}

fn merge_etc(
    sysroot: &Sysroot,
    base: Option<&str>,
    tree: &Tree,
    commit: ObjectId,
) -> Result<etc_merge::EtcMerge, SysrootError> {
    let defaults = |t: &Tree| t.lookup(b"usr/etc").or_else(|| t.lookup(b"etc"));
    let empty = Tree::new(crate::tree::Inode::new(crate::tree::S_IFDIR | 0o755));
    let new = match defaults(tree) {
        Some(dir) if tree.inodes[dir].is_dir() => Side { tree, dir },
        _ => {
            eprintln!("sealtree: commit {commit} has no usr/etc; /etc starts empty");
            Side {
                tree: &empty,
                dir: crate::tree::ROOT,
            }
        }
    };
    let Some(base) = base else {
        return Ok(etc_merge::merge(None, new, None));
    };
    let old_info = sysroot.deployment(base)?;
    let old_commit = sysroot.repo().history()?.resolve(&old_info.commit)?;
    let old_tree = sysroot.repo().tree(old_commit)?;
    let running_dir = sysroot.deployment_dir(base).join("etc");
    // Local files go into the store like any content, so the merged /etc
    // is written the same way whichever side a file came from.
    let (running, _) = walk::read_dir_tree(
        &running_dir,
        &WalkOptions {
            store: Some(sysroot.repo().objects()),
            ..WalkOptions::default()
        },
    )
    .map_err(RepoError::from)?;
    let old = defaults(&old_tree)
        .filter(|&d| old_tree.inodes[d].is_dir())
        .map(|dir| Side {
            tree: &old_tree,
            dir,
        });
    Ok(etc_merge::merge(
        old,
        new,
        Some(Side {
            tree: &running,
            dir: crate::tree::ROOT,
        }),
    ))
}

/// The shared /var starts as the first deployed commit's /var; after
/// that it belongs to the machine and no deploy writes it. The seed is
/// written in place (var/ may be a filesystem of its own) while a marker
/// says it is under way, so a seed cut short is redone, never taken for
/// the machine's own /var.
fn seed_var(sysroot: &Sysroot, tree: &Tree) -> Result<(), SysrootError> {
    let var = sysroot.var_dir();
    let marker = sysroot.root().join("sealtree").join("var-seeding");
    if marker.exists() {
        for item in fs::read_dir(&var).map_err(io_err(&var))? {
            let path = item.map_err(io_err(&var))?.path();
            let gone = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            gone.map_err(io_err(&path))?;
        }
    } else if fs::read_dir(&var).map_err(io_err(&var))?.next().is_some() {
        return Ok(());
    }
    if let Some(dir) = tree.lookup(b"var").filter(|&d| tree.inodes[d].is_dir()) {
        write_atomic(&marker, b"")?;
        let copy = etc_merge::merge(None, Side { tree, dir }, None).tree;
        crate::repo::materialize(sysroot.repo(), &copy, &var)?;
        let f = File::open(&var).map_err(io_err(&var))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
            .map_err(|e| io_err(&var)(e.into()))?;
    }
    match fs::remove_file(&marker) {
        Ok(()) => entries::sync_dir(marker.parent().expect("has a parent")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&marker)(e)),
    }
}

/// Write the deployment's image and enable fs-verity on it where the
/// filesystem has it, checking the kernel agrees on the digest.
fn write_image_file(path: &Path, bytes: &[u8], digest: &str) -> Result<(), SysrootError> {
    write_synced(path, bytes)?;
    let file = File::open(path).map_err(io_err(path))?;
    match fsverity::enable(&file) {
        Ok(EnableOutcome::Unsupported) => Ok(()),
        Ok(_) => {
            let measured = fsverity::measure(&file).map_err(|e| io_err(path)(e.into()))?;
            if measured.map(hex::encode).as_deref() != Some(digest) {
                return Err(SysrootError::Refused(format!(
                    "{}: the kernel measures fs-verity digest {}, expected {digest}",
                    path.display(),
                    measured.map(hex::encode).unwrap_or_default()
                )));
            }
            Ok(())
        }
        Err(e) => Err(io_err(path)(e.into())),
    }
}

/// Copy a regular file of the tree out of the store.
fn copy_out(sysroot: &Sysroot, tree: &Tree, id: InodeId, dest: &Path) -> Result<(), SysrootError> {
    let inode = &tree.inodes[id];
    let mut out = File::create(dest).map_err(io_err(dest))?;
    match (&inode.content, inode.digest) {
        (Some(data), _) => out.write_all(data).map_err(io_err(dest))?,
        (None, Some(d)) => {
            let src = sysroot.repo().objects().path(&d);
            let mut input = sysroot
                .repo()
                .objects()
                .open_object(&d)
                .map_err(io_err(&src))?;
            std::io::copy(&mut input, &mut out).map_err(io_err(dest))?;
        }
        (None, None) => {}
    }
    out.sync_all().map_err(io_err(dest))
}

/// Boot entries name files relative to the boot partition: `/boot/...`
/// when /boot is a directory of the root filesystem, `/...` when it is a
/// filesystem of its own.
fn boot_prefix(sysroot: &Sysroot) -> Result<&'static str, SysrootError> {
    if sysroot.boot_dir() != sysroot.root().join("boot") {
        return Ok("");
    }
    let root = fs::metadata(sysroot.root()).map_err(io_err(sysroot.root()))?;
    let boot_dir = sysroot.boot_dir();
    let boot = fs::metadata(&boot_dir).map_err(io_err(&boot_dir))?;
    Ok(if root.dev() == boot.dev() {
        "/boot"
    } else {
        ""
    })
}

#[cfg(test)]
mod tests {
    use super::version_cmp;

    #[test]
    fn kernel_versions_compare_by_number() {
        let mut v: Vec<&[u8]> = vec![
            b"6.1.0-10-amd64",
            b"6.1.0-9-amd64",
            b"6.12.95+deb12-amd64",
            b"5.19.0",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            vec![
                &b"5.19.0"[..],
                b"6.1.0-9-amd64",
                b"6.1.0-10-amd64",
                b"6.12.95+deb12-amd64"
            ]
        );
    }
}
