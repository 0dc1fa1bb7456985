//! Every input the command line takes, malformed: exit status 1, one
//! clear line on stderr, never a panic, and the repository unchanged.
//! Inputs: dumpfile, tar, image, key file, statement, signature, policy
//! file, kernel command line, and remote responses (from a real nginx).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::fixture::*;
use common::nginx::Nginx;
use common::*;

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// A word the error line must hold.
    want: &'static str,
}

#[test]
fn malformed_inputs_fail_with_one_line_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel).to_str().unwrap().to_string();
    let repo = dir.path().join("repo");
    let run_in = |repo: &Path, args: &[String]| {
        sealtree()
            .env("SEALTREE_REPO", repo)
            .args(args)
            .output()
            .unwrap()
    };
    let run = |args: &[String]| run_in(&repo, args);
    let ok = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["init"]);
    ok(&[
        "key",
        "generate",
        "--secret",
        &p("k.sec"),
        "--public",
        &p("k.pub"),
    ]);
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    write(&src.join("etc/big"), 10_000, 3);
    let id = ok(&[
        "commit",
        "-b",
        "os",
        "--tree",
        &p("src"),
        "--sign-key",
        &p("k.sec"),
    ]);
    let id = id.trim().to_string();
    let image = fs::read_dir(repo.join("images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // Input files.
    let put = |name: &str, data: &[u8]| {
        fs::write(dir.path().join(name), data).unwrap();
        if name.ends_with(".sec") {
            // Private, as a secret key must be, so its content is what
            // gets refused.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path().join(name), fs::Permissions::from_mode(0o600)).unwrap();
        }
        p(name)
    };
    let good_image = fs::read(&image).unwrap();
    let statement = fs::read(repo.join(format!("signatures/{id}.json"))).unwrap();
    let gz_garbage = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"this is not a tar archive at all").unwrap();
        e.finish().unwrap()
    };
    let evil_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../escaped");
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let truncated_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(100_000);
        h.set_mode(0o644);
        h.set_path("file").unwrap();
        h.set_cksum();
        b.append(&h, &vec![7u8; 100_000][..]).unwrap();
        let mut v = b.into_inner().unwrap();
        v.truncate(5_000);
        v
    };
    let mut not_canonical = String::from_utf8(statement.clone())
        .unwrap()
        .replacen(',', ", ", 1);
    not_canonical.push('\n');
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sysroot = dir.path().join("sysroot");
    fs::create_dir_all(sysroot.join("sealtree/deploy/abc.0")).unwrap();

    let huge_xattr = format!(
        "/ 0 40755 1 0 0 0 0.0 - - - user.big={}\n",
        "x".repeat(70_000)
    );
    let mut cases = vec![
        Case {
            name: "dumpfile: 70000-byte xattr",
            args: args(&[
                "commit",
                "-b",
                "x",
                "--dump",
                &put("h.dump", huge_xattr.as_bytes()),
            ]),
            want: "more than the maximum of 65535",
        },
        Case {
            name: "dumpfile: not a dumpfile",
            args: args(&[
                "commit",
                "-b",
                "x",
                "--dump",
                &put("a.dump", b"hello world\n"),
            ]),
            want: "a.dump",
        },
        Case {
            name: "dumpfile: bad mode",
            args: args(&[
                "commit",
                "-b",
                "x",
                "--dump",
                &put(
                    "b.dump",
                    b"/ 0 40755 1 0 0 0 0.0 - - -\n/f 5 999999 1 0 0 0 0.0 - - -\n",
                ),
            ]),
            want: "b.dump:2",
        },
        Case {
            name: "dumpfile: object not stored",
            args: args(&[
                "commit",
                "-b",
                "x",
                "--dump",
                &put(
                    "c.dump",
                    format!(
                        "/ 0 40755 1 0 0 0 0.0 - - -\n/f 5000 100644 1 0 0 0 0.0 00/{} - 00{}\n",
                        "1".repeat(62),
                        "1".repeat(62)
                    )
                    .as_bytes(),
                ),
            ]),
            want: "not in the store",
        },
        Case {
            name: "tar: gzip of garbage",
            args: args(&["commit", "-b", "x", "--tar", &put("a.tar.gz", &gz_garbage)]),
            want: "a.tar.gz",
        },
        Case {
            name: "tar: entry escaping with ..",
            args: args(&["commit", "-b", "x", "--tar", &put("b.tar", &evil_tar)]),
            want: "escaped",
        },
        Case {
            name: "tar: truncated",
            args: args(&["commit", "-b", "x", "--tar", &put("c.tar", &truncated_tar)]),
            want: "c.tar",
        },
        Case {
            name: "tar: zstd magic then garbage",
            args: args(&[
                "commit",
                "-b",
                "x",
                "--tar",
                &put("d.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5]),
            ]),
            want: "d.tar.zst",
        },
        Case {
            name: "image: random bytes",
            args: args(&["composefs-dump", &put("a.cfs", &[0x5a; 8192])]),
            want: "a.cfs",
        },
        Case {
            name: "image: truncated",
            args: args(&["composefs-dump", &put("b.cfs", &good_image[..1500])]),
            want: "b.cfs",
        },
        Case {
            name: "image: empty",
            args: args(&["composefs-dump", &put("c.cfs", b"")]),
            want: "c.cfs",
        },
        Case {
            name: "key: not base64",
            args: args(&["sign", &id, "--key", &put("a.sec", b"%%%% not base64\n")]),
            want: "a.sec",
        },
        Case {
            name: "key: wrong length",
            args: args(&["sign", &id, "--key", &put("b.sec", b"AAAA\n")]),
            want: "64 bytes",
        },
        Case {
            name: "trusted key: wrong length",
            args: args(&["verify", &id, "--trusted", &put("c.pub", b"AAAA\n")]),
            want: "c.pub",
        },
        Case {
            name: "trusted keys: empty file",
            args: args(&["verify", &id, "--trusted", &put("d.pub", b"")]),
            want: "no trusted key",
        },
        Case {
            name: "policy: unknown value",
            args: args(&[
                "prepare-root",
                "--root",
                &p("sysroot"),
                "--cmdline",
                &put("cmd1", b"sealtree=abc.0\n"),
                "--config",
                &put("p1.conf", b"signature = maybe\n"),
                "--run-dir",
                &p("run"),
            ]),
            want: "p1.conf:1",
        },
        Case {
            name: "cmdline: no sealtree=",
            args: args(&[
                "prepare-root",
                "--root",
                &p("sysroot"),
                "--cmdline",
                &put("cmd2", b"root=/dev/vda quiet\n"),
                "--run-dir",
                &p("run"),
            ]),
            want: "no sealtree=",
        },
        Case {
            name: "cmdline: path in the id",
            args: args(&[
                "prepare-root",
                "--root",
                &p("sysroot"),
                "--cmdline",
                &put("cmd3", b"sealtree=../../etc\n"),
                "--run-dir",
                &p("run"),
            ]),
            want: "not a deployment id",
        },
    ];

    // Statements and signatures: the stored ones, replaced.
    let sig_path = repo.join(format!("signatures/{id}.sig"));
    let text_path = repo.join(format!("signatures/{id}.json"));
    let verify = args(&["verify", &id, "--trusted", &p("k.pub")]);
    let tampered: Vec<(&str, &Path, Vec<u8>, &str)> = vec![
        (
            "statement: not canonical",
            &text_path,
            not_canonical.into_bytes(),
            "not from a trusted key",
        ),
        (
            "statement: not JSON",
            &text_path,
            b"{{{{\n".to_vec(),
            "not from a trusted key",
        ),
        (
            "signature: not base64",
            &sig_path,
            b"!!!!\n".to_vec(),
            "not base64",
        ),
        (
            "signature: wrong length",
            &sig_path,
            b"AAAA\n".to_vec(),
            "64 bytes",
        ),
    ];

    let mut failures = Vec::new();
    let mut check = |name: &str, args: &[String], want: &str, store: &Path| {
        let before = snapshot(store);
        let out = run_in(store, args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = err.lines().collect();
        let problem = if out.status.code() != Some(1) {
            Some(format!("exit {:?}", out.status.code()))
        } else if err.contains("panicked") {
            Some("panic".into())
        } else if lines.len() != 1 || !lines[0].starts_with("sealtree: ") {
            Some("not one 'sealtree: ' line".into())
        } else if !err.contains(want) {
            Some(format!("does not say '{want}'"))
        } else if snapshot(store) != before {
            Some("the repository changed".into())
        } else {
            None
        };
        match problem {
            Some(p) => failures.push(format!("{name}: {p}: {err}")),
            None => println!("ok  {name}: {}", err.trim()),
        }
    };
    for c in cases.drain(..) {
        check(c.name, &c.args, c.want, &repo);
    }
    for (name, path, data, want) in tampered {
        let original = fs::read(path).unwrap();
        fs::write(path, &data).unwrap();
        check(name, &verify, want, &repo);
        fs::write(path, original).unwrap();
    }

    // Remote responses, from a real nginx serving a doctored copy.
    if have_command("nginx") {
        let served = dir.path().join("served");
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&repo)
            .arg(&served)
            .status()
            .unwrap();
        assert!(cp.success());
        ok(&["publish", "--sign-key", &p("k.sec")]);
        for f in ["refs.json", "index.json", "index.sig"] {
            fs::copy(repo.join(f), served.join(f)).unwrap();
        }
        let nginx = Nginx::start(&served, "");
        // A second repository pulls from it.
        let client = dir.path().join("client");
        for a in [
            vec!["init".to_string()],
            args(&[
                "remote",
                "add",
                "origin",
                &nginx.url(),
                "--trusted",
                &p("k.pub"),
            ]),
        ] {
            assert!(run_in(&client, &a).status.success());
        }
        // The client has seen this index (an earlier pull): a verified
        // index newer than that is recorded even by a pull that fails.
        fs::copy(
            served.join("index.json"),
            client.join("remotes/origin/index.json"),
        )
        .unwrap();
        let pull = args(&["pull", "origin", "os"]);
        let commit_obj = served.join(format!("git/objects/{}/{}", &id[..2], &id[2..]));
        let responses: Vec<(&str, PathBuf, Option<Vec<u8>>, &str)> = vec![
            (
                "remote: index.json not JSON",
                served.join("index.json"),
                Some(b"<html>".to_vec()),
                "index.json",
            ),
            (
                "remote: index.json altered",
                served.join("index.json"),
                Some(b"{\"branches\":{}}".to_vec()),
                "not from a trusted key",
            ),
            (
                "remote: index.sig missing",
                served.join("index.sig"),
                None,
                "no signed index",
            ),
            (
                "remote: statement missing",
                served.join(format!("signatures/{id}.json")),
                None,
                "HTTP 404",
            ),
            (
                "remote: signature garbage",
                served.join(format!("signatures/{id}.sig")),
                Some(b"AAAA\n".to_vec()),
                "64 bytes",
            ),
            (
                "remote: commit object not zlib",
                commit_obj.clone(),
                Some(b"plain text".to_vec()),
                "zlib",
            ),
        ];
        for (name, path, data, want) in responses {
            let original = fs::read(&path).ok();
            match &data {
                Some(d) => fs::write(&path, d).unwrap(),
                None => fs::remove_file(&path).unwrap(),
            }
            check(name, &pull, want, &client);
            if let Some(o) = original {
                fs::write(&path, o).unwrap();
            }
        }
        // Unreachable server: the URL is named.
        let mut stopped = nginx;
        stopped.stop();
        check("remote: server down", &pull, "127.0.0.1", &client);
    } else {
        missing("nginx (apt-get install nginx), for remote responses");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
