//! `sealtree prepare-root`: in the initramfs, after the physical root is
//! mounted at /sysroot and before switch-root. Nothing is mounted until
//! the signature and the image digest have been checked, and the image
//! that is mounted is the one that was checked: either a file with
//! fs-verity (immutable, measured by the kernel) or a sealed in-memory
//! copy hashed here.
//!
//! Which deployment: `sealtree=ID` on the command line; or, in an
//! initramfs sealed inside a signed UKI (see `boot::uki`), the entry the
//! boot loader started (its `LoaderEntrySelected` variable), since the
//! UKI's command line is the same for every deployment. Either way the
//! deployment must be the statement's: the id names the commit, and
//! deployment.json must agree with what was signed.
//!
//! Result: /sysroot is an overlayfs of the EROFS image over the object
//! store (`metacopy=on,redirect_dir=on,verity=…`), with the deployment's
//! etc/ (or, with `etc = transient`, a tmpfs over the image's /etc) at
//! /etc, the shared var/ at /var, both nosuid and nodev, and the
//! physical root at /sysroot/sysroot. The deployment id is left in
//! RUN_DIR/booted for the booted system.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::epoch::{self, Booting, Outcome};
use super::policy::{EtcPolicy, Policy, SignaturePolicy};
use super::tpm::Tpm;
use crate::fsverity;
use crate::sign;

/// Where and how to prepare the root.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The physical root as mounted by the initramfs (/sysroot).
    pub root: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    pub policy: Policy,
    /// Public keys built into the initramfs.
    pub trusted: PathBuf,
    /// Private scratch space for the mounts (/run/sealtree).
    pub run_dir: PathBuf,
    /// In an initramfs sealed inside a UKI: the command-line words the
    /// UKI carries, every one of which must be on the command line.
    pub sealed_cmdline: Option<Vec<String>>,
    /// The entry the boot loader started (`LoaderEntrySelected`), if it
    /// said.
    pub loader_entry: Option<String>,
    /// `LoaderBootCountPath`: systemd-boot sets it only when the entry it
    /// started still counts its tries (not blessed yet).
    pub boot_count_path: Option<String>,
    /// In a sealed UKI: the epoch it was built with.
    pub sealed_epoch: Option<u32>,
    /// The TPM that keeps the epoch floor, if the machine has one.
    pub tpm: Option<Tpm>,
}

/// A check that failed: boot must stop.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {message}")]
pub struct PrepareError {
    pub check: &'static str,
    pub message: String,
}

fn fail(check: &'static str, message: impl Into<String>) -> PrepareError {
    PrepareError {
        check,
        message: message.into(),
    }
}

/// What was booted, and how long each step took.
#[derive(Debug)]
pub struct Prepared {
    pub id: String,
    pub image_digest: String,
    /// The key that signed the deployment (base64), if signed.
    pub signed_by: Option<String>,
    /// Whether the image digest came from the kernel (fs-verity) rather
    /// than from hashing a private copy.
    pub image_verity: bool,
    /// The statement's security epoch, and what became of the floor.
    pub epoch: u32,
    pub floor: Outcome,
    /// For the console: what was not enforced, and why.
    pub warnings: Vec<String>,
    pub steps: Vec<(&'static str, Duration)>,
}

/// Verify the deployment the command line names and mount it at `root`.
/// `progress` is told each step as it completes.
pub fn prepare_root(
    options: &PrepareOptions,
    mut progress: impl FnMut(&str, Duration),
) -> Result<Prepared, PrepareError> {
    let mut steps = Vec::new();
    let mut clock = Instant::now();
    let mut step = |name: &'static str, clock: &mut Instant| {
        let took = clock.elapsed();
        progress(name, took);
        steps.push((name, took));
        *clock = Instant::now();
    };

    let id = deployment_id(options)?;
    let deploy = options.root.join("sealtree/deploy").join(&id);
    if !deploy.is_dir() {
        return Err(fail(
            "deployment",
            format!("{} does not exist", deploy.display()),
        ));
    }
    step("deployment", &mut clock);

    let checked = check_signature(options, &id, &deploy)?;
    let expected = checked.image_digest;
    step("signature", &mut clock);

    let (image, image_verity) = checked_image(&deploy.join("image.cfs"), &expected)?;
    step("image digest", &mut clock);

    // Blessed: the loader started this deployment's entry, and neither
    // its name nor the loader's own variable shows a boot counter.
    let blessed = options.boot_count_path.is_none()
        && options
            .loader_entry
            .as_deref()
            .and_then(crate::sysroot::loader_entry)
            .is_some_and(|(entry, counted)| entry == id && !counted);
    let booting = Booting {
        id: &id,
        commit: &checked.commit,
        epoch: checked.epoch,
        uki_epoch: options.sealed_epoch,
        blessed,
    };
    let mut warnings = Vec::new();
    let floor = epoch::enforce(options.tpm.as_ref(), options.policy.epoch, &booting, |w| {
        warnings.push(w.to_string())
    })
    .map_err(|e| fail("epoch", e))?;
    step("epoch", &mut clock);

    mount_root(options, &deploy, &image, image_verity)?;
    step("mount", &mut clock);
    // For the booted system (`admin status`, bless): a sealed command line
    // does not name the deployment.
    let record = options.run_dir.join("booted");
    fs::write(&record, format!("{id}\n"))
        .map_err(|e| fail("mount", format!("{}: {e}", record.display())))?;

    Ok(Prepared {
        id,
        image_digest: expected,
        signed_by: checked.signed_by,
        image_verity,
        epoch: checked.epoch,
        floor,
        warnings,
        steps,
    })
}

/// The deployment to boot: from the command line, or in a sealed UKI from
/// the boot loader's entry, once the command line is the UKI's.
fn deployment_id(options: &PrepareOptions) -> Result<String, PrepareError> {
    let check = "command line";
    let named = crate::sysroot::booted_id(&options.cmdline);
    let id = match &options.sealed_cmdline {
        None => named.ok_or_else(|| fail(check, "no sealtree=ID on the kernel command line"))?,
        Some(sealed) => {
            let words: Vec<&str> = options.cmdline.split_ascii_whitespace().collect();
            let missing: Vec<&str> = sealed
                .iter()
                .map(String::as_str)
                .filter(|w| !words.contains(w))
                .collect();
            if !missing.is_empty() {
                return Err(fail(
                    check,
                    format!(
                        "this initramfs is sealed in a UKI whose command line has '{}'; missing here: '{}' (the loader's options replaced the UKI's)",
                        sealed.join(" "),
                        missing.join(" ")
                    ),
                ));
            }
            if let Some(named) = named {
                return Err(fail(
                    check,
                    format!("sealtree={named} on the command line of a sealed UKI, which names no deployment (the loader's options replaced the UKI's)"),
                ));
            }
            let entry = options.loader_entry.as_deref().ok_or_else(|| {
                fail(
                    check,
                    "sealed UKI: the boot loader did not say which entry it started (no LoaderEntrySelected variable)",
                )
            })?;
            crate::sysroot::uki_entry_id(entry).ok_or_else(|| {
                fail(
                    check,
                    format!("sealed UKI: the loader started '{entry}', which is no sealtree entry"),
                )
            })?
        }
    };
    if !crate::sysroot::is_deployment_id(&id) {
        return Err(fail(check, format!("'{id}' is not a deployment id")));
    }
    Ok(id)
}

/// What the deployment's statement (or, unsigned, its record) says.
struct Checked {
    image_digest: String,
    commit: String,
    epoch: u32,
    /// The key that vouches for it (base64), if signed.
    signed_by: Option<String>,
}

/// The image digest the deployment must have, and who vouches for it.
fn check_signature(
    options: &PrepareOptions,
    id: &str,
    deploy: &Path,
) -> Result<Checked, PrepareError> {
    let text_path = deploy.join("statement.json");
    let sig_path = deploy.join("statement.sig");
    let signed = text_path.exists() || sig_path.exists();
    if !signed {
        if options.policy.signature == SignaturePolicy::Required {
            return Err(fail(
                "signature",
                format!("deployment {id} is unsigned and the policy requires a signature"),
            ));
        }
        // Unsigned and allowed: the digest recorded at deploy time still
        // catches a damaged image, though not a replaced one.
        let info = recorded(deploy)?;
        let branch = info.branch.unwrap_or_default();
        check_binding(id, &info.commit, &info.commit)?;
        check_branch(options, id, &info.commit, &branch)?;
        // Unsigned: epoch 0, which never raises the floor.
        return Ok(Checked {
            image_digest: info.image_digest,
            commit: info.commit,
            epoch: 0,
            signed_by: None,
        });
    }
    let read =
        |p: &Path| fs::read(p).map_err(|e| fail("signature", format!("{}: {e}", p.display())));
    let (text, sig) = (read(&text_path)?, read(&sig_path)?);
    let keys =
        sign::read_public_keys(&options.trusted).map_err(|e| fail("signature", e.to_string()))?;
    let (statement, key) = sign::verify(&text, &text_path, &sig, &sig_path, &keys)
        .map_err(|e| fail("signature", e.to_string()))?;
    check_binding(id, &recorded(deploy)?.commit, &statement.commit)?;
    check_branch(options, id, &statement.commit, &statement.branch)?;
    Ok(Checked {
        image_digest: statement.image_digest,
        commit: statement.commit,
        epoch: statement.epoch,
        signed_by: Some(key.encoded()),
    })
}

/// What prepare-root reads of deployment.json (duplicate keys refused,
/// as `admin status` refuses them).
#[derive(serde::Deserialize)]
struct Recorded {
    commit: String,
    #[serde(default)]
    branch: Option<String>,
    image_digest: String,
}

fn recorded(deploy: &Path) -> Result<Recorded, PrepareError> {
    let path = deploy.join("deployment.json");
    let text = fs::read(&path).map_err(|e| fail("binding", format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| fail("binding", format!("{}: {e}", path.display())))
}

/// The statement must be the deployment's own: an image and statement
/// copied from another deployment verify, but name another commit.
fn check_binding(id: &str, recorded: &str, signed: &str) -> Result<(), PrepareError> {
    crate::sysroot::check_statement_binding(id, recorded, signed).map_err(|e| fail("binding", e))
}

fn check_branch(
    options: &PrepareOptions,
    id: &str,
    commit: &str,
    branch: &str,
) -> Result<(), PrepareError> {
    if options.policy.allows_branch(branch) {
        return Ok(());
    }
    Err(fail(
        "branch",
        format!(
            "deployment {id} (commit {commit}) is of branch '{branch}'; the policy allows only {}",
            options
                .policy
                .branches
                .iter()
                .map(|b| format!("'{b}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// The image to mount, proven to have digest `expected`: the file itself
/// when the kernel measures it with fs-verity (it cannot change), else a
/// sealed in-memory copy whose bytes were hashed here.
fn checked_image(path: &Path, expected: &str) -> Result<(File, bool), PrepareError> {
    let check = "image digest";
    let mut file = crate::objects::open_regular(path)
        .map_err(|e| fail(check, format!("{}: {e}", path.display())))?;
    if let Ok(Some(measured)) = fsverity::measure(&file) {
        let measured = hex::encode(measured);
        if measured != expected {
            return Err(fail(
                check,
                format!(
                    "{} has fs-verity digest {measured}, the statement names {expected}",
                    path.display()
                ),
            ));
        }
        return Ok((file, true));
    }
    let memfd = nix::sys::memfd::memfd_create(
        c"sealtree-image",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
            | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| fail(check, format!("cannot make a private copy: {e}")))?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut copy = unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(memfd)) };
    let mut hasher = fsverity::Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| fail(check, format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n])
            .map_err(|e| fail(check, format!("private copy: {e}")))?;
    }
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    fcntl(
        copy.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(|e| fail(check, format!("cannot seal the private copy: {e}")))?;
    let (digest, _) = hasher.finalize();
    let digest = hex::encode(digest);
    if digest != expected {
        return Err(fail(
            check,
            format!(
                "{} has fs-verity digest {digest}, the statement names {expected}",
                path.display()
            ),
        ));
    }
    Ok((copy, false))
}

/// Mounts made so far, undone if a later one fails.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
    }
}

fn mount_root(
    options: &PrepareOptions,
    deploy: &Path,
    image: &File,
    image_verity: bool,
) -> Result<(), PrepareError> {
    let check = "mount";
    let err = |what: String| move |e: nix::Error| fail(check, format!("{what}: {e}"));
    let lower = options.run_dir.join("lower");
    let newroot = options.run_dir.join("root");
    for d in [&lower, &newroot] {
        fs::create_dir_all(d).map_err(|e| fail(check, format!("{}: {e}", d.display())))?;
    }
    // Moving mounts needs private propagation (systemd makes / shared);
    // systemd shares the new root again after switch-root.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making / private".into()))?;
    let mut mounts = Mounts(Vec::new());

    // The checked image, by descriptor: the very file that was checked.
    // A verity file mounts as itself; the in-memory copy through a loop
    // device.
    let loop_device;
    let source = if image_verity {
        PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()))
    } else {
        loop_device = super::loopdev::attach(image)
            .map_err(|e| fail(check, format!("loop device for the image copy: {e}")))?;
        loop_device.path.clone()
    };
    mount(
        Some(&source),
        &lower,
        Some("erofs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(err(format!("EROFS image at {}", lower.display())))?;
    mounts.0.push(lower.clone());

    let objects = options.root.join("sealtree/repo/objects");
    let mut opts = format!(
        "ro,metacopy=on,redirect_dir=on,lowerdir={}::{}",
        lower.display(),
        objects.display()
    );
    if let Some(v) = options.policy.verity.mount_option() {
        opts.push(',');
        opts.push_str(v);
    }
    mount(
        Some("composefs"),
        &newroot,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(err(format!("overlay -o {opts}")))?;
    mounts.0.push(newroot.clone());

    // /etc and /var are writable and shared between deployments: nothing
    // in them may gain privileges (setuid) or open devices.
    let private = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match options.policy.etc {
        EtcPolicy::Persistent => {
            bind(&deploy.join("etc"), &newroot.join("etc"), private)?;
            mounts.0.push(newroot.join("etc"));
        }
        EtcPolicy::Transient => {
            // The image's /etc with a tmpfs over it, as ostree's
            // etc.transient: local changes last until the next boot.
            let scratch = options.run_dir.join("transient-etc");
            fs::create_dir_all(&scratch)
                .map_err(|e| fail(check, format!("{}: {e}", scratch.display())))?;
            mount(
                Some("tmpfs"),
                &scratch,
                Some("tmpfs"),
                private,
                Some("mode=0700"),
            )
            .map_err(err(format!("tmpfs at {}", scratch.display())))?;
            mounts.0.push(scratch.clone());
            let (upper, work) = (scratch.join("upper"), scratch.join("work"));
            for d in [&upper, &work] {
                fs::create_dir(d).map_err(|e| fail(check, format!("{}: {e}", d.display())))?;
            }
            let etc = newroot.join("etc");
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                etc.display(),
                upper.display(),
                work.display()
            );
            mount(
                Some("sealtree-etc"),
                &etc,
                Some("overlay"),
                private,
                Some(opts.as_str()),
            )
            .map_err(err(format!("overlay -o {opts}")))?;
            mounts.0.push(etc);
        }
    }
    let var = newroot.join("var");
    bind(&options.root.join("sealtree/var"), &var, private)?;
    mounts.0.push(var);
    // The physical root under the new one, then the new one in its place.
    let physical = newroot.join("sysroot");
    mount(
        Some(&options.root),
        &physical,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(err(format!(
        "move {} to {}",
        options.root.display(),
        physical.display()
    )))?;
    // The physical root holds var/ and every deployment's etc/ too: the
    // same files must not gain privileges by that path either.
    mount(
        None::<&str>,
        &physical,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | private,
        None::<&str>,
    )
    .map_err(err(format!("remount {} nosuid,nodev", physical.display())))?;
    mount(
        Some(&newroot),
        &options.root,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(err(format!(
        "move {} to {}",
        newroot.display(),
        options.root.display()
    )))?;
    std::mem::forget(mounts);
    Ok(())
}

/// Bind `from` on `to` with `flags` (a bind takes them only on remount).
fn bind(from: &Path, to: &Path, flags: MsFlags) -> Result<(), PrepareError> {
    let what = format!("bind {} on {}", from.display(), to.display());
    let none = None::<&str>;
    mount(Some(from), to, none, MsFlags::MS_BIND, none)
        .map_err(|e| fail("mount", format!("{what}: {e}")))?;
    mount(
        none,
        to,
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
        none,
    )
    .map_err(|e| {
        let _ = umount2(to, MntFlags::MNT_DETACH);
        fail("mount", format!("{what}, remounted {flags:?}: {e}"))
    })
}
