//! Writer locks (flock on a file, waiting with a message when another
//! writer holds it) and the temporary files a killed writer leaves.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Lock `path` exclusively; if another process holds it, say so
/// (`waiting` names what is waited for) and wait.
pub fn lock_waiting(path: &Path, waiting: &str) -> io::Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, _)) => {
            eprintln!("sealtree: waiting for {waiting}");
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
        }
    }
}

/// Files being written have this prefix until renamed into place.
pub const TEMP_PREFIX: &str = ".sealtree-";

/// Remove the temporary files (see [`TEMP_PREFIX`]) in
/// `dir`: called with the lock held, they are from a writer that died.
pub fn remove_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}
