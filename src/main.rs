//! The `sealtree` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sealtree: {err:#}");
            ExitCode::FAILURE
        }
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
