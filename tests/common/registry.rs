//! A real registry (Debian's docker-registry, the CNCF distribution
//! server) on 127.0.0.1, started and stopped by the test, with images
//! pushed to it by skopeo.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// `USER:PASSWORD` the registry asks for (HTTPS only).
    creds: Option<String>,
}

impl Registry {
    /// Start an empty registry over plain HTTP, open to all.
    pub fn start() -> Registry {
        Registry::start_with(tempfile::tempdir().unwrap(), "", None)
    }

    /// Start an empty registry over HTTPS with this certificate and key,
    /// asking for `user` and `password` (basic authentication, htpasswd).
    pub fn start_tls(cert: &Path, key: &Path, user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&htpasswd)
            .args([user, password])
            .output()
            .expect("htpasswd: install it (apt-get install apache2-utils)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\n\
             auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            cert.display(),
            key.display(),
            htpasswd.display()
        );
        Registry::start_with(dir, &extra, Some(format!("{user}:{password}")))
    }

    fn start_with(dir: tempfile::TempDir, extra: &str, creds: Option<String>) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path();
        let conf = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{extra}",
            d.join("storage").display()
        );
        fs::write(d.join("config.yml"), conf).unwrap();
        let log = fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry: install it (apt-get install docker-registry)");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not start: {}",
                fs::read_to_string(d.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            dir,
            port,
            child,
            creds,
        }
    }

    /// `docker://127.0.0.1:PORT/NAME` (`localhost` over HTTPS, the name
    /// its certificate has).
    pub fn reference(&self, name: &str) -> String {
        let host = if self.creds.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("docker://{host}:{}/{name}", self.port)
    }

    /// Push `source` (a skopeo reference, e.g. `oci:DIR:TAG`) as `name`.
    pub fn push(&self, source: &str, name: &str) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = &self.creds {
            skopeo.arg(format!("--dest-creds={creds}"));
        }
        let out = skopeo
            .arg(source)
            .arg(self.reference(name))
            .output()
            .expect("skopeo: install it (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The paths of the GET requests logged so far.
    pub fn gets(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split("\"GET ").nth(1))
            .filter_map(|r| r.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    /// Where the registry keeps the bytes of blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = &digest["sha256:".len()..];
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest of the image `tag` in the layout `dir`, as text.
pub fn layout_manifest(dir: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()));
    let digest = entry["digest"].as_str().unwrap();
    fs::read_to_string(dir.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
}

/// The layer digests of the image `tag` in the layout `dir`.
pub fn layout_layers(dir: &Path, tag: &str) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_str(&layout_manifest(dir, tag)).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}
