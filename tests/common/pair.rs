//! A server repository that publishes and a client repository that
//! pulls from it, for the remote tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::*;

/// A server repository (published) and a client repository.
pub struct Pair {
    pub dir: tempfile::TempDir,
}

impl Pair {
    pub fn new() -> Option<Pair> {
        if !have_command("nginx") {
            missing("nginx (apt-get install nginx)");
            return None;
        }
        Some(Pair::offline())
    }

    /// The same, for pulls that need no server.
    pub fn offline() -> Pair {
        let p = Pair {
            dir: tempfile::tempdir().unwrap(),
        };
        p.ok("server", &["init"]);
        p.ok("client", &["init"]);
        p.ok(
            "server",
            &[
                "key",
                "generate",
                "--secret",
                &p.s("key.sec"),
                "--public",
                &p.s("key.pub"),
            ],
        );
        p.ok(
            "server",
            &[
                "key",
                "generate",
                "--secret",
                &p.s("other.sec"),
                "--public",
                &p.s("other.pub"),
            ],
        );
        p
    }

    /// `file://` and the absolute path of `rel`.
    pub fn file_url(&self, rel: &str) -> String {
        format!("file://{}", self.s(rel))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }

    pub fn run(&self, repo: &str, args: &[&str]) -> Output {
        sealtree()
            .env("SEALTREE_REPO", self.path(repo))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, repo: &str, args: &[&str]) -> String {
        let out = self.run(repo, args);
        assert!(
            out.status.success(),
            "{repo}: sealtree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run what must fail: its standard error.
    pub fn fail(&self, repo: &str, args: &[&str]) -> String {
        let out = self.run(repo, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{repo}: sealtree {args:?}: {err}"
        );
        err
    }

    /// Commit `tree` to branch os of repository `repo`, signed by the
    /// secret key file `key`: the commit id.
    pub fn commit(&self, repo: &str, tree: &Path, key: &str) -> String {
        let id = self.ok(
            repo,
            &[
                "commit",
                "-b",
                "os",
                "--tree",
                tree.to_str().unwrap(),
                "--sign-key",
                &self.s(key),
            ],
        );
        id.trim().to_string()
    }

    /// Commit `tree` on the server, signed, and publish.
    pub fn publish(&self, tree: &Path) -> String {
        let id = self.commit("server", tree, "key.sec");
        self.ok("server", &["publish", "--sign-key", &self.s("key.sec")]);
        id
    }

    /// Remote origin of the client at `url`, trusting the key file `key`.
    pub fn add_remote(&self, url: &str, key: &str) {
        self.add_remote_to("client", url, key);
    }

    /// Remote origin of repository `repo` at `url`, trusting the key file
    /// `key`.
    pub fn add_remote_to(&self, repo: &str, url: &str, key: &str) {
        self.ok(
            repo,
            &[
                "remote",
                "add",
                "origin",
                url,
                "--trusted",
                &self.s(key),
                "--timeout",
                "5",
            ],
        );
    }

    /// Remote `name` of the client at `url`, trusting the key file `key`.
    pub fn add_named_remote(&self, name: &str, url: &str, key: &str) {
        self.ok(
            "client",
            &["remote", "add", name, url, "--trusted", &self.s(key)],
        );
    }

    pub fn client_objects(&self) -> Vec<String> {
        stored_objects(&self.path("client"))
    }
}

/// Copy a repository as a USB stick would carry it.
pub fn copy_repo(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The name of the object holding `file`'s content.
pub fn object_name(file: &Path) -> String {
    hex::encode(sealtree::fsverity::digest_bytes(&fs::read(file).unwrap()))
}
