//! A body read at a crawl holds the repository lock for as long as it
//! lasts, and a per-read timeout does not stop a server that sends a
//! byte now and then: a [`Steady`] reader must bring at least
//! STEADY_BYTES in every STEADY_WINDOW.

use std::io::{self, Read};
use std::time::{Duration, Instant};

pub const STEADY_BYTES: u64 = 64 << 10;
pub const STEADY_WINDOW: Duration = Duration::from_secs(60);

pub struct Steady<R> {
    inner: R,
    window_start: Instant,
    in_window: u64,
}

impl<R> Steady<R> {
    pub fn new(inner: R) -> Steady<R> {
        Steady {
            inner,
            window_start: Instant::now(),
            in_window: 0,
        }
    }
}

impl<R: Read> Read for Steady<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.in_window += n as u64;
        if self.window_start.elapsed() >= STEADY_WINDOW {
            if n > 0 && self.in_window < STEADY_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} bytes in {} s: the server is stalling",
                        self.in_window,
                        STEADY_WINDOW.as_secs()
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.in_window = 0;
        }
        Ok(n)
    }
}
