//! Command-line arguments and the one library call each command makes.

mod admin;
mod boot;
mod epoch;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use sealtree::compose::{self, ComposeOptions, Source};
use sealtree::erofs::ImageOptions;
use sealtree::remote;
use sealtree::repo::{self, Change, ChangeKind, CommitInfo, CommitSource, Repo};
use sealtree::sign;
use sealtree::tree::{FileType, Inode, SourceFilters};

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
        /// Seconds one HTTP request may take.
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

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tree", "tar", "dump", "oci"])))]
struct CommitArgs {
    /// The branch to commit to.
    #[arg(short, long)]
    branch: String,
    /// Commit the tree under this directory.
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
    /// Commit the tree in this tar archive (plain, .gz or .zst).
    #[arg(long, value_name = "FILE")]
    tar: Option<PathBuf>,
    /// Commit the tree a dumpfile describes (contents already stored).
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
    /// Commit an OCI image: oci:DIR[:TAG] (an image layout),
    /// oci-archive:FILE[:TAG] (a tar of one) or
    /// docker://HOST[:PORT]/NAME[:TAG|@DIGEST] (a registry), its layers
    /// applied in order, whiteouts included. Layers committed before are
    /// neither read nor fetched again.
    #[arg(long, value_name = "REF")]
    oci: Option<String>,
    /// Registry credentials, USER:PASSWORD (default: the auth files
    /// skopeo and docker read).
    #[arg(long, value_name = "USER:PASSWORD", requires = "oci")]
    creds: Option<String>,
    /// Reach the registry over plain HTTP (a registry on a trusted network).
    #[arg(long, requires = "oci")]
    plain_http: bool,
    /// The commit message.
    #[arg(short, long, default_value = "")]
    message: String,
    /// Threads that hash and copy files (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Sign the new commit with this secret key.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// The statement's security epoch (default: the parent's). Raise it
    /// only when older releases must never boot again.
    #[arg(long, value_name = "N", requires = "sign_key")]
    epoch: Option<u32>,
}

#[derive(Args)]
struct MkcomposefsArgs {
    /// The source is a composefs dumpfile ("-" for standard input), not a directory.
    #[arg(long)]
    from_file: bool,
    /// Copy the content of files larger than 64 bytes into this object
    /// store, named by fs-verity digest (directory sources).
    #[arg(long, value_name = "DIR")]
    digest_store: Option<PathBuf>,
    /// Lowest image format version to use (default 0).
    #[arg(long, value_name = "N")]
    min_version: Option<u32>,
    /// Highest image format version to use when the tree needs it
    /// (default 1, or the minimum when only that is given).
    #[arg(long, value_name = "N")]
    max_version: Option<u32>,
    /// Record every modification time as the epoch.
    #[arg(long)]
    use_epoch: bool,
    /// Leave out all extended attributes.
    #[arg(long, conflicts_with = "user_xattrs")]
    skip_xattrs: bool,
    /// Keep only user.* extended attributes.
    #[arg(long)]
    user_xattrs: bool,
    /// Leave out block and character devices.
    #[arg(long)]
    skip_devices: bool,
    /// Print the fs-verity digest of the image.
    #[arg(long)]
    print_digest: bool,
    /// Print the fs-verity digest of the image and write no image.
    #[arg(long)]
    print_digest_only: bool,
    /// Threads that hash and copy files (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// The directory or dumpfile to read.
    source: PathBuf,
    /// Where to write the image ("-" for standard output).
    image: Option<PathBuf>,
}

#[derive(Args)]
struct DumpArgs {
    /// The composefs image to read.
    image: PathBuf,
    /// Where to write the dumpfile (default: standard output).
    dumpfile: Option<PathBuf>,
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
                        let mut f = std::fs::File::open(&object)
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
            Command::Publish { sign_key, expires } => {
                let key = sign_key.as_deref().map(sign::read_secret_key).transpose()?;
                let published = remote::publish(&open()?, key.as_ref().map(|k| (k, expires)))?;
                for (name, id) in &published.refs.branches {
                    println!("{name} {id}");
                }
                for (branch, why) in &published.unindexed {
                    eprintln!("sealtree: {branch}: not in the signed index: {why}");
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

fn commit(repo: &Repo, args: CommitArgs) -> Result<()> {
    let registry = sealtree::oci::RegistryOptions {
        creds: args.creds.clone(),
        plain_http: args.plain_http,
    };
    let source = match (&args.tree, &args.tar, &args.dump, &args.oci) {
        (Some(dir), ..) => CommitSource::Directory(dir),
        (_, Some(tar), ..) => CommitSource::Tar(tar),
        (_, _, Some(dump), _) => CommitSource::Dump(dump),
        (.., Some(reference)) => CommitSource::Oci {
            reference,
            registry: &registry,
        },
        _ => bail!("give --tree, --tar, --dump or --oci"),
    };
    // A bad key is refused before any work is done.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(sign::read_secret_key)
        .transpose()?;
    // indicatif draws only when stderr is a terminal.
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .expect("template is valid"),
    );
    let done = repo::commit(
        repo,
        source,
        &args.branch,
        &args.message,
        &repo::CommitOptions {
            threads: args.threads.unwrap_or(0) as usize,
            progress: Some(&bar),
            sign_key: sign_key.as_ref(),
            epoch: args.epoch,
        },
    );
    bar.finish_and_clear();
    let done = done?;
    for layer in &done.layers {
        let how = if layer.cached { "cached" } else { "read" };
        eprintln!("layer {}: {how}", layer.digest);
    }
    println!("{}", done.id);
    Ok(())
}

fn fsck(repo: &Repo, repair: bool) -> Result<()> {
    let r = repo::fsck(repo, repair)?;
    for d in &r.corrupt_objects {
        println!("corrupt object {}", hex::encode(d));
    }
    for (d, commit, path) in &r.missing_objects {
        println!(
            "missing object {} ({path} in commit {commit})",
            hex::encode(d)
        );
    }
    for d in &r.corrupt_images {
        println!("corrupt image {}", hex::encode(d));
    }
    for (d, commit) in &r.missing_images {
        println!("missing image {} (commit {commit})", hex::encode(d));
    }
    for (commit, what) in &r.bad_commits {
        println!("bad commit {commit}: {what}");
    }
    for p in &r.strays {
        println!("not an object: {}", p.display());
    }
    for line in &r.repaired {
        println!("repaired: {line}");
    }
    println!(
        "checked {} objects, {} images, {} commits; {} temporary files or directories (cleared by the next writer)",
        r.objects_checked,
        r.images_checked,
        r.commits_checked,
        r.temporary.len()
    );
    if !r.is_clean() {
        bail!("the repository has problems (see above)");
    }
    Ok(())
}

fn print_commit(out: &mut impl Write, info: &CommitInfo, full: bool) -> Result<()> {
    writeln!(out, "commit {}", info.id)?;
    if full {
        for p in &info.parents {
            writeln!(out, "Parent: {p}")?;
        }
    }
    writeln!(out, "Date:   {}", sealtree::clock::format_utc(info.time))?;
    writeln!(out, "Image:  {}", info.meta.image_digest)?;
    if full {
        writeln!(out, "Kernels: {}", info.meta.kernels.join(" "))?;
        writeln!(
            out,
            "Entries: {}  Content: {} bytes",
            info.meta.entries, info.meta.total_size
        )?;
    }
    if let Some(source) = &info.meta.image_source {
        // Labels come from the image: escaped, they cannot forge lines.
        writeln!(
            out,
            "Source: {} ({})",
            source.reference.escape_debug(),
            source.manifest.escape_debug()
        )?;
        for (key, value) in &source.labels {
            writeln!(
                out,
                "Label:  {}={}",
                key.escape_debug(),
                value.escape_debug()
            )?;
        }
    }
    writeln!(out)?;
    for line in info.message.lines() {
        writeln!(out, "    {line}")?;
    }
    writeln!(out)?;
    Ok(())
}

fn print_entry(out: &mut impl Write, inode: &Inode, name: &[u8]) -> Result<()> {
    let kind = match inode.file_type() {
        Some(FileType::Directory) => 'd',
        Some(FileType::Symlink) => 'l',
        Some(FileType::CharDevice) => 'c',
        Some(FileType::BlockDevice) => 'b',
        Some(FileType::Fifo) => 'p',
        Some(FileType::Socket) => 's',
        _ => '-',
    };
    write!(
        out,
        "{kind}{:04o} {:>5} {:>5} {:>10} {}",
        inode.mode & 0o7777,
        inode.uid,
        inode.gid,
        inode.size,
        name.escape_ascii()
    )?;
    if let (Some(FileType::Symlink), Some(target)) = (inode.file_type(), &inode.payload) {
        write!(out, " -> {}", target.escape_ascii())?;
    }
    writeln!(out)?;
    Ok(())
}

fn print_change(out: &mut impl Write, change: &Change) -> Result<()> {
    let path = change.path.escape_ascii();
    match &change.kind {
        ChangeKind::Added => writeln!(out, "A {path}")?,
        ChangeKind::Removed => writeln!(out, "D {path}")?,
        ChangeKind::Changed { content, metadata } => {
            write!(out, "M {path}")?;
            if let Some((old, new)) = content {
                write!(out, "  content {old} -> {new}")?;
            }
            if !metadata.is_empty() {
                write!(out, "  metadata: {}", metadata.join(", "))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn mkcomposefs(args: MkcomposefsArgs) -> Result<()> {
    match (&args.image, args.print_digest_only) {
        (None, false) => bail!("no image path given (or use --print-digest-only)"),
        (Some(_), true) => bail!("an image path cannot be given with --print-digest-only"),
        _ => {}
    }
    let (min_version, max_version) = match (args.min_version, args.max_version) {
        (None, None) => (0, 1),
        (min, max) => (min.unwrap_or(0), max.unwrap_or(0)),
    };
    let options = ComposeOptions {
        image: ImageOptions {
            min_version,
            max_version,
        },
        filters: SourceFilters {
            use_epoch: args.use_epoch,
            skip_devices: args.skip_devices,
            skip_xattrs: args.skip_xattrs,
            user_xattrs: args.user_xattrs,
        },
        threads: args.threads.unwrap_or(0) as usize,
        digest_store: args.digest_store,
    };
    let source = if args.from_file {
        Source::Dumpfile(&args.source)
    } else {
        Source::Directory(&args.source)
    };
    let composed = compose::compose(source, &options)?;
    if let Some(path) = &args.image {
        if path.as_os_str() == "-" {
            let mut stdout = io::stdout().lock();
            if stdout.is_terminal() {
                bail!("standard output is a terminal; refusing to write an image to it");
            }
            stdout.write_all(&composed.image.bytes)?;
            stdout.flush()?;
        } else {
            compose::write_file_atomic(path, &composed.image.bytes)?;
        }
    }
    if args.print_digest || args.print_digest_only {
        println!("{}", hex::encode(composed.digest));
    }
    Ok(())
}

fn composefs_dump(args: DumpArgs) -> Result<()> {
    let text = compose::dump_image(&args.image)?;
    match &args.dumpfile {
        Some(path) if path.as_os_str() != "-" => compose::write_file_atomic(path, &text)?,
        _ => io::stdout()
            .lock()
            .write_all(&text)
            .context("cannot write to standard output")?,
    }
    Ok(())
}
