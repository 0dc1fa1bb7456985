//! OCI images as a commit's source: an image made by umoci, with layers
//! that change, delete (whiteouts), hide a directory's contents (an
//! opaque whiteout), hard-link across layers and carry xattrs and a
//! setuid file, committed with `--oci` gives the very image that
//! committing umoci's own unpack of it gives. A blob changed on disk is
//! refused, naming its digest, and nothing is stored.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A repository in `d` whose branch `unpacked` is the tree `unpacked`.
fn repo_with_unpacked(d: &Path, unpacked: &Path) -> PathBuf {
    let repo = d.join("repo");
    st(&repo, &["init"]);
    let tree = unpacked.to_str().unwrap();
    st(&repo, &["commit", "-b", "unpacked", "--tree", tree]);
    repo
}

/// Branches `a` and `b` of `repo` hold the same image (else the
/// differences are shown).
fn assert_same_image(repo: &Path, a: &str, b: &str) {
    assert_eq!(
        image_digest(repo, a),
        image_digest(repo, b),
        "differences: {}",
        st(repo, &["diff", a, b])
    );
}

/// `commit ARGS` into `repo`, which must succeed; its peak RSS printed.
fn commit_measured(repo: &Path, args: &[&str], what: &str) {
    let (out, peak) = output_with_peak_rss(
        sealtree()
            .env("SEALTREE_REPO", repo)
            .arg("commit")
            .args(args),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what}: peak RSS {peak} KiB");
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

/// In `d`: the layout `img` holding image `os`, of layers made by
/// umoci and by hand (see the module's comment); returns the root of
/// umoci's own unpack of it.
fn make_image(d: &Path) -> PathBuf {
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

    unpacked
}

/// Whether root and umoci are here, for the tests that need them.
fn can_make_images() -> bool {
    if !is_root() {
        missing("root, for umoci to unpack owners and setuid files");
        return false;
    }
    if !have_command("umoci") {
        missing("umoci (apt-get install umoci)");
        return false;
    }
    true
}

/// `commit --oci REF` into `repo` on `branch`: the layers' lines
/// (`layer DIGEST: read|cached`) it printed.
fn commit_oci(repo: &Path, branch: &str, reference: &str, extra: &[&str]) -> String {
    let out = sealtree()
        .env("SEALTREE_REPO", repo)
        .args(["commit", "-b", branch, "--oci", reference])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "commit --oci {reference}: {err}");
    err
}

#[test]
fn an_oci_layout_commits_to_the_tree_umoci_unpacks() {
    if !can_make_images() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let unpacked = make_image(d);
    let repo = repo_with_unpacked(d, &unpacked);
    let img = format!("oci:{}:os", d.join("img").display());
    commit_measured(&repo, &["-b", "oci", "--oci", &img], "commit --oci");
    assert_same_image(&repo, "oci", "unpacked");
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
    let repo2 = d.join("repo2");
    st(&repo2, &["init"]);
    let count = common::registry::layout_layers(&d.join("img"), "os").len();
    assert!(count >= 3, "{count} layers");
    let layers = commit_oci(&repo2, "archive", &from_archive, &[]);
    assert_eq!(layers.matches(": read").count(), count, "{layers}");
    assert_eq!(image_digest(&repo2, "archive"), image_digest(&repo, "oci"));

    // Again into the first repository: every layer from the cache, not
    // read, and the same image.
    let layers = commit_oci(&repo, "again", &img, &[]);
    assert_eq!(layers.matches(": cached").count(), count, "{layers}");
    assert_same_image(&repo, "again", "oci");

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
    assert_eq!(
        stored_objects(&fresh).len(),
        0,
        "objects stored from a refused image"
    );
}

/// Whether docker-registry and skopeo are here.
fn can_run_a_registry() -> bool {
    for (tool, package) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo")] {
        if !have_command(tool) {
            missing(&format!("{tool} (apt-get install {package})"));
            return false;
        }
    }
    true
}

#[test]
fn a_registry_image_commits_and_only_new_layers_are_fetched() {
    if !can_make_images() || !can_run_a_registry() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let unpacked = make_image(d);
    let registry = common::registry::Registry::start();
    registry.push(&format!("oci:{}:os", d.join("img").display()), "test/os:v1");

    let repo = repo_with_unpacked(d, &unpacked);
    let v1 = registry.reference("test/os:v1");
    commit_oci(&repo, "v1", &v1, &["--plain-http"]);
    assert_same_image(&repo, "v1", "unpacked");
    let show = st(&repo, &["show", "v1"]);
    assert!(show.contains(&format!("Source: {v1} (sha256:")), "{show}");
    assert!(
        show.contains("Label:  org.opencontainers.image.version=2.0"),
        "{show}"
    );

    // The same image as a docker-archive (uncompressed layers, checked
    // against the config's diff_ids), and as a layout of zstd layers,
    // each into a repository of its own.
    let layout = format!("oci:{}:os", d.join("img").display());
    let docker = d.join("docker.tar");
    let archive = format!("docker-archive:{}:test/os:v1", docker.display());
    let zstd = format!("oci:{}:os", d.join("zimg").display());
    tool_ok("skopeo", d, &["copy", "--quiet", &layout, &archive]);
    tool_ok(
        "skopeo",
        d,
        &[
            "copy",
            "--quiet",
            "--dest-compress-format=zstd",
            &layout,
            &zstd,
        ],
    );
    let zlayers = common::registry::layout_manifest(&d.join("zimg"), "os");
    assert!(zlayers.contains("tar+zstd"), "{zlayers}");
    for (n, reference) in [
        (3, format!("docker-archive:{}", docker.display())),
        (4, archive),
        (5, zstd),
    ] {
        let other = d.join(format!("repo{n}"));
        st(&other, &["init"]);
        let printed = commit_oci(&other, "image", &reference, &[]);
        assert!(!printed.contains(": cached"), "{printed}");
        assert_eq!(
            image_digest(&other, "image"),
            image_digest(&repo, "unpacked"),
            "{reference}"
        );
    }

    // Version 2: the same layers and one more.
    let l5 = layer_tar(d, "layer5", &[("etc/motd", "version 2\n")]);
    umoci(
        d,
        &[
            "raw",
            "add-layer",
            "--image",
            "img:os",
            "--tag",
            "os2",
            l5.to_str().unwrap(),
        ],
    );
    let base = common::registry::layout_layers(&d.join("img"), "os");
    let layers = common::registry::layout_layers(&d.join("img"), "os2");
    let new = base.len();
    assert_eq!(layers.len(), new + 1);
    assert_eq!(layers[..new], base[..]);
    registry.push(
        &format!("oci:{}:os2", d.join("img").display()),
        "test/os:v2",
    );
    let before = registry.gets().len();
    let printed = commit_oci(
        &repo,
        "v2",
        &registry.reference("test/os:v2"),
        &["--plain-http"],
    );
    let gets = registry.gets()[before..].to_vec();
    for (i, layer) in layers.iter().enumerate() {
        let fetched = gets
            .iter()
            .filter(|g| g.ends_with(&format!("/blobs/{layer}")))
            .count();
        assert_eq!(
            fetched,
            usize::from(i == new),
            "layer {i} {layer}: fetched {fetched} times; requests: {gets:?}"
        );
    }
    assert_eq!(printed.matches(": cached").count(), new, "{printed}");
    // The replayed image is the one a fresh repository builds from all
    // five layers.
    let fresh = d.join("fresh");
    st(&fresh, &["init"]);
    commit_oci(
        &fresh,
        "v2",
        &format!("oci:{}:os2", d.join("img").display()),
        &[],
    );
    assert_eq!(image_digest(&repo, "v2"), image_digest(&fresh, "v2"));

    // The new layer changed on the registry's disk: refused, naming it,
    // nothing stored.
    let path = registry.blob_path(&layers[new]);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let empty = d.join("empty");
    st(&empty, &["init"]);
    let out = sealtree()
        .env("SEALTREE_REPO", &empty)
        .args([
            "commit",
            "-b",
            "v2",
            "--plain-http",
            "--oci",
            &registry.reference("test/os:v2"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&layers[new]), "{err}");
    assert_eq!(
        stored_objects(&empty).len(),
        0,
        "objects stored from a refused image"
    );
    let show = sealtree()
        .env("SEALTREE_REPO", &empty)
        .args(["show", "v2"])
        .output()
        .unwrap();
    assert!(!show.status.success(), "a branch made from a refused image");

    // Credentials the registry does not ask for are not needed; a
    // reference that is not one is refused before anything is fetched.
    let out = sealtree()
        .env("SEALTREE_REPO", &empty)
        .args([
            "commit",
            "-b",
            "x",
            "--plain-http",
            "--oci",
            "docker://127.0.0.1:1/UPPER:v1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the repository name is lowercase"), "{err}");
}

#[test]
fn the_debian_rootfs_commits_from_a_registry_as_from_its_tarball() {
    if !can_make_images() || !can_run_a_registry() {
        return;
    }
    if !have_command("mmdebstrap") {
        return missing("mmdebstrap (apt-get install mmdebstrap), for the Debian rootfs");
    }
    // The Debian system the boot tests install, made by mmdebstrap once
    // and kept (tests/vm/debian-base.sh).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/debian-base.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    umoci(d, &["init", "--layout", "img"]);
    umoci(d, &["new", "--image", "img:debian"]);
    umoci(
        d,
        &[
            "raw",
            "add-layer",
            "--image",
            "img:debian",
            rootfs.to_str().unwrap(),
        ],
    );
    let registry = common::registry::Registry::start();
    registry.push(
        &format!("oci:{}:debian", d.join("img").display()),
        "debian/base:bookworm",
    );

    let repo = d.join("repo");
    st(&repo, &["init"]);
    st(
        &repo,
        &["commit", "-b", "tar", "--tar", rootfs.to_str().unwrap()],
    );
    let reference = registry.reference("debian/base:bookworm");
    commit_measured(
        &repo,
        &["-b", "oci", "--plain-http", "--oci", &reference],
        "commit --oci docker:// of the Debian rootfs",
    );
    assert_same_image(&repo, "oci", "tar");
    let show = st(&repo, &["show", "oci"]);
    // Its kernel is found where bootc images keep theirs.
    assert!(show.lines().any(|l| l.starts_with("Kernels: 6.")), "{show}");
}

#[test]
fn a_registry_over_https_with_a_password_takes_creds_or_an_auth_file() {
    if !can_make_images() || !can_run_a_registry() {
        return;
    }
    for (tool, package) in [("htpasswd", "apache2-utils"), ("openssl", "openssl")] {
        if !have_command(tool) {
            return missing(&format!("{tool} (apt-get install {package})"));
        }
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let unpacked = make_image(d);
    common::tls::make_ca(d, "ca");
    common::tls::make_cert(d, "server", "DNS:localhost", "ca");
    let registry = common::registry::Registry::start_tls(
        &d.join("server.pem"),
        &d.join("server.key"),
        "builder",
        "s3cret",
    );
    registry.push(&format!("oci:{}:os", d.join("img").display()), "os:v1");
    let reference = registry.reference("os:v1");
    let repo = repo_with_unpacked(d, &unpacked);
    // The test's CA is the only one trusted (as SSL_CERT_FILE names it).
    let commit = |branch: &str, extra: &[&str], auth_file: Option<&Path>| {
        let mut c = sealtree();
        c.env("SEALTREE_REPO", &repo)
            .env("SSL_CERT_FILE", d.join("ca.pem"))
            .env("HOME", d)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REGISTRY_AUTH_FILE");
        if let Some(f) = auth_file {
            c.env("REGISTRY_AUTH_FILE", f);
        }
        c.args(["commit", "-b", branch, "--oci", &reference])
            .args(extra);
        c.output().unwrap()
    };
    let refused = |out: Output, what: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(what), "{err}");
    };
    let before = stored_objects(&repo).len();
    refused(
        commit("a", &[], None),
        "the registry wants a user and password",
    );
    refused(
        commit("a", &["--creds", "builder:wrong"], None),
        "with the credentials given",
    );
    refused(
        commit("a", &["--creds", "builder"], None),
        "give USER:PASSWORD",
    );
    assert_eq!(stored_objects(&repo).len(), before);

    let out = commit("creds", &["--creds", "builder:s3cret"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_image(&repo, "creds", "unpacked");

    // An auth file as podman and skopeo write it, keyed by host:port.
    let auth = d.join("auth.json");
    fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"localhost:{}":{{"auth":"{}"}}}}}}"#,
            registry.port,
            base64_encode(b"builder:s3cret")
        ),
    )
    .unwrap();
    let out = commit("file", &[], Some(&auth));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_image(&repo, "file", "unpacked");

    // Plain HTTP to an HTTPS registry, or an unknown CA: refused.
    refused(
        commit("a", &["--creds", "builder:s3cret", "--plain-http"], None),
        "HTTP 400",
    );
    let out = sealtree()
        .env("SEALTREE_REPO", &repo)
        .env("SSL_CERT_FILE", d.join("server.pem"))
        .args([
            "commit",
            "-b",
            "a",
            "--creds",
            "builder:s3cret",
            "--oci",
            &reference,
        ])
        .output()
        .unwrap();
    refused(out, "certificate");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
