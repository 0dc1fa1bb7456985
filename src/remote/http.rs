//! Fetching files of a published repository over HTTP, with keep-alive
//! connections shared by all threads.

use std::time::Duration;

use super::fetch::FetchError;

/// Gets files under one base `http://` or `https://` URL.
#[derive(Clone)]
pub struct HttpFetcher {
    agent: ureq::Agent,
    base: String,
}

impl HttpFetcher {
    pub fn new(base: &str, timeout: Duration) -> HttpFetcher {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(32)
            .build()
            .into();
        HttpFetcher {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
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
        Ok(response.into_body().into_reader())
    }
}
