//! The repository through the command line: commits from directories,
//! tar archives and dumpfiles, history, checkout, diff, fsck and prune,
//! and its behaviour under bad input, kills and concurrent writers.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::fixture::*;
use common::*;
use sealtree::repo::{self, CommitSource, Repo};

/// A temporary repository driven through the sealtree command.
struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    fn new() -> TestRepo {
        let t = TestRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        t.ok(&["init"]);
        t
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        sealtree()
            .env("SEALTREE_REPO", self.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sealtree {:?}: {}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sealtree commit -b BRANCH --tree DIR`, however it ends.
    fn commit_output(&self, branch: &str, dir: &Path) -> Output {
        let args = [
            OsStr::new("commit"),
            OsStr::new("-b"),
            OsStr::new(branch),
            OsStr::new("--tree"),
            dir.as_os_str(),
        ];
        self.run(&args)
    }

    fn commit_tree(&self, branch: &str, dir: &Path) -> String {
        let out = self.commit_output(branch, dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "commit: {stderr}");
        // Not a terminal: no progress bar, nothing at all on stderr.
        assert_eq!(stderr, "");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn objects(&self) -> Vec<String> {
        stored_objects(&self.path())
    }

    /// A source tree of one file (5000 bytes), made in the scratch area.
    fn one_file_tree(&self) -> PathBuf {
        let src = self.scratch("src");
        fs::create_dir_all(&src).unwrap();
        write(&src.join("file"), 5000, 7);
        src
    }

    /// [`TestRepo::one_file_tree`] committed on `os`: the tree, and where
    /// its one object is stored.
    fn commit_one_object(&self) -> (PathBuf, PathBuf) {
        let src = self.one_file_tree();
        self.commit_tree("os", &src);
        (src, self.only_object())
    }

    /// The one object stored, where it lives.
    fn only_object(&self) -> PathBuf {
        let objects = self.objects();
        assert_eq!(objects.len(), 1, "{objects:?}");
        object_file(&self.path(), &objects[0])
    }

    fn image_digest(&self, commit: &str) -> String {
        let show = self.ok(&["show", commit]);
        show.lines()
            .find_map(|l| l.strip_prefix("Image:  "))
            .unwrap()
            .to_string()
    }
}

fn simple_tree(dir: &Path) {
    fs::create_dir_all(dir.join("usr/lib/modules/6.12.0-test")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    write(&dir.join("usr/lib/modules/6.12.0-test/vmlinuz"), 300_000, 1);
    write(&dir.join("etc/big"), 100_000, 2);
    fs::write(dir.join("etc/small"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib", dir.join("etc/lib")).unwrap();
}

#[test]
fn commit_and_checkout_round_trip_every_attribute() {
    if !is_root() {
        return missing("root, to create devices and set owners");
    }
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    let id = repo.commit_tree("os", &src);
    let out = repo.scratch("checkout");
    repo.ok(&[OsStr::new("checkout"), OsStr::new(&id), out.as_os_str()]);
    assert_same_tree(&src, &out);
    // The checkout commits to the same image.
    let again = repo.commit_tree("again", &out);
    assert_eq!(repo.image_digest(&again), repo.image_digest(&id));
    // A checkout never overwrites.
    let refused = repo.run(&[OsStr::new("checkout"), OsStr::new(&id), out.as_os_str()]);
    assert_eq!(refused.status.code(), Some(1));
}

#[test]
fn history_is_plain_git_and_metadata_is_recorded() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    let first = repo.commit_tree("os", &src);
    write(&src.join("etc/big"), 100_001, 3);
    let second = repo.commit_tree("os", &src);
    assert_ne!(first, second);

    let log = repo.ok(&["log", "os"]);
    let ids: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(repo.ok(&["refs"]), format!("os {second}\n"));
    let show = repo.ok(&["show", &second]);
    assert!(show.contains(&format!("Parent: {first}")), "{show}");
    assert!(show.contains("Kernels: 6.12.0-test"), "{show}");

    let git = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path().join("git"))
        .args(["log", "--format=%H", "os"])
        .output()
        .expect("git is installed");
    assert!(
        git.status.success(),
        "{}",
        String::from_utf8_lossy(&git.stderr)
    );
    assert_eq!(
        String::from_utf8(git.stdout).unwrap(),
        format!("{second}\n{first}\n")
    );

    // The recorded image digest is what the commit rebuilds to, and the
    // image file in images/ is that image.
    let digest = repo.image_digest(&second);
    let image = fs::read(repo.path().join("images").join(&digest)).unwrap();
    assert_eq!(
        hex::encode(sealtree::fsverity::digest_bytes(&image)),
        digest
    );
    let r = Repo::open(&repo.path()).unwrap();
    let tree = r.tree(r.history().unwrap().resolve("os").unwrap()).unwrap();
    let rebuilt = sealtree::erofs::write_image(
        &tree,
        &sealtree::erofs::ImageOptions {
            min_version: 1,
            max_version: 1,
        },
    )
    .unwrap();
    assert!(rebuilt.bytes == image);

    assert_eq!(repo.ok(&["cat", "os", "/etc/small"]), "hello\n");
    let ls = repo.ok(&["ls", "os", "/etc"]);
    assert!(ls.contains(" 100001 big\n"), "{ls}");
    assert!(ls.contains("lib -> ../usr/lib"), "{ls}");
}

#[test]
fn commits_share_objects() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    repo.commit_tree("a", &src);
    let before = repo.objects();
    assert_eq!(before.len(), 2, "vmlinuz and big; small is inline");
    write(&src.join("etc/new"), 70_000, 9);
    repo.commit_tree("b", &src);
    let after = repo.objects();
    assert_eq!(after.len(), 3);
    assert!(before.iter().all(|o| after.contains(o)));
}

#[test]
fn diff_names_added_removed_changed_and_metadata_changes() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    let a = repo.commit_tree("os", &src);
    let old_big = sealtree::fsverity::digest_bytes(&fs::read(src.join("etc/big")).unwrap());
    write(&src.join("etc/big"), 100_000, 7);
    let new_big = sealtree::fsverity::digest_bytes(&fs::read(src.join("etc/big")).unwrap());
    fs::remove_file(src.join("etc/small")).unwrap();
    fs::write(src.join("etc/added"), b"new file").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        src.join("usr/lib/modules/6.12.0-test/vmlinuz"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // Keep directory mtimes out of the comparison.
    for d in ["", "etc"] {
        let t = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
        nix::sys::stat::utimensat(
            None,
            &src.join(d),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    let b = repo.commit_tree("os", &src);
    let diff = repo.ok(&["diff", &a, &b]);
    let lines: Vec<&str> = diff
        .lines()
        .filter(|l| *l != "M /  metadata: mtime" && *l != "M /etc  metadata: mtime")
        .collect();
    assert_eq!(
        lines,
        [
            "A /etc/added".to_string(),
            format!(
                "M /etc/big  content {} -> {}  metadata: mtime",
                hex::encode(old_big),
                hex::encode(new_big)
            ),
            "D /etc/small".to_string(),
            "M /usr/lib/modules/6.12.0-test/vmlinuz  metadata: mode".to_string(),
        ],
        "{diff}"
    );
}

#[test]
fn fsck_finds_corrupt_and_missing_objects_and_repair_quarantines() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    repo.commit_tree("os", &src);
    assert!(repo
        .ok(&["fsck"])
        .contains("checked 2 objects, 1 images, 1 commits"));
    let objects = repo.objects();
    let (corrupt, deleted) = (&objects[0], &objects[1]);
    let path = |d: &str| repo.path().join("objects").join(&d[..2]).join(&d[2..]);
    fs::write(path(corrupt), b"not what the name says").unwrap();
    fs::remove_file(path(deleted)).unwrap();

    let out = repo.run(&["fsck"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("corrupt object {corrupt}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("missing object {deleted}")),
        "{stdout}"
    );

    let repaired = repo.run(&["fsck", "--repair"]);
    assert!(repo.path().join("quarantine").join(corrupt).is_file());
    assert_eq!(repaired.status.code(), Some(1), "objects are still missing");
    // Committing the tree again restores the objects.
    repo.commit_tree("os", &src);
    assert!(repo.run(&["fsck"]).status.success());
}

#[test]
fn prune_removes_exactly_the_unreachable() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    let a = repo.commit_tree("keep", &src);
    write(&src.join("etc/extra1"), 80_000, 4);
    write(&src.join("etc/extra2"), 90_000, 5);
    let b = repo.commit_tree("drop", &src);
    let image_b = repo.image_digest(&b);
    let image_b_size = fs::metadata(repo.path().join("images").join(&image_b))
        .unwrap()
        .len();
    let all = repo.objects();
    assert_eq!(all.len(), 4);

    repo.ok(&["refs", "--delete", "drop"]);
    let expected_bytes = 80_000 + 90_000 + image_b_size;
    let dry = repo.ok(&["prune", "--dry-run"]);
    assert_eq!(
        dry.trim(),
        format!("would remove 2 objects and 1 images, {expected_bytes} bytes")
    );
    assert_eq!(repo.objects(), all, "dry run removed something");
    let done = repo.ok(&["prune"]);
    assert_eq!(
        done.trim(),
        format!("removed 2 objects and 1 images, {expected_bytes} bytes")
    );
    assert_eq!(repo.objects().len(), 2);
    assert!(!repo.path().join("images").join(&image_b).exists());
    assert!(repo
        .path()
        .join("images")
        .join(repo.image_digest(&a))
        .exists());
    assert!(repo.run(&["fsck"]).status.success());
    let out = repo.scratch("co");
    repo.ok(&[OsStr::new("checkout"), OsStr::new("keep"), out.as_os_str()]);
}

fn have_tar_tools() -> bool {
    have_command("tar") && have_command("zstd") && have_command("gzip")
}

#[test]
fn tar_import_equals_directory_import() {
    if !is_root() {
        return missing("root, to create devices and set owners");
    }
    if !have_tar_tools() {
        return missing("GNU tar, gzip and zstd");
    }
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    let from_dir = repo.commit_tree("dir", &src);
    let tar = repo.scratch("tree.tar");
    let status = Command::new("tar")
        .args(["--format=posix", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    for (compress, name) in [
        (None, "tree.tar"),
        (Some("gzip"), "tree.tar.gz"),
        (Some("zstd"), "tree.tar.zst"),
    ] {
        let file = repo.scratch(name);
        if let Some(tool) = compress {
            let out = Command::new(tool).arg("-c").arg(&tar).output().unwrap();
            assert!(out.status.success());
            fs::write(&file, out.stdout).unwrap();
        }
        let id = repo
            .ok(&[
                OsStr::new("commit"),
                OsStr::new("-b"),
                OsStr::new(name),
                OsStr::new("--tar"),
                file.as_os_str(),
            ])
            .trim()
            .to_string();
        let diff = repo.ok(&["diff", &from_dir, &id]);
        assert_eq!(diff, "", "{name}: tar import differs from directory import");
        assert_eq!(
            repo.image_digest(&id),
            repo.image_digest(&from_dir),
            "{name}"
        );
    }
}

/// Archives that try to escape the tree are refused; the repository is left
/// as it was.
#[test]
fn evil_tars_are_refused() {
    if !have_command("python3") {
        return missing("python3, to build the hostile archives");
    }
    let repo = TestRepo::new();
    let cases: &[(&str, &str)] = &[
        ("dotdot", "add_file('../evil')"),
        ("absolute", "add_file('/etc/evil')"),
        ("inner-dotdot", "add_file('a/../../evil')"),
        (
            "hardlink-outside",
            "add_file('ok'); add_link('h', '../outside', tarfile.LNKTYPE)",
        ),
        (
            "hardlink-missing",
            "add_link('h', 'nothere', tarfile.LNKTYPE)",
        ),
        (
            "symlink-outside",
            "add_link('s', '../../etc/passwd', tarfile.SYMTYPE)",
        ),
        (
            "through-symlink",
            "add_link('d', '/etc', tarfile.SYMTYPE); add_file('d/passwd')",
        ),
    ];
    for (name, body) in cases {
        let tar = repo.scratch(&format!("{name}.tar"));
        let script = format!(
            "import tarfile, io\n\
             t = tarfile.open({tar:?}, 'w', format=tarfile.PAX_FORMAT)\n\
             def add_file(n):\n    i = tarfile.TarInfo(n); i.size = 100; t.addfile(i, io.BytesIO(b'x' * 100))\n\
             def add_link(n, target, kind):\n    i = tarfile.TarInfo(n); i.type = kind; i.linkname = target; t.addfile(i)\n\
             {}\nt.close()\n",
            body.replace("; ", "\n"),
            tar = tar.to_str().unwrap()
        );
        let py = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let out = repo.run(&[
            OsStr::new("commit"),
            OsStr::new("-b"),
            OsStr::new("evil"),
            OsStr::new("--tar"),
            tar.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(tar.to_str().unwrap()), "{name}: {stderr}");
        assert_eq!(repo.ok(&["refs"]), "", "{name}: a branch was created");
        assert!(repo.objects().is_empty(), "{name}: objects were stored");
    }
}

#[test]
fn killed_commits_leave_the_repository_consistent() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    fs::create_dir(&src).unwrap();
    for i in 0..120 {
        write(&src.join(format!("f{i}")), 150_000 + i, i as u8);
    }
    let mut previous_head: Option<String> = None;
    for delay_ms in [2u64, 10, 25, 50, 100, 200] {
        let mut child = sealtree()
            .env("SEALTREE_REPO", repo.path())
            .args(["commit", "-b", "os", "--tree"])
            .arg(&src)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let fsck = repo.run(&["fsck"]);
        assert!(
            fsck.status.success(),
            "after a kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let refs = repo.ok(&["refs"]);
        let head = refs.split_whitespace().nth(1).map(str::to_string);
        if let Some(prev) = &previous_head {
            assert!(head.is_some(), "a branch vanished");
            let log = repo.ok(&["log", "os"]);
            assert!(log.contains(prev.as_str()), "history lost");
        }
        previous_head = head.or(previous_head);
    }
    repo.commit_tree("os", &src);
    let fsck = repo.ok(&["fsck"]);
    assert!(fsck.contains("0 temporary files or directories"), "{fsck}");
}

#[test]
fn concurrent_commits_are_serialized() {
    let repo = TestRepo::new();
    let srcs: Vec<PathBuf> = (0..2)
        .map(|n| {
            let src = repo.scratch(&format!("src{n}"));
            fs::create_dir(&src).unwrap();
            for i in 0..40 {
                write(&src.join(format!("f{i}")), 200_000, (n * 50 + i) as u8);
            }
            src
        })
        .collect();
    // Started together: the second waits for the first's lock.
    let procs: Vec<_> = srcs
        .iter()
        .map(|src| {
            sealtree()
                .env("SEALTREE_REPO", repo.path())
                .args(["commit", "-b", "both", "--tree"])
                .arg(src)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = repo.ok(&["log", "both"]);
    assert_eq!(
        log.lines().filter(|l| l.starts_with("commit ")).count(),
        2,
        "{log}"
    );
    assert!(repo.run(&["fsck"]).status.success());
}

/// A store any user may write to, or one of its prefix directories, is
/// refused before anything is written into it: another user could make
/// entries there holding what they like under an object's name. What
/// init and commits make is closed to others whatever the umask; the
/// group may write (a repository a group shares).
#[test]
fn a_store_any_user_may_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let t = TestRepo {
        dir: tempfile::tempdir().unwrap(),
    };
    // sealtree with these arguments, run with a umask of 000.
    let open_umask = |args: &[&OsStr]| {
        let mut cmd = sealtree();
        cmd.env("SEALTREE_REPO", t.path()).args(args);
        // SAFETY: umask(2) is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                Ok(())
            });
        }
        cmd.status().unwrap().success()
    };
    assert!(open_umask(&[OsStr::new("init")]));
    let objects = t.path().join("objects");
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&objects), 0o775);

    fs::set_permissions(&objects, fs::Permissions::from_mode(0o1777)).unwrap();
    let src = t.one_file_tree();
    let out = t.commit_output("os", &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!(
        "{}: cannot create a staging directory: any user may write to it (mode 1777)",
        objects.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert_eq!(t.ok(&["refs"]), "");
    assert!(fs::read_dir(&objects).unwrap().next().is_none());

    fs::set_permissions(&objects, fs::Permissions::from_mode(0o775)).unwrap();
    let commit = ["commit", "-b", "os", "--tree"].map(OsStr::new);
    assert!(open_umask(&[&commit[..], &[src.as_os_str()]].concat()));
    let prefix = t.only_object().parent().unwrap().to_path_buf();
    assert_eq!(mode(&prefix), 0o775);

    // As an older version made them under a umask of 000.
    fs::set_permissions(&prefix, fs::Permissions::from_mode(0o777)).unwrap();
    let out = t.commit_output("os", &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let name = prefix.file_name().unwrap().to_str().unwrap();
    let want = format!("{name}: any user may write to it (mode 777)");
    assert!(stderr.contains(&want), "{stderr}");
}

/// An unchanged tree is committed again from the stat cache, unread.
#[test]
fn unchanged_tree_recommits_from_the_stat_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..30 {
        write(&src.join(format!("f{i}")), 10_000 + i, i as u8);
    }
    // Files the cache vouches for are not opened: their xattrs are listed
    // by name in their directory, and must be the same.
    for i in [0, 7, 29] {
        xattr::set(
            src.join(format!("f{i}")),
            "user.origin",
            format!("f{i}").as_bytes(),
        )
        .unwrap();
    }
    // Files changed within a second of a commit are never trusted.
    std::thread::sleep(Duration::from_millis(1300));
    let repo = Repo::init(&tmp.path().join("repo")).unwrap();
    let commit = || {
        repo::commit(
            &repo,
            CommitSource::Directory(&src),
            "os",
            "",
            &Default::default(),
        )
        .unwrap()
    };
    let first = commit();
    let stats = first.walk.unwrap();
    assert_eq!((stats.files_hashed, stats.files_cached), (30, 0));
    let second = commit();
    let stats = second.walk.unwrap();
    assert_eq!((stats.files_hashed, stats.files_cached), (0, 30));
    assert_eq!(first.meta, second.meta);
    let tree = repo.tree(second.id).unwrap();
    let f7 = tree.lookup(b"/f7").unwrap();
    assert_eq!(
        tree.inodes[f7].xattrs.get(&b"user.origin"[..]),
        Some(&b"f7".to_vec())
    );
    // The cache is written beside the repository as files are hashed,
    // then renamed: nothing temporary stays.
    let names: Vec<_> = fs::read_dir(repo.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"statcache".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    // A changed file is read again.
    write(&src.join("f3"), 10_003, 99);
    let third = commit();
    assert_eq!(third.walk.unwrap().files_hashed, 1);
    assert_ne!(third.meta.image_digest, second.meta.image_digest);
    // The cache vouches that f4 had no xattrs, so they are not listed
    // while its stamp holds; one set since changed its ctime.
    xattr::set(src.join("f4"), "user.added", b"later").unwrap();
    let fourth = commit();
    // f4, and f3: written just before the third commit, it was too
    // recent for that commit's cache.
    assert_eq!(fourth.walk.unwrap().files_hashed, 2);
    let tree = repo.tree(fourth.id).unwrap();
    let f4 = tree.lookup(b"/f4").unwrap();
    assert_eq!(
        tree.inodes[f4].xattrs.get(&b"user.added"[..]),
        Some(&b"later".to_vec())
    );
}

#[test]
fn dump_commits_need_their_objects() {
    let repo = TestRepo::new();
    let src = repo.scratch("src");
    simple_tree(&src);
    let id = repo.commit_tree("os", &src);
    let image = repo.path().join("images").join(repo.image_digest(&id));
    let dump = repo.scratch("tree.dump");
    repo.ok(&[
        OsStr::new("composefs-dump"),
        image.as_os_str(),
        dump.as_os_str(),
    ]);
    let again = repo
        .ok(&[
            OsStr::new("commit"),
            OsStr::new("-b"),
            OsStr::new("fromdump"),
            OsStr::new("--dump"),
            dump.as_os_str(),
        ])
        .trim()
        .to_string();
    assert_eq!(repo.image_digest(&again), repo.image_digest(&id));

    let text = fs::read_to_string(&dump).unwrap().replace(
        &repo.objects()[0],
        "0000000000000000000000000000000000000000000000000000000000000000",
    );
    fs::write(&dump, text).unwrap();
    let out = repo.run(&[
        OsStr::new("commit"),
        OsStr::new("-b"),
        OsStr::new("bad"),
        OsStr::new("--dump"),
        dump.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the store"));
}

/// A file written to while it is hashed is reported by name and nothing
/// is committed.
#[test]
fn a_file_changing_while_read_is_reported() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let repo = TestRepo::new();
    let src = repo.scratch("src");
    fs::create_dir(&src).unwrap();
    let busy = src.join("busy.log");
    write(&busy, 96 << 20, 7);
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // Same size, new mtime, again and again while the commit reads.
            let file = fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut i = 0u8;
            while !stop.load(Ordering::Relaxed) {
                file.write_all_at(&[i], 1 << 20).unwrap();
                i = i.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let out = repo.commit_output("os", &src);
        stop.store(true, Ordering::Relaxed);
        out
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("busy.log: file changed while it was read"),
        "{stderr}"
    );
    assert_eq!(repo.ok(&["refs"]), "");
    assert!(repo.objects().is_empty(), "{:?}", repo.objects());
    repo.ok(&["fsck"]);
}

/// The permission bits of the object holding `file`'s content.
fn object_mode(repo: &Path, file: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let digest = hex::encode(sealtree::fsverity::digest_bytes(&fs::read(file).unwrap()));
    let path = repo.join("objects").join(&digest[..2]).join(&digest[2..]);
    fs::metadata(&path).unwrap().permissions().mode() & 0o7777
}

/// Objects get their modes whatever the committer's umask: the mode is
/// set, not left to the umask, for content read whole and for content
/// copied as it is hashed.
#[test]
fn objects_keep_their_modes_under_a_strict_umask() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestRepo::new();
    let src = t.scratch("src");
    fs::create_dir_all(&src).unwrap();
    // Read whole, and (over 1 MiB) copied as it is hashed.
    write(&src.join("small"), 5000, 1);
    write(&src.join("large"), 3 << 20, 2);
    write(&src.join("secret"), 5000, 3);
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let commit = ["commit", "-b", "os", "--tree"].map(OsStr::new);
    sealtree_ok_after(
        "umask 077",
        &t.path(),
        &[&commit[..], &[src.as_os_str()]].concat(),
    );
    assert_eq!(object_mode(&t.path(), &src.join("small")), 0o644);
    assert_eq!(object_mode(&t.path(), &src.join("large")), 0o644);
    assert_eq!(object_mode(&t.path(), &src.join("secret")), 0o600);
    t.ok(&["fsck"]);
}

/// A link planted where a prefix directory belongs (objects/ab ->
/// elsewhere, say /etc/cron.d) never takes an object out of the store:
/// the commit fails naming it, and nothing lands where it points.
#[test]
fn a_link_planted_as_a_prefix_directory_takes_no_object_out_of_the_store() {
    let t = TestRepo::new();
    let src = t.one_file_tree();
    let outside = t.scratch("outside");
    fs::create_dir_all(&outside).unwrap();
    for byte in 0..=255u8 {
        let prefix = t.path().join("objects").join(format!("{byte:02x}"));
        std::os::unix::fs::symlink(&outside, prefix).unwrap();
    }
    let out = t.commit_output("os", &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a commit through a planted link");
    assert!(
        stderr.contains("not a directory (a link or file in its place)"),
        "{stderr}"
    );
    // The store named once, the prefix under it.
    assert_eq!(stderr.matches("/objects").count(), 1, "{stderr}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{stderr}");
    assert_eq!(t.ok(&["refs"]), "");
}

/// Objects moved out of the store, with a link planted in place of their
/// prefix directory, are not taken as stored by a commit whose stat cache
/// vouches for their files: the store's listing does not follow the
/// link, and the commit fails naming it.
#[test]
fn a_link_planted_as_a_prefix_directory_does_not_vouch_for_its_objects() {
    let t = TestRepo::new();
    let src = t.one_file_tree();
    // Older than a second when committed: the stat cache vouches for it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.commit_tree("os", &src);
    let object = t.only_object();
    let prefix = object.parent().unwrap();
    let outside = t.scratch("outside");
    fs::rename(prefix, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, prefix).unwrap();
    let out = t.commit_output("os", &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a commit vouched for by a link");
    assert!(
        stderr.contains("not a directory (a link or file in its place)"),
        "{stderr}"
    );
}

/// Objects are read from their prefix directory itself: with a link
/// planted in its place, `cat` and `checkout` fail rather than give what
/// the link leads to.
#[test]
fn a_link_planted_as_a_prefix_directory_is_not_read_through() {
    let t = TestRepo::new();
    let (_, object) = t.commit_one_object();
    let prefix = object.parent().unwrap();
    let outside = t.scratch("outside");
    fs::rename(prefix, t.scratch("moved")).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join(object.file_name().unwrap()), "planted\n").unwrap();
    std::os::unix::fs::symlink(&outside, prefix).unwrap();
    let cat = t.run(&["cat", "os", "/file"]);
    let stderr = String::from_utf8_lossy(&cat.stderr);
    assert!(!cat.status.success(), "cat read through the link");
    assert!(!String::from_utf8_lossy(&cat.stdout).contains("planted"));
    assert!(stderr.contains("no prefix directory"), "{stderr}");
    let co = t.scratch("co");
    let checkout = t.run(&[OsStr::new("checkout"), OsStr::new("os"), co.as_os_str()]);
    assert!(!checkout.status.success(), "checkout read through the link");
}

/// A prefix directory renamed to the name of a dead writer's staging
/// directory is not removed with it: its objects stay for fsck to name.
#[test]
fn a_prefix_directory_renamed_as_abandoned_staging_keeps_its_objects() {
    let t = TestRepo::new();
    let (src, object) = t.commit_one_object();
    // A pid that was and is no more.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let staging = t.path().join(format!("objects/.staging-{dead}-planted"));
    fs::rename(object.parent().unwrap(), &staging).unwrap();
    write(&src.join("other"), 6000, 8);
    t.commit_tree("os", &src);
    assert!(staging.join(object.file_name().unwrap()).is_file());
}

/// A commit of 3,000 files (their objects in every prefix) into `t`,
/// while `swap` is done to its staging directory (named as given, under
/// objects/) as soon as it is made: the commit's output, once it has run.
fn commit_with_staging_swapped(t: &TestRepo, swap: impl Fn(&Path, &OsStr) + Sync) -> Output {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::sync::atomic::{AtomicBool, Ordering};

    let src = t.scratch("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        let content = format!("{i:04}\n").repeat(1000);
        fs::write(src.join(format!("{i:04}")), content).unwrap();
    }
    let objects = t.path().join("objects");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(&objects, AddWatchFlags::IN_CREATE)
        .unwrap();
    let (stop, swapped) = (AtomicBool::new(false), AtomicBool::new(false));
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) && !swapped.load(Ordering::Relaxed) {
                let events = inotify.read_events().unwrap_or_default();
                let staging = events.iter().find_map(|e| {
                    e.name
                        .as_ref()
                        .filter(|n| n.to_string_lossy().starts_with(".staging-"))
                });
                if let Some(name) = staging {
                    swap(&objects, name);
                    swapped.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let out = t.commit_output("os", &src);
        stop.store(true, Ordering::Relaxed);
        out
    });
    assert!(
        swapped.load(Ordering::Relaxed),
        "the staging directory was not swapped"
    );
    out
}

/// A commit that succeeded has every file of the tree in the store.
fn check_out_all(t: &TestRepo) {
    let co = t.scratch("co");
    t.ok(&[OsStr::new("checkout"), OsStr::new("os"), co.as_os_str()]);
    assert_eq!(fs::read_dir(&co).unwrap().count(), 3000);
}

/// The staging directory is reached through the handle opened when it
/// was made: whoever can write to objects/ and swaps it for a directory
/// of links (to /etc/cron.d, say) gets nothing written through them,
/// and the commit stores every object.
#[test]
fn a_staging_directory_swapped_during_a_commit_is_not_written_through() {
    let t = TestRepo::new();
    let outside = t.scratch("outside");
    fs::create_dir(&outside).unwrap();
    let out = commit_with_staging_swapped(&t, |objects, name| {
        let planted = t.scratch("planted");
        fs::create_dir(&planted).unwrap();
        for byte in 0..=255u8 {
            let link = planted.join(format!("{byte:02x}"));
            std::os::unix::fs::symlink(&outside, link).unwrap();
        }
        fs::rename(objects.join(name), t.scratch("stolen")).unwrap();
        fs::rename(&planted, objects.join(name)).unwrap();
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{stderr}");
    // Swapped after it was opened (as good as always): the commit goes on
    // through its handle. Swapped before: refused, naming it.
    if out.status.success() {
        check_out_all(&t);
    } else {
        assert!(stderr.contains("replaced by another directory"), "{stderr}");
    }
    for entry in fs::read_dir(t.path().join("objects")).unwrap() {
        let entry = entry.unwrap();
        assert!(
            !entry.file_type().unwrap().is_symlink(),
            "{:?}",
            entry.path()
        );
    }
}

/// A staging directory renamed to a prefix directory's name is not
/// published into: the commit fails naming it, rather than succeed and
/// then empty the directory its objects went to.
#[test]
fn a_staging_directory_renamed_as_a_prefix_directory_is_not_published_into() {
    let t = TestRepo::new();
    let out = commit_with_staging_swapped(&t, |objects, name| {
        // Once the commit has it open (renamed before, it is refused as
        // replaced), and before it publishes.
        std::thread::sleep(Duration::from_millis(20));
        fs::rename(objects.join(name), objects.join("00")).unwrap();
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        check_out_all(&t);
    } else {
        assert!(
            stderr.contains("00: the staging directory itself")
                || stderr.contains("replaced by another directory"),
            "{stderr}"
        );
    }
}

/// A link planted under an object's name is not taken for the object: the
/// commit that stores the content again fails naming it, and the link is
/// left for fsck to report, not trusted.
#[test]
fn a_link_planted_as_an_object_fails_the_commit_that_stores_it() {
    let t = TestRepo::new();
    let (src, object) = t.commit_one_object();
    let elsewhere = t.scratch("elsewhere");
    fs::copy(&object, &elsewhere).unwrap();
    fs::remove_file(&object).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &object).unwrap();
    write(&src.join("other"), 6000, 8);
    let out = t.commit_output("os", &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not an object (a link or other file in its place)"),
        "{stderr}"
    );
    assert!(fs::symlink_metadata(&object).unwrap().is_symlink());
}

/// Files are read as they are scanned, and copied into a staging
/// directory of the store meanwhile: a commit of a tree that holds the
/// repository takes the repository in, but not that directory.
#[test]
fn a_commit_of_a_tree_holding_the_repository_leaves_out_its_staging() {
    let t = TestRepo::new();
    let src = t.scratch("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..300 {
        write(&src.join(format!("f{i}")), 5000 + i, i as u8);
    }
    t.commit_tree("os", t.dir.path());
    assert!(t.ok(&["ls", "os", "/repo"]).contains(" objects\n"));
    let objects = t.ok(&["ls", "os", "/repo/objects"]);
    assert!(!objects.contains(".staging"), "{objects}");
    assert!(t.ok(&["ls", "os", "/src"]).contains(" f299\n"));
    t.ok(&["fsck"]);
}

/// A commit keeps the staging area's 256 prefix directories open: a low
/// soft limit on open files (the hard one higher) does not fail it.
#[test]
fn a_low_soft_limit_on_open_files_does_not_fail_a_commit() {
    let t = TestRepo::new();
    let src = t.scratch("src");
    for i in 0..2000 {
        let dir = src.join(format!("d{}", i % 300));
        fs::create_dir_all(&dir).unwrap();
        write(&dir.join(format!("f{i}")), 100 + i, i as u8);
    }
    let commit = ["commit", "-b", "os", "--tree"].map(OsStr::new);
    sealtree_ok_after(
        "ulimit -Sn 64",
        &t.path(),
        &[&commit[..], &[src.as_os_str()]].concat(),
    );
    t.ok(&["fsck"]);
}

/// Subdirectories are scanned once their parent is closed: a tree
/// deeper than the limit on open files commits.
#[test]
fn a_tree_deeper_than_the_limit_on_open_files_commits() {
    let t = TestRepo::new();
    let src = t.scratch("src");
    let deep = src.join("d/".repeat(1500));
    fs::create_dir_all(&deep).unwrap();
    write(&deep.join("f"), 5000, 3);
    let commit = ["commit", "-b", "os", "--tree"].map(OsStr::new);
    sealtree_ok_after(
        "ulimit -n 64",
        &t.path(),
        &[&commit[..], &[src.as_os_str()]].concat(),
    );
    let listing = t.ok(&["ls", "os", &"/d".repeat(1500)]);
    assert!(listing.contains(" f\n"), "{listing}");
}

/// A file with two links is read through the link scanned first; its
/// mode changing before its other link is scanned is reported, not
/// committed as the other link's inode with the content read before.
#[test]
fn a_hard_linked_file_changing_between_its_links_is_reported() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let t = TestRepo::new();
    let src = t.scratch("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    // a/x is scanned last of many: well after b/x, the only file of b.
    for i in 0..20_000 {
        write(&src.join(format!("a/{i:05}")), 1, 0);
    }
    write(&src.join("a/x"), 5000, 1);
    fs::hard_link(src.join("a/x"), src.join("b/x")).unwrap();
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(&src.join("b"), AddWatchFlags::IN_CLOSE_NOWRITE)
        .unwrap();
    let (stop, changed) = (AtomicBool::new(false), AtomicBool::new(false));
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // Once b/x is read and closed, its mode changes.
            while !stop.load(Ordering::Relaxed) {
                let events = inotify.read_events().unwrap_or_default();
                if events
                    .iter()
                    .any(|e| e.name.as_deref() == Some(OsStr::new("x")))
                {
                    let private = fs::Permissions::from_mode(0o600);
                    fs::set_permissions(src.join("a/x"), private).unwrap();
                    changed.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        let out = t.commit_output("os", &src);
        stop.store(true, Ordering::Relaxed);
        out
    });
    assert!(changed.load(Ordering::Relaxed), "b/x was never read");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/a/x: file changed while it was read"),
        "{stderr}"
    );
    assert_eq!(t.ok(&["refs"]), "");
}

/// A directory swapped for a link to another once the commit has opened
/// it lends the commit nothing of the other: its files' xattrs are read
/// in the directory opened (with a stat cache, files are not opened),
/// not by a path that now leads elsewhere.
#[test]
fn a_directory_swapped_for_a_link_mid_scan_lends_it_no_xattrs() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    let t = TestRepo::new();
    let (src, decoy) = (t.scratch("src"), t.scratch("decoy"));
    for (root, value) in [(&src, "mine"), (&decoy, "theirs")] {
        let dir = root.join("d");
        fs::create_dir_all(&dir).unwrap();
        // Scanned before f: the swap is done by the time f is.
        for i in 0..20_000 {
            fs::write(dir.join(format!("a{i:05}")), "").unwrap();
        }
        write(&dir.join("f"), 5000, 1);
        xattr::set(dir.join("f"), "user.x", value.as_bytes()).unwrap();
    }
    // Older than a second: the stat cache vouches for f next time.
    std::thread::sleep(Duration::from_millis(1300));
    t.commit_tree("os", &src);
    let inotify = Inotify::init(InitFlags::empty()).unwrap();
    inotify
        .add_watch(&src.join("d"), AddWatchFlags::IN_OPEN)
        .unwrap();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            inotify.read_events().unwrap();
            fs::rename(src.join("d"), src.join("d.old")).unwrap();
            std::os::unix::fs::symlink(decoy.join("d"), src.join("d")).unwrap();
        });
        let out = t.commit_output("os", &src);
        // Wakes the swap if the commit ended without opening d.
        drop(fs::File::open(src.join("d")));
        out
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(fs::symlink_metadata(src.join("d")).unwrap().is_symlink());
    let repo = Repo::open(&t.path()).unwrap();
    let head = repo.history().unwrap().resolve("os").unwrap();
    let tree = repo.tree(head).unwrap();
    let f = tree.lookup(b"/d/f").unwrap();
    assert_eq!(
        tree.inodes[f].xattrs.get(&b"user.x"[..]),
        Some(&b"mine".to_vec())
    );
}

/// A directory replaced by a link after its parent's scan found it and
/// before its own scan opens it is reported as changed, with the reason.
#[test]
fn a_directory_replaced_by_a_link_before_its_scan_is_reported_with_the_reason() {
    use nix::fcntl::{renameat2, RenameFlags};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    let t = TestRepo::new();
    let decoy = t.scratch("decoy");
    fs::create_dir_all(&decoy).unwrap();
    // A swap that lands after d is opened proves nothing: tried again.
    for attempt in 0..5 {
        let src = t.scratch(&format!("src{attempt}"));
        fs::create_dir_all(src.join("d")).unwrap();
        std::os::unix::fs::symlink(&decoy, src.join("d.link")).unwrap();
        // With one thread, e is read after d is found; the files after
        // it give the swap time to be done before d is opened.
        write(&src.join("e"), 5000, 1);
        for i in 0..20_000 {
            fs::write(src.join(format!("f{i:05}")), "").unwrap();
        }
        let inotify = Inotify::init(InitFlags::empty()).unwrap();
        inotify
            .add_watch(&src.join("e"), AddWatchFlags::IN_OPEN)
            .unwrap();
        let branch = format!("os{attempt}");
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                inotify.read_events().unwrap();
                // In one step: d is never missing in between.
                let (d, link) = (src.join("d"), src.join("d.link"));
                renameat2(None, &d, None, &link, RenameFlags::RENAME_EXCHANGE).unwrap();
            });
            let args = ["commit", "-b", &branch, "--threads", "1", "--tree"].map(OsStr::new);
            let out = t.run(&[&args[..], &[src.as_os_str()]].concat());
            // Wakes the swap if the commit ended without reading e.
            drop(fs::File::open(src.join("e")));
            out
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            continue;
        }
        assert!(
            stderr.contains("/d: file changed while it was read"),
            "{stderr}"
        );
        assert!(stderr.contains("Not a directory"), "{stderr}");
        assert!(!t.ok(&["refs"]).contains(&branch));
        return;
    }
    panic!("in 5 attempts, the swap never landed before d was opened");
}

#[test]
fn objects_of_private_files_stay_private_until_published() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestRepo::new();
    let src = t.scratch("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    write(&src.join("etc/shadow"), 1000, 1);
    write(&src.join("etc/ssh_host_key"), 1000, 2);
    write(&src.join("etc/motd"), 1000, 3);
    fs::set_permissions(src.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(
        src.join("etc/ssh_host_key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    t.commit_tree("os", &src);
    let repo = t.path();
    assert_eq!(object_mode(&repo, &src.join("etc/shadow")), 0o600);
    assert_eq!(object_mode(&repo, &src.join("etc/ssh_host_key")), 0o600);
    assert_eq!(object_mode(&repo, &src.join("etc/motd")), 0o644);
    // The same from a tar archive.
    let tar = t.scratch("src.tar");
    let status = Command::new("tar")
        .args([
            "-C",
            src.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let t2 = TestRepo::new();
    t2.ok(&["commit", "-b", "os", "--tar", tar.to_str().unwrap()]);
    assert_eq!(object_mode(&t2.path(), &src.join("etc/shadow")), 0o600);
    assert_eq!(object_mode(&t2.path(), &src.join("etc/motd")), 0o644);
    // Publishing the branch publishes its content: readable for the
    // web server.
    t.ok(&["publish"]);
    assert_eq!(object_mode(&repo, &src.join("etc/shadow")), 0o644);
    assert_eq!(object_mode(&repo, &src.join("etc/ssh_host_key")), 0o644);
}
