//! Security epochs: statements carry them, the TPM floor (a real swtpm,
//! through tpm2-tools) only rises and locks, and admin refuses commits
//! below it.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::swtpm::Swtpm;
use common::*;
use sealtree::boot::tpm::{Tpm, TpmError, FLOOR_INDEX};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_floor_only_rises_and_is_locked_until_reboot() {
    let Some(mut swtpm) = Swtpm::start() else {
        return;
    };
    let tpm = Tpm::new(swtpm.tcti());
    assert_eq!(tpm.read_floor().unwrap(), None);
    // A fresh TPM's first count is 1: floor 0.
    let floor = tpm.provision().unwrap();
    assert_eq!((floor.epoch, floor.count, floor.locked), (0, 1, false));
    tpm.raise(&floor, 2).unwrap();
    let floor = tpm.read_floor().unwrap().unwrap();
    assert_eq!((floor.epoch, floor.count), (2, 3));

    assert!(tpm.lock().unwrap());
    assert!(tpm.read_floor().unwrap().unwrap().locked);
    // TPM_RC_NV_LOCKED
    let err = tpm.raise(&floor, 3).unwrap_err().to_string();
    assert!(err.contains("(TPM response 0x00000148)"), "{err}");
    let index = format!("{FLOOR_INDEX:#x}");
    let write = swtpm.tool(&["tpm2_nvwrite", &index, "-C", &index, "-i", "/dev/null"]);
    assert!(!write.status.success(), "{}", text(&write));

    // A reboot: unlocked for the next initramfs, the floor kept.
    swtpm.reboot();
    let tpm = Tpm::new(swtpm.tcti());
    let floor = tpm.read_floor().unwrap().unwrap();
    assert_eq!((floor.epoch, floor.locked), (2, false));
}

#[test]
fn deleting_or_clearing_the_floor_never_lowers_it() {
    let Some(swtpm) = Swtpm::start() else { return };
    let tpm = Tpm::new(swtpm.tcti());
    let floor = tpm.provision().unwrap();
    tpm.raise(&floor, 2).unwrap();
    let index = format!("{FLOOR_INDEX:#x}");
    // The owner authorization is empty: root may delete the index. The
    // TPM remembers the highest count, so the next provision is above.
    let undefine = swtpm.tool(&["tpm2_nvundefine", &index, "-C", "o"]);
    assert!(undefine.status.success(), "{}", text(&undefine));
    assert_eq!(tpm.read_floor().unwrap(), None);
    assert_eq!(tpm.provision().unwrap().epoch, 3);
    let clear = swtpm.tool(&["tpm2_clear", "-c", "l"]);
    assert!(clear.status.success(), "{}", text(&clear));
    assert_eq!(tpm.provision().unwrap().epoch, 4);
    // Hidden behind 260 other indexes (a listing stops at 254): still
    // found, by handle.
    for i in 0..260u32 {
        let h = format!("{:#x}", 0x0100_0000 + i);
        let out = swtpm.tool(&[
            "tpm2_nvdefine",
            &h,
            "-C",
            "o",
            "-s",
            "1",
            "-a",
            "ownerwrite|ownerread",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(tpm.read_floor().unwrap().unwrap().epoch, 4);
    // With owner and lockout authorizations set by the machine's owner,
    // neither deleting nor clearing works.
    for hierarchy in ["o", "l"] {
        let out = swtpm.tool(&["tpm2_changeauth", "-c", hierarchy, "owner-secret"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let undefine = swtpm.tool(&["tpm2_nvundefine", &index, "-C", "o"]);
    assert!(!undefine.status.success());
    assert!(
        text(&undefine).contains("authorization"),
        "{}",
        text(&undefine)
    );
    let clear = swtpm.tool(&["tpm2_clear", "-c", "l"]);
    assert!(!clear.status.success());
    // prepare-root needs no authorization but the index's own.
    assert!(tpm.lock().unwrap());
    assert_eq!(tpm.read_floor().unwrap().unwrap().epoch, 4);
}

#[test]
fn an_index_that_is_not_a_floor_is_refused() {
    let Some(swtpm) = Swtpm::start() else { return };
    // Defined first by someone else, writable by the owner: not a floor,
    // whatever it holds.
    let index = format!("{FLOOR_INDEX:#x}");
    let def = swtpm.tool(&[
        "tpm2_nvdefine",
        &index,
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "ownerwrite|ownerread|authread|nt=counter",
    ]);
    assert!(def.status.success(), "{}", text(&def));
    let tpm = Tpm::new(swtpm.tcti());
    for result in [tpm.read_floor().map(|_| ()), tpm.provision().map(|_| ())] {
        match result {
            Err(TpmError::Foreign(why)) => assert!(why.contains("attributes"), "{why}"),
            other => panic!("a foreign index was taken as a floor: {other:?}"),
        }
    }
}

/// Commits of epoch 1, 1 (inherited) and 2, signed, in `repo` (made
/// unless it exists).
fn repo(dir: &Path, repo: &Path) -> Vec<String> {
    let st = |args: &[&str]| {
        let out = sealtree()
            .env("SEALTREE_REPO", repo)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    if !repo.exists() {
        st(&["init"]);
    }
    if !dir.join("k.sec").exists() {
        st(&["key", "generate", "--secret", "k.sec", "--public", "k.pub"]);
    }
    fs::set_permissions(
        dir.join("k.sec"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("usr/lib/modules/6.12.0")).unwrap();
    fs::create_dir_all(tree.join("sysroot")).unwrap();
    fs::write(tree.join("usr/lib/modules/6.12.0/vmlinuz"), "k").unwrap();
    fs::write(tree.join("usr/lib/modules/6.12.0/initramfs.img"), "i").unwrap();
    let mut ids = Vec::new();
    for (v, epoch) in [("1", Some("1")), ("2", None), ("3", Some("2"))] {
        fs::write(tree.join("version"), v).unwrap();
        let mut args = vec![
            "commit",
            "-b",
            "os",
            "--tree",
            "tree",
            "--sign-key",
            "k.sec",
        ];
        if let Some(e) = epoch {
            args.extend(["--epoch", e]);
        }
        ids.push(st(&args));
    }
    ids
}

fn statement(dir: &Path, id: &str) -> serde_json::Value {
    let text = fs::read(dir.join(format!("repo/signatures/{id}.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn statements_carry_an_epoch_inherited_from_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let ids = repo(dir.path(), &dir.path().join("repo"));
    let epochs: Vec<_> = ids
        .iter()
        .map(|id| statement(dir.path(), id)["epoch"].as_u64())
        .collect();
    assert_eq!(epochs, [Some(1), Some(1), Some(2)]);
    // Re-signing keeps the commit's epoch unless told.
    let resign = sealtree()
        .env("SEALTREE_REPO", dir.path().join("repo"))
        .current_dir(dir.path())
        .args(["sign", &ids[2], "--key", "k.sec"])
        .output()
        .unwrap();
    assert!(text(&resign).contains("epoch 2"), "{}", text(&resign));
    // --epoch is part of a signature, and bounded by what the TPM holds.
    for (args, want) in [
        (
            vec!["commit", "-b", "os", "--tree", "tree", "--epoch", "3"],
            "--sign-key",
        ),
        (
            vec!["sign", &ids[2], "--key", "k.sec", "--epoch", "1001"],
            "epoch 1001 is above 1000",
        ),
    ] {
        let out = sealtree()
            .env("SEALTREE_REPO", dir.path().join("repo"))
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

#[test]
fn admin_refuses_commits_below_the_floor() {
    let Some(swtpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tpm = Tpm::new(swtpm.tcti());
    let floor = tpm.provision().unwrap();
    tpm.raise(&floor, 2).unwrap();
    let admin = |args: &[&str]| {
        sealtree()
            .env("SEALTREE_TPM", swtpm.tcti())
            .current_dir(d)
            .args(["admin", "--sysroot", "phys", "--cmdline", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = sealtree()
        .current_dir(d)
        .args(["key", "generate", "--secret", "k.sec", "--public", "k.pub"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = admin(&["init", "--trusted", "k.pub"]);
    assert!(out.status.success(), "{}", text(&out));
    let ids = repo(d, &d.join("phys/sealtree/repo"));
    let out = admin(&["deploy", &ids[0]]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(&format!(
            "commit {} is of epoch 1, below the floor 2 this machine's TPM keeps",
            ids[0]
        )),
        "{msg}"
    );
    assert!(fs::read_dir(d.join("phys/sealtree/deploy"))
        .map(|r| r.count() == 0)
        .unwrap_or(true));
    let out = admin(&["deploy", &ids[0], "--allow-below-floor"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = admin(&["deploy", &ids[2]]);
    assert!(out.status.success(), "{}", text(&out));
    let out = admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["floor"], 2);
    let judged: Vec<_> = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["epoch"].as_u64(), d["floor_allows"].as_bool()))
        .collect();
    assert_eq!(judged, [(Some(2), Some(true)), (Some(1), Some(false))]);
    let out = admin(&["status"]);
    assert!(
        text(&out).contains("epoch   1: BELOW THE FLOOR 2"),
        "{}",
        text(&out)
    );
    // Rollback to it would only burn the loader's tries.
    let out = admin(&["rollback"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("below the floor 2"), "{}", text(&out));
    let out = admin(&["epoch"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).lines().next(), Some("2"));
}
