//! Static deltas from a real nginx on 127.0.0.1: a client at version 1
//! updates to version 2 through `publish --deltas`. The result is the
//! commit a plain pull makes, for fewer bytes; a corrupted or hostile
//! delta is refused, naming it, and the pull falls back to objects; a
//! pull killed mid-delta resumes where it stopped; publishing deltas is
//! deterministic and reuses what it made.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::pair::*;
use common::*;

/// `len` bytes that do not compress, reproducible from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Version 1 of a small system: a library, a program, text files.
fn version1(root: &Path) {
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    fs::write(root.join("usr/lib/libfoo-1.2.so"), noise(300_000, 1)).unwrap();
    fs::write(root.join("usr/bin/tool"), noise(200_000, 2)).unwrap();
    for i in 0..20 {
        let text: String = (0..400)
            .map(|l| format!("line {l} of document {i}: the quick brown fox\n"))
            .collect();
        fs::write(root.join(format!("usr/share/doc/d{i}.txt")), text).unwrap();
    }
}

/// Version 2: the library renamed for its new version and changed in
/// places, the program patched, five documents edited, new files, and
/// `extra` bytes of new incompressible content.
fn version2(root: &Path, extra: usize) {
    version1(root);
    let mut lib = noise(300_000, 1);
    for at in [1_000, 90_000, 250_000] {
        lib[at..at + 64].copy_from_slice(&noise(64, at as u64));
    }
    lib.splice(150_000..150_000, noise(10_000, 3));
    fs::remove_file(root.join("usr/lib/libfoo-1.2.so")).unwrap();
    fs::write(root.join("usr/lib/libfoo-1.3.so"), lib).unwrap();
    let mut tool = noise(200_000, 2);
    tool[5_000..5_100].copy_from_slice(&noise(100, 4));
    fs::write(root.join("usr/bin/tool"), tool).unwrap();
    for i in 0..5 {
        let path = root.join(format!("usr/share/doc/d{i}.txt"));
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("line 200 ", "changed line 200 ")).unwrap();
    }
    fs::create_dir_all(root.join("usr/share/new")).unwrap();
    for i in 0..30 {
        fs::write(
            root.join(format!("usr/share/new/n{i}")),
            format!("new file {i}\n").repeat(10 + i),
        )
        .unwrap();
    }
    if extra > 0 {
        fs::write(root.join("usr/share/blob"), noise(extra, 5)).unwrap();
    }
}

/// A server at version 2 published with a delta from version 1, and a
/// client (repository `client`) that pulled version 1. Returns the
/// directory name of the delta.
fn updated_pair(p: &Pair, nginx: &Nginx, extra: usize) -> String {
    let (v1, v2) = (p.path("v1"), p.path("v2"));
    version1(&v1);
    version2(&v2, extra);
    p.publish(&v1);
    p.add_remote(&nginx.url(), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    p.commit("server", &v2, "key.sec");
    let out = p.ok(
        "server",
        &["publish", "--sign-key", &p.s("key.sec"), "--deltas", "1"],
    );
    assert!(out.contains(" made, "), "{out}");
    delta_names(p).pop().unwrap()
}

fn delta_names(p: &Pair) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(p.path("server/deltas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The `Image:` line of `show REF` in `repo`.
fn image_of(p: &Pair, repo: &str, reference: &str) -> String {
    let show = p.ok(repo, &["show", reference]);
    show.lines()
        .find_map(|l| l.strip_prefix("Image:"))
        .unwrap_or_else(|| panic!("no image in {show}"))
        .trim()
        .to_string()
}

/// Body bytes nginx sent since `from` requests, and those requests.
fn sent_since(nginx: &Nginx, from: usize) -> (u64, Vec<(String, u16, u64)>) {
    let responses: Vec<_> = nginx.responses().into_iter().skip(from).collect();
    (responses.iter().map(|r| r.2).sum(), responses)
}

fn assert_clean(p: &Pair, repo: &str) {
    let fsck = p.ok(repo, &["fsck"]);
    assert!(
        !fsck.contains("missing") && !fsck.contains("corrupt"),
        "{fsck}"
    );
}

#[test]
fn a_delta_pull_makes_the_commit_a_plain_pull_makes_for_fewer_bytes() {
    let Some(p) = Pair::new() else { return };
    let nginx = Nginx::start(&p.path("server"), "");
    let name = updated_pair(&p, &nginx, 0);
    let before = nginx.responses().len();
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains(&format!("delta {name}: ")), "{out}");
    let (delta_bytes, requests) = sent_since(&nginx, before);
    // Every changed file came from the delta, and the dumpfile too: of
    // the git objects only the commit, its tree and meta.json.
    assert!(
        !requests.iter().any(|r| r.0.starts_with("/objects/")),
        "{requests:?}"
    );
    let git = requests
        .iter()
        .filter(|r| r.0.starts_with("/git/objects/"))
        .count();
    assert_eq!(git, 3, "{requests:?}");
    assert!(requests
        .iter()
        .any(|r| r.0 == format!("/deltas/{name}/superblock")));

    // The same update without the delta, into a repository at version 1.
    p.ok("plain", &["init"]);
    p.add_remote_to("plain", &nginx.url(), "key.pub");
    let v1 = p.ok("server", &["show", "os^"]);
    let v1 = v1.lines().next().unwrap().strip_prefix("commit ").unwrap();
    // Version 1 is committed here from the same tree: the same image.
    p.commit("plain", &p.path("v1"), "key.sec");
    assert_eq!(image_of(&p, "plain", "os"), image_of(&p, "server", v1));
    let before = nginx.responses().len();
    p.ok("plain", &["pull", "origin", "os", "--no-deltas"]);
    let (plain_bytes, _) = sent_since(&nginx, before);
    assert_eq!(
        image_of(&p, "client", "origin/os"),
        image_of(&p, "plain", "origin/os")
    );
    assert_eq!(
        image_of(&p, "client", "origin/os"),
        image_of(&p, "server", "os")
    );
    assert!(
        delta_bytes * 2 < plain_bytes,
        "the delta pull took {delta_bytes} bytes, a plain one {plain_bytes}"
    );
    assert_clean(&p, "client");
    // Its downloaded parts are gone once it is done.
    assert!(!p.path("client/incoming").exists());
    let checkout = p.path("checkout");
    p.ok(
        "client",
        &["checkout", "origin/os", checkout.to_str().unwrap()],
    );
    common::fixture::assert_same_tree(&p.path("v2"), &checkout);
}

#[test]
fn a_corrupted_or_hostile_delta_is_refused_by_name_and_the_pull_falls_back_to_objects() {
    let Some(p) = Pair::new() else { return };
    let nginx = Nginx::start(&p.path("server"), "");
    let name = updated_pair(&p, &nginx, 0);
    let fresh = p.path("client-v1");
    copy_repo(&p.path("client"), &fresh);
    let dir = p.path("server/deltas").join(&name);
    let pristine = p.path("pristine");
    copy_repo(&dir, &pristine);
    let flip = |file: &str| {
        let path = dir.join(file);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        fs::write(&path, bytes).unwrap();
    };
    // A hostile publisher: the superblock names the objects of a pack
    // frame in another order, and the index signs it as it is.
    let swap_outputs = || {
        let path = dir.join("superblock");
        let json = zstd::decode_all(&fs::read(&path).unwrap()[..]).unwrap();
        let mut superblock: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let frames = superblock["parts"][1]["frames"].as_array_mut().unwrap();
        let pack = frames
            .iter_mut()
            .find(|f| f.get("source").is_none())
            .expect("a pack frame");
        pack["output"]["objects"].as_array_mut().unwrap().swap(0, 1);
        let json = serde_json::to_vec(&superblock).unwrap();
        fs::write(&path, zstd::encode_all(&json[..], 3).unwrap()).unwrap();
        p.ok(
            "server",
            &["publish", "--sign-key", &p.s("key.sec"), "--deltas", "1"],
        );
    };
    type Case<'a> = (&'a str, String, Box<dyn Fn() + 'a>);
    let cases: Vec<Case> = vec![
        (
            "part 1",
            format!("/deltas/{name}/1: delta part 1 has sha256"),
            Box::new(|| flip("1")),
        ),
        (
            "part 0",
            format!("/deltas/{name}/0: delta part 0 has sha256"),
            Box::new(|| flip("0")),
        ),
        (
            "superblock",
            format!("/deltas/{name}/superblock: sha256"),
            Box::new(|| flip("superblock")),
        ),
        (
            "missing part",
            format!("/deltas/{name}/1: HTTP 404"),
            Box::new(|| fs::remove_file(dir.join("1")).unwrap()),
        ),
        (
            "swapped outputs",
            format!("/deltas/{name}/1: object "),
            Box::new(swap_outputs),
        ),
    ];
    for (what, expected, corrupt) in cases {
        fs::remove_dir_all(&dir).unwrap();
        copy_repo(&pristine, &dir);
        corrupt();
        fs::remove_dir_all(p.path("client")).unwrap();
        copy_repo(&fresh, &p.path("client"));
        let before = nginx.responses().len();
        let out = p.run("client", &["pull", "origin", "os"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {err}");
        assert!(
            err.contains(&expected),
            "{what}: expected '{expected}' in: {err}"
        );
        assert!(
            err.contains("fetched whole what it did not rebuild"),
            "{what}: {err}"
        );
        let (_, requests) = sent_since(&nginx, before);
        assert!(
            requests.iter().any(|r| r.0.starts_with("/objects/")),
            "{what}: no object fetched whole: {requests:?}"
        );
        assert_eq!(
            image_of(&p, "client", "origin/os"),
            image_of(&p, "server", "os"),
            "{what}"
        );
        assert_clean(&p, "client");
    }
}

#[test]
fn a_pull_killed_or_cut_off_mid_delta_resumes_without_fetching_again_what_it_has() {
    let Some(p) = Pair::new() else { return };
    let mut nginx = Nginx::start(&p.path("server"), "");
    let name = updated_pair(&p, &nginx, 1_000_000);
    let size = fs::metadata(p.path(&format!("server/deltas/{name}/1")))
        .unwrap()
        .len();
    let partial = p.path(&format!("client/incoming/{name}/1"));
    let have = || fs::metadata(&partial).map_or(0, |m| m.len());
    // A pull from a slow server (64 KiB/s), so that a 1 MB part takes
    // long enough to interrupt, until `at_least` bytes of part 1 are here.
    let pull_until = |nginx: &mut Nginx, at_least: u64| {
        nginx.restart("sendfile off; limit_rate 64k;");
        let mut child = sealtree()
            .env("SEALTREE_REPO", p.path("client"))
            .args(["pull", "origin", "os"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // A resume never starts the part over: what is here only grows.
        let had = have();
        while have() < at_least {
            assert!(
                have() >= had,
                "part 1 started over: {} of {had} bytes",
                have()
            );
            assert!(start.elapsed() < Duration::from_secs(60), "no part arrived");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the pull ended before it could be interrupted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let before = nginx.responses().len();

    // Killed.
    let mut child = pull_until(&mut nginx, 200_000);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = have();
    assert!(killed_at < size, "part 1 arrived whole");
    // Cut off: the server goes away, the pull fails, what arrived stays.
    let mut child = pull_until(&mut nginx, killed_at + 150_000);
    nginx.stop();
    assert!(
        !child.wait().unwrap().success(),
        "the pull went on without its server"
    );
    let cut_at = have();
    assert!(
        cut_at > killed_at && cut_at < size,
        "{killed_at} then {cut_at} of {size}"
    );

    nginx.restart("");
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains(&format!("delta {name}: ")), "{out}");
    let (_, requests) = sent_since(&nginx, before);
    let part1: Vec<_> = requests
        .iter()
        .filter(|r| r.0 == format!("/deltas/{name}/1"))
        .collect();
    // Asked whole at most once, first; after that only for the rest, and
    // the last request (the one that completed) for the rest. nginx logs
    // a request when it ends, so one in flight when nginx was stopped, or
    // restarted before it saw its client gone, is not in the log.
    assert!(!part1.is_empty(), "{requests:?}");
    assert!(part1[1..].iter().all(|r| r.1 == 206), "{requests:?}");
    let &&(_, status, last) = part1.last().unwrap();
    assert_eq!(status, 206, "{requests:?}");
    assert!(
        last <= size - cut_at,
        "resumed part 1 with {last} bytes, {cut_at} of {size} were here"
    );
    // The dumpfile's part, complete before the first kill, was fetched once.
    let part0 = requests
        .iter()
        .filter(|r| r.0 == format!("/deltas/{name}/0"))
        .count();
    assert_eq!(part0, 1, "{requests:?}");
    assert!(
        !requests.iter().any(|r| r.0.starts_with("/objects/")),
        "{requests:?}"
    );
    assert_eq!(
        image_of(&p, "client", "origin/os"),
        image_of(&p, "server", "os")
    );
    assert_clean(&p, "client");
    assert!(!p.path("client/incoming").exists());
}

#[test]
fn what_is_planted_in_incoming_is_replaced_never_followed() {
    let Some(p) = Pair::new() else { return };
    let nginx = Nginx::start(&p.path("server"), "");
    let name = updated_pair(&p, &nginx, 0);
    let size = fs::metadata(p.path(&format!("server/deltas/{name}/1")))
        .unwrap()
        .len();
    let fresh = p.path("client-v1");
    copy_repo(&p.path("client"), &fresh);
    let victim = p.path("victim");
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("sub/kept"), "precious").unwrap();
    fs::write(victim.join("small"), "precious").unwrap();
    fs::write(victim.join("large"), vec![7u8; size as usize + 1000]).unwrap();
    let incoming = p.path("client/incoming");
    let parts = incoming.join(&name);
    type Plant<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let plants: Vec<Plant> = vec![
        (
            "incoming, a link to a directory",
            Box::new(|| std::os::unix::fs::symlink(&victim, &incoming).unwrap()),
        ),
        (
            "parts, links to files",
            Box::new(|| {
                fs::create_dir_all(&parts).unwrap();
                std::os::unix::fs::symlink(victim.join("small"), parts.join("0")).unwrap();
                std::os::unix::fs::symlink(victim.join("large"), parts.join("1")).unwrap();
            }),
        ),
        (
            "a part, a hard link to a file",
            Box::new(|| {
                fs::create_dir_all(&parts).unwrap();
                fs::hard_link(victim.join("small"), parts.join("0")).unwrap();
            }),
        ),
        (
            "a part longer than the part",
            Box::new(|| {
                fs::create_dir_all(&parts).unwrap();
                fs::write(parts.join("1"), vec![0u8; size as usize + 100]).unwrap();
            }),
        ),
        (
            "a FIFO for a part",
            Box::new(|| {
                fs::create_dir_all(&parts).unwrap();
                nix::unistd::mkfifo(&parts.join("1"), nix::sys::stat::Mode::S_IRWXU).unwrap();
            }),
        ),
    ];
    for (what, plant) in plants {
        fs::remove_dir_all(p.path("client")).unwrap();
        copy_repo(&fresh, &p.path("client"));
        plant();
        let before = nginx.responses().len();
        let out = p.run("client", &["pull", "origin", "os"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {err}");
        assert!(!err.contains("did not rebuild"), "{what}: {err}");
        let (_, requests) = sent_since(&nginx, before);
        assert!(
            !requests.iter().any(|r| r.0.starts_with("/objects/")),
            "{what}: {requests:?}"
        );
        assert_eq!(
            fs::read(victim.join("sub/kept")).unwrap(),
            b"precious",
            "{what}"
        );
        assert_eq!(
            fs::read(victim.join("small")).unwrap(),
            b"precious",
            "{what}"
        );
        assert_eq!(
            fs::read(victim.join("large")).unwrap(),
            vec![7u8; size as usize + 1000],
            "{what}"
        );
        assert_eq!(
            image_of(&p, "client", "origin/os"),
            image_of(&p, "server", "os"),
            "{what}"
        );
        assert!(!incoming.exists(), "{what}");
    }
}

#[test]
fn publishing_deltas_is_deterministic_and_reuses_what_it_made() {
    let p = Pair::offline();
    let (v1, v2, v3) = (p.path("v1"), p.path("v2"), p.path("v3"));
    version1(&v1);
    version2(&v2, 0);
    version2(&v3, 50_000);
    p.publish(&v1);
    p.commit("server", &v2, "key.sec");
    let publish = |n: &str| {
        p.ok(
            "server",
            &["publish", "--sign-key", &p.s("key.sec"), "--deltas", n],
        )
    };
    assert!(publish("1").contains(" made, "));
    let name = delta_names(&p).pop().unwrap();
    let dir = p.path("server/deltas").join(&name);
    let files = |dir: &Path| {
        let mut out: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    sha256_hex(&fs::read(e.path()).unwrap()),
                )
            })
            .collect();
        out.sort();
        out
    };
    let first = files(&dir);
    let mtime = fs::metadata(dir.join("superblock"))
        .unwrap()
        .modified()
        .unwrap();
    let again = publish("1");
    assert!(again.contains(&format!("delta {name} kept")), "{again}");
    assert_eq!(
        fs::metadata(dir.join("superblock"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // Made again from nothing, it is the same bytes.
    fs::remove_dir_all(&dir).unwrap();
    assert!(publish("1").contains(" made, "));
    assert_eq!(files(&dir), first);
    // A third version: deltas from both its ancestors; the one to
    // version 2 is no longer listed.
    p.commit("server", &v3, "key.sec");
    let out = publish("2");
    assert_eq!(out.matches(" made, ").count(), 2, "{out}");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(p.path("server/index.json")).unwrap()).unwrap();
    let listed = index["deltas"].as_object().unwrap();
    assert_eq!(listed.len(), 2, "{index}");
    let to = image_of(&p, "server", "os");
    assert!(listed.keys().all(|k| k.ends_with(&to)), "{index}");
    assert!(!listed.contains_key(&name), "{index}");
    // What the index no longer lists is gone from the server.
    assert!(!dir.exists());
    assert_eq!(delta_names(&p).len(), 2);
    assert!(publish("2").matches(" kept, ").count() == 2);
}
