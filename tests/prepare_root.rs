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

    /// A systemd-boot variable in efivars/, as the firmware shows it:
    /// attributes, then UTF-16 with a final NUL.
    fn efivar(&self, name: &str, value: &str) {
        let mut bytes = vec![7, 0, 0, 0];
        for u in value.encode_utf16().chain([0]) {
            bytes.extend(u.to_le_bytes());
        }
        fs::create_dir_all(self.p("efivars")).unwrap();
        fs::write(
            self.p(&format!(
                "efivars/{name}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
            )),
            bytes,
        )
        .unwrap();
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
        self.deployment_with(branch, version, key, &[])
    }

    /// The same, with more `commit` arguments.
    fn deployment_with(
        &self,
        branch: &str,
        version: &str,
        key: Option<&str>,
        extra: &[&str],
    ) -> String {
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
        args.extend(extra);
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
        self.prepare_with(&format!("root=/dev/vda rw sealtree={id}"), "", policy, then)
    }

    /// prepare-root with this command line and these extra arguments.
    fn prepare_with(&self, cmdline: &str, args: &str, policy: &str, then: &str) -> Output {
        fs::write(self.p("cmdline"), format!("{cmdline}\n")).unwrap();
        fs::write(self.p("policy.conf"), policy).unwrap();
        // Not sealed, and no loader, unless the test says.
        let args = if args.is_empty() {
            "--sealed-cmdline $PWD/no-seal --efivars $PWD/no-efivars"
        } else {
            args
        };
        let script = format!(
            "mount --bind phys sysroot && {} prepare-root --root $PWD/sysroot --cmdline cmdline \
             --config policy.conf --trusted keys --run-dir $PWD/run {args}; rc=$?; {then}; exit $rc",
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
            "0123456789ab.9".into(),
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

/// The commit a deployment records.
fn commit_of(s: &Setup, id: &str) -> String {
    let info: serde_json::Value = serde_json::from_slice(
        &fs::read(s.p(&format!("phys/sealtree/deploy/{id}/deployment.json"))).unwrap(),
    )
    .unwrap();
    info["commit"].as_str().unwrap().to_string()
}

/// One refusal line naming `want`, and nothing mounted.
fn refused(out: &Output, want: &[&str]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let failed: Vec<_> = all.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{all}");
    for w in want {
        assert!(failed[0].contains(w), "wanted {w} in: {all}");
    }
    assert!(
        !all.contains("overlay") && !all.contains("erofs"),
        "mounted: {all}"
    );
}

#[test]
fn statements_are_bound_to_their_deployment_and_branch() {
    let Some(s) = Setup::new() else { return };
    let old = s.deployment("os/stable", "1", Some("k.sec"));
    let new = s.deployment("os/stable", "2", Some("k.sec"));
    let debug = s.deployment("os/debug", "3", Some("k.sec"));
    let (c_old, c_new) = (commit_of(&s, &old), commit_of(&s, &new));
    let policy = "verity = off\nbranch = os/stable\n";

    // The older deployment's image and statement copied into the newer's
    // directory: each verifies, but the statement is not the deployment's.
    for f in ["image.cfs", "statement.json", "statement.sig"] {
        fs::copy(
            s.p(&format!("phys/sealtree/deploy/{old}/{f}")),
            s.p(&format!("phys/sealtree/deploy/{new}/{f}")),
        )
        .unwrap();
    }
    let out = s.prepare(&new, policy, MOUNTS);
    refused(
        &out,
        &[
            "FAILED: binding",
            &format!("deployment {new} is of commit {}", &c_new[..12]),
            &format!("statement names commit {c_old}"),
        ],
    );
    // admin status reports the statement, and that it is not this one's.
    let status = s.ok(&[
        "admin",
        "--sysroot",
        "phys",
        "--cmdline",
        "/dev/null",
        "status",
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let row = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == new.as_str())
        .unwrap();
    assert_eq!(row["signature"]["state"], "invalid", "{row}");
    assert!(
        row["signature"]["error"].as_str().unwrap().contains(&c_old),
        "{row}"
    );

    // deployment.json rewritten to claim the statement's commit: the id
    // still names the other one.
    let info_path = s.p(&format!("phys/sealtree/deploy/{new}/deployment.json"));
    let info = fs::read_to_string(&info_path)
        .unwrap()
        .replace(&c_new, &c_old);
    fs::write(&info_path, info).unwrap();
    refused(
        &s.prepare(&new, policy, MOUNTS),
        &["FAILED: binding", &c_old],
    );
    // Two commits in one deployment.json: refused, not read either way.
    let info = fs::read_to_string(&info_path).unwrap();
    fs::write(
        &info_path,
        info.replacen('{', &format!("{{\"commit\": \"{c_new}\","), 1),
    )
    .unwrap();
    refused(
        &s.prepare(&new, policy, MOUNTS),
        &["FAILED: binding", "duplicate field `commit`"],
    );

    // A statement of another branch, signed by the trusted key.
    let out = s.prepare(&debug, policy, MOUNTS);
    refused(
        &out,
        &[
            "FAILED: branch",
            &format!("commit {}", commit_of(&s, &debug)),
            "branch 'os/debug'",
            "allows only 'os/stable'",
        ],
    );
    let out = s.prepare(&debug, "verity = off\nbranch = os/*\n", MOUNTS);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.prepare(&old, policy, MOUNTS);
    assert!(out.status.success(), "{}", text(&out));
    // Unsigned deployments are held to the branch deployment.json names.
    let plain = s.deployment("plain", "4", None);
    refused(
        &s.prepare(
            &plain,
            "signature = optional\nverity = off\nbranch = os/stable\n",
            MOUNTS,
        ),
        &["FAILED: branch", "'plain'"],
    );
}

#[test]
fn etc_and_var_are_nosuid_nodev_and_etc_can_be_transient() {
    let Some(s) = Setup::new() else { return };
    let id = s.deployment("os", "1", Some("k.sec"));
    // A setuid-root copy of id(1) and a device node, planted in the
    // shared var/.
    let var = s.p("phys/sealtree/var");
    fs::copy("/usr/bin/id", var.join("suid-id")).unwrap();
    let st = Command::new("chmod")
        .arg("4755")
        .arg(var.join("suid-id"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("mknod")
        .arg(var.join("zero"))
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = s.prepare(
        &id,
        "verity = off\n",
        "findmnt -no OPTIONS $PWD/sysroot/etc; findmnt -no OPTIONS $PWD/sysroot/var; \
         findmnt -no OPTIONS $PWD/sysroot/sysroot; \
         echo euid2=$(setpriv --reuid=65534 --regid=65534 --clear-groups sysroot/sysroot/sealtree/var/suid-id -u); \
         echo euid=$(setpriv --reuid=65534 --regid=65534 --clear-groups sysroot/var/suid-id -u); \
         head -c1 sysroot/var/zero >/dev/null && echo DEVICE-OPENED; true",
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let opts: Vec<&str> = all.lines().filter(|l| l.contains("nosuid")).collect();
    assert_eq!(
        opts.len(),
        3,
        "/etc, /var and the physical root nosuid: {all}"
    );
    assert!(opts.iter().all(|l| l.contains("nodev")), "{all}");
    assert!(all.contains("euid=65534"), "setuid ignored: {all}");
    assert!(
        all.contains("euid2=65534"),
        "setuid ignored through /sysroot: {all}"
    );
    assert!(
        all.contains("Permission denied") && !all.contains("DEVICE-OPENED"),
        "{all}"
    );

    // etc = transient: the image's /etc with a tmpfs over it; writes do
    // not reach the deployment's etc/ and are gone at the next boot.
    let transient = "verity = off\netc = transient\n";
    let image_etc = "ls sysroot/etc | sort | tr '\\n' ' '; echo";
    let out = s.prepare(
        &id,
        transient,
        &format!("{image_etc}; findmnt -no FSTYPE,OPTIONS $PWD/sysroot/etc; echo local > sysroot/etc/written && cat sysroot/etc/written"),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("etc Transient"), "{all}");
    assert!(
        all.contains("overlay") && all.contains("nosuid") && all.contains("nodev"),
        "{all}"
    );
    assert!(all.contains("\nlocal\n"), "{all}");
    assert!(!s
        .p(&format!("phys/sealtree/deploy/{id}/etc/written"))
        .exists());
    let again = s.prepare(&id, transient, "ls sysroot/etc/written 2>&1; true");
    let again = text(&again);
    assert!(again.contains("No such file"), "{again}");
}

#[test]
fn a_sealed_initramfs_takes_the_deployment_from_the_loader() {
    let Some(s) = Setup::new() else { return };
    let id = s.deployment("os", "1", Some("k.sec"));
    fs::write(s.p("seal"), "rw console=ttyS0\n").unwrap();
    let loader_entry = |name: &str| s.efivar("LoaderEntrySelected", name);
    let sealed = "--sealed-cmdline $PWD/seal --efivars $PWD/efivars";
    let policy = "verity = off\n";
    // The loader reports the name it started, counter included.
    loader_entry(&format!("sealtree-7-{id}+2-1.efi"));
    let out = s.prepare_with("rw console=ttyS0", sealed, policy, MOUNTS);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!("root is deployment {id} (sealed UKI)")),
        "{all}"
    );
    assert_eq!(
        fs::read_to_string(s.p("run/booted")).unwrap(),
        format!("{id}\n")
    );
    // The loader's options instead of the UKI's.
    refused(
        &s.prepare_with("init=/bin/sh", sealed, policy, MOUNTS),
        &["FAILED: command line", "missing here: 'rw console=ttyS0'"],
    );
    refused(
        &s.prepare_with(
            &format!("rw console=ttyS0 sealtree={id}"),
            sealed,
            policy,
            MOUNTS,
        ),
        &["FAILED: command line", &format!("sealtree={id}")],
    );
    // An entry that is not sealtree's, and none at all.
    loader_entry("edited.conf");
    refused(
        &s.prepare_with("rw console=ttyS0", sealed, policy, MOUNTS),
        &[
            "FAILED: command line",
            "'edited.conf', which is no sealtree entry",
        ],
    );
    fs::remove_dir_all(s.p("efivars")).unwrap();
    refused(
        &s.prepare_with("rw console=ttyS0", sealed, policy, MOUNTS),
        &["FAILED: command line", "no LoaderEntrySelected"],
    );
}

#[test]
fn epochs_are_held_to_the_tpm_floor() {
    let Some(s) = Setup::new() else { return };
    let Some(mut swtpm) = common::swtpm::Swtpm::start() else {
        return;
    };
    let old = s.deployment_with("os", "1", Some("k.sec"), &["--epoch", "1"]);
    let new = s.deployment_with("os", "2", Some("k.sec"), &["--epoch", "2"]);
    let entry = |name: &str| s.efivar("LoaderEntrySelected", name);
    let policy = "verity = off\nepoch = require-tpm\n";
    let floor = |swtpm: &common::swtpm::Swtpm| {
        sealtree::boot::tpm::Tpm::new(swtpm.tcti())
            .read_floor()
            .unwrap()
            .map(|f| (f.epoch, f.locked))
    };
    let boot = |id: &str, swtpm: &common::swtpm::Swtpm| {
        let args = format!(
            "--sealed-cmdline $PWD/no-seal --efivars $PWD/efivars --tpm {}",
            swtpm.tcti()
        );
        s.prepare_with(&format!("rw sealtree={id}"), &args, policy, MOUNTS)
    };
    // First boot of epoch 2, its entry still counting: the index is
    // defined, the floor stays 0 and is locked before the hand-over.
    entry(&format!("sealtree-2-{new}+2-1.conf"));
    let out = boot(&new, &swtpm);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("epoch 2 above the TPM floor 0, which stays: not blessed yet"),
        "{all}"
    );
    assert_eq!(floor(&swtpm), Some((0, true)));
    // Blessed, next boot: raised to 2.
    swtpm.reboot();
    entry(&format!("sealtree-2-{new}.conf"));
    let all = text(&boot(&new, &swtpm));
    assert!(
        all.contains("epoch 2: the TPM floor is raised to 2"),
        "{all}"
    );
    assert!(all.contains("TPM: floor write-locked"), "{all}");
    assert_eq!(floor(&swtpm), Some((2, true)));
    // The epoch-1 deployment, validly signed: refused, naming both; the
    // floor is locked all the same.
    swtpm.reboot();
    entry(&format!("sealtree-1-{old}.conf"));
    refused(
        &boot(&old, &swtpm),
        &[
            "FAILED: epoch",
            &format!("deployment {old}"),
            "is of epoch 1, below the floor 2 kept in the TPM",
        ],
    );
    assert_eq!(floor(&swtpm), Some((2, true)));
    // Sealed in a UKI of epoch 1: its kernel and initramfs are held to
    // the floor too, whatever the statement's epoch.
    swtpm.reboot();
    fs::write(s.p("seal"), "rw\n").unwrap();
    fs::write(s.p("seal-epoch"), "1\n").unwrap();
    entry(&format!("sealtree-2-{new}.efi"));
    let sealed = format!(
        "--sealed-cmdline $PWD/seal --sealed-epoch $PWD/seal-epoch --efivars $PWD/efivars --tpm {}",
        swtpm.tcti()
    );
    refused(
        &s.prepare_with("rw", &sealed, policy, MOUNTS),
        &[
            "FAILED: epoch",
            "this UKI (kernel and initramfs) is of epoch 1, below the floor 2",
        ],
    );
    // A blessed-looking name does not count while the loader reports a
    // boot counter (LoaderBootCountPath): no raise from an epoch-3 UKI.
    let newer = s.deployment_with("os", "3", Some("k.sec"), &["--epoch", "3"]);
    fs::write(s.p("seal-epoch"), "3\n").unwrap();
    entry(&format!("sealtree-3-{newer}.efi"));
    s.efivar(
        "LoaderBootCountPath",
        &format!("\\EFI\\Linux\\sealtree-3-{newer}+2-1.efi"),
    );
    swtpm.reboot();
    let out = s.prepare_with("rw", &sealed, policy, MOUNTS);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("which stays: not blessed yet"), "{all}");
    assert_eq!(floor(&swtpm), Some((2, true)));
    // No TPM: require-tpm refuses; best-effort boots and says so.
    let none = |policy: &str| {
        s.prepare_with(
            &format!("rw sealtree={new}"),
            "--sealed-cmdline $PWD/no-seal --efivars $PWD/efivars --tpm none",
            policy,
            MOUNTS,
        )
    };
    refused(
        &none(policy),
        &["FAILED: epoch", "no TPM", "epoch = require-tpm"],
    );
    let out = none("verity = off\n");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("WARNING: no TPM: the epoch floor is not kept"),
        "{all}"
    );
}
