//! A real nginx serving a directory on 127.0.0.1, started and stopped by
//! the test.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    root: PathBuf,
    extra: String,
    /// Certificate and key files: serve HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl Nginx {
    /// Serve `root`; `extra` goes into its `location /` block.
    pub fn start(root: &Path, extra: &str) -> Nginx {
        Nginx::start_with(root, extra, None)
    }

    /// Serve `root` over HTTPS with this certificate (chain) and key.
    pub fn start_tls(root: &Path, cert: &Path, key: &Path) -> Nginx {
        Nginx::start_with(root, "", Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(root: &Path, extra: &str, tls: Option<(PathBuf, PathBuf)>) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = Nginx {
            dir: tempfile::tempdir().unwrap(),
            port,
            root: root.to_path_buf(),
            extra: extra.to_string(),
            tls,
            child: None,
        };
        n.run();
        n
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let d = self.dir.path();
        for sub in ["tmp", "logs"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let tls = match &self.tls {
            Some((cert, key)) => format!(
                " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\nerror_log {d}/logs/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log {d}/logs/access.log;\n  default_type application/octet-stream;\n  sendfile on;\n  keepalive_requests 100000;\n\
             client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
             server {{\n    listen 127.0.0.1:{port}{tls};\n    root {root};\n    location / {{ {extra} }}\n  }}\n}}\n",
            d = d.display(),
            port = self.port,
            root = self.root.display(),
            extra = self.extra,
        );
        fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .spawn()
            .expect("nginx: install it (apt-get install nginx)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port, with `extra` in `location /` now.
    pub fn restart(&mut self, extra: &str) {
        self.stop();
        self.extra = extra.to_string();
        self.run();
    }

    /// Request paths in the access log so far.
    pub fn requests(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter_map(|r| r.split(' ').nth(1))
            .map(str::to_string)
            .collect()
    }

    /// Request paths in the access log so far, with the status and the
    /// body bytes sent.
    pub fn responses(&self) -> Vec<(String, u16, u64)> {
        let log = fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let mut fields = l.split('"');
                let path = fields.nth(1)?.split(' ').nth(1)?.to_string();
                let mut sent = fields.next()?.split_whitespace();
                Some((path, sent.next()?.parse().ok()?, sent.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Forget the requests so far.
    pub fn clear_log(&self) {
        let _ = fs::write(self.dir.path().join("logs/access.log"), "");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
