//! Fetching files of a published repository over HTTP, with keep-alive
//! connections shared by all threads.

use std::io::Read;
use std::time::Duration;

/// A request that failed, naming the URL.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {what}")]
pub struct FetchError {
    pub url: String,
    pub what: String,
}

/// Gets files under one base URL.
#[derive(Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    base: String,
}

impl Fetcher {
    pub fn new(base: &str, timeout: Duration) -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(32)
            .build()
            .into();
        Fetcher {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The body of `path`, at most `limit` bytes.
    pub fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let url = self.url(path);
        let mut body = Vec::new();
        self.open(path)?
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError {
                url: url.clone(),
                what: e.to_string(),
            })?;
        if body.len() as u64 > limit {
            return Err(FetchError {
                url,
                what: format!("larger than {limit} bytes"),
            });
        }
        Ok(body)
    }

    /// `path`, or `None` when the server says 404.
    pub fn get_optional(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.get(path, limit) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.what == "HTTP 404" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A reader of the body of `path`.
    pub fn open(&self, path: &str) -> Result<impl Read + use<>, FetchError> {
        let url = self.url(path);
        let response = self.agent.get(&url).call().map_err(|e| FetchError {
            url: url.clone(),
            what: match e {
                ureq::Error::StatusCode(code) => format!("HTTP {code}"),
                other => other.to_string(),
            },
        })?;
        let reader = response.into_body().into_reader();
        Ok(ReadNaming { inner: reader, url })
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
