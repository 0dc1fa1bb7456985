//! `sealtree admin …`: the sysroot, its deployments and boot entries.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use sealtree::sysroot::{self, Config, DeployOptions, SignatureState, Sysroot};

#[derive(Args)]
pub struct AdminArgs {
    /// The physical root holding sealtree/ and boot/ (default:
    /// $SEALTREE_SYSROOT, else /sysroot, where a booted system has it).
    #[arg(
        long,
        value_name = "DIR",
        env = "SEALTREE_SYSROOT",
        default_value = "/sysroot"
    )]
    sysroot: PathBuf,
    /// The kernel command line that says which deployment is booted.
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make a directory a sysroot: repository, deploy/, var/, boot/.
    Init {
        /// Refuse to deploy commits without a valid signature.
        #[arg(long)]
        require_signatures: bool,
        /// Install these public key files as trusted.
        #[arg(long, value_name = "FILE")]
        trusted: Vec<PathBuf>,
        /// Kernel arguments every deployment starts from (e.g. root=UUID=…).
        #[arg(long, value_name = "ARG")]
        karg: Vec<String>,
    },
    /// Install the first system: partition a disk (or an image file) with
    /// an ESP and a root filesystem, or use mounted ones; install
    /// systemd-boot; initialize the sysroot; pull, verify and deploy the
    /// first commit; turn fs-verity on.
    Install(InstallArgs),
    /// Deploy a commit (branch or id) and make it the default.
    Deploy {
        commit: String,
        /// A kernel argument to add (repeatable).
        #[arg(long, value_name = "K=V")]
        karg: Vec<String>,
        /// Prepare everything; switch the boot entry at shutdown.
        #[arg(long)]
        stage: bool,
        /// Deploy a commit whose epoch is below the TPM's floor (it will
        /// not boot here; for recovery media written from this machine).
        #[arg(long)]
        allow_below_floor: bool,
    },
    /// Print the epoch floor the TPM keeps.
    Epoch,
    /// Deployments in boot order, with their state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Make the rollback deployment the default.
    Rollback,
    /// Remove a deployment.
    Undeploy { id: String },
    /// Keep a deployment through cleanup.
    Pin {
        id: String,
        #[arg(long)]
        unpin: bool,
    },
    /// Remove all but the default, booted, pinned, staged and one rollback
    /// deployment, then prune the store.
    Cleanup,
    /// Change the default deployment's kernel arguments.
    Kargs {
        #[arg(long, value_name = "K=V")]
        append: Vec<String>,
        #[arg(long, value_name = "K")]
        delete: Vec<String>,
    },
    /// Switch to the staged deployment (run at shutdown).
    FinalizeStaged,
    /// Mark the booted deployment's entry as good (drop its boot counter).
    Bless,
    /// Pull the booted deployment's branch and stage it for the next boot.
    Upgrade {
        /// The remote (default: the only one).
        #[arg(long)]
        remote: Option<String>,
        /// Only say whether there is an update (and what it changes).
        #[arg(long)]
        check: bool,
        /// Take an expired signed index (old media, air-gapped machines).
        #[arg(long)]
        allow_expired: bool,
    },
    /// Turn fs-verity on for every object and image (after moving the
    /// sysroot onto a filesystem that has it); each must measure to its
    /// name.
    EnableVerity,
}

#[derive(Args)]
struct InstallArgs {
    /// A whole disk or a disk image file: repartitioned, everything on it lost.
    #[arg(long, value_name = "DEVICE-OR-FILE", conflicts_with_all = ["filesystem", "esp"])]
    disk: Option<PathBuf>,
    /// Create the image file with this size when it does not exist (e.g. 4G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// A mounted root filesystem to install into (with --esp).
    #[arg(long, value_name = "DIR", requires = "esp")]
    filesystem: Option<PathBuf>,
    /// The mounted EFI System Partition (with --filesystem).
    #[arg(long, value_name = "DIR", requires = "filesystem")]
    esp: Option<PathBuf>,
    /// The repository holding the first commit: a path, or the URL of a
    /// published repository (http://, https://, file://).
    #[arg(long, value_name = "REPO-OR-URL")]
    source: String,
    /// The branch to install; later upgrades follow it.
    #[arg(long, value_name = "BRANCH")]
    branch: String,
    /// Public keys deployments must be signed by (repeatable).
    #[arg(long, value_name = "FILE", required = true)]
    trusted: Vec<PathBuf>,
    /// Accept unsigned commits later (default: signatures required).
    #[arg(long)]
    allow_unsigned: bool,
    /// Take the source's expired signed index (old install media).
    #[arg(long)]
    allow_expired: bool,
    /// The source signs no index: read its branches from refs.json.
    #[arg(long)]
    unsigned_index: bool,
    /// A kernel argument (repeatable); a disk install puts root=PARTUUID=… rw first.
    #[arg(long, value_name = "ARG")]
    karg: Vec<String>,
    /// systemd-boot's EFI binary.
    #[arg(long, value_name = "FILE", default_value = sysroot::DEFAULT_LOADER)]
    loader: PathBuf,
    /// Size of the ESP on a disk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "512M")]
    esp_size: u64,
    /// Where a disk install stages the sysroot before writing it.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    workdir: PathBuf,
}

/// `4G`, `512M`, `100K` or bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("'{s}': unit must be K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn install(args: InstallArgs) -> Result<()> {
    let target = match (args.disk, args.filesystem, args.esp) {
        (Some(path), None, None) => sysroot::InstallTarget::Disk {
            path,
            size: args.size,
        },
        (None, Some(root), Some(esp)) => sysroot::InstallTarget::Filesystems { root, esp },
        _ => anyhow::bail!("give --disk, or --filesystem and --esp"),
    };
    let options = sysroot::InstallOptions {
        target,
        source: args.source,
        branch: args.branch,
        trusted: args.trusted,
        require_signatures: !args.allow_unsigned,
        allow_expired: args.allow_expired,
        unsigned_index: args.unsigned_index,
        kargs: args.karg,
        loader: args.loader,
        esp_size: args.esp_size,
        workdir: args.workdir,
    };
    sysroot::install(&options, &mut |step| println!("install: {step}"))?;
    Ok(())
}

pub fn run(args: AdminArgs) -> Result<()> {
    if let AdminCommand::Install(install_args) = args.command {
        return install(install_args);
    }
    if let AdminCommand::Init {
        require_signatures,
        trusted,
        karg,
    } = &args.command
    {
        let config = Config {
            require_signatures: *require_signatures,
            kargs: karg.clone(),
            boot_partition: None,
        };
        Sysroot::init(&args.sysroot, &config, trusted)?;
        return Ok(());
    }
    let mut sysroot = Sysroot::open(&args.sysroot)?;
    // Outside a booted sealtree system there is simply no booted deployment.
    if let Ok(cmdline) = std::fs::read_to_string(&args.cmdline) {
        sysroot.set_cmdline(&cmdline);
        // A sealed UKI's command line names no deployment: prepare-root
        // left the one it mounted in /run.
        if sysroot.booted().is_none() && args.cmdline == Path::new("/proc/cmdline") {
            if let Ok(id) = std::fs::read_to_string("/run/sealtree/booted") {
                sysroot.set_booted(id.trim());
            }
        }
    }
    match args.command {
        AdminCommand::Init { .. } | AdminCommand::Install(_) => unreachable!("handled above"),
        AdminCommand::Deploy {
            commit,
            karg,
            stage,
            allow_below_floor,
        } => {
            let floor = if allow_below_floor {
                None
            } else {
                super::epoch::machine_floor().map(|f| f.epoch)
            };
            let done = sysroot::deploy(
                &sysroot,
                &commit,
                &DeployOptions {
                    kargs: karg,
                    stage,
                    floor,
                },
            )?;
            for path in &done.etc_kept_local {
                println!("etc: kept local change {path}");
            }
            for path in &done.info.etc_conflicts {
                println!("etc: conflict {path} (local version kept)");
            }
            let what = if done.staged { "staged" } else { "deployed" };
            println!(
                "{what} {} (commit {}, image {})",
                done.info.id, done.info.commit, done.info.image_digest
            );
        }
        AdminCommand::Status { json } => {
            let floor = super::epoch::machine_floor().map(|f| f.epoch);
            let status = sysroot::status(&sysroot)?.with_floor(floor);
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        AdminCommand::Epoch => super::epoch::print_epoch()?,
        AdminCommand::Rollback => {
            // prepare-root would refuse it, and the loader fall back.
            if let Some(floor) = super::epoch::machine_floor() {
                let status = sysroot::status(&sysroot)?.with_floor(Some(floor.epoch));
                if let Some(d) = status.deployments.iter().find(|d| d.rollback) {
                    if d.floor_allows == Some(false) {
                        anyhow::bail!(
                            "the rollback deployment {} is of epoch {}, below the floor {} this machine's TPM keeps: it would not boot",
                            d.id,
                            d.epoch,
                            floor.epoch
                        );
                    }
                }
            }
            let id = sysroot::rollback(&sysroot)?;
            println!("default is now {id}");
        }
        AdminCommand::Undeploy { id } => sysroot::undeploy(&sysroot, &id)?,
        AdminCommand::Pin { id, unpin } => sysroot::pin(&sysroot, &id, !unpin)?,
        AdminCommand::Cleanup => {
            let report = sysroot::cleanup(&sysroot)?;
            for id in &report.removed {
                println!("removed deployment {id}");
            }
            println!(
                "pruned {} objects and {} images, {} bytes",
                report.prune.objects_removed, report.prune.images_removed, report.prune.bytes_freed
            );
        }
        AdminCommand::Kargs { append, delete } => {
            let options = sysroot::kargs(&sysroot, &append, &delete)?;
            println!("{}", options.join(" "));
        }
        AdminCommand::FinalizeStaged => match sysroot::finalize_staged(&sysroot)? {
            Some(id) => println!("default is now {id}"),
            None => println!("nothing staged"),
        },
        AdminCommand::Upgrade {
            remote,
            check,
            allow_expired,
        } => {
            let bar = indicatif::ProgressBar::new(0);
            let floor = super::epoch::machine_floor().map(|f| f.epoch);
            let r = sysroot::upgrade(
                &sysroot,
                &sysroot::UpgradeOptions {
                    remote: remote.as_deref(),
                    check,
                    floor,
                    allow_expired,
                },
                Some(&bar),
            );
            bar.finish_and_clear();
            let r = r?;
            if r.from == r.to {
                println!("{}/{}: up to date ({})", r.remote, r.branch, r.to);
                return Ok(());
            }
            use sealtree::repo::ChangeKind;
            let count =
                |f: fn(&ChangeKind) -> bool| r.changes.iter().filter(|c| f(&c.kind)).count();
            println!(
                "{}/{}: {} -> {}: {} added, {} removed, {} changed",
                r.remote,
                r.branch,
                r.from,
                r.to,
                count(|k| matches!(k, ChangeKind::Added)),
                count(|k| matches!(k, ChangeKind::Removed)),
                count(|k| matches!(k, ChangeKind::Changed { .. })),
            );
            match &r.staged {
                Some(id) => println!(
                    "staged {id} ({} objects, {} bytes fetched); it becomes the default at shutdown",
                    r.objects_fetched, r.bytes_fetched
                ),
                None => println!("update available"),
            }
        }
        AdminCommand::EnableVerity => {
            let r = sysroot::enable_verity(&sysroot)?;
            println!(
                "fs-verity enabled on {} files ({} had it already)",
                r.enabled, r.already
            );
            if !r.mismatched.is_empty() {
                for p in &r.mismatched {
                    println!("digest mismatch: {}", p.display());
                }
                anyhow::bail!("{} files do not match their digests", r.mismatched.len());
            }
        }
        AdminCommand::Bless => {
            let id = sysroot
                .booted()
                .context("not booted into a sealtree deployment")?
                .to_string();
            if sysroot::bless(&sysroot)? {
                println!("blessed {id}");
            }
        }
    }
    Ok(())
}

fn print_status(status: &sysroot::Status) {
    if let Some(d) = status.deployments.iter().find(|d| d.failed) {
        let now = status.deployments.iter().find(|d| d.default);
        println!(
            "deployment {} failed its boot tries; the loader now boots {}",
            d.id,
            now.map_or("nothing", |n| n.id.as_str())
        );
    }
    for d in &status.deployments {
        let mut marks = Vec::new();
        for (on, mark) in [
            (d.default, "default"),
            (d.booted, "booted"),
            (d.rollback, "rollback"),
            (d.staged, "staged"),
            (d.pinned, "pinned"),
        ] {
            if on {
                marks.push(mark);
            }
        }
        println!("{} {}", d.id, marks.join(" "));
        println!(
            "    commit  {} ({})",
            d.commit,
            d.branch.as_deref().unwrap_or("-")
        );
        println!("    image   {}", d.image_digest);
        println!("    kernel  {}", d.kernel);
        match &d.signature {
            SignatureState::Valid { key } => println!("    signed  by {key}"),
            SignatureState::Unsigned => println!("    signed  no"),
            SignatureState::Invalid { error } => println!("    signed  INVALID: {error}"),
        }
        match (d.floor_allows, status.floor) {
            (Some(false), Some(floor)) => println!(
                "    epoch   {}: BELOW THE FLOOR {floor}, prepare-root refuses it",
                d.epoch
            ),
            (Some(true), Some(floor)) => println!("    epoch   {} (floor {floor})", d.epoch),
            _ => println!("    epoch   {}", d.epoch),
        }
        match (d.tries_left, d.tries_done) {
            (Some(0), Some(done)) => println!(
                "    tries   FAILED: {done} boots without reaching boot-complete; the loader skips it"
            ),
            (Some(left), Some(done)) => {
                println!("    tries   {left} left, {done} done (not yet blessed)")
            }
            _ => {}
        }
        if !d.kargs.is_empty() {
            println!("    kargs   {}", d.kargs.join(" "));
        }
        for path in &d.etc_conflicts {
            println!("    etc conflict {path}");
        }
    }
}
