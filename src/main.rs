//! The `sealtree` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    raise_open_file_limit();
    fix_mmap_threshold();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sealtree: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keep glibc's threshold for serving allocations by mmap where it
/// starts. glibc raises it to the size of each mmapped block freed (up to
/// 32 MiB): once a growing hash set has given back a table, a commit's
/// per-directory lists come from the heap among small allocations that
/// outlive them, and their memory is not returned when they are freed
/// (a million-file commit peaked at 593 MiB instead of 366).
fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; it is
    // called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Raise the soft limit on open files to the hard one: a commit keeps
/// the store's 256 prefix directories open beside the files it copies,
/// more than a soft limit of 256 (or less) allows. Left as it is if the
/// limits cannot be read or set.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
