//! The repository's commands that need more than one call: commit (its
//! sources and options), fsck's report, and how commits, entries and
//! changes are printed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use sealtree::repo::{self, Change, ChangeKind, CommitInfo, CommitSource, Repo};
use sealtree::sign;
use sealtree::tree::{FileType, Inode};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tree", "tar", "dump", "oci"])))]
pub struct CommitArgs {
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
    /// Read every layer of the image, none from the layer cache, and
    /// keep no record of them.
    #[arg(long, requires = "oci")]
    no_layer_cache: bool,
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

pub fn commit(repo: &Repo, args: CommitArgs) -> Result<()> {
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
            no_layer_cache: args.no_layer_cache,
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
            // Not kept up to date where it is not drawn: two updates of
            // its state per file, under a lock, are not free.
            progress: (!bar.is_hidden()).then_some(&bar),
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

pub fn fsck(repo: &Repo, repair: bool) -> Result<()> {
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

pub fn print_commit(out: &mut impl Write, info: &CommitInfo, full: bool) -> Result<()> {
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

pub fn print_entry(out: &mut impl Write, inode: &Inode, name: &[u8]) -> Result<()> {
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

pub fn print_change(out: &mut impl Write, change: &Change) -> Result<()> {
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
