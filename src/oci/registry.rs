//! Images in a registry (`docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`),
//! read through the distribution API v2: the manifest by tag or digest,
//! then blobs by digest, each checked as any other blob is. Anonymous,
//! basic and bearer-token access (the token asked of the realm the
//! registry's `WWW-Authenticate` names), with credentials from `--creds`
//! or the auth files skopeo and docker read.

use std::cell::RefCell;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::image::{Blobs, JSON_LIMIT};
use super::{invalid, Descriptor, OciError, INDEX_TYPE, MANIFEST_TYPES};
use crate::steady::Steady;

/// How to reach registries.
#[derive(Debug, Default, Clone)]
pub struct RegistryOptions {
    /// `USER:PASSWORD`, else what an auth file holds for the registry.
    pub creds: Option<String>,
    /// Plain HTTP instead of HTTPS (a registry on a trusted network).
    pub plain_http: bool,
}

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Docker Hub's names, and the API host behind them.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// `HOST[:PORT]/NAME[:TAG|@DIGEST]` taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// As written (`docker.io` for Docker Hub).
    pub host: String,
    pub name: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| format!("docker://{}: {why}", text.escape_debug());
        let (first, rest) = text.split_once('/').unwrap_or(("", text));
        let is_host = first.contains(['.', ':']) || first == "localhost";
        let (host, path) = if is_host {
            (first.to_string(), rest)
        } else {
            (DOCKER_HUB.to_string(), text)
        };
        let (name, reference) = match path.split_once('@') {
            Some((name, digest)) => {
                if !is_sha256(digest) {
                    return Err(bad("a digest is sha256:<64 hex digits>"));
                }
                (name, digest.to_string())
            }
            None => match path.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag.to_string()),
                _ => (path, "latest".to_string()),
            },
        };
        let name_ok = !name.is_empty()
            && name.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            });
        if !name_ok {
            return Err(bad(
                "the repository name is lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        let tag_ok = reference.starts_with("sha256:")
            || (reference.len() <= 128
                && reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')));
        if !tag_ok {
            return Err(bad(
                "a tag is at most 128 letters, digits, '_', '.' and '-'",
            ));
        }
        let name = if host == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        Ok(ImageRef {
            host,
            name,
            reference,
        })
    }

    fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A session with one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    image: ImageRef,
    base: String,
    plain_http: bool,
    /// `USER:PASSWORD`.
    creds: Option<String>,
    /// The Authorization header that worked, once one was needed.
    auth: RefCell<Option<String>>,
    /// The manifest fetched by tag, kept so it is not fetched twice.
    top: RefCell<Option<(String, Vec<u8>)>>,
}

impl Registry {
    pub fn new(image: ImageRef, options: &RegistryOptions) -> Result<Registry, OciError> {
        let scheme = if options.plain_http { "http" } else { "https" };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(crate::tls::root_certs(None).map_err(invalid)?)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .max_redirects(0)
            .tls_config(tls)
            .build()
            .into();
        let creds = match &options.creds {
            Some(c) if !c.contains(':') => {
                return Err(invalid("--creds: give USER:PASSWORD".into()));
            }
            Some(c) => Some(c.clone()),
            None => auth_file_creds(&image)?,
        };
        Ok(Registry {
            agent,
            base: format!("{scheme}://{}/v2/{}", image.api_host(), image.name),
            image,
            plain_http: options.plain_http,
            creds,
            auth: RefCell::new(None),
            top: RefCell::new(None),
        })
    }

    /// The descriptor of the manifest or index the reference names.
    pub fn top(&self) -> Result<Descriptor, OciError> {
        let url = format!("{}/manifests/{}", self.base, self.image.reference);
        let response = self.get(&url, Some(&manifest_accept()))?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let mut body = response.into_body();
        let bytes = body
            .with_config()
            .limit(JSON_LIMIT)
            .read_to_vec()
            .map_err(|e| invalid(format!("{url}: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if is_sha256(&self.image.reference) && digest != self.image.reference {
            return Err(invalid(format!(
                "{url}: the manifest has digest {digest}, not the one asked for"
            )));
        }
        // Old registries answer with a generic type; the document says.
        let media_type = if media_type.starts_with("application/vnd.") {
            media_type
        } else {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(String::from))
                .unwrap_or(media_type)
        };
        let size = bytes.len() as u64;
        *self.top.borrow_mut() = Some((digest.clone(), bytes));
        Ok(Descriptor {
            media_type,
            digest,
            size,
            annotations: Default::default(),
            platform: None,
        })
    }

    /// GET `url` with the credentials the registry asks for; an answer
    /// other than 200 is an error naming the URL. Redirects (to blob
    /// storage elsewhere, as registries do) are followed without
    /// credentials, never from HTTPS to HTTP, and a challenge from
    /// another host than the registry's is not answered.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, OciError> {
        let home = crate::url::origin(&self.base);
        let mut answered = false;
        'attempt: loop {
            let mut current = url.to_string();
            let mut at_home = true;
            for _ in 0..=MAX_REDIRECTS {
                let fail = |what: String| invalid(format!("{current}: {what}"));
                let mut request = self.agent.get(&current);
                if let Some(accept) = accept {
                    request = request.header("Accept", accept);
                }
                if at_home {
                    if let Some(auth) = self.auth.borrow().as_deref() {
                        request = request.header("Authorization", auth);
                    }
                }
                let response = request.call().map_err(|e| fail(e.to_string()))?;
                let status = response.status().as_u16();
                if response.status().is_redirection() {
                    let location = response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| fail(format!("HTTP {status} without a location")))?;
                    let next = crate::url::resolve(&current, location)
                        .filter(|n| n.starts_with("https://") || !current.starts_with("https://"))
                        .filter(|n| n.starts_with("https://") || n.starts_with("http://"))
                        .ok_or_else(|| {
                            fail(format!(
                                "HTTP {status}: a redirect to {}: refused (only HTTP(S), never from HTTPS to HTTP)",
                                location.escape_debug()
                            ))
                        })?;
                    at_home = at_home && crate::url::origin(&next) == home;
                    current = next;
                    continue;
                }
                if status == 401 && at_home && !answered {
                    let challenge = response
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    *self.auth.borrow_mut() = Some(self.authorize(&current, &challenge)?);
                    answered = true;
                    continue 'attempt;
                }
                return match status {
                    200 => Ok(response),
                    401 | 403 if !at_home => Err(fail(format!(
                        "HTTP {status} from where the registry redirected: not answered with credentials"
                    ))),
                    401 | 403 => Err(fail(format!(
                        "HTTP {status}: access denied{}",
                        if self.creds.is_some() {
                            " with the credentials given"
                        } else {
                            " (no credentials: --creds USER:PASSWORD, or an auth file)"
                        }
                    ))),
                    404 => Err(fail("HTTP 404: not in the registry".into())),
                    _ => Err(fail(format!("HTTP {status}"))),
                };
            }
            return Err(invalid(format!(
                "{url}: more than {MAX_REDIRECTS} redirects"
            )));
        }
    }

    /// The Authorization header answering `challenge` (from `url`).
    fn authorize(&self, url: &str, challenge: &str) -> Result<String, OciError> {
        let fail = |what: String| invalid(format!("{url}: {what}"));
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                fail(
                    "HTTP 401: the registry wants a user and password (--creds USER:PASSWORD)"
                        .into(),
                )
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(fail(format!(
                "HTTP 401 with an authentication scheme not read here: {}",
                challenge.escape_debug()
            )));
        }
        let params = parse_challenge(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let realm =
            get("realm").ok_or_else(|| fail("a bearer challenge without a realm".into()))?;
        if !(realm.starts_with("https://") || self.plain_http && realm.starts_with("http://")) {
            return Err(fail(format!(
                "the token realm {} is not HTTPS (--plain-http allows HTTP)",
                realm.escape_debug()
            )));
        }
        let mut token_url = format!("{realm}?");
        if let Some(service) = get("service") {
            token_url.push_str(&format!("service={}&", encode_query(service)));
        }
        let scope = get("scope")
            .map(String::from)
            .unwrap_or_else(|| format!("repository:{}:pull", self.image.name));
        token_url.push_str(&format!("scope={}", encode_query(&scope)));
        let mut request = self.agent.get(&token_url);
        // Credentials travel in the clear only to the registry itself.
        let same_host = crate::url::origin(realm) == crate::url::origin(&self.base);
        if let Some(basic) = basic
            .as_ref()
            .filter(|_| realm.starts_with("https://") || same_host)
        {
            request = request.header("Authorization", basic);
        }
        let tfail = |what: String| invalid(format!("token from {token_url}: {what}"));
        let mut response = request.call().map_err(|e| tfail(e.to_string()))?;
        if response.status() != 200 {
            return Err(tfail(format!("HTTP {}", response.status().as_u16())));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| tfail(e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| tfail(e.to_string()))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| tfail("no token in the answer".into()))?;
        Ok(format!("Bearer {token}"))
    }
}

impl Blobs for Registry {
    fn name(&self, digest: &str) -> String {
        format!(
            "docker://{}/{}@{}",
            self.image.host,
            self.image.name,
            digest.escape_debug()
        )
    }

    fn manifest(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        if let Some((digest, bytes)) = self.top.borrow().as_ref() {
            if *digest == desc.digest {
                return Ok(Box::new(std::io::Cursor::new(bytes.clone())));
            }
        }
        self.fetch("manifests", desc, Some(&manifest_accept()))
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>, OciError> {
        self.fetch("blobs", desc, None)
    }
}

impl Registry {
    fn fetch(
        &self,
        kind: &str,
        desc: &Descriptor,
        accept: Option<&str>,
    ) -> Result<Box<dyn Read + '_>, OciError> {
        if !is_sha256(&desc.digest) {
            return Err(invalid(format!(
                "{}: not sha256:<64 hex digits>",
                self.name(&desc.digest)
            )));
        }
        let url = format!("{}/{kind}/{}", self.base, desc.digest);
        let response = self.get(&url, accept)?;
        Ok(Box::new(Steady::new(response.into_body().into_reader())))
    }
}

fn manifest_accept() -> String {
    let mut types: Vec<&str> = MANIFEST_TYPES.to_vec();
    types.push(INDEX_TYPE);
    types.push("application/vnd.docker.distribution.manifest.list.v2+json");
    types.join(", ")
}

/// `key="value", key=value` pairs of a challenge.
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

/// A query value, percent-encoded.
fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Credentials an auth file holds for the image's registry: the files
/// skopeo reads (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`), then docker's `~/.docker/config.json`.
/// The most specific key wins (`host/namespace/name` before `host`).
fn auth_file_creds(image: &ImageRef) -> Result<Option<String>, OciError> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let home = env("HOME");
    let files = [
        env("REGISTRY_AUTH_FILE"),
        env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
        home.as_ref().map(|h| h.join(".docker/config.json")),
    ];
    let mut keys = Vec::new();
    let mut scope = format!("{}/{}", image.host, image.name);
    loop {
        keys.push(scope.clone());
        match scope.rsplit_once('/') {
            Some((parent, _)) => scope = parent.to_string(),
            None => break,
        }
    }
    if image.host == DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".into());
    }
    for path in files.into_iter().flatten() {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let fail = |what: String| invalid(format!("{}: {what}", path.display()));
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
        for key in &keys {
            let Some(auth) = doc
                .get("auths")
                .and_then(|a| a.get(key))
                .and_then(|e| e.get("auth"))
                .and_then(|a| a.as_str())
            else {
                continue;
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .filter(|d| d.contains(':'))
                .ok_or_else(|| fail(format!("the auth of {key} is not base64 of USER:PASSWORD")))?;
            return Ok(Some(decoded));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_taken_apart_as_skopeo_does() {
        let r = ImageRef::parse("127.0.0.1:5000/os/debian:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "os/debian", "v1")
        );
        let r = ImageRef::parse("debian").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("docker.io", "library/debian", "latest")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("quay.io/fedora/fedora-bootc@{digest}")).unwrap();
        assert_eq!(r.reference, digest);
        assert!(ImageRef::parse("localhost/x@sha256:12").is_err());
        assert!(ImageRef::parse("localhost/Upper").is_err());
        assert!(ImageRef::parse("localhost/x:../../y").is_err());
    }

    #[test]
    fn challenges_are_read() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[1].1, "registry.docker.io");
        assert_eq!(p[2].1, "repository:library/debian:pull");
        assert_eq!(
            encode_query("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
