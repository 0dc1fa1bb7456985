//! mkcomposefs and composefs-dump, as the reference tools take them.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use sealtree::compose::{self, ComposeOptions, ImageTarget, Source};
use sealtree::erofs::ImageOptions;
use sealtree::tree::SourceFilters;

#[derive(Args)]
pub struct MkcomposefsArgs {
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
pub struct DumpArgs {
    /// The composefs image to read.
    image: PathBuf,
    /// Where to write the dumpfile (default: standard output).
    dumpfile: Option<PathBuf>,
}

pub fn mkcomposefs(args: MkcomposefsArgs) -> Result<()> {
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
    let mut stdout = io::stdout().lock();
    let to_stdout = args.image.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if to_stdout && stdout.is_terminal() {
        bail!("standard output is a terminal; refusing to write an image to it");
    }
    let composed = compose::compose(source, &options)?;
    let target = match &args.image {
        Some(_) if to_stdout => ImageTarget::Stream(&mut stdout),
        Some(path) => ImageTarget::File(path),
        None => ImageTarget::Nowhere,
    };
    let digest = compose::emit_image(&composed.tree, &options.image, target)?;
    if args.print_digest || args.print_digest_only {
        writeln!(stdout, "{}", hex::encode(digest))?;
    }
    Ok(())
}

pub fn composefs_dump(args: DumpArgs) -> Result<()> {
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
