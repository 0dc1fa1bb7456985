//! Pulls from a real nginx on 127.0.0.1 serving a published repository:
//! first pull and checkout, an update fetching only what changed, a pull
//! interrupted by stopping nginx and resumed, a corrupted object, an
//! untrusted signature, and `admin upgrade`. Then the same from a local
//! directory (`file://` URLs and plain paths), as for offline updates
//! from a USB stick.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::fixture::*;
use common::nginx::Nginx;
use common::pair::*;
use common::tls::*;
use common::*;

/// Object digests named by object requests.
fn object_requests(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| r.strip_prefix("/objects/"))
        .map(|r| r.replace('/', ""))
        .collect()
}

#[test]
fn pull_into_an_empty_repository_then_checkout_equals_the_source() {
    let Some(p) = Pair::new() else { return };
    if !is_root() {
        return missing("root, to create devices and owners in the tree");
    }
    let src = p.path("src");
    make_tree(&src);
    let id = p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "key.pub");
    assert_eq!(
        p.ok("client", &["remote", "list"]),
        format!("origin {}\n", nginx.url())
    );
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains(&id), "{out}");
    assert_pulled(&p, &src, &id);
}

#[test]
fn an_update_fetches_only_the_changed_objects() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(src.join("usr/share")).unwrap();
    for i in 0..50 {
        write(&src.join(format!("usr/share/f{i}")), 10_000 + i, i as u8);
    }
    p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    assert_eq!(object_requests(&nginx.requests()).len(), 50);

    for i in [3, 17, 42] {
        write(&src.join(format!("usr/share/f{i}")), 20_000, 200 + i as u8);
    }
    let second = p.publish(&src);
    nginx.clear_log();
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(
        out.contains("3 objects fetched") && out.contains("47 already here"),
        "{out}"
    );
    let requests = nginx.requests();
    assert_eq!(object_requests(&requests).len(), 3, "{requests:?}");
    assert!(out.contains(&second));
    // Pulling again fetches nothing.
    nginx.clear_log();
    p.ok("client", &["pull", "origin", "os"]);
    assert_eq!(object_requests(&nginx.requests()).len(), 0);
    // The first commit is history without content here; fsck knows.
    let fsck = p.ok("client", &["fsck"]);
    assert!(!fsck.contains("missing"), "{fsck}");
}

#[test]
fn a_pull_interrupted_by_the_server_resumes_fetching_only_the_rest() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(src.join("usr/share")).unwrap();
    let total = 200;
    for i in 0..total {
        write(
            &src.join(format!("usr/share/f{i}")),
            48_000 + i,
            (i % 251) as u8,
        );
    }
    p.publish(&src);
    // Slow enough (about 0.5 s an object) to stop it part-way.
    let mut nginx = Nginx::start(&p.path("server"), "sendfile off; limit_rate 64k;");
    p.add_remote(&nginx.url(), "key.pub");
    let client = {
        let repo = p.path("client");
        std::thread::spawn(move || {
            sealtree()
                .env("SEALTREE_REPO", repo)
                .args(["pull", "origin", "os"])
                .output()
                .unwrap()
        })
    };
    // Stop the server once some objects have been published here.
    let start = std::time::Instant::now();
    while p.client_objects().len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no object arrived"
        );
        assert!(
            !client.is_finished(),
            "the pull ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx.stop();
    let out = client.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{err}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(&format!("http://127.0.0.1:{}/objects/", nginx.port)),
        "{err}"
    );
    let arrived = p.client_objects();
    assert!(
        !arrived.is_empty() && arrived.len() < total,
        "{} arrived",
        arrived.len()
    );
    assert_eq!(
        p.ok("client", &["refs"]),
        "",
        "no ref moves on a failed pull"
    );

    nginx.restart("");
    nginx.clear_log();
    let out = p.ok("client", &["pull", "origin", "os"]);
    let requested = object_requests(&nginx.requests());
    for d in &requested {
        assert!(!arrived.contains(d), "fetched {d} again");
    }
    assert_eq!(requested.len(), total - arrived.len(), "{out}");
    assert_eq!(p.client_objects().len(), total);
    eprintln!(
        "first pull kept {} of {total}; the second fetched {}",
        arrived.len(),
        requested.len()
    );
}

#[test]
fn a_corrupted_object_on_the_server_fails_the_pull_naming_it() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        write(&src.join(format!("f{i}")), 5_000 + i, i as u8);
    }
    p.publish(&src);
    let victim = sealtree::fsverity::digest_bytes(&fs::read(src.join("f7")).unwrap());
    let hex = hex::encode(victim);
    let object = p.path(&format!("server/objects/{}/{}", &hex[..2], &hex[2..]));
    let mut bytes = fs::read(&object).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&object, bytes).unwrap();

    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "key.pub");
    let out = p.run("client", &["pull", "origin", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}/objects/{}/{}",
            nginx.url(),
            &hex[..2],
            &hex[2..]
        )),
        "{err}"
    );
    assert!(err.contains("has digest"), "{err}");
    assert!(
        !p.client_objects().contains(&hex),
        "the corrupt object entered the store"
    );
    assert_eq!(p.ok("client", &["refs"]), "");
    assert!(!p.run("client", &["show", "origin/os"]).status.success());
    // Everything that did enter the store is what its name says.
    let fsck = p.ok("client", &["fsck"]);
    assert!(!fsck.contains("corrupt"), "{fsck}");
}

#[test]
fn an_untrusted_signature_stops_the_pull_before_any_content() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("big"), 100_000, 1);
    p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "other.pub");
    let out = p.run("client", &["pull", "origin", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not from a trusted key"), "{err}");
    let requests = nginx.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r == "/index.json" || r == "/index.sig" || r.starts_with("/signatures/"),
            "fetched {r} before the signature verified: {requests:?}"
        );
    }
    assert!(p.client_objects().is_empty());
}

#[test]
fn admin_upgrade_pulls_and_stages_the_booted_branch() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    for d in ["usr/lib/modules/6.12.0", "usr/etc", "usr/bin", "sysroot"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("usr/lib/modules/6.12.0/vmlinuz"), "kernel").unwrap();
    fs::write(
        src.join("usr/lib/modules/6.12.0/initramfs.img"),
        "initramfs",
    )
    .unwrap();
    write(&src.join("usr/bin/tool"), 30_000, 1);
    p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    // The client is a sysroot whose repository pulls from the server.
    let sysroot = p.s("sysroot");
    let admin = |args: &[&str]| {
        let mut full = vec!["admin", "--sysroot", &sysroot, "--cmdline", "/dev/null"];
        full.extend_from_slice(args);
        sealtree()
            .env("SEALTREE_REPO", p.path("sysroot/sealtree/repo"))
            .args(&full)
            .output()
            .unwrap()
    };
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(admin(&[
        "init",
        "--require-signatures",
        "--trusted",
        &p.s("key.pub"),
    ]));
    let repo = |args: &[&str]| {
        ok(sealtree()
            .env("SEALTREE_REPO", p.path("sysroot/sealtree/repo"))
            .args(args)
            .output()
            .unwrap())
    };
    repo(&[
        "remote",
        "add",
        "origin",
        &nginx.url(),
        "--trusted",
        &p.s("key.pub"),
    ]);
    repo(&["pull", "origin", "os"]);
    ok(admin(&["deploy", "origin/os"]));
    assert!(ok(admin(&["upgrade", "--check"])).contains("up to date"));

    write(&src.join("usr/bin/tool"), 30_000, 2);
    write(&src.join("usr/bin/new"), 30_000, 3);
    let second = p.publish(&src);
    let out = ok(admin(&["upgrade", "--check"]));
    assert!(
        out.contains("1 added, 0 removed") && out.contains("update available"),
        "{out}"
    );
    let out = ok(admin(&["upgrade"]));
    assert!(out.contains("staged"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(admin(&["status", "--json"]))).unwrap();
    let deps = status["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[1]["staged"], true);
    assert_eq!(deps[1]["commit"], second.as_str());
    assert_eq!(deps[1]["signature"]["state"], "valid");
}

/// A commit pulled complete, then left without a ref and pruned, comes
/// back as the parent of the next pull: it is known to be history only,
/// and the store checks clean. (Found by tests/crash.rs.)
#[test]
fn a_pruned_unreferenced_commit_returns_as_history_only() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        write(&src.join(format!("f{i}")), 5_000 + i, i as u8);
    }
    let first = p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    // The ref goes (as if a pull died before setting it); prune takes
    // the commit's objects.
    let status = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(p.path("client/git"))
        .args(["update-ref", "-d", "refs/remotes/origin/os"])
        .status()
        .unwrap();
    assert!(status.success());
    p.ok("client", &["prune"]);
    assert!(p.client_objects().is_empty());
    for i in 0..3 {
        write(&src.join(format!("f{i}")), 6_000, 100 + i as u8);
    }
    p.publish(&src);
    p.ok("client", &["pull", "origin", "os"]);
    let fsck = p.ok("client", &["fsck"]);
    assert!(!fsck.contains("missing"), "{fsck}");
    assert!(p.path(&format!("client/partial/{first}")).exists());
}

#[test]
fn a_file_url_remote_pulls_into_an_empty_repository_and_checks_out_the_source() {
    if !is_root() {
        return missing("root, to create devices and owners in the tree");
    }
    let p = Pair::offline();
    let src = p.path("src");
    make_tree(&src);
    let id = p.publish(&src);
    let url = p.file_url("server");
    p.add_remote(&url, "key.pub");
    assert_eq!(
        p.ok("client", &["remote", "list"]),
        format!("origin {url}\n")
    );
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains(&id), "{out}");
    assert!(!p.client_objects().is_empty());
    assert_pulled(&p, &src, &id);
}

#[test]
fn a_file_url_update_fetches_only_the_changed_objects() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(src.join("usr/share")).unwrap();
    for i in 0..50 {
        write(&src.join(format!("usr/share/f{i}")), 10_000 + i, i as u8);
    }
    let first = p.publish(&src);
    let stick = p.path("stick");
    copy_repo(&p.path("server"), &stick);
    p.add_remote(&p.file_url("stick"), "key.pub");
    let out = p.ok("client", &["pull", "origin", "os"]);
    // 10_000 + 10_001 + ... + 10_049 bytes.
    assert!(
        out.contains(&first) && out.contains("50 objects fetched (501225 bytes), 0 already here"),
        "{out}"
    );
    eprintln!("first pull over file://: {}", out.trim());

    for i in [3, 17, 42] {
        write(&src.join(format!("usr/share/f{i}")), 20_000, 200 + i as u8);
    }
    let second = p.publish(&src);
    // The stick carries the new commit and, of the objects, only the
    // three changed ones: the update must need no other.
    let changed: Vec<String> = [3, 17, 42]
        .iter()
        .map(|i| object_name(&src.join(format!("usr/share/f{i}"))))
        .collect();
    fs::remove_dir_all(&stick).unwrap();
    copy_repo(&p.path("server"), &stick);
    let mut removed = 0;
    for name in stored_objects(&stick) {
        if !changed.contains(&name) {
            fs::remove_file(object_file(&stick, &name)).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 50, "47 unchanged and 3 replaced objects");
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(
        out.contains(&second) && out.contains("3 objects fetched (60000 bytes), 47 already here"),
        "{out}"
    );
    eprintln!("update over file://: {}", out.trim());
    let here = p.client_objects();
    assert_eq!(here.len(), 53);
    for d in &changed {
        assert!(here.contains(d), "{d} not fetched");
    }
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(
        out.contains("0 objects fetched (0 bytes), 50 already here"),
        "{out}"
    );
    assert_checkout_equals(&p, &src);
    let fsck = p.ok("client", &["fsck"]);
    assert!(!fsck.contains("missing"), "{fsck}");
}

#[test]
fn a_corrupted_object_in_a_file_url_remote_is_refused_naming_the_file() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        write(&src.join(format!("f{i}")), 5_000 + i, i as u8);
    }
    let id = p.publish(&src);
    let hex = object_name(&src.join("f7"));
    let object = p.path(&format!("server/objects/{}/{}", &hex[..2], &hex[2..]));
    let original = fs::read(&object).unwrap();
    let mut bytes = original.clone();
    bytes[100] ^= 0xff;
    fs::remove_file(&object).unwrap();
    fs::write(&object, bytes).unwrap();

    let url = p.file_url("server");
    p.add_remote(&url, "key.pub");
    let out = p.run("client", &["pull", "origin", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{url}/objects/{}/{}: ", &hex[..2], &hex[2..])),
        "{err}"
    );
    assert!(
        err.contains("has digest") && err.contains("not stored"),
        "{err}"
    );
    let kept = p.client_objects();
    assert!(!kept.contains(&hex), "the corrupt object entered the store");
    assert_eq!(p.ok("client", &["refs"]), "", "no ref on a failed pull");
    assert!(!p.run("client", &["show", "origin/os"]).status.success());
    assert!(!p.path(&format!("client/signatures/{id}.json")).exists());
    let fsck = p.ok("client", &["fsck"]);
    assert!(!fsck.contains("corrupt"), "{fsck}");

    // Repaired, the pull resumes: what was kept is not read again.
    fs::remove_file(&object).unwrap();
    fs::write(&object, original).unwrap();
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(
        out.contains(&format!("{} objects fetched", 20 - kept.len()))
            && out.contains(&format!("{} already here", kept.len())),
        "{out}"
    );
    eprintln!(
        "the failed pull kept {} of 20; resumed: {}",
        kept.len(),
        out.trim()
    );
    assert_eq!(p.client_objects().len(), 20);
}

#[test]
fn a_plain_path_remote_is_stored_as_a_file_url_and_pulls() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(src.join("etc/app")).unwrap();
    write(&src.join("etc/app/config"), 3_000, 1);
    write(&src.join("big"), 200_000, 2);
    std::os::unix::fs::symlink("etc/app/config", src.join("link")).unwrap();
    let id = p.publish(&src);
    let add = |name: &str, url: &str| {
        sealtree()
            .current_dir(p.dir.path())
            .env("SEALTREE_REPO", p.path("client"))
            .args(["remote", "add", name, url, "--trusted", &p.s("key.pub")])
            .output()
            .unwrap()
    };
    // A relative path is made absolute, so it must exist.
    let out = add("origin", "usb stick/repo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("usb stick/repo"),
        "{err}"
    );
    let out = add("ftp", "ftp://host/repo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not an http://, https:// or file:// URL"),
        "{err}"
    );
    // An absolute path is taken before the stick is there; the pull
    // then names the file it misses, and keeps nothing.
    let out = add("abs", &p.s("usb stick/repo"));
    assert!(out.status.success());
    let abs_url = format!("file://{}/usb%20stick/repo", p.dir.path().display());
    let out = p.run("client", &["pull", "abs", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{abs_url}/index.json: ")), "{err}");
    assert!(p.client_objects().is_empty());

    fs::create_dir(p.path("usb stick")).unwrap();
    copy_repo(&p.path("server"), &p.path("usb stick/repo"));
    let out = add("origin", "usb stick/repo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let origin_url = format!(
        "file://{}/usb%20stick/repo",
        fs::canonicalize(p.dir.path()).unwrap().display()
    );
    assert_eq!(
        p.ok("client", &["remote", "list"]),
        format!("abs {abs_url}\norigin {origin_url}\n")
    );
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(
        out.contains(&id) && out.contains("2 objects fetched"),
        "{out}"
    );
    assert_checkout_equals(&p, &src);
    // The absolute path names the same repository now.
    let out = p.ok("client", &["pull", "abs", "os"]);
    assert!(
        out.contains(&id) && out.contains("0 objects fetched (0 bytes), 2 already here"),
        "{out}"
    );
}

#[test]
fn a_file_url_remote_follows_no_symlink_out_of_the_repository() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), 5_000, 1);
    p.publish(&src);
    // The stick's index points at a private file of the machine.
    let secret = p.path("secret");
    fs::write(&secret, "contents of a root-only file").unwrap();
    let refs = p.path("server/index.json");
    fs::remove_file(&refs).unwrap();
    std::os::unix::fs::symlink(&secret, &refs).unwrap();
    let url = p.file_url("server");
    p.add_remote(&url, "key.pub");
    let out = p.run("client", &["pull", "origin", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{url}/index.json")), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        !err.contains("root-only"),
        "the private file was read: {err}"
    );
}

/// origin/os in the client is commit `id` of `src`: its checkout equals
/// the source, its history is the server's, fsck is clean and its
/// statement verifies here.
fn assert_pulled(p: &Pair, src: &Path, id: &str) {
    assert_checkout_equals(p, src);
    assert_eq!(
        p.ok("client", &["show", "origin/os"])
            .lines()
            .next()
            .unwrap(),
        format!("commit {id}")
    );
    let fsck = p.ok("client", &["fsck"]);
    assert!(
        !fsck.contains("missing") && !fsck.contains("corrupt"),
        "{fsck}"
    );
    p.ok(
        "client",
        &["verify", "origin/os", "--trusted", &p.s("key.pub")],
    );
}

/// A checkout of origin/os in the client equals `src`.
fn assert_checkout_equals(p: &Pair, src: &Path) {
    let checkout = p.path("checkout");
    p.ok(
        "client",
        &["checkout", "origin/os", checkout.to_str().unwrap()],
    );
    assert_same_tree(src, &checkout);
}

#[test]
fn no_remote_can_bring_a_branch_below_the_newest_seen() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("release"), "1").unwrap();
    p.publish(&src);
    // A mirror that stopped at release 1, signed by the same key.
    copy_repo(&p.path("server"), &p.path("mirror"));
    fs::write(src.join("release"), "2").unwrap();
    let second = p.publish(&src);
    p.add_remote(&p.file_url("server"), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    p.add_named_remote("m2", &p.file_url("mirror"), "key.pub");
    let out = p.run("client", &["pull", "m2", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("version 1 of 'os'")
            && err.contains(&format!(
                "is older than version 2, pulled from remote origin (commit {second})"
            )),
        "{err}"
    );
    // Nothing moved: m2 has no ref of the branch.
    assert!(!p.run("client", &["log", "m2/os"]).status.success());
    // Air-gapped recovery, said out loud.
    p.ok("client", &["pull", "m2", "os", "--allow-downgrade"]);
}

#[test]
fn an_older_release_on_another_line_is_a_downgrade_too() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    for release in ["1", "2", "3"] {
        fs::write(src.join("release"), release).unwrap();
        p.publish(&src);
    }
    p.add_remote(&p.file_url("server"), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    // The vendor's repository rebuilt: a new line whose head is version 2,
    // validly signed. The same remote may not take it.
    let q = Pair {
        dir: tempfile::tempdir().unwrap(),
    };
    q.ok("server", &["init"]);
    for release in ["old-1", "old-2"] {
        fs::write(src.join("release"), release).unwrap();
        q.ok(
            "server",
            &[
                "commit",
                "-b",
                "os",
                "--tree",
                src.to_str().unwrap(),
                "--sign-key",
                &p.s("key.sec"),
            ],
        );
    }
    q.ok("server", &["publish", "--sign-key", &p.s("key.sec")]);
    p.add_named_remote("m2", &q.file_url("server"), "key.pub");
    let out = p.run("client", &["pull", "m2", "os"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("version 2 of 'os'") && err.contains("is older than version 3"),
        "{err}"
    );
}

#[test]
fn https_remotes_check_the_server_certificate() {
    let Some(p) = Pair::new() else { return };
    if !have_command("openssl") {
        return missing("openssl (apt-get install openssl)");
    }
    let pki = p.path("pki");
    fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "ca");
    make_ca(&pki, "other-ca");
    make_cert(&pki, "server", "IP:127.0.0.1", "ca");
    make_cert(&pki, "misnamed", "DNS:wrong.example", "ca");
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("big"), 100_000, 7);
    let id = p.publish(&src);
    let good = Nginx::start_tls(
        &p.path("server"),
        &pki.join("server.pem"),
        &pki.join("server.key"),
    );
    let misnamed = Nginx::start_tls(
        &p.path("server"),
        &pki.join("misnamed.pem"),
        &pki.join("misnamed.key"),
    );
    let add = |name: &str, url: &str, ca: Option<&str>| {
        let mut args = vec!["remote", "add", name, url, "--trusted"];
        let key = p.s("key.pub");
        args.push(&key);
        let ca = ca.map(|c| pki.join(c).to_str().unwrap().to_string());
        if let Some(c) = &ca {
            args.extend(["--ca", c]);
        }
        p.ok("client", &args);
    };
    add("good", &good.url(), Some("ca.pem"));
    let out = p.ok("client", &["pull", "good", "os"]);
    assert!(out.contains(&id), "{out}");
    // Each refusal is one line naming the URL and why.
    for (name, url, ca, why) in [
        (
            "wrong-ca",
            good.url(),
            Some("other-ca.pem"),
            "UnknownIssuer",
        ),
        ("system-ca", good.url(), None, "UnknownIssuer"),
        (
            "wrong-name",
            misnamed.url(),
            Some("ca.pem"),
            "not valid for name",
        ),
    ] {
        add(name, &url, ca);
        let out = p.run("client", &["pull", name, "os"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(&url) && err.contains(why), "{name}: {err}");
    }
    // --ca is a PEM certificate, and for https only.
    let bad = p.run(
        "client",
        &[
            "remote",
            "add",
            "x",
            &good.url(),
            "--trusted",
            &p.s("key.pub"),
            "--ca",
            &p.s("key.pub"),
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no PEM certificate"));
}

#[test]
fn redirects_are_followed_only_on_the_same_scheme_host_and_port() {
    let Some(p) = Pair::new() else { return };
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("f"), 10_000, 3);
    let id = p.publish(&src);
    // The repository moved from /old/ to / on the same server.
    let moved = Nginx::start(&p.path("server"), "rewrite ^/old/(.*)$ /$1 redirect;");
    p.add_remote(&format!("{}/old", moved.url()), "key.pub");
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains(&id), "{out}");
    assert!(
        moved
            .requests()
            .iter()
            .any(|r| r.starts_with("/old/objects/")),
        "{:?}",
        moved.requests()
    );
    // A server that sends every request to another host (by name).
    let away = Nginx::start(
        &p.path("server"),
        &format!(
            "rewrite ^/(.*)$ http://localhost:{}/$1 redirect;",
            moved.port
        ),
    );
    p.ok(
        "client",
        &[
            "remote",
            "add",
            "away",
            &away.url(),
            "--trusted",
            &p.s("key.pub"),
        ],
    );
    let err = p.fail("client", &["pull", "away", "os"]);
    assert!(
        err.contains(&format!(
            "{}/index.json: HTTP 302: a redirect to http://localhost:{}/index.json, another scheme, host or port: refused",
            away.url(),
            moved.port
        )),
        "{err}"
    );
}

/// Pulled objects get their mode whatever the puller's umask, as
/// committed ones do: 0644, as the server published them.
#[test]
fn pulled_objects_keep_their_modes_under_a_strict_umask() {
    use std::os::unix::fs::PermissionsExt;
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("small"), 6_000, 1);
    write(&src.join("large"), 3 << 20, 2);
    p.publish(&src);
    p.add_remote(&p.file_url("server"), "key.pub");
    let pull = ["pull", "origin", "os"].map(std::ffi::OsStr::new);
    sealtree_ok_after("umask 077", &p.path("client"), &pull);
    for file in ["small", "large"] {
        let name = object_name(&src.join(file));
        let object = p.path("client/objects").join(&name[..2]).join(&name[2..]);
        let mode = fs::metadata(&object).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644, "{file}");
    }
    p.ok("client", &["fsck"]);
}
