//! Crash proof: commit, deploy, rollback, cleanup, prune and pull killed
//! with SIGKILL at random moments, many times. After every kill the store
//! checks clean (fsck), every ref names a complete commit, every boot
//! entry names a deployment whose image and signature verify, and the
//! default is the old or the new deployment.
//!
//! SEALTREE_CRASH_RUNS sets the number of kills (default 200);
//! SEALTREE_CRASH_SEED the random seed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::fixture::*;
use common::nginx::Nginx;
use common::*;
use serde_json::Value;

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }
    fn cmd(&self, repo: &str, args: &[&str]) -> Command {
        let mut c = sealtree();
        c.env("SEALTREE_REPO", self.p(repo))
            .env("SEALTREE_SYSROOT", self.p("sysroot"))
            .args(args);
        c
    }
    fn run(&self, repo: &str, args: &[&str]) -> Output {
        self.cmd(repo, args).output().unwrap()
    }
    fn ok(&self, repo: &str, args: &[&str]) -> String {
        let out = self.run(repo, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

const LOCAL: &str = "sysroot/sealtree/repo";

fn os_tree(dir: &Path, version: u64) {
    for d in ["usr/lib/modules/6.12.0", "usr/etc", "usr/share", "sysroot"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("usr/lib/modules/6.12.0/vmlinuz"), "kernel").unwrap();
    fs::write(
        dir.join("usr/lib/modules/6.12.0/initramfs.img"),
        "initramfs",
    )
    .unwrap();
    fs::write(dir.join("usr/etc/version"), format!("{version}\n")).unwrap();
    // A few files change with each version, most stay.
    for i in 0..40u64 {
        let seed = if i % 8 == version % 8 { version } else { 0 };
        write(
            &dir.join(format!("usr/share/f{i}")),
            3_000 + i as usize * 97,
            (i + seed * 41) as u8,
        );
    }
}

/// Deployments in boot order, each checked: its image hashes to the
/// recorded digest, its signature verifies, its kernel is there.
fn check_deployments(w: &World) -> Result<Vec<String>, String> {
    let out = w.run(
        LOCAL,
        &["admin", "--cmdline", "/dev/null", "status", "--json"],
    );
    if !out.status.success() {
        return Err(format!("status: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut order = Vec::new();
    for d in v["deployments"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        let image = w.p(&format!("sysroot/sealtree/deploy/{id}/image.cfs"));
        let bytes = fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
        if hex::encode(sealtree::fsverity::digest_bytes(&bytes)) != d["image_digest"] {
            return Err(format!("deployment {id}: image does not match its digest"));
        }
        if d["signature"]["state"] != "valid" {
            return Err(format!("deployment {id}: signature {}", d["signature"]));
        }
        if !w
            .p(&format!("sysroot/boot/sealtree/{id}/vmlinuz"))
            .is_file()
        {
            return Err(format!("deployment {id}: no kernel"));
        }
        if d["staged"] == false {
            order.push(id.to_string());
        }
    }
    Ok(order)
}

fn fsck_clean(w: &World, repo: &str) -> Result<(), String> {
    let out = w.run(repo, &["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || text.contains("corrupt")
        || text.contains("missing")
        || text.contains("bad commit")
    {
        return Err(format!(
            "fsck {repo}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[test]
fn kill_9_at_random_moments_never_corrupts() {
    if !have_command("nginx") {
        return missing("nginx (apt-get install nginx), for pulls");
    }
    let runs: u64 = std::env::var("SEALTREE_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("SEALTREE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5ea1_7eed);
    let w = World {
        dir: tempfile::tempdir().unwrap(),
    };
    w.ok(
        LOCAL,
        &[
            "key",
            "generate",
            "--secret",
            &w.s("k.sec"),
            "--public",
            &w.s("k.pub"),
        ],
    );
    w.ok(
        LOCAL,
        &[
            "admin",
            "--cmdline",
            "/dev/null",
            "init",
            "--trusted",
            &w.s("k.pub"),
        ],
    );
    w.ok("server", &["init"]);
    let nginx = Nginx::start(&w.p("server"), "");
    w.ok(
        LOCAL,
        &[
            "remote",
            "add",
            "origin",
            &nginx.url(),
            "--trusted",
            &w.s("k.pub"),
        ],
    );
    let src = w.p("src");
    let server_src = w.p("server-src");
    let mut version = 1;
    os_tree(&src, version);
    os_tree(&server_src, version);
    // Local commits on their own branch: the pulled `os` is another
    // lineage, which a pull may not take below a version seen locally.
    w.ok(
        LOCAL,
        &[
            "commit",
            "-b",
            "local",
            "--tree",
            &w.s("src"),
            "--sign-key",
            &w.s("k.sec"),
        ],
    );
    w.ok(
        LOCAL,
        &["admin", "--cmdline", "/dev/null", "deploy", "local"],
    );
    w.ok(
        "server",
        &[
            "commit",
            "-b",
            "os",
            "--tree",
            &w.s("server-src"),
            "--sign-key",
            &w.s("k.sec"),
        ],
    );
    w.ok("server", &["publish", "--sign-key", &w.s("k.sec")]);

    let mut rng = Rng(seed);
    let mut finished = 0;
    let mut corrupt = 0;
    let mut per_op = [0u32; 6];
    for run in 0..runs {
        if run % 10 == 0 {
            // New content to commit, deploy and pull.
            version += 1;
            os_tree(&src, version);
            os_tree(&server_src, version);
            w.ok(
                "server",
                &[
                    "commit",
                    "-b",
                    "os",
                    "--tree",
                    &w.s("server-src"),
                    "--sign-key",
                    &w.s("k.sec"),
                ],
            );
            w.ok("server", &["publish", "--sign-key", &w.s("k.sec")]);
        }
        let before = check_deployments(&w).unwrap_or_else(|e| panic!("run {run}, before: {e}"));
        let op = rng.below(6);
        per_op[op] += 1;
        let src_s = w.s("src");
        let key_s = w.s("k.sec");
        let args: Vec<&str> = match op {
            0 => vec![
                "commit",
                "-b",
                "local",
                "--tree",
                &src_s,
                "--sign-key",
                &key_s,
            ],
            1 => vec!["admin", "--cmdline", "/dev/null", "deploy", "local"],
            2 => vec!["admin", "--cmdline", "/dev/null", "rollback"],
            3 => vec!["admin", "--cmdline", "/dev/null", "cleanup"],
            4 => vec!["prune"],
            _ => vec!["pull", "origin", "os"],
        };
        let mut child = w
            .cmd(LOCAL, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(80_000) as u64));
        if child.try_wait().unwrap().is_some() {
            finished += 1;
        }
        let _ = child.kill();
        let _ = child.wait();

        let after = check_deployments(&w).and_then(|after| {
            fsck_clean(&w, LOCAL)?;
            let allowed = match op {
                // The old default, or the new deployment (not seen before).
                1 => after[0] == before[0] || !before.contains(&after[0]),
                // The old default or the old rollback.
                2 => after[0] == before[0] || before.get(1) == Some(&after[0]),
                _ => after[0] == before[0],
            };
            if !allowed {
                return Err(format!(
                    "default {} after {args:?}, before {before:?}",
                    after[0]
                ));
            }
            if after.is_empty() {
                return Err("no boot entries".into());
            }
            Ok(())
        });
        if let Err(e) = after {
            corrupt += 1;
            eprintln!("run {run} ({args:?}): {e}");
        }
    }
    println!(
        "kills: {runs} (commit {}, deploy {}, rollback {}, cleanup {}, prune {}, pull {}; {finished} had finished before the kill), corrupt stores: {corrupt}",
        per_op[0], per_op[1], per_op[2], per_op[3], per_op[4], per_op[5]
    );
    assert_eq!(corrupt, 0);
    // The next runs clear whatever the kills left.
    w.ok(LOCAL, &["admin", "--cmdline", "/dev/null", "cleanup"]);
    w.ok(LOCAL, &["pull", "origin", "os"]);
    fsck_clean(&w, LOCAL).unwrap();
    for dir in ["sysroot/sealtree/deploy", "sysroot/boot/sealtree"] {
        for e in fs::read_dir(w.p(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "leftover {dir}/{name}");
        }
    }
}
