//! Fetching files of a published repository over HTTP or HTTPS, with
//! keep-alive connections shared by all threads.
//!
//! HTTPS is rustls. The roots are the system's CA store
//! (`$SSL_CERT_FILE`, else /etc/ssl/certs/ca-certificates.crt, else
//! the Mozilla roots built in), or only the CA file a remote was added
//! with (`remote add --ca`), for a private CA. Redirects are refused: a
//! published repository is static files, and a redirect could lead a
//! pull to another host or scheme.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::fetch::FetchError;

/// Gets files under one base `http://` or `https://` URL.
#[derive(Clone)]
pub struct HttpFetcher {
    agent: ureq::Agent,
    base: String,
}

/// The system's CA bundle, where Debian and most distributions keep it.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificates in the PEM file `path`; at least one.
pub fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_ca(&pem, path)
}

/// The certificates in `pem` (read from `path`); at least one.
pub fn parse_ca(pem: &[u8], path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| format!("{}: {e}", path.display()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn root_certs(ca: Option<&Path>) -> Result<RootCerts, String> {
    if let Some(ca) = ca {
        return Ok(RootCerts::Specific(Arc::new(read_ca_file(ca)?)));
    }
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
    if system.exists() {
        return Ok(RootCerts::Specific(Arc::new(read_ca_file(&system)?)));
    }
    Ok(RootCerts::WebPki)
}

impl HttpFetcher {
    /// `ca`: the only CA to trust for HTTPS (else the system's).
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
            .timeout_global(Some(timeout))
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

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// A reader of the body of `path`; 404 is `not_found`.
    pub fn open(&self, path: &str) -> Result<ureq::BodyReader<'static>, FetchError> {
        let url = self.url(path);
        let response = self.agent.get(&url).call().map_err(|e| FetchError {
            url: url.clone(),
            not_found: matches!(e, ureq::Error::StatusCode(404)),
            what: match e {
                ureq::Error::StatusCode(code) => format!("HTTP {code}"),
                other => other.to_string(),
            },
        })?;
        if response.status().is_redirection() {
            let to = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere")
                .to_string();
            return Err(FetchError {
                url,
                not_found: false,
                what: format!(
                    "HTTP {}: a redirect to {to}, refused",
                    response.status().as_u16()
                ),
            });
        }
        Ok(response.into_body().into_reader())
    }
}
