//! `sealtree admin install` onto disk image files, read back without
//! mounting the ESP (mtools) and with a read-only loop mount of the root
//! filesystem: partitions, boot loader, entries, sysroot, refusals.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::fixture::write;
use common::*;

const ESP_OFFSET: u64 = 2048 * 512;

/// A published, signed repository with one small OS commit on `os`.
struct Source {
    dir: tempfile::TempDir,
}

impl Source {
    fn new() -> Source {
        let s = Source {
            dir: tempfile::tempdir().unwrap(),
        };
        s.ok(&["init"]);
        s.ok(&[
            "key",
            "generate",
            "--secret",
            &s.p("k.sec"),
            "--public",
            &s.p("k.pub"),
        ]);
        s.ok(&[
            "key",
            "generate",
            "--secret",
            &s.p("o.sec"),
            "--public",
            &s.p("o.pub"),
        ]);
        let t = s.dir.path().join("tree");
        for d in [
            "etc",
            "boot",
            "usr/lib/modules/6.12.0-1-amd64",
            "var/lib/app",
            "sysroot",
        ] {
            fs::create_dir_all(t.join(d)).unwrap();
        }
        fs::write(
            t.join("etc/fstab"),
            "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
        )
        .unwrap();
        fs::write(t.join("etc/hostname"), "installed\n").unwrap();
        write(&t.join("boot/vmlinuz-6.12.0-1-amd64"), 300_000, 3);
        write(&t.join("boot/initrd.img-6.12.0-1-amd64"), 200_000, 4);
        fs::write(t.join("var/lib/app/state"), "seed\n").unwrap();
        s.ok(&[
            "commit",
            "-b",
            "os",
            "--tree",
            t.to_str().unwrap(),
            "--sign-key",
            &s.p("k.sec"),
        ]);
        s.ok(&["publish", "--sign-key", &s.p("k.sec")]);
        s
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        sealtree()
            .env("SEALTREE_REPO", self.p("repo"))
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

    /// `admin install` into `target` (its own options) from this
    /// repository's `os`, trusting `trusted`.
    fn install_with(&self, target: &[&str], trusted: &str) -> Output {
        let (source, workdir) = (self.p("repo"), self.p(""));
        let mut args = vec!["admin", "install"];
        args.extend_from_slice(target);
        args.extend(["--source", &source, "--branch", "os", "--trusted", trusted]);
        args.extend(["--workdir", &workdir]);
        self.run(&args)
    }

    fn install(&self, disk: &str, trusted: &str) -> Output {
        let target = ["--disk", disk, "--size", "600M", "--esp-size", "100M"];
        self.install_with(
            &[&target[..], &["--karg", "console=ttyS0"]].concat(),
            trusted,
        )
    }
}

/// The tools an install runs and the tests read back with.
fn tools_missing() -> bool {
    let mut missing_any = false;
    for tool in ["sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "mdir", "mtype"] {
        if !have_command(tool) {
            missing(&format!("{tool} (fdisk, e2fsprogs, dosfstools, mtools)"));
            missing_any = true;
        }
    }
    if !Path::new(sealtree_loader()).exists() {
        missing(&format!("{} (systemd-boot-efi)", sealtree_loader()));
        missing_any = true;
    }
    missing_any
}

fn sealtree_loader() -> &'static str {
    "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
}

fn mtools(tool: &str, disk: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{disk}@@{ESP_OFFSET}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn install_to_an_image_file_makes_a_bootable_disk() {
    if tools_missing() {
        return;
    }
    let s = Source::new();
    let disk = s.p("disk.img");
    let out = s.install(&disk, &s.p("k.pub"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every step reported.
    for step in [
        "the initramfs turns it on at first boot",
        "partitioning",
        "pulling os",
        "boot loader",
        "deployed",
        "fs-verity",
        "root filesystem",
        "ESP",
        "installed on",
    ] {
        assert!(stdout.contains(step), "no '{step}' in:\n{stdout}");
    }
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("install: deployed "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();

    // GPT: an ESP and an x86-64 root, by their Discoverable Partitions types.
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(&disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(v["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    let esp_uuid = parts[0]["uuid"].as_str().unwrap().to_lowercase();
    let root_uuid = parts[1]["uuid"].as_str().unwrap().to_lowercase();

    // The ESP: systemd-boot as the fallback loader, the entry, its files.
    let loader = fs::read(sealtree_loader()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("BOOTX64.EFI");
    mtools(
        "mcopy",
        &disk,
        &["::/EFI/BOOT/BOOTX64.EFI", copy.to_str().unwrap()],
    );
    assert_eq!(fs::read(&copy).unwrap(), loader);
    let entries = mtools("mdir", &disk, &["-b", "::/loader/entries"]);
    let name = format!("sealtree-1-{id}+3.conf");
    assert_eq!(entries.trim(), format!("::/loader/entries/{name}"));
    let entry = mtools("mtype", &disk, &[&format!("::/loader/entries/{name}")]);
    assert!(
        entry.contains(&format!("linux /sealtree/{id}/vmlinuz")),
        "{entry}"
    );
    assert!(
        entry.contains(&format!(
            "options root=PARTUUID={root_uuid} rw console=ttyS0 sealtree={id}"
        )),
        "{entry}"
    );
    let kernels = mtools("mdir", &disk, &["-b", &format!("::/sealtree/{id}")]);
    assert!(
        kernels.contains("vmlinuz") && kernels.contains("initramfs.img"),
        "{kernels}"
    );
    assert_eq!(
        mtools("mtype", &disk, &["::/loader/loader.conf"]),
        "timeout 3\n"
    );

    // The root filesystem, mounted read-only where the machine can.
    if !is_root() {
        missing("root (to loop-mount the installed root filesystem)");
        return;
    }
    let mnt = dir.path().join("root");
    fs::create_dir(&mnt).unwrap();
    let offset = parts[1]["start"].as_u64().unwrap() * 512;
    let status = Command::new("mount")
        .args(["-o", &format!("ro,loop,offset={offset}")])
        .arg(&disk)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    // Unmounted however the checks end.
    let _unmount = Unmount(mnt.clone());
    let sysroot = mnt.join("sealtree");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(sysroot.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["require_signatures"], true);
    assert_eq!(config["boot_partition"], format!("PARTUUID={esp_uuid}"));
    let fstab = fs::read_to_string(sysroot.join(format!("deploy/{id}/etc/fstab"))).unwrap();
    assert!(
        fstab.contains(&format!("PARTUUID={esp_uuid} /sysroot/boot vfat")),
        "{fstab}"
    );
    assert_eq!(
        fs::read_to_string(sysroot.join("var/lib/app/state")).unwrap(),
        "seed\n"
    );
    // A disk's root is copied by mkfs, without fs-verity: the first boot
    // turns it on.
    assert!(sysroot.join("verity-pending").exists());
    assert!(sysroot.join(format!("deploy/{id}/statement.sig")).exists());
    assert!(fs::read_dir(sysroot.join("trusted.d")).unwrap().count() == 1);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_failed_install_leaves_no_boot_entry() {
    if tools_missing() {
        return;
    }
    let s = Source::new();
    let disk = s.p("disk.img");
    // The commit is signed by k, the install trusts only o: refused at
    // the pull, before anything is written to the ESP.
    let out = s.install(&disk, &s.p("o.pub"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not from a trusted key"), "{err}");
    // Everything is checked before the disk is touched: no image file was
    // even created.
    assert!(!Path::new(&disk).exists(), "the disk was written");
    // Nothing staged is left behind.
    let left: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sealtree-install."))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A disk path that does not exist and no --size: one clear line.
    let out = s.install_with(&["--disk", &s.p("nope.img")], &s.p("k.pub"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.img: does not exist; give --size"),
        "{err}"
    );

    // A mistyped device is not created as a file in /dev.
    let target = ["--disk", "/dev/sealtree-no-such-disk", "--size", "100M"];
    let out = s.install_with(&target, &s.p("k.pub"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/sealtree-no-such-disk: no such device"),
        "{err}"
    );
    assert!(!Path::new("/dev/sealtree-no-such-disk").exists());
}

#[test]
fn install_into_mounted_filesystems_needs_a_gpt_esp() {
    let s = Source::new();
    fs::create_dir_all(s.p("root")).unwrap();
    fs::create_dir_all(s.p("esp")).unwrap();
    if !Path::new(sealtree_loader()).exists() {
        missing(&format!("{} (systemd-boot-efi)", sealtree_loader()));
        return;
    }
    // A plain directory is not a partition: refused before anything is written.
    let (root, esp) = (s.p("root"), s.p("esp"));
    let out = s.install_with(&["--filesystem", &root, "--esp", &esp], &s.p("k.pub"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no partition with a PARTUUID is mounted there"),
        "{err}"
    );
    assert_eq!(fs::read_dir(s.p("root")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(s.p("esp")).unwrap().count(), 0);
}
