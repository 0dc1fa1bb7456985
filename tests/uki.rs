//! `sealtree uki build` and UKI deployments: the UKI carries the tree's
//! kernel and initramfs (plus the seal) under a command line and an
//! os-release that order it by generation; sbverify accepts its
//! signature; deploy installs it as a type 2 entry, counted, blessed and
//! rolled back like a type 1 entry, with its command line fixed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Option<Setup> {
        for tool in ["sbsign", "sbverify", "openssl", "objdump"] {
            if !have_command(tool) {
                missing(&format!("{tool} (packages sbsigntool, openssl, binutils)"));
                return None;
            }
        }
        if !Path::new(STUB).exists() {
            missing(&format!("{STUB} (package systemd-boot-efi)"));
            return None;
        }
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let st = Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=sealtree test db key", "-keyout"])
            .arg(s.p("db.key"))
            .arg("-out")
            .arg(s.p("db.crt"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        s.ok(&["key", "generate", "--secret", "k.sec", "--public", "k.pub"]);
        let out = s.admin(&["init", "--trusted", "k.pub"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(s)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = sealtree()
            .current_dir(self.dir.path())
            .env("SEALTREE_REPO", self.p("sys/sealtree/repo"))
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

    fn admin(&self, args: &[&str]) -> std::process::Output {
        sealtree()
            .current_dir(self.dir.path())
            .args(["admin", "--sysroot", "sys", "--cmdline", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    }

    /// An OS tree with kernel, initramfs, os-release and keys.
    fn tree(&self, version: &str) -> PathBuf {
        let t = self.p("tree");
        let k = t.join("usr/lib/modules/6.12.0");
        for d in [&k, &t.join("etc/sealtree/trusted.d"), &t.join("sysroot")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(k.join("vmlinuz"), pattern(300_000, 1)).unwrap();
        let key = fs::read(self.p("k.pub")).unwrap();
        fs::write(
            k.join("initramfs.img"),
            initramfs(&[
                ("usr/bin/sealtree", &pattern(100_001, 2)),
                (
                    "usr/lib/systemd/system/sealtree-prepare-root.service",
                    b"[Unit]\n",
                ),
                ("etc/sealtree/trusted.d/k.pub", &key),
                ("etc/sealtree/prepare-root.conf", b"branch = os\n"),
            ]),
        )
        .unwrap();
        fs::write(
            t.join("etc/os-release"),
            format!("PRETTY_NAME=\"Test OS {version}\"\nID=testos\nVERSION_ID={version}\n"),
        )
        .unwrap();
        fs::copy(self.p("k.pub"), t.join("etc/sealtree/trusted.d/k.pub")).unwrap();
        fs::write(t.join("etc/sealtree/prepare-root.conf"), "branch = os\n").unwrap();
        fs::write(t.join("version"), version).unwrap();
        t
    }

    fn build(&self, extra: &[&str]) -> String {
        let mut args = vec![
            "uki",
            "build",
            "tree",
            "--sb-key",
            "db.key",
            "--sb-cert",
            "db.crt",
        ];
        args.extend(extra);
        self.ok(&args)
    }

    /// Commit `tree` to branch `os`, signed.
    fn commit(&self) {
        self.ok(&[
            "commit",
            "-b",
            "os",
            "--tree",
            "tree",
            "--sign-key",
            "k.sec",
        ]);
    }

    /// `admin deploy os` fails with a line containing `want`.
    fn deploy_refused(&self, want: &str) {
        let out = self.admin(&["deploy", "os"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "wanted {want} in: {err}");
    }

    fn entries(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.p(&format!("sys/boot/{dir}")))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A gzip-compressed cpio archive of `files`, as dracut makes one.
fn initramfs(files: &[(&str, &[u8])]) -> Vec<u8> {
    use sealtree::uki::cpio::{archive, Item};
    use std::io::Write;
    let items: Vec<Item> = files
        .iter()
        .map(|(path, data)| Item::File {
            path,
            mode: 0o644,
            data,
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive(&items)).unwrap();
    gz.finish().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Section name -> (VMA, size, file offset), from objdump -h.
fn sections(file: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = Command::new("objdump")
        .arg("-h")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            if f.len() >= 7 && f[0].parse::<u32>().is_ok() {
                Some((f[1].to_string(), hex(f[3])?, hex(f[2])?, hex(f[5])?))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_built_uki_holds_the_tree_and_verifies() {
    let Some(s) = Setup::new() else { return };
    let tree = s.tree("1");
    let out = s.build(&["--cmdline", "rw quiet"]);
    assert!(
        out.contains("command line 'rw quiet rd.shell=0 rd.emergency=reboot'")
            && out.contains("branches os"),
        "{out}"
    );
    let uki = tree.join("usr/lib/modules/6.12.0/uki.efi");
    let v = Command::new("sbverify")
        .args(["--cert", s.p("db.crt").to_str().unwrap()])
        .arg(&uki)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "sbverify: {}",
        String::from_utf8_lossy(&v.stderr)
    );

    // Sections in ascending, non-overlapping order after the stub's, with
    // the tree's bytes in them (objdump reads them independently).
    let secs = sections(&uki);
    let names: Vec<&str> = secs.iter().map(|s| s.0.as_str()).collect();
    let tail = &names[names.len() - 4..];
    assert_eq!(
        tail,
        [".osrel", ".cmdline", ".initrd", ".linux"],
        "{names:?}"
    );
    for w in secs.windows(2) {
        assert!(w[0].1 + w[0].2 <= w[1].1, "overlap: {secs:?}");
    }
    let bytes = fs::read(&uki).unwrap();
    let body = |name: &str| {
        let (_, _, size, off) = secs.iter().find(|s| s.0 == name).unwrap();
        bytes[*off as usize..(*off + *size) as usize].to_vec()
    };
    assert_eq!(body(".linux"), pattern(300_000, 1));
    assert_eq!(body(".cmdline"), b"rw quiet rd.shell=0 rd.emergency=reboot");
    let osrel = String::from_utf8(body(".osrel")).unwrap();
    assert_eq!(
        osrel,
        "PRETTY_NAME=\"Test OS 1\"\nID=testos\nIMAGE_ID=sealtree\n"
    );
    // The initramfs, then at a 4-byte boundary the seal: the command line
    // prepare-root will require, and the unit drop-ins.
    let initrd = body(".initrd");
    let original = fs::read(tree.join("usr/lib/modules/6.12.0/initramfs.img")).unwrap();
    assert_eq!(&initrd[..original.len()], &original[..]);
    let seal = String::from_utf8_lossy(&initrd[original.len().div_ceil(4) * 4..]).into_owned();
    assert!(seal.starts_with("070701"), "{seal}");
    for want in [
        "etc/sealtree/uki-cmdline\0",
        "etc/sealtree/uki-epoch\0",
        "rw quiet rd.shell=0 rd.emergency=reboot\n",
        "sealtree-prepare-root.service.d/sealed.conf",
        "ConditionKernelCommandLine=\n",
        "FailureAction=reboot",
        "initrd-root-fs.target.d/sealtree-sealed.conf",
        "Requires=sealtree-prepare-root.service",
        "TRAILER!!!",
    ] {
        assert!(seal.contains(want), "{want:?} not in the seal");
    }
    let shown = s.ok(&["uki", "show", uki.to_str().unwrap()]);
    assert!(
        shown.contains("cmdline: rw quiet") && shown.contains("IMAGE_ID=sealtree"),
        "{shown}"
    );

    // The same input gives the same image; only the signature differs
    // (sbsign puts the signing time in it): compared without it.
    let unsigned = |bytes: &[u8], name: &str| {
        let path = s.p(name);
        fs::write(&path, bytes).unwrap();
        let out = Command::new("sbattach")
            .arg("--remove")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::read(&path).unwrap()
    };
    let first = unsigned(&bytes, "first.efi");
    s.build(&["--cmdline", "rw quiet"]);
    let second = unsigned(&fs::read(&uki).unwrap(), "second.efi");
    assert!(first == second, "uki build is deterministic");
}

#[test]
fn bad_uki_input_is_refused() {
    let Some(s) = Setup::new() else { return };
    s.tree("1");
    let fail = |args: &[&str], want: &str| {
        let key = if args.contains(&"--sb-key") {
            vec![]
        } else {
            vec!["--sb-key", "db.key"]
        };
        let mut all = vec!["uki", "build", "tree", "--sb-cert", "db.crt"];
        all.extend(key);
        all.extend(args);
        let out = sealtree()
            .current_dir(s.dir.path())
            .args(&all)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want} in {err}");
        assert!(!s.p("tree/usr/lib/modules/6.12.0/uki.efi").exists());
    };
    fail(
        &["--cmdline", "rw sealtree=abc"],
        "the deployment comes from the boot loader's entry",
    );
    fail(&["--stub", "tree/version"], "not a PE image");
    fs::write(s.p("bad.key"), "not a key").unwrap();
    fail(&["--sb-key", "bad.key"], "sbsign");
    // A line systemd-boot would end at \r, hiding a version from this
    // reading of it.
    fs::write(
        s.p("tree/etc/os-release"),
        "ID=t\nNAME=x\rIMAGE_VERSION=99\n",
    )
    .unwrap();
    fail(&[], "control character '\\r'");
    s.tree("1");
    // What is signed is checked, not the tree: an initramfs without
    // sealtree, without keys, or overriding the seal's units.
    let image = s.p("tree/usr/lib/modules/6.12.0/initramfs.img");
    let key = fs::read(s.p("k.pub")).unwrap();
    let unit: (&str, &[u8]) = ("usr/lib/systemd/system/sealtree-prepare-root.service", b"x");
    let binary: (&str, &[u8]) = ("usr/bin/sealtree", b"x");
    fs::write(&image, initramfs(&[unit])).unwrap();
    fail(&[], "no sealtree binary or prepare-root unit in it");
    fs::write(&image, initramfs(&[unit, binary])).unwrap();
    fail(&[], "no trusted keys in it");
    fs::write(
        &image,
        initramfs(&[
            unit,
            binary,
            ("etc/sealtree/trusted.d/k.pub", &key),
            (
                "etc/systemd/system/sealtree-prepare-root.service.d/x.conf",
                b"[Unit]\n",
            ),
        ]),
    )
    .unwrap();
    fail(&[], "would override the seal's units");
    fs::write(&image, b"not an initramfs").unwrap();
    fail(&[], "neither cpio nor gzip nor zstd");
    fs::remove_file(&image).unwrap();
    fail(&[], "no initramfs for kernel 6.12.0");
}

#[test]
fn uki_deployments_are_type_2_entries() {
    let Some(s) = Setup::new() else { return };
    s.tree("1");
    s.build(&[]);
    s.commit();
    let out = s.admin(&["deploy", "os"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d1 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    // The UKI is the entry: no kernel copy, no type 1 file.
    assert_eq!(s.entries("EFI/Linux"), [format!("sealtree-1-{d1}+3.efi")]);
    assert!(s.entries("loader/entries").is_empty());
    assert!(!s.p(&format!("sys/boot/sealtree/{d1}")).exists());
    assert_eq!(
        fs::read(s.p(&format!("sys/boot/EFI/Linux/sealtree-1-{d1}+3.efi"))).unwrap(),
        fs::read(s.p("tree/usr/lib/modules/6.12.0/uki.efi")).unwrap()
    );
    // Its command line is sealed.
    let out = s.admin(&["kargs", "--append", "init=/bin/sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed inside it"));
    let out = s.admin(&["deploy", "os", "--karg", "quiet"]);
    assert_eq!(out.status.code(), Some(1));

    // A second release, then rollback: the old UKI is copied under a new
    // generation and the stale file removed; bless drops the counter.
    s.tree("2");
    s.build(&[]);
    s.commit();
    let out = s.admin(&["deploy", "os"]);
    let d2 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(
        s.entries("EFI/Linux"),
        [
            format!("sealtree-1-{d1}+3.efi"),
            format!("sealtree-2-{d2}+3.efi")
        ]
    );
    let out = s.admin(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.entries("EFI/Linux"),
        [
            format!("sealtree-2-{d2}+3.efi"),
            format!("sealtree-3-{d1}+3.efi")
        ]
    );
    fs::write(s.p("cmdline-d1"), format!("sealtree={d1}\n")).unwrap();
    let out = sealtree()
        .current_dir(s.dir.path())
        .args([
            "admin",
            "--sysroot",
            "sys",
            "--cmdline",
            "cmdline-d1",
            "bless",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        s.entries("EFI/Linux"),
        [
            format!("sealtree-2-{d2}+3.efi"),
            format!("sealtree-3-{d1}.efi")
        ]
    );
    let status = s.admin(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.lines().next().unwrap().contains(&d1), "{text}");

    // A newer kernel beside the UKI would boot without it: refused.
    fs::create_dir_all(s.p("tree/boot")).unwrap();
    fs::write(s.p("tree/boot/vmlinuz-9.9"), "k").unwrap();
    fs::write(s.p("tree/boot/initrd.img-9.9"), "i").unwrap();
    s.commit();
    s.deploy_refused("has a UKI for kernel 6.12.0, but its newest kernel is 9.9");
    fs::remove_dir_all(s.p("tree/boot")).unwrap();

    // A UKI not ordered by generation (its own version in .osrel) is
    // refused at deploy.
    fs::write(s.p("tree/etc/os-release"), "ID=testos\n").unwrap();
    s.build(&[]);
    let uki = s.p("tree/usr/lib/modules/6.12.0/uki.efi");
    let mut bytes = fs::read(&uki).unwrap();
    let at = bytes
        .windows(17)
        .position(|w| w == b"IMAGE_ID=sealtree")
        .unwrap();
    bytes[at..at + 17].copy_from_slice(b"IMAGE_ID=sealtre_");
    fs::write(&uki, bytes).unwrap();
    s.commit();
    s.deploy_refused("not 'sealtree'");
}
