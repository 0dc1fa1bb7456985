//! Reading a published repository from a local directory named by a
//! `file://` URL: a USB stick or a second disk, for offline updates.
//! Everything read is verified by the pull exactly as over HTTP; this only
//! maps paths to files, refusing any path that could leave the directory.

use std::ffi::OsStr;
use std::fmt::Write;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, openat2, FcntlArg, OFlag, OpenHow, ResolveFlag};

use super::fetch::FetchError;

/// Gets files under one local directory.
#[derive(Clone)]
pub struct LocalFetcher {
    base: PathBuf,
    /// `file://` and the directory, with no trailing `/`.
    base_url: String,
}

impl LocalFetcher {
    pub fn new(url: &str) -> Result<LocalFetcher, FetchError> {
        let base = parse_file_url(url).map_err(|what| FetchError {
            url: url.to_string(),
            what,
            not_found: false,
        })?;
        let base_url = file_url(&base);
        let base_url = base_url.strip_suffix('/').unwrap_or(&base_url).to_string();
        Ok(LocalFetcher { base, base_url })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, encode(path.as_bytes()))
    }

    /// The file at `path` under the directory, which must be a plain
    /// relative path (no `..`, `.`, empty or absolute components) naming
    /// a regular file. A missing file is `not_found`, as HTTP 404 is.
    pub fn open(&self, path: &str) -> Result<File, FetchError> {
        let fail = |what: String, not_found: bool| FetchError {
            url: self.url(path),
            what,
            not_found,
        };
        if !is_plain_relative(path) {
            return Err(fail(
                "refused: not a plain path inside the repository".into(),
                false,
            ));
        }
        // Resolved beneath the directory with no symlink followed, so a
        // stick cannot point a name at a file or device outside it; and
        // non-blocking, so a FIFO cannot hang the open. Only regular files
        // are read.
        let base = File::open(&self.base).map_err(|e| {
            let missing = e.kind() == io::ErrorKind::NotFound;
            fail(format!("{}: {e}", self.base.display()), missing)
        })?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = openat2(base.as_raw_fd(), Path::new(path), how).map_err(|e| match e {
            nix::Error::ENOENT | nix::Error::ENOTDIR => fail(e.desc().to_string(), true),
            nix::Error::ELOOP | nix::Error::EXDEV => fail(
                "refused: a symbolic link, or a path leaving the repository".into(),
                false,
            ),
            _ => fail(e.desc().to_string(), false),
        })?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let meta = file.metadata().map_err(|e| fail(e.to_string(), false))?;
        if !meta.is_file() {
            let t = meta.file_type();
            let kind = if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(fail(format!("not a regular file but {kind}"), false));
        }
        fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| fail(io::Error::from(e).to_string(), false))?;
        Ok(file)
    }
}

/// Whether `path` is relative and made of ordinary names only, so that
/// joined to a directory it stays inside it.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// The directory a `file:///abs/path` (or `file://localhost/abs/path`)
/// URL names; `%XX` escapes are decoded.
pub fn parse_file_url(url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("file://")
        .ok_or("a file URL is file:///absolute/path")?;
    let path = if rest.starts_with('/') {
        rest
    } else if rest.starts_with("localhost/") {
        &rest["localhost".len()..]
    } else {
        return Err("only local file URLs: file:///absolute/path".into());
    };
    if path.contains(['?', '#']) {
        return Err("'?' and '#' in a file URL must be escaped (%3F, %23)".into());
    }
    let bytes = percent_decode(path)?;
    if bytes.contains(&0) {
        return Err("a path cannot hold NUL".into());
    }
    Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
}

/// The `file://` URL of an absolute directory, `.` components and
/// trailing slashes dropped, bytes outside a URL path escaped as `%XX`.
pub fn file_url(path: &Path) -> String {
    let path: PathBuf = path.components().collect();
    format!("file://{}", encode(path.as_os_str().as_bytes()))
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").expect("writing to a String");
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .ok_or_else(|| format!("'%' at byte {i} is not followed by two hex digits"))?;
            let hex = std::str::from_utf8(hex).expect("hex digits are ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_read() {
        for ok in ["refs.json", "objects/ab/cdef", "git/objects/00/11"] {
            assert!(is_plain_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "objects/../../x",
            "objects/./x",
            "objects//x",
            "objects/x/",
            "..",
            "a\0b",
        ] {
            assert!(!is_plain_relative(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        let f = LocalFetcher::new(&file_url(&dir.path().join("repo"))).unwrap();
        let e = f.open("../secret").err().unwrap();
        assert!(e.what.starts_with("refused") && !e.not_found, "{e}");
    }

    #[test]
    fn missing_files_are_not_found_and_others_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("objects")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let f = LocalFetcher::new(&file_url(dir.path())).unwrap();
        for missing in ["nothing", "objects/ab/cd", "file/under-a-file"] {
            let e = f.open(missing).err().unwrap();
            assert!(e.not_found, "{missing}: {e}");
            assert_eq!(e.url, f.url(missing));
        }
        for not_a_file in ["objects", "fifo"] {
            let e = f.open(not_a_file).err().unwrap();
            assert!(!e.not_found && e.what.contains("not a regular file"), "{e}");
        }
        assert!(f.open("file").is_ok());
    }

    #[test]
    fn file_urls_round_trip() {
        let path = Path::new("/media/My Stick/100%/repo\u{e9}");
        let url = file_url(path);
        assert_eq!(url, "file:///media/My%20Stick/100%25/repo%C3%A9");
        assert_eq!(parse_file_url(&url).unwrap(), path);
        assert_eq!(
            parse_file_url("file://localhost/a/b").unwrap(),
            Path::new("/a/b")
        );
        assert_eq!(file_url(Path::new("/a/./b//")), "file:///a/b");
        assert_eq!(file_url(Path::new("/")), "file:///");
        let root = LocalFetcher::new("file:///").unwrap();
        assert_eq!(root.url("refs.json"), "file:///refs.json");
        for bad in [
            "file://host/a",
            "file:a",
            "file://a",
            "file:///a%2",
            "file:///a%zz",
            "file:///a?b",
            "file:///a%00",
        ] {
            assert!(parse_file_url(bad).is_err(), "{bad}");
        }
    }
}
