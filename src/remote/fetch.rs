//! Reading the files of a published repository, wherever it is: over
//! HTTP(S) (http.rs) or from a local directory named by a `file://` URL
//! (local.rs), say a USB stick or a second disk. Both behave alike: a
//! missing file is what HTTP 404 is, and every error names the URL.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::http::HttpFetcher;
use super::local::LocalFetcher;

/// A request that failed, naming the URL.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {what}")]
pub struct FetchError {
    pub url: String,
    pub what: String,
    /// The file is not there (HTTP 404, or no such local file).
    pub not_found: bool,
}

/// Gets files under one base URL: `http://`, `https://` or `file://`.
#[derive(Clone)]
pub enum Fetcher {
    Http(HttpFetcher),
    Local(LocalFetcher),
}

impl Fetcher {
    /// A fetcher for `base`; `timeout` bounds connecting and each read; `ca` is
    /// the only CA HTTPS trusts (else the system's).
    pub fn new(base: &str, timeout: Duration, ca: Option<&Path>) -> Result<Fetcher, FetchError> {
        if base.starts_with("http://") || base.starts_with("https://") {
            Ok(Fetcher::Http(HttpFetcher::new(base, timeout, ca)?))
        } else if base.starts_with("file:") {
            Ok(Fetcher::Local(LocalFetcher::new(base)?))
        } else {
            Err(FetchError {
                url: base.to_string(),
                what: "not an http://, https:// or file:// URL".into(),
                not_found: false,
            })
        }
    }

    /// A fetcher of the same files with connections of its own, for one
    /// of many threads: threads sharing one pool queue on its lock, which
    /// ureq holds while it probes a pooled connection with system calls
    /// (a pull of 42,000 objects waited on it 148,000 times).
    pub fn with_own_connections(&self) -> Fetcher {
        match self {
            Fetcher::Http(f) => Fetcher::Http(f.with_own_connections()),
            Fetcher::Local(f) => Fetcher::Local(f.clone()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        match self {
            Fetcher::Http(f) => f.url(path),
            Fetcher::Local(f) => f.url(path),
        }
    }

    /// The body of `path`, at most `limit` bytes.
    pub fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut body = Vec::new();
        self.body(path)?
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError {
                url: self.url(path),
                what: e.to_string(),
                not_found: false,
            })?;
        if body.len() as u64 > limit {
            return Err(FetchError {
                url: self.url(path),
                what: format!("larger than {limit} bytes"),
                not_found: false,
            });
        }
        Ok(body)
    }

    /// `path`, or `None` when it is not there (HTTP 404, no such file).
    pub fn get_optional(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.get(path, limit) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A reader of the body of `path`; its read errors name the URL.
    pub fn open(&self, path: &str) -> Result<impl Read + use<>, FetchError> {
        Ok(ReadNaming {
            inner: self.body(path)?,
            url: self.url(path),
        })
    }

    /// A reader of the body of `path` from byte `offset` on (to resume a
    /// download), and the offset it really starts at: 0 when the server
    /// sends the whole body instead.
    pub fn open_at(&self, path: &str, offset: u64) -> Result<(impl Read + use<>, u64), FetchError> {
        let (body, start) = match self {
            Fetcher::Http(f) => {
                let (body, start) = f.open_at(path, offset)?;
                (Body::Http(body), start)
            }
            Fetcher::Local(f) => {
                let mut file = f.open(path)?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(|e| {
                    FetchError {
                        url: self.url(path),
                        what: e.to_string(),
                        not_found: false,
                    }
                })?;
                (Body::Local(file), offset)
            }
        };
        Ok((
            ReadNaming {
                inner: body,
                url: self.url(path),
            },
            start,
        ))
    }

    fn body(&self, path: &str) -> Result<Body, FetchError> {
        Ok(match self {
            Fetcher::Http(f) => Body::Http(f.open(path)?),
            Fetcher::Local(f) => Body::Local(f.open(path)?),
        })
    }
}

enum Body {
    Http(crate::steady::Steady<ureq::BodyReader<'static>>),
    Local(std::fs::File),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::Http(r) => r.read(buf),
            Body::Local(r) => r.read(buf),
        }
    }
}

/// Read errors name the URL too.
struct ReadNaming<R> {
    inner: R,
    url: String,
}

impl<R: Read> Read for ReadNaming<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.url)))
    }
}
