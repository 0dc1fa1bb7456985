//! Command-line arguments and the one library call each command makes.

mod admin;
mod boot;
mod commits;
mod composefs;
mod epoch;

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sealtree::remote;
use sealtree::repo::{self, Repo};

use commits::{commit, fsck, print_change, print_commit, print_entry, CommitArgs};
use composefs::{composefs_dump, mkcomposefs, DumpArgs, MkcomposefsArgs};
use sealtree::sign;
use sealtree::tree::FileType;

/// Atomic, verified operating-system deployments on composefs.
#[derive(Parser)]
#[command(name = "sealtree", version, about, max_term_width = 100)]
pub struct Cli {
    /// The repository (default: $SEALTREE_REPO, else /sealtree/repo).
    #[arg(long, global = true, value_name = "PATH", env = "SEALTREE_REPO")]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a composefs image from a directory or a dumpfile, byte for
    /// byte as the reference mkcomposefs does.
    Mkcomposefs(MkcomposefsArgs),
    /// Write the dumpfile describing a composefs image.
    ComposefsDump(DumpArgs),
    /// Print files' fs-verity digests (as `fsverity digest` does).
    Digest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Create a repository.
    Init,
    /// Record a tree as a new commit on a branch.
    Commit(CommitArgs),
    /// List a branch's commits, newest first.
    Log { branch: String },
    /// Show a commit and its metadata.
    Show { commit: String },
    /// List a directory (default /) of a commit.
    Ls {
        commit: String,
        path: Option<String>,
    },
    /// Write a file of a commit to standard output.
    Cat { commit: String, path: String },
    /// What changed between two commits.
    Diff { from: String, to: String },
    /// List branches and the commits they point to.
    Refs {
        /// Delete this branch instead (its commits stay until `prune`).
        #[arg(long, value_name = "BRANCH")]
        delete: Option<String>,
    },
    /// Write a commit's tree into a new directory.
    Checkout { commit: String, dir: PathBuf },
    /// Verify every object and image and every reachable commit.
    Fsck {
        /// Move corrupt objects aside and rebuild missing or corrupt images.
        #[arg(long)]
        repair: bool,
    },
    /// Remove objects and images no branch needs.
    Prune {
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// ed25519 signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign a commit: a statement naming it, its branch and image digest.
    Sign {
        commit: String,
        /// The secret key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The branch the statement names (default: the one holding the commit).
        #[arg(long)]
        branch: Option<String>,
        /// The security epoch (default: the commit's earlier statement's,
        /// else its parent's).
        #[arg(long, value_name = "N")]
        epoch: Option<u32>,
    },
    /// Check a commit's signature; says which key signed.
    Verify {
        commit: String,
        /// A public key file, or a directory of them.
        #[arg(long, value_name = "FILE|DIR")]
        trusted: PathBuf,
    },
    /// Deployments: the sysroot, boot entries, upgrades and rollback.
    Admin(admin::AdminArgs),
    /// Make the repository servable by any static HTTP server; serve the
    /// repository directory as the document root. Writes refs.json, and
    /// with --sign-key the signed index clients check for freshness.
    Publish {
        /// Sign the index (index.json, index.sig) with this secret key.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// How long clients may believe the signed index: N and s, m, h
        /// or d. Publish again before then, or clients refuse it.
        #[arg(long, value_name = "SPAN", default_value = "7d", requires = "sign_key",
              value_parser = sealtree::clock::parse_span)]
        expires: i64,
        /// Static deltas: for each branch in the signed index, a delta to
        /// its commit from each of its last N ancestors (made once, then
        /// reused), listed in the index. Pulls from those commits fetch
        /// the delta instead of every changed file.
        #[arg(long, value_name = "N", default_value_t = 0, requires = "sign_key")]
        deltas: usize,
    },
    /// Remote repositories to pull from.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Fetch a branch from a remote into NAME/BRANCH: metadata, then the
    /// signed statement, then only the missing objects.
    Pull {
        remote: String,
        branch: String,
        /// Requests in flight at once.
        #[arg(long, value_name = "N", default_value_t = 8)]
        jobs: usize,
        /// Take a commit older than the newest this repository has seen
        /// of the branch (from any remote, or deployed).
        #[arg(long)]
        allow_downgrade: bool,
        /// Take an expired signed index (old media, air-gapped machines).
        #[arg(long)]
        allow_expired: bool,
        /// Fetch changed files whole, even where the index lists a delta.
        #[arg(long)]
        no_deltas: bool,
    },
    /// In the initramfs: verify the deployment named by sealtree= on the
    /// kernel command line (or, sealed in a UKI, by the boot loader's
    /// entry) and mount its image as the new root.
    PrepareRoot(boot::PrepareRootArgs),
    /// Unified kernel images for Secure Boot.
    #[command(subcommand)]
    Uki(boot::UkiCommand),
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add a remote; its statements must verify against the keys given.
    ///
    /// URL is where a published repository is: http:// or https://, or
    /// a local directory for offline updates (a USB stick, a second disk)
    /// as file:///absolute/path or as a path (stored as a file:// URL; a
    /// relative path is made absolute, so it must exist). Pulls from any of
    /// them are verified alike.
    Add {
        name: String,
        /// http(s)://HOST/PATH, file:///PATH, or a directory.
        #[arg(value_name = "URL|DIR")]
        url: String,
        /// A public key file, or a directory of them.
        #[arg(long, value_name = "FILE|DIR")]
        trusted: PathBuf,
        /// Seconds connecting, or any read of an answer, may wait.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// For https://: trust only the CA certificates in this PEM file
        /// (a private CA), not the system's.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The publisher signs no index: read branches from refs.json,
        /// with no protection against a mirror serving an old one.
        #[arg(long)]
        unsigned_index: bool,
    },
    /// Remote names and their URLs.
    List,
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a key pair (files: base64 of the raw key bytes, as ostree uses).
    Generate {
        /// Where to write the secret key (created mode 0600).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// Where to write the public key.
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> Result<()> {
        let repo_path = self.repo.unwrap_or_else(|| PathBuf::from("/sealtree/repo"));
        let open = || Repo::open(&repo_path);
        match self.command {
            Command::Mkcomposefs(args) => mkcomposefs(args),
            Command::ComposefsDump(args) => composefs_dump(args),
            Command::Digest { files } => {
                for path in files {
                    let mut file = std::fs::File::open(&path)
                        .with_context(|| format!("{}", path.display()))?;
                    let (digest, _) = sealtree::fsverity::digest_reader(&mut file)
                        .with_context(|| format!("{}", path.display()))?;
                    println!("sha256:{} {}", hex::encode(digest), path.display());
                }
                Ok(())
            }
            Command::Init => {
                Repo::init(&repo_path)?;
                Ok(())
            }
            Command::Commit(args) => commit(&open()?, args),
            Command::Log { branch } => {
                let repo = open()?;
                let history = repo.history()?;
                let head = history
                    .branch(&branch)?
                    .with_context(|| format!("no branch named '{branch}'"))?;
                let mut out = io::stdout().lock();
                for info in history.log(head)? {
                    print_commit(&mut out, &info, false)?;
                }
                Ok(())
            }
            Command::Show { commit } => {
                let repo = open()?;
                let history = repo.history()?;
                let info = history.info(history.resolve(&commit)?)?;
                print_commit(&mut io::stdout().lock(), &info, true)
            }
            Command::Ls { commit, path } => {
                let repo = open()?;
                let tree = repo.tree(repo.history()?.resolve(&commit)?)?;
                let path = path.unwrap_or_else(|| "/".into());
                let id = tree
                    .lookup(path.as_bytes())
                    .with_context(|| format!("{path}: no such file in {commit}"))?;
                let mut out = io::stdout().lock();
                if tree.inodes[id].is_dir() {
                    for (name, entry) in &tree.inodes[id].entries {
                        print_entry(&mut out, &tree.inodes[entry.inode], name)?;
                    }
                } else {
                    print_entry(&mut out, &tree.inodes[id], path.as_bytes())?;
                }
                Ok(())
            }
            Command::Cat { commit, path } => {
                let repo = open()?;
                let tree = repo.tree(repo.history()?.resolve(&commit)?)?;
                let id = tree
                    .lookup(path.as_bytes())
                    .with_context(|| format!("{path}: no such file in {commit}"))?;
                let inode = &tree.inodes[id];
                if inode.file_type() != Some(FileType::Regular) {
                    bail!("{path}: not a regular file");
                }
                let mut out = io::stdout().lock();
                match (&inode.content, &inode.digest) {
                    (Some(data), _) => out.write_all(data)?,
                    (None, Some(d)) if inode.size > 0 => {
                        let object = repo.objects().path(d);
                        let mut f = repo
                            .objects()
                            .open_object(d)
                            .with_context(|| format!("object {}", object.display()))?;
                        io::copy(&mut f, &mut out)?;
                    }
                    _ => {}
                }
                Ok(())
            }
            Command::Diff { from, to } => {
                let repo = open()?;
                let history = repo.history()?;
                let a = repo.tree(history.resolve(&from)?)?;
                let b = repo.tree(history.resolve(&to)?)?;
                let mut out = io::stdout().lock();
                for change in repo::diff(&a, &b) {
                    print_change(&mut out, &change)?;
                }
                Ok(())
            }
            Command::Refs { delete } => {
                let repo = open()?;
                if let Some(branch) = delete {
                    let _lock = repo.lock()?;
                    return Ok(repo.history()?.delete_branch(&branch)?);
                }
                let mut out = io::stdout().lock();
                for (name, id) in repo.history()?.branches()? {
                    writeln!(out, "{name} {id}")?;
                }
                Ok(())
            }
            Command::Checkout { commit, dir } => {
                let repo = open()?;
                let id = repo.history()?.resolve(&commit)?;
                repo::checkout(&repo, id, &dir)?;
                Ok(())
            }
            Command::Fsck { repair } => fsck(&open()?, repair),
            Command::Key(KeyCommand::Generate { secret, public }) => {
                let key = sign::generate(&secret, &public)?;
                println!("{}", key.encoded());
                Ok(())
            }
            Command::Sign {
                commit,
                key,
                branch,
                epoch,
            } => {
                let repo = open()?;
                let id = repo.history()?.resolve(&commit)?;
                let branch = match branch {
                    Some(b) => b,
                    None => repo::branch_of(&repo, &commit, id)?,
                };
                let key = sign::read_secret_key(&key)?;
                let _lock = repo.lock()?;
                let signed = repo::sign_commit(&repo, id, &branch, &key, epoch)?;
                println!(
                    "signed {id} ({branch}, epoch {}) with {}",
                    signed.statement.epoch,
                    key.public().encoded()
                );
                Ok(())
            }
            Command::Verify { commit, trusted } => {
                let repo = open()?;
                let id = repo.history()?.resolve(&commit)?;
                let keys = sign::read_public_keys(&trusted)?;
                let stored = repo
                    .stored_statement(id)?
                    .with_context(|| format!("commit {id} is not signed"))?;
                let (text_path, sig_path) = repo.statement_paths(id);
                let (statement, key) = sign::verify(
                    &stored.text,
                    &text_path,
                    &stored.signature,
                    &sig_path,
                    &keys,
                )?;
                if statement.commit.parse::<gix::ObjectId>().ok() != Some(id) {
                    bail!(
                        "{}: the statement is for commit {}, not {id}",
                        text_path.display(),
                        statement.commit
                    );
                }
                println!(
                    "good signature on {id} by {} ({})",
                    key.encoded(),
                    key.origin.display()
                );
                println!(
                    "branch {} version {} image {}",
                    statement.branch, statement.version, statement.image_digest
                );
                Ok(())
            }
            Command::Admin(args) => admin::run(args),
            Command::Publish {
                sign_key,
                expires,
                deltas,
            } => {
                let key = sign_key.as_deref().map(sign::read_secret_key).transpose()?;
                let published =
                    remote::publish(&open()?, key.as_ref().map(|k| (k, expires)), deltas)?;
                for (name, id) in &published.refs.branches {
                    println!("{name} {id}");
                }
                for (branch, why) in &published.unindexed {
                    eprintln!("sealtree: {branch}: not in the signed index: {why}");
                }
                for delta in &published.deltas {
                    let how = if delta.reused { "kept" } else { "made" };
                    println!("delta {} {how}, {} bytes", delta.name, delta.bytes);
                }
                for (commits, why) in &published.skipped_deltas {
                    eprintln!("sealtree: no delta for {commits}: {why}");
                }
                if let Some(index) = &published.index {
                    println!(
                        "index signed, published {}, expires {}",
                        sealtree::clock::format_utc(index.published),
                        sealtree::clock::format_utc(index.expires)
                    );
                }
                Ok(())
            }
            Command::Remote(RemoteCommand::Add {
                name,
                url,
                trusted,
                timeout,
                ca,
                unsigned_index,
            }) => Ok(remote::add(
                &open()?,
                &name,
                &url,
                &trusted,
                &remote::AddOptions {
                    timeout_secs: timeout,
                    ca: ca.as_deref(),
                    unsigned_index,
                },
            )?),
            Command::Remote(RemoteCommand::List) => {
                for (name, url) in remote::list(&open()?)? {
                    println!("{name} {url}");
                }
                Ok(())
            }
            Command::Remote(RemoteCommand::Remove { name }) => Ok(remote::remove(&open()?, &name)?),
            Command::Pull {
                remote: name,
                branch,
                jobs,
                allow_downgrade,
                allow_expired,
                no_deltas,
            } => {
                let repo = open()?;
                let remote = remote::open(&repo, &name)?;
                let bar = indicatif::ProgressBar::new(0).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{wide_bar} {pos}/{len} objects {msg} {per_sec} {eta}",
                    )
                    .expect("template is valid"),
                );
                let report = remote::pull(
                    &repo,
                    &remote,
                    &branch,
                    &remote::PullOptions {
                        jobs,
                        progress: Some(&bar),
                        allow_downgrade,
                        allow_expired,
                        no_deltas,
                        ..Default::default()
                    },
                );
                bar.finish_and_clear();
                let report = report?;
                println!(
                    "{name}/{branch} {}: {} objects fetched ({} bytes), {} already here; signed by {}",
                    report.commit,
                    report.objects_fetched,
                    report.bytes_fetched,
                    report.objects_present,
                    report.signed_by
                );
                if let Some((delta, rebuilt, bytes)) = &report.delta {
                    println!("delta {delta}: {rebuilt} objects rebuilt from {bytes} bytes");
                }
                if let Some(why) = &report.delta_fallback {
                    eprintln!("sealtree: {why}; fetched whole what it did not rebuild");
                }
                if let Some((published, expires)) = report.index {
                    println!(
                        "signed index published {}, expires {}",
                        sealtree::clock::format_utc(published),
                        sealtree::clock::format_utc(expires)
                    );
                }
                Ok(())
            }
            Command::PrepareRoot(args) => boot::prepare_root(args),
            Command::Uki(command) => boot::uki(command),
            Command::Prune { dry_run } => {
                let report = repo::prune(&open()?, dry_run)?;
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{verb} {} objects and {} images, {} bytes",
                    report.objects_removed, report.images_removed, report.bytes_freed
                );
                Ok(())
            }
        }
    }
}
