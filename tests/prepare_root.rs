//! `sealtree prepare-root` on the host, each run in a private mount
//! namespace: a good deployment becomes the root (overlay of its image
//! over the store, etc/ and var/ bound, the physical root underneath);
//! every refusal names its check and leaves nothing mounted.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::fixture::*;
use common::*;

struct Setup {
    dir: tempfile::TempDir,
    sealtree: PathBuf,
}

impl Setup {
    fn new() -> Option<Setup> {
        if !is_root() {
            missing("root, for mount namespaces and mounts");
            return None;
        }
        let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !(fs_list.contains("erofs") && fs_list.contains("overlay")) {
            missing("erofs and overlay filesystems");
            return None;
        }
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
            sealtree: PathBuf::from(env!("CARGO_BIN_EXE_sealtree")),
        };
        fs::create_dir_all(s.p("keys")).unwrap();
        fs::create_dir_all(s.p("sysroot")).unwrap();
        s.ok(&[
            "key",
            "generate",
            "--secret",
            "k.sec",
            "--public",
            "keys/k.pub",
        ]);
        s.ok(&["key", "generate", "--secret", "u.sec", "--public", "u.pub"]);
        s.ok(&[
            "admin",
            "--sysroot",
            "phys",
            "--cmdline",
            "/dev/null",
            "init",
            "--trusted",
            "keys/k.pub",
            "--trusted",
            "u.pub",
        ]);
        Some(s)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(&self.sealtree)
            .current_dir(self.dir.path())
            .env("SEALTREE_REPO", self.p("phys/sealtree/repo"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Commit a small OS tree (with `version` in it) and deploy it.
    fn deployment(&self, branch: &str, version: &str, key: Option<&str>) -> String {
        let tree = self.p(&format!("tree-{branch}"));
        for d in [
            "usr/lib/modules/6.12.0",
            "usr/etc",
            "usr/bin",
            "etc",
            "var",
            "sysroot",
        ] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        fs::write(tree.join("usr/lib/modules/6.12.0/vmlinuz"), "k").unwrap();
        fs::write(tree.join("usr/lib/modules/6.12.0/initramfs.img"), "i").unwrap();
        fs::write(tree.join("usr/etc/os.conf"), format!("version={version}\n")).unwrap();
        write(&tree.join("usr/bin/tool"), 100_000, version.as_bytes()[0]);
        let tree_s = tree.to_str().unwrap();
        let mut args = vec!["commit", "-b", branch, "--tree", tree_s];
        if let Some(k) = key {
            args.extend(["--sign-key", k]);
        }
        self.ok(&args);
        let out = self.ok(&[
            "admin",
            "--sysroot",
            "phys",
            "--cmdline",
            "/dev/null",
            "deploy",
            branch,
        ]);
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    /// prepare-root for `id` in a new mount namespace, then `then` (a
    /// shell snippet) in the same namespace.
    fn prepare(&self, id: &str, policy: &str, then: &str) -> Output {
        fs::write(
            self.p("cmdline"),
            format!("root=/dev/vda rw sealtree={id}\n"),
        )
        .unwrap();
        fs::write(self.p("policy.conf"), policy).unwrap();
        let script = format!(
            "mount --bind phys sysroot && {} prepare-root --root $PWD/sysroot --cmdline cmdline \
             --config policy.conf --trusted keys --run-dir $PWD/run; rc=$?; {then}; exit $rc",
            self.sealtree.display()
        );
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The mounts under sysroot after a refusal: only the bind of phys.
const MOUNTS: &str = "findmnt -R -n -l -o TARGET,FSTYPE $PWD/sysroot | tr -s ' '";

#[test]
fn a_good_deployment_becomes_the_root() {
    let Some(s) = Setup::new() else { return };
    let id = s.deployment("os", "1", Some("k.sec"));
    let out = s.prepare(
        &id,
        "signature = required\nverity = off\n",
        &format!("{MOUNTS}; cat sysroot/etc/os.conf; cmp sysroot/usr/bin/tool tree-os/usr/bin/tool && echo SAME; ls sysroot/sysroot/sealtree/deploy; touch sysroot/var/written"),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let key = fs::read_to_string(s.p("keys/k.pub")).unwrap();
    assert!(all.contains(&format!("root is deployment {id}")), "{all}");
    assert!(all.contains(&format!("signed by {}", key.trim())), "{all}");
    for step in ["signature ok (", "image digest ok (", "mount ok ("] {
        assert!(all.contains(step), "{step}: {all}");
    }
    let root = s.p("sysroot");
    let root = root.to_str().unwrap();
    assert!(all.contains(&format!("{root} overlay")), "{all}");
    assert!(all.contains(&format!("{root}/etc ")), "{all}");
    assert!(all.contains(&format!("{root}/var ")), "{all}");
    assert!(all.contains(&format!("{root}/sysroot ")), "{all}");
    assert!(all.contains("version=1") && all.contains("SAME"), "{all}");
    assert!(all.contains(&id), "{all}");
    // /var is the shared one on the physical root.
    assert!(s.p("phys/sealtree/var/written").exists());
}

#[test]
fn refusals_name_the_check_and_mount_nothing() {
    let Some(s) = Setup::new() else { return };
    let good = s.deployment("os", "1", Some("k.sec"));
    let untrusted = s.deployment("other", "2", Some("u.sec"));
    let unsigned = s.deployment("plain", "3", None);
    let tampered = s.deployment("tampered", "4", Some("k.sec"));
    // Replace the tampered deployment's image by another valid image.
    let signed: serde_json::Value = serde_json::from_slice(
        &fs::read(s.p(&format!("phys/sealtree/deploy/{tampered}/statement.json"))).unwrap(),
    )
    .unwrap();
    fs::copy(
        s.p(&format!("phys/sealtree/deploy/{good}/image.cfs")),
        s.p(&format!("phys/sealtree/deploy/{tampered}/image.cfs")),
    )
    .unwrap();
    let good_digest = sealtree::fsverity::digest_bytes(
        &fs::read(s.p(&format!("phys/sealtree/deploy/{good}/image.cfs"))).unwrap(),
    );
    let strict = "signature = required\nverity = off\n";
    let u_key = fs::read_to_string(s.p("u.pub")).unwrap();
    let cases: Vec<(&str, String, &str, Vec<String>)> = vec![
        (
            "untrusted key",
            untrusted.clone(),
            strict,
            vec!["FAILED: signature".into(), u_key.trim().into()],
        ),
        (
            "image replaced",
            tampered.clone(),
            strict,
            vec![
                "FAILED: image digest".into(),
                hex::encode(good_digest),
                signed["image_digest"].as_str().unwrap().into(),
            ],
        ),
        (
            "unsigned, required",
            unsigned.clone(),
            strict,
            vec!["FAILED: signature".into(), "unsigned".into()],
        ),
        (
            "no such deployment",
            "0123.9".into(),
            strict,
            vec!["FAILED: deployment".into()],
        ),
        (
            "bad id",
            "../x".into(),
            strict,
            vec!["FAILED: command line".into()],
        ),
        (
            "bad policy",
            good.clone(),
            "verity = maybe\n",
            vec!["FAILED: policy".into(), "policy.conf:1".into()],
        ),
    ];
    for (name, id, policy, want) in cases {
        let out = s.prepare(&id, policy, MOUNTS);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {all}");
        for w in want {
            assert!(all.contains(&w), "{name}: wanted {w} in: {all}");
        }
        assert!(
            !all.contains("overlay") && !all.contains("erofs"),
            "{name}: mounted: {all}"
        );
        let failed: Vec<_> = all.lines().filter(|l| l.contains("FAILED")).collect();
        assert_eq!(failed.len(), 1, "{name}: {all}");
    }
    // Unsigned boots where the policy allows it.
    let out = s.prepare(&unsigned, "signature = optional\nverity = off\n", MOUNTS);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("signed by nobody"));
}
