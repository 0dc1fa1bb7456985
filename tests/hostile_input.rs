//! Corrupted images and dumpfiles are refused with an error, never a panic,
//! and whatever is accepted round-trips. Deterministic mutations of the
//! reference inputs; the coverage-guided fuzzers go further.

mod common;

use common::Rng;
use sealtree::{dumpfile, erofs, erofs::ImageOptions};

const SAMPLE: &[u8] = b"/ 4096 40755 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 user.foo2=bar-2
/blockdev 0 60777 1 0 0 107690 1633950376.0 - - - trusted.bar=bar-2
/chardev 0 20777 1 0 0 10769 1633950376.0 - - - trusted.foo=bar-2
/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\\n user.foo=bar-2
/fifo 0 10777 1 0 0 0 1633950376.0 - - - trusted.bar=bar-2
/inline 15 100777 1 0 0 0 1633950376.0 - FOOBAR\\nINAFILE\\n - user.foo=bar-2
/dir 4096 40755 2 0 0 0 1633950376.0 - - - user.foo=bar-2
/dir/ext 70000 100644 2 7 8 0 1633950377.5 ab/cdef - 0101010101010101010101010101010101010101010101010101010101010101
/dir/link 0 @100644 2 0 0 0 0.0 /dir/ext - -
/symlink 7 120777 1 0 0 0 1633950376.0 /inline - - trusted.sym=1
/whiteout 0 20777 1 0 0 0 1633950376.0 - - -
";

#[test]
fn corrupted_images_are_refused_or_read() {
    let tree = dumpfile::parse(SAMPLE).unwrap();
    let image = erofs::write_image(&tree, &ImageOptions::default())
        .unwrap()
        .bytes;
    let mut rng = Rng(0x5eed);
    let (mut read, mut refused) = (0, 0);
    for _ in 0..4000 {
        let mut bytes = image.clone();
        for _ in 0..1 + rng.below(16) {
            // Mostly the metadata at the front, where the structure is.
            let limit = if rng.below(2) == 0 {
                bytes.len()
            } else {
                bytes.len().min(8192)
            };
            let i = rng.below(limit);
            bytes[i] = rng.next() as u8;
        }
        if rng.below(10) == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        match erofs::read_image(&bytes) {
            Ok(tree) => {
                read += 1;
                let mut out = Vec::new();
                dumpfile::write(&tree, &mut out).unwrap();
            }
            Err(_) => refused += 1,
        }
    }
    assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
}

#[test]
fn corrupted_dumpfiles_are_refused_or_round_trip() {
    let mut rng = Rng(0xfeed);
    let alphabet = b" \\@-=x/0123456789.\n\0abc";
    let (mut built, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut text = SAMPLE.to_vec();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(text.len());
            match rng.below(3) {
                0 => text[i] = alphabet[rng.below(alphabet.len())],
                1 => {
                    text.remove(i);
                }
                _ => text.insert(i, rng.next() as u8),
            }
        }
        let tree = match dumpfile::parse(&text[..]) {
            Ok(tree) => tree,
            Err(e) => {
                assert!(!e.message.contains('\n'), "multi-line error: {e}");
                refused += 1;
                continue;
            }
        };
        let Ok(image) = erofs::write_image(&tree, &ImageOptions::default()) else {
            refused += 1;
            continue;
        };
        built += 1;
        let mut dump = Vec::new();
        dumpfile::write(&erofs::read_image(&image.bytes).unwrap(), &mut dump).unwrap();
        let again = erofs::write_image(
            &dumpfile::parse(&dump[..]).unwrap(),
            &ImageOptions::default(),
        )
        .unwrap();
        assert!(
            image.bytes == again.bytes,
            "round trip differs for:\n{}",
            text.escape_ascii()
        );
    }
    assert!(built > 0 && refused > 0, "built {built}, refused {refused}");
}

/// A tar header of `kind` declaring `size` bytes, with nothing after it.
fn bare_header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A repository to import hostile inputs into.
struct Imports {
    dir: tempfile::TempDir,
}

impl Imports {
    fn new() -> Imports {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        common::run_ok(&["init".as_ref(), "--repo".as_ref(), repo.as_os_str()]);
        Imports { dir }
    }

    /// `commit -b t HOW FILE` of `bytes` written to `name`: exit code and
    /// standard error.
    fn commit(&self, name: &str, bytes: &[u8], how: &str) -> (Option<i32>, String) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = common::output_within_memory_bound(
            common::sealtree()
                .args(["commit", "-b", "t", how])
                .arg(&path)
                .env("SEALTREE_REPO", self.dir.path().join("repo")),
            name,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn tar_extension_records_and_paths_are_bounded() {
    let t = Imports::new();
    let commit = |name: &str, bytes: &[u8]| t.commit(name, bytes, "--tar");
    // A PAX header declaring 1 GiB: refused before any of it is read.
    let (code, err) = commit(
        "pax.tar",
        &bare_header(tar::EntryType::XHeader, "pax", 1 << 30),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("PAX record of 1073741824 bytes") && err.contains("pax.tar"),
        "{err}"
    );
    // A GNU long name of 16,000 levels.
    let deep = "a/".repeat(16_000) + "f";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &deep, &b"x"[..]).unwrap();
    let (code, err) = commit("deep.tar", &b.into_inner().unwrap());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("path is 32001 bytes (at most 4096)"), "{err}");
}

/// A tar of `links` (path, target) under a directory d/.
fn tar_of_links(links: &[(&str, &str)]) -> Vec<u8> {
    let header = |kind, mode| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755);
    b.append_data(&mut h, "d/", &[][..]).unwrap();
    for (path, target) in links {
        let mut h = header(tar::EntryType::Symlink, 0o777);
        b.append_link(&mut h, path, target).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn chained_relative_links_cannot_climb_out_of_the_tree() {
    let t = Imports::new();
    // Each link alone stays inside; together d/esc is the host's
    // /etc/hostname once checked out (p5 resolves to the root's parent).
    let mut links = vec![("d/p0".to_string(), "..".to_string())];
    for n in 1..=5 {
        links.push((format!("d/p{n}"), format!("p{}/..", n - 1)));
    }
    links.push(("d/esc".into(), "p5/etc/hostname".into()));
    let pairs: Vec<(&str, &str)> = links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (code, err) = t.commit("chain.tar", &tar_of_links(&pairs), "--tar");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("chain.tar: d/esc: symlink target p5/etc/hostname points outside the tree"),
        "{err}"
    );
    // Links that resolve inside, through other links, and loops (which
    // the kernel stops), are kept.
    let (code, err) = t.commit(
        "fine.tar",
        &tar_of_links(&[
            ("d/up", ".."),
            ("d/in", "up/d/up"),
            ("d/loop", "loop/x"),
            ("d/abs", "/etc/hostname"),
        ]),
        "--tar",
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn links_through_names_a_checkout_could_gain_and_long_targets_are_refused() {
    let t = Imports::new();
    let commit = |name: &str, bytes: &[u8], how: &str| t.commit(name, bytes, how);
    // `later` does not exist, but anyone may create it in a checkout.
    let (code, err) = commit(
        "later.tar",
        &tar_of_links(&[("d/p0", ".."), ("d/x", "p0/later/../../secret")]),
        "--tar",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("d/x: symlink target p0/later/../../secret points outside"),
        "{err}"
    );
    // A target longer than a path may be is refused as it is read.
    // (python's tarfile: it writes the GNU long link record.)
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import tarfile,sys\n\
             t=tarfile.open(fileobj=sys.stdout.buffer,mode='w|',format=tarfile.GNU_FORMAT)\n\
             l=tarfile.TarInfo('d/l'); l.type=tarfile.SYMTYPE; l.linkname='./'*3000\n\
             t.addfile(l); t.close()",
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let (code, err) = commit("long.tar", &py.stdout, "--tar");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("symlink target of 6000 bytes (at most 4095)"),
        "{err}"
    );
    // A dumpfile gets the same check.
    let dump =
        b"/ 0 40755 2 0 0 0 0.0 - - -\n/x 25 120777 1 0 0 0 0.0 ../../../../../etc/passwd - -\n";
    let (code, err) = commit("escape.dump", dump, "--dump");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("x: symlink target ../../../../../etc/passwd points outside"),
        "{err}"
    );
}
