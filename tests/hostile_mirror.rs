//! A mirror that lies: one that serves a frozen or replayed index, drops
//! the index, serves another vendor's branch of the same name or a second
//! commit for one version, or answers with a compression bomb or an
//! object longer than the signed tree says. Each is refused, naming what
//! was wrong, and none costs the client more than 100 MB of memory.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::nginx::Nginx;
use common::pair::*;
use common::*;

/// Pair with a one-file source `src/release` holding `release`.
fn release(p: &Pair, release: &str) -> String {
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("release"), release).unwrap();
    p.publish(&src)
}

/// The served index files, to put back later.
fn index_files(p: &Pair) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    ["index.json", "index.sig"]
        .iter()
        .map(|f| {
            let path = p.path("server").join(f);
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn restore(files: &[(std::path::PathBuf, Vec<u8>)]) {
    for (path, bytes) in files {
        fs::write(path, bytes).unwrap();
    }
}

#[test]
fn a_replayed_dropped_or_expired_index_is_refused() {
    let p = Pair::offline();
    release(&p, "1");
    let first = index_files(&p);
    // Indexes are dated to the second.
    std::thread::sleep(Duration::from_millis(1100));
    release(&p, "2");
    let second = index_files(&p);
    p.add_remote(&p.file_url("server"), "key.pub");
    let out = p.ok("client", &["pull", "origin", "os"]);
    assert!(out.contains("signed index published "), "{out}");

    // Replay: the mirror serves the first index again.
    restore(&first);
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(
        err.contains("not after the index already seen from this remote")
            && err.matches(" UTC").count() == 2,
        "{err}"
    );
    // The mirror drops its index and serves refs.json alone.
    for (path, _) in &first {
        fs::remove_file(path).unwrap();
    }
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(
        err.contains("no signed index, and this remote served a signed index before"),
        "{err}"
    );
    restore(&second);
    p.ok("client", &["pull", "origin", "os"]);

    // Frozen: an index past its expiry.
    p.ok(
        "server",
        &["publish", "--sign-key", &p.s("key.sec"), "--expires", "1s"],
    );
    std::thread::sleep(Duration::from_millis(2100));
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(
        err.contains("the index expired ")
            && err.contains("--allow-expired")
            && err.matches(" UTC").count() == 3,
        "{err}"
    );
    // Said out loud, for old media.
    p.ok("client", &["pull", "origin", "os", "--allow-expired"]);

    // A publisher whose index is signed cannot drop the signature by
    // mistake.
    let err = p.fail("server", &["publish"]);
    assert!(err.contains("give --sign-key"), "{err}");
}

#[test]
fn an_unsigned_index_is_taken_only_from_a_remote_added_for_it() {
    let p = Pair::offline();
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("release"), "1").unwrap();
    p.commit("server", &src, "key.sec");
    p.ok("server", &["publish"]);
    p.add_remote(&p.file_url("server"), "key.pub");
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(
        err.contains(
            "index.json: no signed index, and the remote was not added with --unsigned-index"
        ),
        "{err}"
    );
    p.ok(
        "client",
        &[
            "remote",
            "add",
            "plain",
            &p.file_url("server"),
            "--trusted",
            &p.s("key.pub"),
            "--unsigned-index",
        ],
    );
    p.ok("client", &["pull", "plain", "os"]);
    // Once it has served a signed index, it must go on doing so.
    fs::write(src.join("release"), "2").unwrap();
    p.publish(&src);
    p.ok("client", &["pull", "plain", "os"]);
    for f in ["index.json", "index.sig"] {
        fs::remove_file(p.path("server").join(f)).unwrap();
    }
    let err = p.fail("client", &["pull", "plain", "os"]);
    assert!(err.contains("served a signed index before"), "{err}");
}

/// A repository at `dir` (under the pair's directory) with branch `os`
/// committed `releases` times, signed by `key`, published.
fn other_server(p: &Pair, dir: &str, key: &str, releases: &[&str]) {
    p.ok(dir, &["init"]);
    let src = p.path(&format!("{dir}-src"));
    fs::create_dir_all(&src).unwrap();
    for r in releases {
        fs::write(src.join("release"), r).unwrap();
        p.commit(dir, &src, key);
    }
    p.ok(dir, &["publish", "--sign-key", &p.s(key)]);
}

#[test]
fn another_vendors_branch_of_the_same_name_sets_no_floor() {
    let p = Pair::offline();
    release(&p, "1");
    // Another vendor, another key, a branch also called os at version 3.
    other_server(&p, "vendor2", "other.sec", &["a", "b", "c"]);
    p.add_named_remote("vendor2", &p.file_url("vendor2"), "other.pub");
    p.ok("client", &["pull", "vendor2", "os"]);
    p.add_remote(&p.file_url("server"), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
}

#[test]
fn two_commits_for_one_version_are_refused() {
    let p = Pair::offline();
    let first = release(&p, "1");
    p.add_remote(&p.file_url("server"), "key.pub");
    p.ok("client", &["pull", "origin", "os"]);
    // The same key, the same version, other content.
    other_server(&p, "mirror", "key.sec", &["1 with a backdoor"]);
    p.add_named_remote("m2", &p.file_url("mirror"), "key.pub");
    let err = p.fail("client", &["pull", "m2", "os"]);
    assert!(
        err.contains(&format!(
            "not the commit of version 1 pulled from remote origin (commit {first}): two commits for one version"
        )),
        "{err}"
    );
}

/// The loose git object `id` of the server, as a path.
fn git_object(p: &Pair, id: &str) -> std::path::PathBuf {
    p.path(&format!("server/git/objects/{}/{}", &id[..2], &id[2..]))
}

/// The blob id of `name` in commit `commit`'s tree, read with git.
fn tree_entry(p: &Pair, commit: &str, name: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(p.path("server/git"))
        .args(["rev-parse", &format!("{commit}:{name}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A zlib stream of a git object header `header` and `zeros` zero bytes:
/// about a thousandth of its inflated size.
fn zlib_bomb(header: &str, zeros: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(header.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap()
}

/// Pull origin/os in the client, which must fail within the memory
/// bound: its standard error.
fn pull_fails_within_memory(p: &Pair, what: &str) -> String {
    let out = output_within_memory_bound(
        sealtree()
            .env("SEALTREE_REPO", p.path("client"))
            .args(["pull", "origin", "os"]),
        what,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    err
}

#[test]
fn compression_bombs_and_long_objects_are_cut_at_what_is_signed() {
    let Some(p) = Pair::new() else { return };
    if !have_command("git") {
        return missing("git (apt-get install git), to find objects to replace");
    }
    let src = p.path("src");
    fs::create_dir_all(&src).unwrap();
    common::fixture::write(&src.join("small"), 20_000, 5);
    let commit = p.publish(&src);
    let nginx = Nginx::start(&p.path("server"), "");
    p.add_remote(&nginx.url(), "key.pub");

    // 256 MiB of zeros in about 256 kB, as each git object the pull reads.
    let dump = tree_entry(&p, &commit, "dump");
    let cases = [
        (
            commit.clone(),
            "commit",
            "a commit of 268435456 bytes, more than the 1048576",
        ),
        (
            dump.clone(),
            "blob",
            "a blob of 268435456 bytes, more than the",
        ),
    ];
    for (id, kind, want) in cases {
        let path = git_object(&p, &id);
        let original = fs::read(&path).unwrap();
        fs::write(
            &path,
            zlib_bomb(&format!("{kind} {}\0", 256 << 20), 256 << 20),
        )
        .unwrap();
        let err = pull_fails_within_memory(&p, &format!("a {kind} bomb"));
        assert!(err.contains(&id[2..]) && err.contains(want), "{err}");
        fs::write(&path, original).unwrap();
    }
    // A header that tells the truth, then zeros after the object.
    let path = git_object(&p, &dump);
    let original = fs::read(&path).unwrap();
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(&original[..]),
        &mut inflated,
    )
    .unwrap();
    let header_end = inflated.iter().position(|&b| b == 0).unwrap() + 1;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&inflated).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        z.write_all(&chunk).unwrap();
    }
    fs::write(&path, z.finish().unwrap()).unwrap();
    let err = pull_fails_within_memory(&p, "a dumpfile followed by zeros");
    let size = inflated.len() - header_end;
    assert!(
        err.contains(&format!("{} bytes after a header of {size}", size + 1)),
        "{err}"
    );
    fs::write(&path, original).unwrap();

    // An object 1000 times longer than the 20,000 bytes the tree names.
    let object = object_name(&src.join("small"));
    let path = p.path(&format!("server/objects/{}/{}", &object[..2], &object[2..]));
    let original = fs::read(&path).unwrap();
    let mut long = original.clone();
    long.resize(20_000_000, 7);
    fs::write(&path, &long).unwrap();
    let err = pull_fails_within_memory(&p, "a long object");
    assert!(
        err.contains(&format!(
            "object {object} is longer than the 20000 bytes the signed tree names; not stored"
        )),
        "{err}"
    );
    // Nothing of it was kept.
    assert!(p.client_objects().is_empty(), "{:?}", p.client_objects());
    fs::write(&path, original).unwrap();
    p.ok("client", &["pull", "origin", "os"]);
    assert_eq!(p.client_objects(), vec![object]);
}

/// Rewrite the signed JSON at `json` (signature at `sig`) with `edit`,
/// canonical again and signed by the secret key file `secret`: what a
/// holder of that key can serve.
fn resign(json: &Path, sig: &Path, secret: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut value: serde_json::Value = serde_json::from_slice(&fs::read(json).unwrap()).unwrap();
    edit(&mut value);
    // serde_json's map is sorted: compact output is canonical.
    let bytes = serde_json::to_vec(&value).unwrap();
    let raw = b64
        .decode(fs::read_to_string(secret).unwrap().trim())
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&raw[..32].try_into().unwrap());
    let mut text = bytes.clone();
    text.push(b'\n');
    fs::write(json, &text).unwrap();
    fs::write(
        sig,
        format!("{}\n", b64.encode(key.sign(&bytes).to_bytes())),
    )
    .unwrap();
}

/// The server's index, after `edit`, signed by `secret`.
fn resign_index(p: &Pair, secret: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    resign(
        &p.path("server/index.json"),
        &p.path("server/index.sig"),
        &p.path(secret),
        edit,
    );
}

#[test]
fn a_statement_or_index_is_bound_to_its_signer_its_index_and_the_clock() {
    let p = Pair::offline();
    let commit = release(&p, "1");
    p.add_remote(&p.file_url("server"), "key.pub");
    let statement = p.path(&format!("server/signatures/{commit}.json"));
    let statement_sig = p.path(&format!("server/signatures/{commit}.sig"));
    let (text, sig) = (
        fs::read(&statement).unwrap(),
        fs::read(&statement_sig).unwrap(),
    );
    let sha = |b: &[u8]| common::sha256_hex(b);
    let honest_index = fs::read(p.path("server/index.json")).unwrap();
    let honest_sig = fs::read(p.path("server/index.sig")).unwrap();

    // A statement re-signed (epoch 7, valid signature) that the index
    // does not name.
    resign(&statement, &statement_sig, &p.path("key.sec"), |v| {
        v["epoch"] = 7.into();
    });
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(
        err.contains(&format!(
            "not the statement the signed index names (version 1, sha256 {})",
            sha(&text)
        )),
        "{err}"
    );

    // Another trusted key speaking for this one: the statement names
    // key.pub's key but other.sec signs it, and the index too.
    let keys = p.path("keys");
    fs::create_dir_all(&keys).unwrap();
    fs::copy(p.path("key.pub"), keys.join("key.pub")).unwrap();
    fs::copy(p.path("other.pub"), keys.join("other.pub")).unwrap();
    p.add_named_remote("both", &p.file_url("server"), "keys");
    fs::write(&statement, &text).unwrap();
    resign(&statement, &statement_sig, &p.path("other.sec"), |_| {});
    let forged = fs::read(&statement).unwrap();
    let other_key = fs::read_to_string(p.path("other.pub"))
        .unwrap()
        .trim()
        .to_string();
    resign_index(&p, "other.sec", |v| {
        v["key"] = other_key.clone().into();
        v["branches"]["os"]["statement"] = sha(&forged).into();
    });
    let err = p.fail("client", &["pull", "both", "os"]);
    assert!(
        err.contains("statement names key ") && err.contains("but key "),
        "{err}"
    );

    // An index dated five years ahead would make every honest index
    // after it look like a replay.
    fs::write(&statement, &text).unwrap();
    fs::write(&statement_sig, &sig).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let key = fs::read_to_string(p.path("key.pub"))
        .unwrap()
        .trim()
        .to_string();
    resign_index(&p, "key.sec", |v| {
        v["key"] = key.into();
        v["branches"]["os"]["statement"] = sha(&text).into();
        v["published"] = (now + 5 * 366 * 86_400).into();
        v["expires"] = (now + 6 * 366 * 86_400).into();
    });
    let err = p.fail("client", &["pull", "origin", "os"]);
    assert!(err.contains("later than now"), "{err}");
    // The honest index seen before is still the newest seen.
    assert_eq!(
        fs::read(p.path("client/remotes/origin/index.json")).unwrap(),
        honest_index
    );

    fs::write(p.path("server/index.json"), &honest_index).unwrap();
    fs::write(p.path("server/index.sig"), &honest_sig).unwrap();

    // Two publishes within a second still date their indexes apart.
    let published = |p: &Pair| -> i64 {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(p.path("server/index.json")).unwrap()).unwrap();
        v["published"].as_i64().unwrap()
    };
    let a = {
        p.ok("server", &["publish", "--sign-key", &p.s("key.sec")]);
        published(&p)
    };
    p.ok("server", &["publish", "--sign-key", &p.s("key.sec")]);
    assert!(published(&p) > a);
    p.ok("client", &["pull", "origin", "os"]);
}
