//! Fetching files of a published repository over HTTP or HTTPS, with
//! keep-alive connections (shared by threads that share a fetcher).
//!
//! HTTPS is rustls. The roots are the system's CA store
//! (`$SSL_CERT_FILE`, else /etc/ssl/certs/ca-certificates.crt, else
//! the Mozilla roots built in), or only the CA file a remote was added
//! with (`remote add --ca`), for a private CA. Redirects are followed
//! only within the remote's scheme, host and port: one elsewhere could
//! lead a pull to another host, or from HTTPS to plain HTTP.

use std::path::Path;
use std::time::Duration;

use ureq::tls::TlsConfig;

pub use crate::tls::parse_ca;
use crate::tls::root_certs;

use super::fetch::FetchError;
use crate::steady::Steady;
use crate::url::{origin, resolve};

/// Gets files under one base `http://` or `https://` URL.
#[derive(Clone)]
pub struct HttpFetcher {
    agent: ureq::Agent,
    base: String,
}

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

impl HttpFetcher {
    /// `timeout`: how long connecting, or any read, may wait; `ca`: the
    /// only CA to trust for HTTPS (else the system's).
    pub fn new(
        base: &str,
        timeout: Duration,
        ca: Option<&Path>,
    ) -> Result<HttpFetcher, FetchError> {
        let fail = |what: String| FetchError {
            url: base.to_string(),
            what,
            not_found: false,
        };
        let mut config = ureq::Agent::config_builder()
            // No global timeout: a large object may take long, and one
            // makes ureq resolve the host in a new thread per request.
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .max_idle_connections_per_host(32)
            .max_redirects(0);
        if base.starts_with("https://") {
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(root_certs(ca).map_err(fail)?)
                    .build(),
            );
        }
        Ok(HttpFetcher {
            agent: config.build().into(),
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The same base and settings, with a connection pool of its own.
    pub fn with_own_connections(&self) -> HttpFetcher {
        HttpFetcher {
            agent: ureq::Agent::new_with_config(self.agent.config().clone()),
            base: self.base.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// A reader of the body of `path`; 404 is `not_found`.
    pub fn open(&self, path: &str) -> Result<Steady<ureq::BodyReader<'static>>, FetchError> {
        Ok(self.open_at(path, 0)?.0)
    }

    /// A reader of the body of `path` from byte `offset` on, and the
    /// offset it starts at: `offset` if the server honoured the range, 0
    /// if it sent the whole body.
    pub fn open_at(
        &self,
        path: &str,
        offset: u64,
    ) -> Result<(Steady<ureq::BodyReader<'static>>, u64), FetchError> {
        let mut url = self.url(path);
        let fail = |url: &str, what: String| FetchError {
            url: url.to_string(),
            what,
            not_found: false,
        };
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&url);
            if offset > 0 {
                request = request.header("range", format!("bytes={offset}-"));
            }
            let response = request.call().map_err(|e| FetchError {
                url: url.clone(),
                not_found: matches!(e, ureq::Error::StatusCode(404)),
                what: match e {
                    ureq::Error::StatusCode(code) => format!("HTTP {code}"),
                    other => other.to_string(),
                },
            })?;
            if !response.status().is_redirection() {
                let start = if response.status().as_u16() == 206 {
                    // Only the range asked for is taken as one.
                    let range = response
                        .headers()
                        .get("content-range")
                        .and_then(|r| r.to_str().ok())
                        .unwrap_or_default();
                    if !range.starts_with(&format!("bytes {offset}-")) {
                        return Err(fail(
                            &url,
                            format!(
                                "HTTP 206 for bytes {offset}- with content-range '{}'",
                                range.escape_debug()
                            ),
                        ));
                    }
                    offset
                } else {
                    0
                };
                return Ok((Steady::new(response.into_body().into_reader()), start));
            }
            let status = response.status().as_u16();
            let to = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| fail(&url, format!("HTTP {status} without a location")))?;
            url = self.same_origin(&url, to).ok_or_else(|| {
                fail(
                    &url,
                    format!(
                        "HTTP {status}: a redirect to {}, another scheme, host or port: refused",
                        to.escape_debug()
                    ),
                )
            })?;
        }
        Err(fail(&url, format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// `location`, resolved against `from`, if it stays on the remote's
    /// scheme, host and port.
    fn same_origin(&self, from: &str, location: &str) -> Option<String> {
        let url = resolve(from, location)?;
        (origin(&url)? == origin(&self.base)?).then_some(url)
    }
}
