//! The certificate authorities HTTPS connections trust: the system's CA
//! store (`$SSL_CERT_FILE`, else /etc/ssl/certs/ca-certificates.crt,
//! else the Mozilla roots built in), or one given CA file.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

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

/// The roots HTTPS is checked against: only `ca` when given, else the
/// system's CA store.
pub fn root_certs(ca: Option<&Path>) -> Result<RootCerts, String> {
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
