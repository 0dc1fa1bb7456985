//! `sealtree prepare-root` (in the initramfs) and `sealtree uki` (on the
//! build machine): the two ends of the boot chain.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use sealtree::boot::epoch::Outcome;
use sealtree::boot::tpm::Tpm;
use sealtree::boot::{self, Policy, PrepareOptions};
use sealtree::uki;

#[derive(Args)]
pub struct PrepareRootArgs {
    /// The physical root, mounted by the initramfs.
    #[arg(long, value_name = "DIR", default_value = "/sysroot")]
    root: PathBuf,
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// The policy (signature, verity, branch, etc).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/sealtree/prepare-root.conf"
    )]
    config: PathBuf,
    /// The trusted public keys.
    #[arg(long, value_name = "DIR", default_value = "/etc/sealtree/trusted.d")]
    trusted: PathBuf,
    /// Scratch directory for the mounts.
    #[arg(long, value_name = "DIR", default_value = "/run/sealtree")]
    run_dir: PathBuf,
    /// Present when the initramfs is sealed in a UKI: its command line.
    #[arg(long, value_name = "FILE", default_value = uki::SEALED_CMDLINE)]
    sealed_cmdline: PathBuf,
    /// EFI variables, for the entry the boot loader started.
    #[arg(long, value_name = "DIR", default_value = "/sys/firmware/efi/efivars")]
    efivars: PathBuf,
    /// Present when the initramfs is sealed in a UKI: its epoch.
    #[arg(long, value_name = "FILE", default_value = uki::SEALED_EPOCH)]
    sealed_epoch: PathBuf,
    /// The TPM that keeps the epoch floor, as a tpm2-tools TCTI
    /// (default: device:/dev/tpmrm0 when the machine has a TPM; `none`:
    /// as if it had none).
    #[arg(long, value_name = "TCTI")]
    tpm: Option<String>,
}

/// systemd-boot's vendor GUID for its variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// An EFI variable holding a UTF-16 string (after 4 bytes of attributes).
fn efi_string(efivars: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{LOADER_GUID}"))).ok()?;
    let units: Vec<u16> = bytes
        .get(4..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// Every line goes to the console too (/dev/kmsg), so a refusal is seen
/// however the initramfs routes output; a failure is one line naming the
/// check.
pub fn prepare_root(args: PrepareRootArgs) -> Result<()> {
    let say = |line: &str| {
        println!("sealtree-prepare-root: {line}");
        if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            // One write, one kernel log record.
            let _ = kmsg.write_all(format!("sealtree-prepare-root: {line}\n").as_bytes());
        }
    };
    let tpm = match args.tpm.as_deref() {
        Some("none") => None,
        Some(tcti) => Some(Tpm::new(tcti)),
        None => Tpm::at_boot(),
    };
    let result = (|| {
        let cmdline = std::fs::read_to_string(&args.cmdline)
            .map_err(|e| format!("command line: {}: {e}", args.cmdline.display()))?;
        let policy = Policy::load(&args.config).map_err(|e| format!("policy: {e}"))?;
        let sealed_cmdline = match std::fs::read_to_string(&args.sealed_cmdline) {
            Ok(text) => Some(text.split_ascii_whitespace().map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("seal: {}: {e}", args.sealed_cmdline.display())),
        };
        let sealed_epoch = match &sealed_cmdline {
            None => None,
            Some(_) => match std::fs::read_to_string(&args.sealed_epoch) {
                Ok(text) => Some(text.trim().parse::<u32>().map_err(|e| {
                    format!(
                        "seal: {}: '{}': {e}",
                        args.sealed_epoch.display(),
                        text.trim()
                    )
                })?),
                // A UKI built before epochs: epoch 0.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
                Err(e) => return Err(format!("seal: {}: {e}", args.sealed_epoch.display())),
            },
        };
        let options = PrepareOptions {
            root: args.root,
            cmdline,
            policy: policy.clone(),
            trusted: args.trusted,
            run_dir: args.run_dir,
            sealed_cmdline,
            loader_entry: efi_string(&args.efivars, "LoaderEntrySelected"),
            boot_count_path: efi_string(&args.efivars, "LoaderBootCountPath"),
            sealed_epoch,
            tpm: tpm.clone(),
        };
        boot::prepare_root(&options, |step, took| {
            say(&format!("{step} ok ({:.1} ms)", took.as_secs_f64() * 1e3))
        })
        .map_err(|e| e.to_string())
        .map(|p| (p, policy, options.sealed_cmdline.is_some()))
    })();
    // Refused or not, the booted system must not write the floor; a
    // floor left writable is refused like any other TPM failure.
    let mut result = result;
    if let Some(tpm) = &tpm {
        match tpm.lock() {
            Ok(true) => say("TPM: floor write-locked until the next reboot"),
            Ok(false) => {}
            Err(e) if result.is_ok() => {
                result = Err(format!("epoch: the floor could not be write-locked: {e}"))
            }
            Err(e) => say(&format!("WARNING: TPM: {e}")),
        }
    }
    match result {
        Ok((p, policy, sealed)) => {
            for w in &p.warnings {
                say(w);
            }
            say(&match &p.floor {
                Outcome::NoTpm => format!("epoch {}: no floor kept", p.epoch),
                Outcome::Checked {
                    floor,
                    raised: Some(_),
                    ..
                } => format!("epoch {}: the TPM floor is raised to {floor}", p.epoch),
                Outcome::Checked {
                    floor,
                    held: Some(why),
                    ..
                } => format!(
                    "epoch {} above the TPM floor {floor}, which stays: {why}",
                    p.epoch
                ),
                Outcome::Checked { floor, .. } => {
                    format!("epoch {}: allowed by the TPM floor {floor}", p.epoch)
                }
            });
            let total: std::time::Duration = p.steps.iter().map(|s| s.1).sum();
            say(&format!(
                "root is deployment {}{} image {} ({}), signed by {}, {}, etc {:?}; {:.1} ms in all",
                p.id,
                if sealed { " (sealed UKI)" } else { "" },
                p.image_digest,
                if p.image_verity {
                    "fs-verity measured"
                } else {
                    "hashed in memory"
                },
                p.signed_by.as_deref().unwrap_or("nobody"),
                policy.verity.mount_option().unwrap_or("verity=off"),
                policy.etc,
                total.as_secs_f64() * 1e3
            ));
            Ok(())
        }
        Err(e) => {
            say(&format!("FAILED: {e}; not mounting an unverified root"));
            bail!("{e}")
        }
    }
}

#[derive(Subcommand)]
pub enum UkiCommand {
    /// Build a Secure Boot signed UKI from an OS tree, before the tree is
    /// committed: systemd-stub, the tree's kernel and initramfs (which
    /// hold sealtree, the trusted keys and the prepare-root policy),
    /// os-release and COMMAND LINE. Written to
    /// TREE/usr/lib/modules/KVER/uki.efi, where deploy takes it from: the
    /// tree's statement then covers the UKI too, and every deployment
    /// of the tree boots it as a type 2 entry.
    Build(UkiBuildArgs),
    /// Show a UKI's command line and os-release.
    Show { file: PathBuf },
}

#[derive(Args)]
pub struct UkiBuildArgs {
    /// The OS tree, a directory.
    tree: PathBuf,
    /// Secure Boot signing key (PEM, unencrypted), as sbsign takes it.
    #[arg(long, value_name = "FILE")]
    sb_key: PathBuf,
    /// The key's certificate (PEM), enrolled in the firmware's db.
    #[arg(long, value_name = "FILE")]
    sb_cert: PathBuf,
    /// The command line sealed in the UKI. The root is found by
    /// systemd-gpt-auto-generator (the root partition type on the disk
    /// the loader came from) unless it names root=. `rd.shell=0
    /// rd.emergency=reboot` are added unless it sets them.
    #[arg(long, value_name = "ARGS", default_value = "rw")]
    cmdline: String,
    /// Kernel version (default: the only one in usr/lib/modules).
    #[arg(long, value_name = "KVER")]
    kver: Option<String>,
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    )]
    stub: PathBuf,
    /// Where to write it (default: TREE/usr/lib/modules/KVER/uki.efi).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The security epoch of this kernel and initramfs: a machine whose
    /// floor is above it refuses to boot it. Give the epoch of the
    /// releases it goes into.
    #[arg(long, value_name = "N", default_value_t = 0)]
    epoch: u32,
}

pub fn uki(command: UkiCommand) -> Result<()> {
    match command {
        UkiCommand::Build(args) => uki_build(args),
        UkiCommand::Show { file } => {
            let image = std::fs::read(&file).with_context(|| file.display().to_string())?;
            let show = |name: &str| -> Result<String> {
                let bytes = uki::section(&image, name)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                Ok(bytes.map_or("(none)".into(), |b| String::from_utf8_lossy(b).into_owned()))
            };
            println!("cmdline: {}", show(".cmdline")?);
            print!("osrel:\n{}", show(".osrel")?);
            Ok(())
        }
    }
}

/// The first of `paths` (relative to `tree`) that is a file.
fn first_file(tree: &Path, paths: &[String], what: &str) -> Result<PathBuf> {
    paths
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{}: no {what} (looked at {})",
                tree.display(),
                paths.join(", ")
            )
        })
}

fn uki_build(args: UkiBuildArgs) -> Result<()> {
    let tree = &args.tree;
    let read = |p: &Path| std::fs::read(p).with_context(|| p.display().to_string());
    let kver = match args.kver {
        Some(k) => k,
        None => {
            let modules = tree.join("usr/lib/modules");
            let mut found: Vec<String> = std::fs::read_dir(&modules)
                .with_context(|| modules.display().to_string())?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if found.len() != 1 {
                bail!(
                    "{}: {} kernel versions ({}); choose one with --kver",
                    modules.display(),
                    found.len(),
                    found.join(" ")
                );
            }
            found.remove(0)
        }
    };
    let (kernels, initramfses) = sealtree::sysroot::kernel_candidates(&kver);
    let kernel_path = first_file(tree, &kernels, &format!("kernel {kver}"))?;
    let initramfs_path = first_file(tree, &initramfses, &format!("initramfs for kernel {kver}"))?;
    let os_release_path = first_file(
        tree,
        &["etc/os-release".into(), "usr/lib/os-release".into()],
        "os-release",
    )?;
    let mut words: Vec<String> = args
        .cmdline
        .split_ascii_whitespace()
        .map(String::from)
        .collect();
    // A refusal restarts the machine (so the loader counts the try and
    // falls back) rather than leaving a root shell in the initramfs.
    for (key, word) in [
        ("rd.shell", "rd.shell=0"),
        ("rd.emergency", "rd.emergency=reboot"),
    ] {
        if !words.iter().any(|w| w.split('=').next() == Some(key)) {
            words.push(word.to_string());
        }
    }
    if let Some(w) = words
        .iter()
        .find(|w| w.starts_with("sealtree=") || *w == "sealtree")
    {
        bail!("--cmdline: '{w}': a UKI serves every deployment of its tree; the deployment comes from the boot loader's entry");
    }
    if let Some(w) = words
        .iter()
        .find(|w| w.bytes().any(|b| b.is_ascii_control()))
    {
        bail!("--cmdline: '{}' has a control character", w.escape_debug());
    }
    let stub = read(&args.stub)?;
    let kernel = read(&kernel_path)?;
    let initramfs = read(&initramfs_path)?;
    // What is signed is the initramfs, not the tree's /etc: read the keys,
    // the policy and the units from it.
    let holds = uki::initramfs_holds(&initramfs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", initramfs_path.display()))?;
    if !holds.sealtree || !holds.prepare_root_unit {
        bail!(
            "{}: no sealtree binary or prepare-root unit in it: build it with the dracut module (dracut --add sealtree)",
            initramfs_path.display()
        );
    }
    if !holds.overrides.is_empty() {
        bail!(
            "{}: {} would override the seal's units",
            initramfs_path.display(),
            holds.overrides.join(", ")
        );
    }
    let policy = match &holds.policy {
        Some(text) => Policy::parse(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: etc/sealtree/prepare-root.conf:{e}",
                initramfs_path.display()
            )
        })?,
        None => Policy::default(),
    };
    let keys = holds.keys;
    if keys.is_empty() && policy.signature == boot::SignaturePolicy::Required {
        bail!(
            "{}: no trusted keys in it, and its policy requires signatures: nothing could boot from this UKI",
            initramfs_path.display()
        );
    }
    let os_release = String::from_utf8_lossy(&read(&os_release_path)?).into_owned();
    let image = uki::assemble(
        &uki::Parts {
            stub: &stub,
            kernel: &kernel,
            initramfs: &initramfs,
            os_release: &os_release,
            cmdline: &words,
            epoch: args.epoch,
        },
        &args.stub,
    )?;
    let output = args
        .output
        .unwrap_or_else(|| tree.join(format!("usr/lib/modules/{kver}/uki.efi")));
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut unsigned =
        tempfile::NamedTempFile::new_in(dir).with_context(|| dir.display().to_string())?;
    unsigned.write_all(&image)?;
    unsigned.flush()?;
    let signed = tempfile::NamedTempFile::new_in(dir).with_context(|| dir.display().to_string())?;
    uki::sign(unsigned.path(), &args.sb_key, &args.sb_cert, signed.path())?;
    signed.as_file().sync_all()?;
    let size = signed.as_file().metadata()?.len();
    signed
        .persist(&output)
        .with_context(|| output.display().to_string())?;
    std::fs::set_permissions(&output, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    println!(
        "uki: kernel {kver}, command line '{}', keys {}, branches {}, etc {:?}: {} ({size} bytes, signed with {})",
        words.join(" "),
        keys.join(" "),
        if policy.branches.is_empty() { "any".to_string() } else { policy.branches.join(" ") },
        policy.etc,
        output.display(),
        args.sb_cert.display()
    );
    Ok(())
}
