//! Signed deployments in temporary sysroots, through the command line:
//! keys, statements, deploy, /etc merge, boot entries, status, rollback,
//! staging, cleanup, refusals, real mounts of the deployed images and
//! deploys killed part-way.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::fixture::*;
use common::*;
use serde_json::Value;

/// A sysroot in a temporary directory, with a signing key pair.
struct TestSysroot {
    dir: tempfile::TempDir,
}

impl TestSysroot {
    /// A sysroot trusting `key.pub`, signatures required.
    fn new() -> TestSysroot {
        let t = TestSysroot {
            dir: tempfile::tempdir().unwrap(),
        };
        t.ok(&[
            "key",
            "generate",
            "--secret",
            &t.p("key.sec"),
            "--public",
            &t.p("key.pub"),
        ]);
        t.ok(&[
            "key",
            "generate",
            "--secret",
            &t.p("other.sec"),
            "--public",
            &t.p("other.pub"),
        ]);
        t.admin_ok(&[
            "init",
            "--require-signatures",
            "--trusted",
            &t.p("key.pub"),
            "--karg",
            "root=/dev/vda",
        ]);
        t
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("sysroot")
    }

    fn repo(&self) -> PathBuf {
        self.root().join("sealtree/repo")
    }

    fn run(&self, args: &[&str]) -> Output {
        sealtree()
            .env("SEALTREE_REPO", self.repo())
            .env("SEALTREE_SYSROOT", self.root())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sealtree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `admin` with a kernel command line naming `booted` (or nothing).
    fn admin_booted(&self, booted: Option<&str>, args: &[&str]) -> Output {
        let cmdline = self.dir.path().join("cmdline");
        let line = booted.map(|b| format!("root=/dev/vda sealtree={b}\n"));
        fs::write(&cmdline, line.unwrap_or_else(|| "quiet\n".into())).unwrap();
        let mut full = vec!["admin", "--cmdline", cmdline.to_str().unwrap()];
        full.extend_from_slice(args);
        self.run(&full)
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin_booted(None, args);
        assert!(
            out.status.success(),
            "sealtree admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Commit `tree` to `branch`, signed with `key` (a file name here).
    fn commit(&self, branch: &str, tree: &Path, key: Option<&str>) -> String {
        let tree = tree.to_str().unwrap();
        let mut args = vec!["commit", "-b", branch, "--tree", tree];
        let key_path = key.map(|k| self.p(k));
        if let Some(k) = &key_path {
            args.extend(["--sign-key", k]);
        }
        self.ok(&args).trim().to_string()
    }

    /// Deploy and return the new deployment's id.
    fn deploy(&self, spec: &str) -> String {
        let out = self.admin_ok(&["deploy", spec]);
        deployed_id(&out)
    }

    fn status(&self, booted: Option<&str>) -> Vec<Value> {
        let out = self.admin_booted(booted, &["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["deployments"].as_array().unwrap().clone()
    }

    fn order(&self) -> Vec<String> {
        self.status(None)
            .iter()
            .filter(|d| !d["staged"].as_bool().unwrap())
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn entry_files(&self) -> Vec<String> {
        let dir = self.root().join("boot/loader/entries");
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Every path under `dir`, not following symlinks.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn deployed_id(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("deployed ") || l.starts_with("staged "))
        .unwrap_or_else(|| panic!("no deployment in: {out}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// An OS tree: a kernel and initramfs, a binary, and /usr/etc defaults.
fn os_tree(dir: &Path, version: &str, etc: &[(&str, &str)]) {
    let modules = dir.join("usr/lib/modules/6.12.0-test");
    fs::create_dir_all(&modules).unwrap();
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::create_dir_all(dir.join("usr/etc")).unwrap();
    fs::create_dir_all(dir.join("sysroot")).unwrap();
    write(&modules.join("vmlinuz"), 200_000, 1);
    fs::write(
        modules.join("initramfs.img"),
        format!("initramfs {version}\n"),
    )
    .unwrap();
    write(&dir.join("usr/bin/tool"), 50_000, version.as_bytes()[0]);
    fs::write(
        dir.join("usr/lib/os-release"),
        format!("VERSION_ID={version}\n"),
    )
    .unwrap();
    for (name, text) in etc {
        fs::write(dir.join("usr/etc").join(name), text).unwrap();
    }
}

#[test]
fn keys_are_ostree_format_and_secret_is_private() {
    let s = TestSysroot::new();
    let secret = fs::read_to_string(s.p("key.sec")).unwrap();
    let public = fs::read_to_string(s.p("key.pub")).unwrap();
    assert_eq!(STANDARD.decode(secret.trim()).unwrap().len(), 64);
    assert_eq!(STANDARD.decode(public.trim()).unwrap().len(), 32);
    // The secret file ends with the public key, as libsodium's does.
    assert_eq!(
        STANDARD.decode(secret.trim()).unwrap()[32..],
        STANDARD.decode(public.trim()).unwrap()[..]
    );
    let mode = fs::metadata(s.p("key.sec")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwrites.
    let again = s.run(&[
        "key",
        "generate",
        "--secret",
        &s.p("key.sec"),
        "--public",
        &s.p("x.pub"),
    ]);
    assert_eq!(again.status.code(), Some(1));

    // A key written by another tool: RFC 8032 test 1, as ostree stores it.
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let pk =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    fs::write(
        s.p("rfc.sec"),
        STANDARD.encode([seed.clone(), pk.clone()].concat()) + "\n",
    )
    .unwrap();
    fs::write(s.p("rfc.pub"), STANDARD.encode(&pk) + "\n").unwrap();
    fs::set_permissions(s.p("rfc.sec"), fs::Permissions::from_mode(0o600)).unwrap();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    let id = s.commit("os", &src, Some("rfc.sec"));
    let out = s.ok(&["verify", &id, "--trusted", &s.p("rfc.pub")]);
    assert!(out.contains(&STANDARD.encode(&pk)), "{out}");
    // A secret key whose halves do not match is refused.
    let mut bad = [seed, pk].concat();
    bad[40] ^= 1;
    fs::write(s.p("bad.sec"), STANDARD.encode(&bad)).unwrap();
    fs::set_permissions(s.p("bad.sec"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.run(&["sign", &id, "--key", &s.p("bad.sec")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.sec") && err.contains("does not belong"),
        "{err}"
    );
}

#[test]
fn verify_says_which_key_signed_and_refuses_others() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    let id = s.commit("os", &src, Some("key.sec"));
    let keys = s.dir.path().join("keys.d");
    fs::create_dir(&keys).unwrap();
    fs::copy(s.p("other.pub"), keys.join("a.pub")).unwrap();
    fs::copy(s.p("key.pub"), keys.join("b.pub")).unwrap();
    let out = s.ok(&["verify", "os", "--trusted", keys.to_str().unwrap()]);
    let key = fs::read_to_string(s.p("key.pub")).unwrap();
    assert!(out.contains(key.trim()) && out.contains("b.pub"), "{out}");
    assert!(out.contains(&id));

    let out = s.run(&["verify", "os", "--trusted", &s.p("other.pub")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("not from a trusted key"), "{err}");

    // The statement is canonical JSON naming commit, branch and digest.
    let statement = fs::read(s.repo().join(format!("signatures/{id}.json"))).unwrap();
    let v: Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(v["commit"], id.as_str());
    assert_eq!(v["branch"], "os");
    assert_eq!(v["version"], 1);
    let mut canonical = serde_json::to_vec(&v).unwrap();
    canonical.push(b'\n');
    assert_eq!(statement, canonical);
    // One changed byte (a space) and it no longer verifies.
    let text = String::from_utf8(statement).unwrap().replacen(',', ", ", 1);
    fs::write(s.repo().join(format!("signatures/{id}.json")), text).unwrap();
    let out = s.run(&["verify", "os", "--trusted", &s.p("key.pub")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn two_signed_deployments_status_and_rollback() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[("a.conf", "a\n")]);
    let c1 = s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    os_tree(&src, "2", &[("a.conf", "a\n")]);
    let c2 = s.commit("os", &src, Some("key.sec"));
    let d2 = s.deploy("os");
    assert!(d1.starts_with(&c1[..12]) && d2.starts_with(&c2[..12]));

    let status = s.status(Some(&d1));
    assert_eq!(status.len(), 2);
    assert_eq!(status[0]["id"], d2.as_str());
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[0]["booted"], false);
    assert_eq!(status[0]["commit"], c2.as_str());
    assert_eq!(status[1]["id"], d1.as_str());
    assert_eq!(status[1]["rollback"], true);
    assert_eq!(status[1]["booted"], true);
    let key = fs::read_to_string(s.p("key.pub")).unwrap();
    for d in &status {
        assert_eq!(d["signature"]["state"], "valid");
        assert_eq!(d["signature"]["key"], key.trim());
        assert_eq!(d["kernel"], "6.12.0-test");
        assert_eq!(d["tries_left"], 3);
        assert_eq!(d["branch"], "os");
    }
    assert_eq!(
        status[0]["kargs"],
        serde_json::json!(["root=/dev/vda", format!("sealtree={d2}")])
    );

    // The entries: one file each, generation and counter in the name as
    // systemd-boot expects, the default with the highest version.
    assert_eq!(
        s.entry_files(),
        sorted(vec![
            format!("sealtree-1-{d1}+3.conf"),
            format!("sealtree-2-{d2}+3.conf")
        ])
    );
    let entry = fs::read_to_string(
        s.root()
            .join(format!("boot/loader/entries/sealtree-2-{d2}+3.conf")),
    )
    .unwrap();
    for line in [
        format!("linux /boot/sealtree/{d2}/vmlinuz"),
        format!("options root=/dev/vda sealtree={d2}"),
        "sort-key sealtree".to_string(),
    ] {
        assert!(entry.contains(&line), "{line} not in {entry}");
    }
    // No version: the loader orders sealtree's entries by name, whose
    // generation leads.
    assert!(!entry.contains("version"), "{entry}");
    // No default in loader.conf: the order decides, so boot counting can
    // skip a failed entry.
    let loader_conf = fs::read_to_string(s.root().join("boot/loader/loader.conf")).unwrap();
    assert_eq!(loader_conf, "timeout 3\n");
    // No symlinks anywhere under boot/ (a vfat ESP has none).
    for e in walk(&s.root().join("boot")) {
        assert!(!e.is_symlink(), "symlink {}", e.display());
    }
    assert_eq!(
        fs::read(s.root().join(format!("boot/sealtree/{d2}/initramfs.img"))).unwrap(),
        b"initramfs 2\n"
    );

    // Rollback writes the old deployment's entry anew above the other,
    // keeping its counter, and removes the old file.
    let out = s.admin_ok(&["rollback"]);
    assert!(out.contains(&d1), "{out}");
    assert_eq!(s.order(), vec![d1.clone(), d2.clone()]);
    assert_eq!(
        s.entry_files(),
        sorted(vec![
            format!("sealtree-3-{d1}+3.conf"),
            format!("sealtree-2-{d2}+3.conf")
        ])
    );
    s.admin_ok(&["rollback"]);
    assert_eq!(s.order(), vec![d2.clone(), d1.clone()]);

    // Blessing the booted entry drops its counter, by a rename.
    let out = s.admin_booted(Some(&d2), &["bless"]);
    assert!(out.status.success());
    assert_eq!(
        s.entry_files(),
        sorted(vec![
            format!("sealtree-3-{d1}+3.conf"),
            format!("sealtree-4-{d2}.conf")
        ])
    );
    assert_eq!(s.status(None)[0]["tries_left"], Value::Null);

    // Kernel arguments of the default.
    let out = s.admin_ok(&["kargs", "--append", "quiet", "--append", "loglevel=3"]);
    assert_eq!(
        out.trim(),
        format!("root=/dev/vda quiet loglevel=3 sealtree={d2}")
    );
    let out = s.admin_ok(&["kargs", "--delete", "loglevel", "--delete", "quiet"]);
    assert_eq!(out.trim(), format!("root=/dev/vda sealtree={d2}"));
    assert_eq!(
        s.admin_booted(None, &["kargs", "--delete", "sealtree"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn etc_merge_keeps_local_changes_adds_defaults_honours_removals() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(
        &src,
        "1",
        &[
            ("keep.conf", "default 1\n"),
            ("edit.conf", "default\n"),
            ("gone.conf", "old default\n"),
            ("clash.conf", "default 1\n"),
        ],
    );
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    let etc1 = s.root().join("sealtree/deploy").join(&d1).join("etc");
    assert_eq!(
        fs::read_to_string(etc1.join("keep.conf")).unwrap(),
        "default 1\n"
    );
    // Local changes on the running system.
    fs::write(etc1.join("edit.conf"), "local edit\n").unwrap();
    fs::write(etc1.join("clash.conf"), "local clash\n").unwrap();
    fs::write(etc1.join("mine.conf"), "local only\n").unwrap();

    fs::remove_file(src.join("usr/etc/gone.conf")).unwrap();
    os_tree(
        &src,
        "2",
        &[
            ("keep.conf", "default 2\n"),
            ("clash.conf", "default 2\n"),
            ("new.conf", "new default\n"),
        ],
    );
    s.commit("os", &src, Some("key.sec"));
    let out = s.admin_booted(Some(&d1), &["deploy", "os"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d2 = deployed_id(&stdout);
    assert!(stdout.contains("etc: conflict /etc/clash.conf"), "{stdout}");
    assert!(
        stdout.contains("etc: kept local change /etc/edit.conf"),
        "{stdout}"
    );
    let etc2 = s.root().join("sealtree/deploy").join(&d2).join("etc");
    let read = |n: &str| fs::read_to_string(etc2.join(n)).ok();
    assert_eq!(
        read("keep.conf").as_deref(),
        Some("default 2\n"),
        "untouched default follows the new commit"
    );
    assert_eq!(
        read("edit.conf").as_deref(),
        Some("local edit\n"),
        "local edit kept"
    );
    assert_eq!(
        read("new.conf").as_deref(),
        Some("new default\n"),
        "new default added"
    );
    assert_eq!(read("gone.conf"), None, "removed default removed");
    assert_eq!(
        read("clash.conf").as_deref(),
        Some("local clash\n"),
        "conflict keeps local"
    );
    assert_eq!(
        read("mine.conf").as_deref(),
        Some("local only\n"),
        "local file kept"
    );
    let status = s.status(Some(&d1));
    assert_eq!(
        status[0]["etc_conflicts"],
        serde_json::json!(["/etc/clash.conf"])
    );
    // The old deployment's /etc is untouched.
    assert_eq!(
        fs::read_to_string(etc1.join("edit.conf")).unwrap(),
        "local edit\n"
    );
    assert!(etc1.join("gone.conf").exists());
}

#[test]
fn tampered_untrusted_and_unsigned_commits_are_refused() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    // Unsigned, with signatures required.
    s.commit("unsigned", &src, None);
    let out = s.admin_booted(None, &["deploy", "unsigned"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("not signed") && err.contains("requires signatures"),
        "{err}"
    );

    // Signed by a key the sysroot does not trust.
    s.commit("other", &src, Some("other.sec"));
    let out = s.admin_booted(None, &["deploy", "other"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("not from a trusted key"), "{err}");

    // The commit's dumpfile rewritten in the git store after signing: the
    // rebuilt image no longer has the signed digest.
    os_tree(&src, "2", &[]);
    let id = s.commit("good", &src, Some("key.sec"));
    let statement: Value =
        serde_json::from_slice(&fs::read(s.repo().join(format!("signatures/{id}.json"))).unwrap())
            .unwrap();
    let signed_digest = statement["image_digest"].as_str().unwrap().to_string();
    let dump_blob = git(&s.repo(), &["rev-parse", &format!("{id}:dump")]);
    let dump = git(&s.repo(), &["cat-file", "blob", &dump_blob]);
    // The root directory's mtime (field 8 of the first line) changed.
    let (first, rest) = dump.split_once('\n').unwrap();
    let mut fields: Vec<&str> = first.split(' ').collect();
    fields[7] = "1.0";
    let tampered = format!("{}\n{rest}", fields.join(" "));
    assert_ne!(tampered, dump);
    rewrite_loose_blob(&s.repo(), &dump_blob, tampered.as_bytes());
    let out = s.admin_booted(None, &["deploy", "good"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(&signed_digest) && err.contains("signed statement"),
        "{err}"
    );
    // Nothing was deployed by any of the refusals.
    assert!(s.order().is_empty());
    assert_eq!(
        fs::read_dir(s.root().join("sealtree/deploy"))
            .unwrap()
            .count(),
        0
    );
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo.join("git"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
        + if args[0] == "cat-file" { "\n" } else { "" }
}

/// Replace a loose blob's content in place (what an attacker with write
/// access to the store could do); its name no longer matches.
fn rewrite_loose_blob(repo: &Path, id: &str, data: &[u8]) {
    use std::io::Write;
    let path = repo.join("git/objects").join(&id[..2]).join(&id[2..]);
    let mut raw = format!("blob {}\0", data.len()).into_bytes();
    raw.extend_from_slice(data);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, z.finish().unwrap()).unwrap();
}

#[test]
fn staged_deployment_switches_at_finalize() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    os_tree(&src, "2", &[]);
    s.commit("os", &src, Some("key.sec"));
    let out = s.admin_ok(&["deploy", "--stage", "os"]);
    let d2 = deployed_id(&out);
    assert!(out.starts_with("staged "), "{out}");
    let status = s.status(Some(&d1));
    assert_eq!(status.len(), 2);
    assert_eq!(status[0]["id"], d1.as_str());
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["id"], d2.as_str());
    assert_eq!(status[1]["staged"], true);
    assert_eq!(s.entry_files(), vec![format!("sealtree-1-{d1}+3.conf")]);
    // /etc edited in the running system after staging: kept, because
    // /etc is merged again at finalize.
    let running_etc = s.root().join(format!("sealtree/deploy/{d1}/etc"));
    fs::write(running_etc.join("after-staging.conf"), "late edit\n").unwrap();
    let out = s.admin_booted(Some(&d1), &["finalize-staged"]);
    assert!(out.status.success());
    assert_eq!(s.order(), vec![d2.clone(), d1.clone()]);
    assert!(s.status(None).iter().all(|d| d["staged"] == false));
    assert_eq!(
        fs::read_to_string(
            s.root()
                .join(format!("sealtree/deploy/{d2}/etc/after-staging.conf"))
        )
        .unwrap(),
        "late edit\n"
    );
    // Nothing staged any more: finalize is a no-op.
    assert!(s.admin_ok(&["finalize-staged"]).contains("nothing staged"));

    // A plain deploy after staging is the newest choice: the staged one is
    // dropped, not switched to at shutdown.
    os_tree(&src, "3", &[]);
    s.commit("os", &src, Some("key.sec"));
    s.admin_ok(&["deploy", "--stage", "os"]);
    let d4 = s.deploy("os");
    assert!(s.status(None).iter().all(|d| d["staged"] == false));
    assert!(s.admin_ok(&["finalize-staged"]).contains("nothing staged"));
    assert_eq!(s.order()[0], d4);
}

#[test]
fn planted_or_damaged_entries_do_not_stop_the_commands() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    let dir = s.root().join("boot/loader/entries");
    // What a power cut on vfat can leave, and what someone could plant.
    fs::write(dir.join(format!("sealtree-7-{d1}.conf")), "").unwrap();
    fs::write(
        dir.join("sealtree-..-0.conf"),
        "version 1\nsort-key sealtree\noptions sealtree=..\n",
    )
    .unwrap();
    fs::write(
        dir.join(format!("sealtree-9-{d1}+x.conf")),
        format!("version 9\noptions sealtree={d1}\n"),
    )
    .unwrap();
    let huge = fs::read_to_string(dir.join(format!("sealtree-1-{d1}+3.conf")))
        .unwrap()
        .replace("sort-key", "version 18446744073709551615\nsort-key");
    fs::write(dir.join(format!("sealtree-99-{d1}+3.conf")), huge).unwrap();
    let out = s.admin_booted(None, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignoring boot entry"));
    assert_eq!(s.order(), vec![d1.clone()]);
    // The next change removes them.
    os_tree(&src, "2", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d2 = s.deploy("os");
    assert_eq!(
        s.entry_files(),
        sorted(vec![
            format!("sealtree-1-{d1}+3.conf"),
            format!("sealtree-2-{d2}+3.conf")
        ])
    );
    // Ids become paths: only deployment ids pass.
    for bad in ["..", "../x", "", "0123456789ab"] {
        let out = s.admin_booted(None, &["undeploy", bad]);
        assert_eq!(out.status.code(), Some(1), "undeploy {bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a deployment id"));
    }
    assert!(s.root().join("sealtree/deploy").join(&d1).exists());
}

#[test]
fn the_boot_partition_must_be_the_one_mounted() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    s.deploy("os");
    s.deploy("os");
    // The sysroot says its entries live on a partition of their own.
    let config = s.root().join("sealtree/config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    v["boot_partition"] = "PARTUUID=11111111-2222-4333-8444-555555555555".into();
    fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
    for args in [
        &["cleanup"][..],
        &["deploy", "os"],
        &["rollback"],
        &["status"],
    ] {
        let out = s.admin_booted(None, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the boot partition PARTUUID=11111111-2222-4333-8444-555555555555 is not mounted at"),
            "{err}"
        );
    }
    // Another filesystem mounted there is not that partition either.
    if !is_root() {
        missing("root (to mount a tmpfs at boot/)");
        return;
    }
    let boot = s.root().join("boot");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&boot)
        .status()
        .unwrap();
    assert!(mounted.success());
    let out = s.admin_booted(None, &["cleanup"]);
    std::process::Command::new("umount")
        .arg(&boot)
        .status()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not mounted at"));
    assert_eq!(
        fs::read_dir(s.root().join("sealtree/deploy"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn an_interrupted_var_seed_is_redone() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    fs::create_dir_all(src.join("var/lib/app")).unwrap();
    fs::write(src.join("var/lib/app/state"), "seed\n").unwrap();
    s.commit("os", &src, Some("key.sec"));
    // A first deploy that died while seeding: its marker and half a /var.
    let var = s.root().join("sealtree/var");
    fs::create_dir_all(var.join("lib")).unwrap();
    fs::write(var.join("lib/partial"), "").unwrap();
    fs::write(s.root().join("sealtree/var-seeding"), "").unwrap();
    s.deploy("os");
    assert!(!var.join("lib/partial").exists());
    assert_eq!(
        fs::read_to_string(var.join("lib/app/state")).unwrap(),
        "seed\n"
    );
    assert!(!s.root().join("sealtree/var-seeding").exists());
}

#[test]
fn cleanup_keeps_default_rollback_booted_pinned() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    let mut ids = Vec::new();
    for v in ["1", "2", "3", "4", "5"] {
        os_tree(&src, v, &[]);
        // A file only this version has, to see prune free it.
        let only = src.join(format!("usr/lib/only-{v}"));
        write(&only, 70_000, 100 + v.parse::<u8>().unwrap());
        s.commit(&format!("v{v}"), &src, Some("key.sec"));
        ids.push(s.deploy(&format!("v{v}")));
        fs::remove_file(&only).unwrap();
    }
    // Boot order now 5 4 3 2 1. Booted: 3. Pinned: 2. Branches of 1 go away.
    s.admin_ok(&["pin", &ids[1]]);
    s.ok(&["refs", "--delete", "v1"]);
    let objects_before = stored_objects(&s.repo()).len();
    let out = s.admin_booted(Some(&ids[2]), &["cleanup"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("removed deployment {}", ids[0])),
        "{stdout}"
    );
    assert_eq!(
        s.order(),
        vec![
            ids[4].clone(),
            ids[3].clone(),
            ids[2].clone(),
            ids[1].clone()
        ]
    );
    assert!(!s.root().join("sealtree/deploy").join(&ids[0]).exists());
    assert!(!s.root().join("boot/sealtree").join(&ids[0]).exists());
    // Exactly version 1's own objects were pruned (its branch is gone
    // too): usr/lib/only-1 and its usr/bin/tool.
    assert_eq!(
        stored_objects(&s.repo()).len(),
        objects_before - 2,
        "{stdout}"
    );
    assert!(stdout.contains("pruned 2 objects and 1 images"), "{stdout}");
    let status = s.status(None);
    assert_eq!(status[3]["pinned"], true);
    // Unpinned, the pinned one goes on the next cleanup; the booted stays.
    s.admin_ok(&["pin", "--unpin", &ids[1]]);
    let out = s.admin_booted(Some(&ids[2]), &["cleanup"]);
    assert!(out.status.success());
    assert_eq!(
        s.order(),
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]
    );
    // The booted deployment cannot be undeployed; another can.
    let out = s.admin_booted(Some(&ids[2]), &["undeploy", &ids[2]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(s
        .admin_booted(Some(&ids[2]), &["undeploy", &ids[3]])
        .status
        .success());
    assert_eq!(s.order(), vec![ids[4].clone(), ids[2].clone()]);
}

#[test]
fn deployed_images_mount_and_show_their_commit() {
    if !is_root() {
        return missing("root, to mount images");
    }
    let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !(fs_list.contains("erofs") && fs_list.contains("overlay")) {
        return missing("erofs and overlay filesystems");
    }
    let s = TestSysroot::new();
    let src1 = s.dir.path().join("tree1");
    os_tree(&src1, "1", &[("x.conf", "x\n")]);
    std::os::unix::fs::symlink("../lib/os-release", src1.join("usr/etc/os-release")).unwrap();
    fs::hard_link(src1.join("usr/bin/tool"), src1.join("usr/bin/tool-alias")).unwrap();
    xattr::set(
        src1.join("usr/bin/tool"),
        "security.capability",
        // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    fs::set_permissions(
        src1.join("usr/etc/x.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    s.commit("os", &src1, Some("key.sec"));
    let d1 = s.deploy("os");
    let src2 = s.dir.path().join("tree2");
    os_tree(&src2, "2", &[]);
    s.commit("os", &src2, Some("key.sec"));
    let d2 = s.deploy("os");
    for (id, src) in [(&d1, &src1), (&d2, &src2)] {
        let image = s.root().join("sealtree/deploy").join(id).join("image.cfs");
        let mnt = s.dir.path().join(format!("mnt-{id}"));
        let lower = s.dir.path().join(format!("lower-{id}"));
        fs::create_dir_all(&mnt).unwrap();
        fs::create_dir_all(&lower).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(&image)
            .arg(&lower)
            .status()
            .unwrap();
        assert!(status.success(), "mount erofs");
        let opts = format!(
            "ro,metacopy=on,redirect_dir=on,lowerdir={}::{}",
            lower.display(),
            s.repo().join("objects").display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay");
        let result = std::panic::catch_unwind(|| assert_same_tree(src, &mnt));
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        let _ = std::process::Command::new("umount").arg(&lower).status();
        result.unwrap();
    }
}

/// kill -9 at many moments of a deploy: the entries always name complete
/// deployments whose images verify, the default is the old or the new
/// one, and the next deploy and cleanup work.
#[test]
fn killed_deploys_leave_a_bootable_consistent_set() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    fs::create_dir_all(src.join("usr/share")).unwrap();
    for i in 0..300 {
        write(&src.join(format!("usr/share/f{i}")), 5_000 + i, i as u8);
    }
    s.commit("os", &src, Some("key.sec"));
    let first = s.deploy("os");
    os_tree(&src, "2", &[]);
    s.commit("os", &src, Some("key.sec"));
    let mut switched = 0;
    for delay_ms in [1u64, 3, 5, 8, 12, 16, 20, 30, 45, 60, 90, 130, 200] {
        let mut child = sealtree()
            .env("SEALTREE_REPO", s.repo())
            .env("SEALTREE_SYSROOT", s.root())
            .args(["admin", "--cmdline", "/dev/null", "deploy", "os"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let status = s.status(None);
        assert!(!status.is_empty(), "kill after {delay_ms} ms: no entries");
        let default = status[0]["id"].as_str().unwrap().to_string();
        if default != first {
            switched += 1;
        }
        for d in &status {
            let id = d["id"].as_str().unwrap();
            let image = s.root().join("sealtree/deploy").join(id).join("image.cfs");
            let bytes = fs::read(&image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
            let digest = sealtree::fsverity::digest_bytes(&bytes);
            assert_eq!(hex::encode(digest), d["image_digest"].as_str().unwrap());
            assert_eq!(d["signature"]["state"], "valid");
            assert!(s
                .root()
                .join("boot/sealtree")
                .join(id)
                .join("vmlinuz")
                .is_file());
        }
        // Whatever the kill left, the set is old, or new with old as rollback.
        let order = s.order();
        assert!(order.contains(&first), "{order:?}");
    }
    eprintln!("kills: 13, of which {switched} after the switch");
    // A deploy and a cleanup after all that succeed and clear leftovers.
    s.deploy("os");
    s.admin_ok(&["cleanup"]);
    for dir in ["sealtree/deploy", "boot/sealtree"] {
        for e in fs::read_dir(s.root().join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "leftover {dir}/{name}");
        }
    }
    let out = s.ok(&["fsck"]);
    assert!(
        !out.contains("corrupt") && !out.contains("missing"),
        "{out}"
    );
}

/// Two deploys, a commit and a prune at once, several times: all
/// succeed, serialized by the locks, and the result checks clean.
#[test]
fn concurrent_deploys_commits_and_prunes_serialize() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[("a.conf", "a\n")]);
    s.commit("os", &src, Some("key.sec"));
    s.deploy("os");
    for round in 2..5 {
        os_tree(&src, &round.to_string(), &[("a.conf", "a\n")]);
        let spawn = |args: &[&str]| {
            sealtree()
                .env("SEALTREE_REPO", s.repo())
                .env("SEALTREE_SYSROOT", s.root())
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let key = s.p("key.sec");
        let tree = src.to_str().unwrap().to_string();
        let children = vec![
            spawn(&["admin", "--cmdline", "/dev/null", "deploy", "os"]),
            spawn(&["commit", "-b", "os", "--tree", &tree, "--sign-key", &key]),
            spawn(&["prune"]),
            spawn(&["admin", "--cmdline", "/dev/null", "deploy", "os"]),
            spawn(&["prune"]),
        ];
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Every deployment verifies; the store is whole.
    for d in s.status(None) {
        assert_eq!(d["signature"]["state"], "valid");
        let image = s
            .root()
            .join("sealtree/deploy")
            .join(d["id"].as_str().unwrap())
            .join("image.cfs");
        let digest = sealtree::fsverity::digest_bytes(&fs::read(image).unwrap());
        assert_eq!(hex::encode(digest), d["image_digest"].as_str().unwrap());
    }
    let out = s.ok(&["fsck"]);
    assert!(
        !out.contains("corrupt") && !out.contains("missing"),
        "{out}"
    );
    assert_eq!(s.order().len(), 7);
}

/// What systemd-boot does to an entry on each boot that never reaches
/// boot-complete: `+3` -> `+2-1` -> `+1-2` -> `+0-3`.
fn loader_counts_failed_boots(s: &TestSysroot, id: &str, boots: u32) {
    let dir = s.root().join("boot/loader/entries");
    for _ in 0..boots {
        let name = s
            .entry_files()
            .into_iter()
            .find(|n| n.contains(&format!("-{id}")))
            .unwrap();
        let (stem, counter) = name.trim_end_matches(".conf").split_once('+').unwrap();
        let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
        let (left, done): (u32, u32) = (left.parse().unwrap(), done.parse().unwrap());
        let next = format!("{stem}+{}-{}.conf", left - 1, done + 1);
        fs::rename(dir.join(&name), dir.join(next)).unwrap();
    }
}

#[test]
fn entries_of_an_earlier_layout_are_rewritten_by_the_next_change() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    // As sealtree wrote it before generations led the name: ID-GEN with
    // a version line, which systemd-boot sorts before unversioned entries.
    let dir = s.root().join("boot/loader/entries");
    let text = fs::read_to_string(dir.join(format!("sealtree-1-{d1}+3.conf"))).unwrap();
    fs::remove_file(dir.join(format!("sealtree-1-{d1}+3.conf"))).unwrap();
    fs::write(
        dir.join(format!("sealtree-{d1}-1+3.conf")),
        text.replace("sort-key", "version 1\nsort-key"),
    )
    .unwrap();
    assert_eq!(s.order(), vec![d1.clone()]);
    os_tree(&src, "2", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d2 = s.deploy("os");
    assert_eq!(s.order(), vec![d2.clone(), d1.clone()]);
    assert_eq!(
        s.entry_files(),
        sorted(vec![
            format!("sealtree-2-{d1}+3.conf"),
            format!("sealtree-3-{d2}+3.conf")
        ])
    );
    for f in s.entry_files() {
        let text = fs::read_to_string(dir.join(&f)).unwrap();
        assert!(!text.contains("version"), "{f}: {text}");
    }
}

#[test]
fn failed_boot_tries_fall_back_to_the_previous_deployment() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    s.admin_booted(Some(&d1), &["bless"]);
    os_tree(&src, "2", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d2 = s.deploy("os");
    assert_eq!(s.order(), vec![d2.clone(), d1.clone()]);

    // Two failed boots: still the default, with one try left.
    loader_counts_failed_boots(&s, &d2, 2);
    let status = s.status(None);
    assert_eq!(status[0]["id"], d2.as_str());
    assert_eq!(status[0]["tries_left"], 1);
    assert_eq!(status[0]["tries_done"], 2);
    assert_eq!(status[0]["failed"], false);
    // The third: the loader skips it, the previous one is the default.
    loader_counts_failed_boots(&s, &d2, 1);
    let status = s.status(None);
    assert_eq!(status[0]["id"], d1.as_str());
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["id"], d2.as_str());
    assert_eq!(status[1]["failed"], true);
    assert_eq!(status[1]["default"], false);
    let text = s.admin_ok(&["status"]);
    assert!(
        text.contains(&format!(
            "deployment {d2} failed its boot tries; the loader now boots {d1}"
        )),
        "{text}"
    );
    // Nothing to roll back to that could boot.
    let out = s.admin_booted(Some(&d1), &["rollback"]);
    assert_eq!(out.status.code(), Some(1));

    // A new deployment leaves the others' files alone (counters included).
    let before = s.entry_files();
    os_tree(&src, "3", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d3 = s.deploy("os");
    let after = s.entry_files();
    assert!(
        before.iter().all(|f| after.contains(f)),
        "{before:?} {after:?}"
    );
    assert_eq!(after.len(), 3);
    assert_eq!(s.order(), vec![d3, d1, d2]);
}

#[test]
fn plain_distribution_tree_deploys_as_it_is() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    // Debian's layout: /etc (no usr/etc), the kernel in /boot, a /var.
    for d in [
        "etc/default",
        "boot",
        "usr/lib/modules/6.12.0-9-amd64/kernel",
        "var/lib/dpkg",
        "sysroot",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("etc/hostname"), "debian\n").unwrap();
    fs::write(src.join("etc/default/grub"), "x\n").unwrap();
    write(&src.join("boot/vmlinuz-6.12.0-9-amd64"), 100_000, 7);
    fs::write(
        src.join("boot/initrd.img-6.12.0-9-amd64"),
        "debian initrd\n",
    )
    .unwrap();
    fs::write(src.join("var/lib/dpkg/status"), "Package: base-files\n").unwrap();
    s.commit("debian", &src, Some("key.sec"));
    let d1 = s.deploy("debian");
    let status = s.status(None);
    assert_eq!(status[0]["kernel"], "6.12.0-9-amd64");
    assert_eq!(
        fs::read(s.root().join(format!("boot/sealtree/{d1}/initramfs.img"))).unwrap(),
        b"debian initrd\n"
    );
    let deployed = s.root().join(format!("sealtree/deploy/{d1}"));
    assert_eq!(
        fs::read_to_string(deployed.join("etc/hostname")).unwrap(),
        "debian\n"
    );
    // /var seeded from the commit on the first deploy.
    let var = s.root().join("sealtree/var");
    assert_eq!(
        fs::read_to_string(var.join("lib/dpkg/status")).unwrap(),
        "Package: base-files\n"
    );

    // A local /etc edit and /var state survive the next deploy; the new
    // commit's /var does not overwrite the machine's.
    fs::write(deployed.join("etc/hostname"), "mybox\n").unwrap();
    fs::write(var.join("lib/dpkg/status"), "Package: local\n").unwrap();
    fs::write(src.join("var/lib/dpkg/status"), "Package: new\n").unwrap();
    fs::write(src.join("etc/default/grub"), "y\n").unwrap();
    s.commit("debian", &src, Some("key.sec"));
    let d2 = s.deploy("debian");
    let deployed2 = s.root().join(format!("sealtree/deploy/{d2}"));
    assert_eq!(
        fs::read_to_string(deployed2.join("etc/hostname")).unwrap(),
        "mybox\n"
    );
    assert_eq!(
        fs::read_to_string(deployed2.join("etc/default/grub")).unwrap(),
        "y\n"
    );
    assert_eq!(
        fs::read_to_string(var.join("lib/dpkg/status")).unwrap(),
        "Package: local\n"
    );

    // A tree without /sysroot cannot become a root: refused, named.
    fs::remove_dir(src.join("sysroot")).unwrap();
    let c = s.commit("debian", &src, Some("key.sec"));
    let out = s.admin_booted(None, &["deploy", "debian"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&c) && err.contains("no /sysroot directory"),
        "{err}"
    );
}

#[test]
fn secret_keys_must_be_private_and_single() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    let refused = |key: &str, want: &str| {
        let out = s.run(&[
            "commit",
            "-b",
            "os",
            "--tree",
            src.to_str().unwrap(),
            "--sign-key",
            &s.p(key),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want) && err.contains(&s.p(key)), "{err}");
        // Nothing committed.
        assert!(!s.run(&["log", "os"]).status.success());
    };
    // Readable by others: refused, as ssh refuses an unprotected key.
    fs::copy(s.p("key.sec"), s.p("open.sec")).unwrap();
    fs::set_permissions(s.p("open.sec"), fs::Permissions::from_mode(0o644)).unwrap();
    refused("open.sec", "readable by group or others (mode 0644)");
    fs::set_permissions(s.p("open.sec"), fs::Permissions::from_mode(0o640)).unwrap();
    refused("open.sec", "(mode 0640)");
    // Two keys in one file: refused rather than the first used.
    let two = format!(
        "{}{}",
        fs::read_to_string(s.p("other.sec")).unwrap(),
        fs::read_to_string(s.p("key.sec")).unwrap()
    );
    fs::write(s.p("two.sec"), two).unwrap();
    fs::set_permissions(s.p("two.sec"), fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        "two.sec",
        "2 keys (lines 1, 2): a secret key file holds one",
    );
    s.commit("os", &src, Some("key.sec"));
}

#[test]
fn kernel_arguments_with_control_characters_are_refused() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    let d1 = s.deploy("os");
    let before = s.entry_files();
    let text = |f: &str| fs::read_to_string(s.root().join("boot/loader/entries").join(f)).unwrap();
    let entry = text(&before[0]);
    for bad in ["quiet\nlinux /evil", "a\tb", "x\u{7f}", ""] {
        for args in [
            vec!["deploy", "os", "--karg", bad],
            vec!["kargs", "--append", bad],
        ] {
            let out = s.admin_booted(Some(&d1), &args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("whitespace or control characters"), "{err}");
        }
    }
    assert_eq!(s.entry_files(), before);
    assert_eq!(text(&before[0]), entry);
    // Nor at init, where the base arguments come from.
    let out = s.run(&[
        "admin",
        "--sysroot",
        &s.p("other-root"),
        "init",
        "--karg",
        "root=/dev/vda\ninitrd /x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!s.dir.path().join("other-root/sealtree").exists());
}

#[test]
fn links_planted_in_the_store_are_not_followed() {
    let s = TestSysroot::new();
    let src = s.dir.path().join("tree");
    os_tree(&src, "1", &[]);
    s.commit("os", &src, Some("key.sec"));
    // The kernel's object replaced by a link to a copy elsewhere: same
    // bytes, but not the store's file.
    let kernel = fs::read(src.join("usr/lib/modules/6.12.0-test/vmlinuz")).unwrap();
    let digest = hex::encode(sealtree::fsverity::digest_bytes(&kernel));
    let object = s
        .repo()
        .join("objects")
        .join(&digest[..2])
        .join(&digest[2..]);
    fs::write(s.p("elsewhere"), &kernel).unwrap();
    fs::remove_file(&object).unwrap();
    std::os::unix::fs::symlink(s.p("elsewhere"), &object).unwrap();
    let out = s.admin_booted(None, &["deploy", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&digest[2..]) && err.contains("a symbolic link, not a stored file"),
        "{err}"
    );
    // fsck names it: not a stored object.
    let fsck = s.run(&["fsck"]);
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(text.contains(&digest[2..]), "{text}");
    fs::remove_file(&object).unwrap();
    fs::write(&object, &kernel).unwrap();

    // An image that is a link to /dev/zero would never end a read.
    let images = s.repo().join("images");
    let image = fs::read_dir(&images)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    fs::remove_file(&image).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &image).unwrap();
    let out = std::process::Command::new("timeout")
        .args(["60", env!("CARGO_BIN_EXE_sealtree"), "fsck"])
        .env("SEALTREE_REPO", s.repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(124), "fsck hung on the link");
    assert!(text.contains(&format!("corrupt image {name}")), "{text}");
}

#[test]
fn the_store_and_deployments_are_private_to_root() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestSysroot::new();
    let mode = |rel: &str| {
        fs::metadata(t.root().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("sealtree/repo"), mode("sealtree/deploy")),
        (0o700, 0o700)
    );
    // A sysroot made before: deploy makes them private.
    for rel in ["sealtree/repo", "sealtree/deploy"] {
        fs::set_permissions(t.root().join(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tree = t.dir.path().join("tree");
    os_tree(&tree, "1", &[("shadow", "root:secret:1::::::\n")]);
    t.commit("os", &tree, Some("key.sec"));
    t.deploy("os");
    // The merged /etc, images with small files inline, history: all
    // under directories only root may enter.
    assert_eq!(
        (mode("sealtree/repo"), mode("sealtree/deploy")),
        (0o700, 0o700)
    );
}

#[test]
fn a_bootc_style_image_deploys_as_it_is() {
    if !is_root() {
        return missing("root, for umoci to unpack owners");
    }
    if !have_command("umoci") {
        return missing("umoci (apt-get install umoci)");
    }
    let s = TestSysroot::new();
    let d = s.dir.path();
    // A bootc image: the kernel and initramfs in usr/lib/modules/KVER/,
    // the defaults of /etc in usr/etc, in an image made by umoci.
    tool_ok("umoci", d, &["init", "--layout", "img"]);
    tool_ok("umoci", d, &["new", "--image", "img:bootc"]);
    tool_ok("umoci", d, &["unpack", "--image", "img:bootc", "bundle"]);
    os_tree(&d.join("bundle/rootfs"), "1", &[("hostname", "bootc\n")]);
    tool_ok("umoci", d, &["repack", "--image", "img:bootc", "bundle"]);
    let reference = format!("oci:{}:bootc", d.join("img").display());
    let key = s.p("key.sec");
    s.ok(&[
        "commit",
        "-b",
        "bootc",
        "--oci",
        &reference,
        "--sign-key",
        &key,
    ]);
    let id = s.deploy("bootc");
    let status = s.status(None);
    assert_eq!(status[0]["kernel"], "6.12.0-test");
    assert_eq!(
        fs::read(s.root().join(format!("boot/sealtree/{id}/initramfs.img"))).unwrap(),
        b"initramfs 1\n"
    );
    let deployed = s.root().join(format!("sealtree/deploy/{id}"));
    assert_eq!(
        fs::read_to_string(deployed.join("etc/hostname")).unwrap(),
        "bootc\n"
    );
    let show = s.ok(&["show", "bootc"]);
    assert!(
        show.contains(&format!("Source: {reference} (sha256:")),
        "{show}"
    );
}
