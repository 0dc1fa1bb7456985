//! `sealtree prepare-root`: in the initramfs, after the physical root is
//! mounted at /sysroot and before switch-root. Nothing is mounted until
//! the signature and the image digest have been checked, and the image
//! that is mounted is the one that was checked: either a file with
//! fs-verity (immutable, measured by the kernel) or a sealed in-memory
//! copy hashed here.
//!
//! Result: /sysroot is an overlayfs of the EROFS image over the object
//! store (`metacopy=on,redirect_dir=on,verity=…`), with the deployment's
//! etc/ at /etc, the shared var/ at /var, and the physical root at
//! /sysroot/sysroot.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::policy::{Policy, SignaturePolicy};
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

    let id = crate::sysroot::booted_id(&options.cmdline)
        .ok_or_else(|| fail("command line", "no sealtree=ID on the kernel command line"))?;
    if id.is_empty()
        || id.starts_with('.')
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(fail(
            "command line",
            format!("sealtree={id} is not a deployment id"),
        ));
    }
    let deploy = options.root.join("sealtree/deploy").join(&id);
    if !deploy.is_dir() {
        return Err(fail(
            "deployment",
            format!("{} does not exist", deploy.display()),
        ));
    }
    step("deployment", &mut clock);

    let (expected, signed_by) = check_signature(options, &id, &deploy)?;
    step("signature", &mut clock);

    let (image, image_verity) = checked_image(&deploy.join("image.cfs"), &expected)?;
    step("image digest", &mut clock);

    mount_root(options, &deploy, &image, image_verity)?;
    step("mount", &mut clock);

    Ok(Prepared {
        id,
        image_digest: expected,
        signed_by,
        image_verity,
        steps,
    })
}

/// The image digest the deployment must have, and who vouches for it.
fn check_signature(
    options: &PrepareOptions,
    id: &str,
    deploy: &Path,
) -> Result<(String, Option<String>), PrepareError> {
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
        let info = fs::read(deploy.join("deployment.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("image_digest")?.as_str().map(str::to_string))
            .ok_or_else(|| {
                fail(
                    "signature",
                    format!("deployment {id}: unsigned, and deployment.json names no image digest"),
                )
            })?;
        return Ok((info, None));
    }
    let read =
        |p: &Path| fs::read(p).map_err(|e| fail("signature", format!("{}: {e}", p.display())));
    let (text, sig) = (read(&text_path)?, read(&sig_path)?);
    let keys =
        sign::read_public_keys(&options.trusted).map_err(|e| fail("signature", e.to_string()))?;
    let (statement, key) = sign::verify(&text, &text_path, &sig, &sig_path, &keys)
        .map_err(|e| fail("signature", e.to_string()))?;
    Ok((statement.image_digest, Some(key.encoded())))
}

/// The image to mount, proven to have digest `expected`: the file itself
/// when the kernel measures it with fs-verity (it cannot change), else a
/// sealed in-memory copy whose bytes were hashed here.
fn checked_image(path: &Path, expected: &str) -> Result<(File, bool), PrepareError> {
    let check = "image digest";
    let mut file = File::open(path).map_err(|e| fail(check, format!("{}: {e}", path.display())))?;
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

    for (from, to) in [
        (deploy.join("etc"), newroot.join("etc")),
        (options.root.join("sealtree/var"), newroot.join("var")),
    ] {
        mount(
            Some(&from),
            &to,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err(format!("bind {} on {}", from.display(), to.display())))?;
        mounts.0.push(to);
    }
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
