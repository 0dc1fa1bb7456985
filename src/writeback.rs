//! Background writeback: while a writer is still producing data, a thread
//! asks the kernel to write what is dirty on the filesystem, so the
//! writer's final `syncfs` finds most of it on disk already instead of
//! flushing it all at the end while nothing else runs. Only a head start:
//! durability still comes from that final `syncfs`, whose errors count.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread writes back: often enough that little is dirty at
/// the end, rarely enough that the journal commits it forces stay cheap.
const INTERVAL: Duration = Duration::from_millis(50);

/// A running writeback thread for one filesystem; stopped by
/// [`Writeback::stop`] or when dropped.
pub struct Writeback {
    stopped: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writeback {
    /// Start writing back the filesystem `path` is on.
    pub fn start(path: &Path) -> Writeback {
        let stopped = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stopped);
        let dir = File::open(path);
        // Only a head start: without a thread, the final syncfs does it all.
        let thread = std::thread::Builder::new().spawn(move || {
            let Ok(dir) = dir else { return };
            let (lock, wake) = &*flag;
            let mut stop = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*stop {
                drop(stop);
                // Errors are the final syncfs's to report, on a file
                // opened before any of this (see `Staging`).
                let _ = nix::unistd::syncfs(dir.as_raw_fd());
                stop = lock.lock().unwrap_or_else(|e| e.into_inner());
                if !*stop {
                    stop = wake
                        .wait_timeout(stop, INTERVAL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        });
        Writeback {
            stopped,
            thread: Mutex::new(thread.ok()),
        }
    }

    /// Stop the thread and wait for it: after this, no writeback of ours
    /// runs beside the caller's own.
    pub fn stop(&self) {
        let (lock, wake) = &*self.stopped;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop();
    }
}
