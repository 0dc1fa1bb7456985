//! Installing the first system: what `bootc install to-disk` and `ostree
//! admin init-fs` + `os-init` + the first deploy do.
//!
//! ```text
//! DISK  GPT: 1 ESP (vfat, type C12A7328-…)   EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi
//!                                              loader/loader.conf, loader/entries/, sealtree/ID/
//!            2 root (ext4 -O verity, type 4F68BCE3-…, x86-64 root)   the sysroot
//! ```
//!
//! Plan, for a disk (a block device or an image file): build the sysroot
//! and the ESP's files in staging directories (sysroot init, pull of the
//! first commit from the source with its signature checked, deploy with
//! its entry written to the staged ESP); only then partition the disk,
//! create the root filesystem from the staged sysroot (`mkfs.ext4 -d`)
//! and the ESP (`mkfs.vfat`, files copied with mtools, entries last). A
//! source that fails its checks leaves the disk untouched; nothing is
//! mounted, so an image file needs no loop device and the host no vfat
//! driver. For mounted filesystems (`--filesystem ROOT --esp DIR`) the
//! same steps write in place.
//!
//! fs-verity is turned on for objects and images where the kernel and
//! the mounted target have it; on a disk (whose root mkfs copies from a
//! staging directory, which carries no fs-verity) and elsewhere,
//! `sealtree/verity-pending` asks the initramfs to do it, each file
//! checked against its name, on the first boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{deploy, enable_verity, io_err, Config, DeployOptions, Sysroot, SysrootError};
use crate::remote::{self, PullOptions};

/// The Discoverable Partitions type of an EFI System Partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The Discoverable Partitions type of an x86-64 root partition.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// Where systemd-boot-efi installs the boot loader.
pub const DEFAULT_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The name of the first-boot marker, under SYSROOT/sealtree/.
pub const VERITY_PENDING: &str = "verity-pending";

/// Where to install.
#[derive(Debug, Clone)]
pub enum InstallTarget {
    /// A whole disk or an image file (created with `size` bytes if it does
    /// not exist), partitioned from scratch.
    Disk { path: PathBuf, size: Option<u64> },
    /// A mounted root filesystem and a mounted ESP.
    Filesystems { root: PathBuf, esp: PathBuf },
}

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub target: InstallTarget,
    /// The repository to take the first commit from: an http(s):// or
    /// file:// URL of a published repository, or its path.
    pub source: String,
    pub branch: String,
    /// Keys the first commit (and every later one) must be signed by.
    pub trusted: Vec<PathBuf>,
    pub require_signatures: bool,
    /// Take an expired signed index from the source (old media).
    pub allow_expired: bool,
    /// The source signs no index (its origin remote is added so).
    pub unsigned_index: bool,
    /// Kernel arguments; for a disk, `root=PARTUUID=… rw` comes first.
    pub kargs: Vec<String>,
    /// systemd-boot's EFI binary.
    pub loader: PathBuf,
    /// ESP size for a disk, in bytes.
    pub esp_size: u64,
    /// Where staging directories go (a disk install only).
    pub workdir: PathBuf,
}

/// Install; `report` is told each step as it starts.
pub fn install(options: &InstallOptions, report: &mut dyn FnMut(&str)) -> Result<(), SysrootError> {
    let loader = fs::read(&options.loader).map_err(|e| {
        SysrootError::Refused(format!(
            "{}: {e} (the systemd-boot EFI binary; Debian: apt install systemd-boot-efi)",
            options.loader.display()
        ))
    })?;
    match &options.target {
        InstallTarget::Filesystems { root, esp } => {
            let partition = partition_of(esp)?;
            populate(options, root, esp, &partition, &loader, Verity::Now, report)?;
            Ok(())
        }
        InstallTarget::Disk { path, size } => install_disk(options, path, *size, &loader, report),
    }
}

fn install_disk(
    options: &InstallOptions,
    disk: &Path,
    size: Option<u64>,
    loader: &[u8],
    report: &mut dyn FnMut(&str),
) -> Result<(), SysrootError> {
    check_disk(disk, size)?;
    let esp_sectors = options.esp_size / 512;
    // FAT32 needs at least 65525 clusters: the largest cluster (up to
    // 4 KiB) that gives that many.
    let cluster_sectors = [8u64, 4, 2, 1]
        .into_iter()
        .find(|s| esp_sectors / s >= 65_600)
        .ok_or_else(|| {
            SysrootError::Refused(format!(
                "an ESP of {} MiB is too small for FAT32 (at least 34 MiB)",
                options.esp_size >> 20
            ))
        })?;
    let esp_uuid = random_uuid()?;
    let root_uuid = random_uuid()?;
    let fs_uuid = random_uuid()?;

    // Everything is staged and verified before the disk is touched: a
    // source that fails its checks leaves the disk as it was.
    let work = tempfile::Builder::new()
        .prefix("sealtree-install.")
        .tempdir_in(&options.workdir)
        .map_err(io_err(&options.workdir))?;
    let root = work.path().join("root");
    let esp = work.path().join("esp");
    for d in [&root, &esp] {
        fs::create_dir(d).map_err(io_err(d))?;
    }
    let mut options = options.clone();
    let mut kargs = vec![format!("root=PARTUUID={root_uuid}"), "rw".to_string()];
    kargs.append(&mut options.kargs);
    options.kargs = kargs;
    populate(
        &options,
        &root,
        &esp,
        &format!("PARTUUID={esp_uuid}"),
        loader,
        Verity::FirstBoot,
        report,
    )?;

    if let Some(size) = size.filter(|_| !disk.exists()) {
        report(&format!(
            "creating image file {} ({size} bytes)",
            disk.display()
        ));
        let f = fs::File::create_new(disk).map_err(io_err(disk))?;
        f.set_len(size).map_err(io_err(disk))?;
    }
    report(&format!("partitioning {} (GPT: ESP, root)", disk.display()));
    let script = format!(
        "label: gpt\nunit: sectors\n\
         start=2048, size={esp_sectors}, type={ESP_TYPE}, uuid={esp_uuid}, name=\"ESP\"\n\
         start={}, type={ROOT_TYPE}, uuid={root_uuid}, name=\"root\"\n",
        2048 + esp_sectors
    );
    run_with_input(
        Command::new("sfdisk")
            .args([
                "--quiet",
                "--wipe",
                "always",
                "--no-reread",
                "--no-tell-kernel",
            ])
            .arg(disk),
        &script,
    )?;
    let (root_start, root_sectors) = partition_extent(disk, 2)?;

    report(&format!(
        "root filesystem: ext4 with fs-verity, {} MiB, from the staged sysroot",
        (root_sectors * 512) >> 20
    ));
    run(Command::new("mkfs.ext4")
        .args([
            "-q", "-F", "-O", "verity", "-L", "sealroot", "-U", &fs_uuid, "-E",
        ])
        .arg(format!("offset={}", root_start * 512))
        .arg("-d")
        .arg(&root)
        .arg(disk)
        .arg(format!("{}k", root_sectors / 2)))?;

    report(&format!("ESP: vfat, {} MiB", options.esp_size >> 20));
    let volume_id = &esp_uuid.replace('-', "")[..8];
    run(Command::new("mkfs.vfat")
        .args([
            "-F", "32", "-n", "ESP", "-i", volume_id, "--offset", "2048", "-s",
        ])
        .arg(cluster_sectors.to_string())
        .arg(disk)
        .arg((esp_sectors / 2).to_string()))?;
    // Everything an entry names first, the entries last: an interrupted
    // copy leaves no entry pointing at a missing file.
    let image = format!("{}@@{}", disk.display(), 2048 * 512);
    let mut items: Vec<PathBuf> = fs::read_dir(&esp)
        .map_err(io_err(&esp))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&esp))?;
    items.sort_by_key(|p| p.file_name() == Some("loader".as_ref()));
    for item in items {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-Q", "-i", &image])
            .arg(&item)
            .arg("::/"))?;
    }
    report(&format!("installed on {}", disk.display()));
    Ok(())
}

/// The disk must be an image file (or one to create) or a block device
/// nothing holds: not mounted, no partition of it mounted.
fn check_disk(disk: &Path, size: Option<u64>) -> Result<(), SysrootError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let meta = match fs::metadata(disk) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if disk.starts_with("/dev") {
                return Err(SysrootError::Refused(format!(
                    "{}: no such device",
                    disk.display()
                )));
            }
            if size.is_none() {
                return Err(SysrootError::Refused(format!(
                    "{}: does not exist; give --size to create an image file",
                    disk.display()
                )));
            }
            return Ok(());
        }
        Err(e) => return Err(io_err(disk)(e)),
    };
    if meta.file_type().is_block_device() {
        // O_EXCL on a block device fails while it, or a partition of it,
        // is mounted or otherwise held.
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(disk)
            .map_err(|e| {
                SysrootError::Refused(format!(
                    "{}: in use ({e}): unmount it and its partitions first",
                    disk.display()
                ))
            })?;
        Ok(())
    } else if meta.is_file() {
        Ok(())
    } else {
        Err(SysrootError::Refused(format!(
            "{}: neither a block device nor an image file",
            disk.display()
        )))
    }
}

/// How fs-verity gets turned on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verity {
    /// Now, on the filesystem being written (mounted targets).
    Now,
    /// At first boot: a disk's root is made by mkfs from a staged copy,
    /// which carries no fs-verity.
    FirstBoot,
}

/// Initialize the sysroot at `root`, pull and deploy the first commit with
/// its kernel and entry on the ESP at `esp`, and install the loader.
fn populate(
    options: &InstallOptions,
    root: &Path,
    esp: &Path,
    esp_partition: &str,
    loader: &[u8],
    verity: Verity,
    report: &mut dyn FnMut(&str),
) -> Result<(), SysrootError> {
    report(&format!("sysroot at {}", root.display()));
    fs::create_dir_all(root.join("boot")).map_err(io_err(root))?;
    let config = Config {
        require_signatures: options.require_signatures,
        kargs: options.kargs.clone(),
        boot_partition: Some(esp_partition.to_string()),
    };
    let mut sysroot = Sysroot::init(root, &config, &options.trusted)?;
    sysroot.set_boot_dir(esp);
    fs::create_dir_all(esp.join("sealtree")).map_err(io_err(esp))?;

    let url = source_url(&options.source)?;
    report(&format!("pulling {} from {url}", options.branch));
    let repo = sysroot.repo();
    remote::add(
        repo,
        "origin",
        &url,
        &sysroot.trusted_dir(),
        &remote::AddOptions {
            unsigned_index: options.unsigned_index,
            ..Default::default()
        },
    )
    .map_err(|e| SysrootError::Refused(e.to_string()))?;
    let origin = remote::open(repo, "origin").map_err(|e| SysrootError::Refused(e.to_string()))?;
    let pull = PullOptions {
        allow_expired: options.allow_expired,
        ..Default::default()
    };
    let pulled = remote::pull(repo, &origin, &options.branch, &pull)
        .map_err(|e| SysrootError::Refused(e.to_string()))?;
    report(&format!(
        "pulled {} ({} objects, {} bytes)",
        pulled.commit, pulled.objects_fetched, pulled.bytes_fetched
    ));

    report("boot loader: systemd-boot");
    for dir in ["EFI/BOOT", "EFI/systemd"] {
        let d = esp.join(dir);
        fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    super::write_atomic(&esp.join("EFI/systemd/systemd-bootx64.efi"), loader)?;
    // The removable-media path firmware boots when it has no boot entry;
    // an ESP shared with another system keeps the one it has.
    let fallback = esp.join("EFI/BOOT/BOOTX64.EFI");
    if fallback.exists() {
        report("EFI/BOOT/BOOTX64.EFI exists: kept; add a firmware boot entry for EFI/systemd/systemd-bootx64.efi (bootctl install, efibootmgr)");
    } else {
        super::write_atomic(&fallback, loader)?;
    }

    report(&format!("deploying origin/{}", options.branch));
    let done = deploy(
        &sysroot,
        &format!("origin/{}", options.branch),
        &DeployOptions::default(),
    )?;
    report(&format!(
        "deployed {} (image {})",
        done.info.id, done.info.image_digest
    ));
    // The ESP at boot/ of the physical root, so that deploys, rollbacks
    // and blessings in the running system reach it.
    let fstab = sysroot.deployment_dir(&done.info.id).join("etc/fstab");
    let mut text = fs::read_to_string(&fstab).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{esp_partition} /sysroot/boot vfat umask=0077,shortname=winnt,flush 0 2\n"
    ));
    super::write_atomic(&fstab, text.as_bytes())?;

    let marker = sysroot.root().join("sealtree").join(VERITY_PENDING);
    if verity == Verity::FirstBoot {
        report("fs-verity: the initramfs turns it on at first boot");
        super::write_atomic(&marker, b"")?;
        sysroot.sync()?;
        return Ok(());
    }
    report("fs-verity on objects and images");
    match enable_verity(&sysroot) {
        Ok(r) if r.mismatched.is_empty() => report(&format!(
            "fs-verity enabled on {} files",
            r.enabled + r.already
        )),
        Ok(r) => {
            return Err(SysrootError::Refused(format!(
                "{} files do not match their digests, e.g. {}",
                r.mismatched.len(),
                r.mismatched[0].display()
            )))
        }
        Err(SysrootError::Refused(why)) if why.contains("has no fs-verity") => {
            report("fs-verity: not on this machine; the initramfs turns it on at first boot");
            super::write_atomic(&marker, b"")?;
        }
        Err(e) => return Err(e),
    }
    sysroot.sync()?;
    Ok(())
}

/// A URL for the source: URLs as they are, paths as file:// URLs.
fn source_url(source: &str) -> Result<String, SysrootError> {
    if source.contains("://") {
        return Ok(source.to_string());
    }
    let path = fs::canonicalize(source).map_err(io_err(Path::new(source)))?;
    Ok(format!("file://{}", path.display()))
}

/// `PARTUUID=…` of the partition mounted at `dir`.
fn partition_of(dir: &Path) -> Result<String, SysrootError> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(dir).map_err(io_err(dir))?.dev();
    let by_partuuid = Path::new("/dev/disk/by-partuuid");
    if let Ok(listing) = fs::read_dir(by_partuuid) {
        for entry in listing.flatten() {
            if fs::metadata(entry.path()).is_ok_and(|m| m.rdev() == dev) {
                return Ok(format!("PARTUUID={}", entry.file_name().to_string_lossy()));
            }
        }
    }
    Err(SysrootError::Refused(format!(
        "{}: no partition with a PARTUUID is mounted there (the ESP must be a GPT partition)",
        dir.display()
    )))
}

/// Start and size, in sectors, of partition `number` of `disk`.
fn partition_extent(disk: &Path, number: usize) -> Result<(u64, u64), SysrootError> {
    let out = run(Command::new("sfdisk").arg("--json").arg(disk))?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| SysrootError::Refused(format!("sfdisk --json {}: {e}", disk.display())))?;
    let part = &v["partitiontable"]["partitions"][number - 1];
    match (part["start"].as_u64(), part["size"].as_u64()) {
        (Some(start), Some(size)) => Ok((start, size)),
        _ => Err(SysrootError::Refused(format!(
            "{}: partition {number} not found after partitioning",
            disk.display()
        ))),
    }
}

fn random_uuid() -> Result<String, SysrootError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| SysrootError::Refused(format!("random: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, SysrootError> {
    run_with_input(cmd, "")
}

/// Run a tool; a failure names it and quotes what it said.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<Vec<u8>, SysrootError> {
    use std::io::Write;
    use std::process::Stdio;
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SysrootError::Refused(format!("{name}: {e} (is it installed?)")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input.as_bytes())
        .map_err(|e| SysrootError::Refused(format!("{name}: {e}")))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| SysrootError::Refused(format!("{name}: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(SysrootError::Refused(format!(
            "{name} failed ({}): {}",
            out.status,
            said.trim().replace('\n', "; ")
        )));
    }
    Ok(out.stdout)
}
