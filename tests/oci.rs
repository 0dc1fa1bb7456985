//! OCI images as a commit's source: an image made by umoci, with layers
//! that change, delete (whiteouts), hide a directory's contents (an
//! opaque whiteout), hard-link across layers and carry xattrs and a
//! setuid file, committed with `--oci` gives the very image that
//! committing umoci's own unpack of it gives. A blob changed on disk is
//! refused, naming its digest, and nothing is stored.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn umoci(dir: &Path, args: &[&str]) {
    tool_ok("umoci", dir, args);
}

/// sealtree in repository `repo`, which must succeed: standard output.
fn st(repo: &Path, args: &[&str]) -> String {
    let out = sealtree()
        .env("SEALTREE_REPO", repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sealtree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `Image:` line of `show REV`.
fn image_digest(repo: &Path, rev: &str) -> String {
    st(repo, &["show", rev])
        .lines()
        .find_map(|l| l.strip_prefix("Image:").map(|d| d.trim().to_string()))
        .unwrap()
}

/// A tar archive of `entries` (path, bytes) made with tar(1) in `dir`.
fn layer_tar(dir: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let staging = dir.join(format!("{name}.d"));
    for (path, content) in files {
        let p = staging.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    let out = dir.join(format!("{name}.tar"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&staging)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&out)
        .args(files.iter().map(|(p, _)| *p))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn an_oci_layout_commits_to_the_tree_umoci_unpacks() {
    if !is_root() {
        return missing("root, for umoci to unpack owners and setuid files");
    }
    if !have_command("umoci") {
        return missing("umoci (apt-get install umoci)");
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    umoci(d, &["init", "--layout", "img"]);
    umoci(d, &["new", "--image", "img:os"]);
    umoci(d, &["unpack", "--image", "img:os", "bundle"]);
    let root = d.join("bundle/rootfs");
    // Layer 1: a base system of sorts.
    for (path, content) in [
        ("etc/os-release", "ID=test\nVERSION_ID=1\n"),
        ("usr/share/doc/base", "base docs\n"),
        ("usr/lib/gone", "deleted by layer 2\n"),
        ("var/cache/app/a", "cached a\n"),
        ("var/cache/app/b", "cached b\n"),
        ("a/b/c/bar", "lower bar\n"),
        ("a/other", "lower other\n"),
        ("x", "lower x\n"),
    ] {
        fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        fs::write(root.join(path), content).unwrap();
    }
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    common::fixture::write(&root.join("usr/bin/tool"), 100_000, 3);
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    xattr::set(root.join("usr/share/doc/base"), "user.origin", b"layer one").unwrap();
    umoci(d, &["repack", "--image", "img:os", "bundle"]);
    // Layer 2: a change, a deletion, a hard link to a file of layer 1.
    fs::write(root.join("etc/os-release"), "ID=test\nVERSION_ID=2\n").unwrap();
    fs::remove_file(root.join("usr/lib/gone")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    umoci(d, &["repack", "--image", "img:os", "bundle"]);
    // Layer 3, by hand: an opaque directory and a new file in it.
    let l3 = layer_tar(
        d,
        "layer3",
        &[
            ("var/cache/app/.wh..wh..opq", ""),
            ("var/cache/app/fresh", "after the opaque whiteout\n"),
        ],
    );
    umoci(
        d,
        &[
            "raw",
            "add-layer",
            "--image",
            "img:os",
            l3.to_str().unwrap(),
        ],
    );
    // Layer 4, by hand, in the tar crate: the image specification's own
    // opaque example (what the layer lists under a/ stays, a/b/c/bar of
    // the lower layer goes), a file then its whiteout in one layer (the
    // file stays: whiteouts are for lower layers), and a hard link to a
    // file of layer 1.
    let l4 = d.join("layer4.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&l4).unwrap());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            match link {
                Some(target) => b.append_link(&mut h, path, target).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("a/", tar::EntryType::Directory, b"", None);
        add("a/b/", tar::EntryType::Directory, b"", None);
        add("a/b/c/", tar::EntryType::Directory, b"", None);
        add("a/b/c/foo", tar::EntryType::Regular, b"upper foo\n", None);
        add("a/.wh..wh..opq", tar::EntryType::Regular, b"", None);
        add("x", tar::EntryType::Regular, b"upper x\n", None);
        add(".wh.x", tar::EntryType::Regular, b"", None);
        add(
            "usr/bin/tool-hard",
            tar::EntryType::Link,
            b"",
            Some("usr/bin/tool"),
        );
        b.finish().unwrap();
    }
    umoci(
        d,
        &[
            "raw",
            "add-layer",
            "--image",
            "img:os",
            l4.to_str().unwrap(),
        ],
    );
    umoci(
        d,
        &[
            "config",
            "--image",
            "img:os",
            "--config.label",
            "org.opencontainers.image.version=2.0",
        ],
    );
    umoci(d, &["unpack", "--image", "img:os", "out"]);
    let unpacked = d.join("out/rootfs");
    assert!(!unpacked.join("var/cache/app/a").exists());
    assert!(!unpacked.join("usr/lib/gone").exists());
    assert!(unpacked.join("a/b/c/foo").exists() && !unpacked.join("a/b/c/bar").exists());
    assert!(!unpacked.join("a/other").exists());
    assert_eq!(fs::read(unpacked.join("x")).unwrap(), b"upper x\n");

    // umoci deletes the lower a/b/c/bar while it applies a/'s opaque
    // whiteout and restores the times of a/ only, so a/b/c keeps the time
    // of the unpack, not the one its layer entry gives: put back what
    // the layer says (and check that this is the only such case).
    let c = unpacked.join("a/b/c");
    let c_mtime = fs::metadata(&c).unwrap().modified().unwrap();
    assert!(c_mtime.elapsed().unwrap().as_secs() < 3600, "{c_mtime:?}");
    let touch = Command::new("touch")
        .args(["-d", "@1700000000"])
        .arg(&c)
        .status()
        .unwrap();
    assert!(touch.success());

    let repo = d.join("repo");
    st(&repo, &["init"]);
    st(
        &repo,
        &[
            "commit",
            "-b",
            "unpacked",
            "--tree",
            unpacked.to_str().unwrap(),
        ],
    );
    let img = format!("oci:{}:os", d.join("img").display());
    let (out, peak) = output_with_peak_rss(
        sealtree()
            .env("SEALTREE_REPO", &repo)
            .args(["commit", "-b", "oci", "--oci", &img]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("commit --oci: peak RSS {peak} KiB");
    assert_eq!(
        image_digest(&repo, "oci"),
        image_digest(&repo, "unpacked"),
        "differences: {}",
        st(&repo, &["diff", "unpacked", "oci"])
    );
    let show = st(&repo, &["show", "oci"]);
    assert!(show.contains(&format!("Source: {img} (sha256:")), "{show}");
    assert!(
        show.contains("Label:  org.opencontainers.image.version=2.0"),
        "{show}"
    );

    // The same layout as an oci-archive (tar(1) of it), read in place.
    let archive = d.join("img.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(d.join("img"))
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let from_archive = format!("oci-archive:{}:os", archive.display());
    st(&repo, &["commit", "-b", "archive", "--oci", &from_archive]);
    assert_eq!(image_digest(&repo, "archive"), image_digest(&repo, "oci"));

    // A layer changed on the registry's disk: refused, naming it.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("img/index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |digest: &str| d.join("img/blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = fs::read(blob(&layer)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(blob(&layer), &bytes).unwrap();
    let fresh = d.join("fresh");
    st(&fresh, &["init"]);
    let out = sealtree()
        .env("SEALTREE_REPO", &fresh)
        .args(["commit", "-b", "oci", "--oci", &img])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&layer), "{err}");
    let stored = fs::read_dir(fresh.join("objects"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .flat_map(|e| fs::read_dir(e.unwrap().path()).unwrap())
        .count();
    assert_eq!(stored, 0, "objects stored from a refused image");
}
