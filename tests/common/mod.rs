//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fixture;
pub mod nginx;
pub mod pair;
pub mod registry;
pub mod swtpm;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when running under CI, where a missing capability is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Report a missing capability: under CI the test fails saying what is
/// missing; elsewhere it says it was not run and returns.
pub fn missing(what: &str) {
    if under_ci() {
        panic!("required capability missing under CI: {what}");
    }
    eprintln!("NOT RUN: {what}");
}

/// The names (digests in hex) of the content objects stored in the
/// repository `repo`, sorted: every file under a prefix directory.
pub fn stored_objects(repo: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in std::fs::read_dir(repo.join("objects")).unwrap() {
        let prefix = prefix.unwrap();
        let name = prefix.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        for object in std::fs::read_dir(prefix.path()).unwrap() {
            let rest = object.unwrap().file_name();
            names.push(format!("{name}{}", rest.to_string_lossy()));
        }
    }
    names.sort();
    names
}

/// Where the object named `name` (as [`stored_objects`] names it) is
/// stored in the repository `repo`.
pub fn object_file(repo: &Path, name: &str) -> PathBuf {
    let (prefix, rest) = name.split_at(2);
    repo.join("objects").join(prefix).join(rest)
}

/// The sealtree binary built for these tests.
pub fn sealtree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealtree"))
}

/// Run sealtree on the repository `repo` with `args` after the shell
/// command `setup` (a umask, a ulimit), and insist it succeeds.
pub fn sealtree_ok_after(setup: &str, repo: &std::path::Path, args: &[&std::ffi::OsStr]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_sealtree"))
        .args(args)
        .env("SEALTREE_REPO", repo)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "after {setup}: sealtree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run sealtree with `args`, returning its output.
pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    sealtree().args(args).output().expect("spawn sealtree")
}

/// Run sealtree and insist it succeeds.
pub fn run_ok(args: &[&std::ffi::OsStr]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "sealtree {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Hostile inputs may cost a process at most this much memory.
pub const HOSTILE_RSS_LIMIT_KIB: u64 = 100 * 1024;

/// Run `command` to the end: its output and its peak resident set size
/// in KiB, measured by the kernel (wait4's rusage of that one child).
pub fn output_with_peak_rss(command: &mut Command) -> (Output, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // Reaped below by wait4, which std's wait cannot do with rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the child is ours and not yet reaped; the pointers are to
    // live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (output, usage.ru_maxrss as u64)
}

/// As [`output_with_peak_rss`], asserting the peak stayed under
/// [`HOSTILE_RSS_LIMIT_KIB`]; `what` names the input in the failure.
pub fn output_within_memory_bound(command: &mut Command, what: &str) -> Output {
    let (out, peak) = output_with_peak_rss(command);
    assert!(
        peak < HOSTILE_RSS_LIMIT_KIB,
        "{what}: peak RSS {peak} KiB, more than {HOSTILE_RSS_LIMIT_KIB} KiB"
    );
    eprintln!("{what}: peak RSS {peak} KiB");
    out
}

/// Run `program` with `args` in `dir`, which must succeed: its standard
/// output.
pub fn tool_ok(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reference assets directory named by SEALTREE_COMPAT_ASSETS.
pub fn compat_assets() -> Option<PathBuf> {
    match std::env::var_os("SEALTREE_COMPAT_ASSETS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "SEALTREE_COMPAT_ASSETS={} is not a directory",
                dir.display()
            );
            Some(dir)
        }
        None => {
            missing("SEALTREE_COMPAT_ASSETS is not set (reference composefs assets)");
            None
        }
    }
}

/// Whether a command can be found on PATH.
pub fn have_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Read a file, gunzipping `*.gz`.
pub fn read_maybe_gz(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

/// xorshift64*: a small generator, reproducible from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
