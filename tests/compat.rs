//! Byte-exactness against the reference mkcomposefs, refusals of bad
//! dumpfiles, and round trips between images and dumpfiles.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use sealtree::{dumpfile, erofs, erofs::ImageOptions};

/// Every `NAME.dump[.gz]` asset with its expected image sha256 and version.
fn reference_cases(dir: &Path) -> Vec<(PathBuf, String, Option<u32>)> {
    let mut cases = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(input) = name.strip_suffix(".sha256") else {
            continue;
        };
        let want = fs::read_to_string(&path).unwrap().trim().to_string();
        let version = fs::read_to_string(dir.join(format!("{input}.version")))
            .ok()
            .map(|v| v.trim().parse().unwrap());
        cases.push((dir.join(input), want, version));
    }
    cases.sort();
    cases
}

fn options(version: Option<u32>) -> ImageOptions {
    match version {
        Some(v) => ImageOptions {
            min_version: v,
            max_version: v,
        },
        None => ImageOptions::default(),
    }
}

#[test]
fn reference_images_are_byte_identical() {
    let Some(dir) = compat_assets() else { return };
    let cases = reference_cases(&dir);
    assert!(
        cases.len() >= 8,
        "expected the reference assets in {}",
        dir.display()
    );
    for (input, want, version) in cases {
        let text = read_maybe_gz(&input);
        let tree =
            dumpfile::parse(&text[..]).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let image = erofs::write_image(&tree, &options(version)).unwrap();
        assert_eq!(sha256_hex(&image.bytes), want, "{}", input.display());
    }
}

#[test]
fn reference_images_through_the_command_line() {
    let Some(dir) = compat_assets() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (input, want, version) in reference_cases(&dir) {
        let dump = tmp.path().join("input.dump");
        fs::write(&dump, read_maybe_gz(&input)).unwrap();
        let image = tmp.path().join("out.img");
        let mut args: Vec<std::ffi::OsString> = vec!["mkcomposefs".into(), "--from-file".into()];
        if let Some(v) = version {
            args.push(format!("--min-version={v}").into());
            args.push(format!("--max-version={v}").into());
        }
        args.extend([dump.into(), image.clone().into()]);
        let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_ok(&refs);
        assert_eq!(
            sha256_hex(&fs::read(&image).unwrap()),
            want,
            "{}",
            input.display()
        );
    }
}

#[test]
fn bad_dumpfiles_are_refused_with_one_line_naming_the_line() {
    let Some(dir) = compat_assets() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("should-fail-") {
            continue;
        }
        seen += 1;
        let image = tmp.path().join(format!("{name}.img"));
        let out = run(&[
            OsStr::new("mkcomposefs"),
            OsStr::new("--from-file"),
            path.as_os_str(),
            image.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        let expected_prefix = format!("sealtree: {}:", path.display());
        assert!(stderr.starts_with(&expected_prefix), "{name}: {stderr}");
        let after = &stderr[expected_prefix.len()..];
        let lineno: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        assert!(!lineno.is_empty(), "{name}: no line number in {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(!image.exists(), "{name}: an image was left behind");
    }
    assert!(seen >= 14, "expected the should-fail assets");
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temporary files left behind"
    );
}

/// image -> dump -> image gives the same bytes, and the dump written from
/// an image reads back to the same dump.
#[test]
fn images_and_dumps_round_trip() {
    let Some(dir) = compat_assets() else { return };
    for (input, _, version) in reference_cases(&dir) {
        let opts = options(version);
        let first =
            erofs::write_image(&dumpfile::parse(&read_maybe_gz(&input)[..]).unwrap(), &opts)
                .unwrap();
        let mut dump1 = Vec::new();
        dumpfile::write(&erofs::read_image(&first.bytes).unwrap(), &mut dump1).unwrap();
        let second = erofs::write_image(&dumpfile::parse(&dump1[..]).unwrap(), &opts).unwrap();
        assert!(
            first.bytes == second.bytes,
            "{}: image -> dump -> image differs",
            input.display()
        );
        let mut dump2 = Vec::new();
        dumpfile::write(&erofs::read_image(&second.bytes).unwrap(), &mut dump2).unwrap();
        assert!(
            dump1 == dump2,
            "{}: dump -> image -> dump differs",
            input.display()
        );
    }
}

/// Hard links whose primary entry lies deeper than a link, and several
/// links in one directory: the reader must recover which entry is primary.
#[test]
fn hard_links_round_trip_byte_for_byte() {
    let text = b"/ 4096 40755 2 0 0 0 100.0 - - -
/a 10 @100644 3 0 0 0 5.0 /z/file - -
/b 10 100644 1 0 0 0 5.0 - hellohello -
/m 0 100644 1 0 0 0 5.0 - - -
/m2 0 @100644 1 0 0 0 5.0 /z/file - -
/z 4096 40755 2 0 0 0 100.0 - - -
/z/file 100 100644 3 0 0 0 7.123 ab/cdef - 0101010101010101010101010101010101010101010101010101010101010101 user.x=1
";
    let tree = dumpfile::parse(&text[..]).unwrap();
    let image = erofs::write_image(&tree, &ImageOptions::default()).unwrap();
    let back = erofs::read_image(&image.bytes).unwrap();
    let again = erofs::write_image(&back, &ImageOptions::default()).unwrap();
    assert!(image.bytes == again.bytes);
    let mut dump = Vec::new();
    dumpfile::write(&back, &mut dump).unwrap();
    let dump = String::from_utf8(dump).unwrap();
    assert!(dump.contains("\n/a 100 @100644 3 "), "{dump}");
    assert!(dump.contains("\n/z/file 100 100644 3 "), "{dump}");
}

#[test]
fn dumpfile_errors_name_line_and_problem() {
    let cases: &[(&str, usize, &str)] = &[
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 5 100644 1 0 0 0 0.0 - abc -\n", 2, "content is 3 bytes but size says 5"),
        ("/x 0 100644 1 0 0 0 0.0 - - -\n", 1, "root directory must come first"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", 2, "parent directory of /a/b is missing"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 12 - - -\n", 2, "mtime"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - - user.a\n", 2, "has no '='"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - - user.a=\\q\n", 2, "unsupported escape"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - -\n", 3, "listed twice"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 @100644 1 0 0 0 0.0 /nope - -\n", 2, "does not exist"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 @100644 1 0 0 0 0.0 /y - -\n/y 0 @100644 1 0 0 0 0.0 /x - -\n", 2, "cycle"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 5 100644 1 0 0 0 0.0 - - 12\n", 2, "not 64 hex digits"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 5 100644 1 0 0 0 0.0 - - a\\nb\n", 2, "'a\\nb' is not 64 hex digits"),
        ("/ 4096 40755 2 0 0 0 0.0 - - -\n/x\x00y 0 100644 1 0 0 0 0.0 - - -\n", 2, "NUL"),
    ];
    for (text, line, what) in cases {
        let err = dumpfile::parse(text.as_bytes()).expect_err(text);
        assert_eq!(err.line, Some(*line), "{text}: {err}");
        assert!(
            err.message.contains(what),
            "{text}: got '{err}', want '{what}'"
        );
    }
    assert!(dumpfile::parse(&b""[..])
        .unwrap_err()
        .message
        .contains("no entries"));
}

/// `-` reads the dumpfile from standard input and writes the image to
/// standard output; --print-digest-only writes no image and prints the
/// fs-verity digest of the image the other forms write.
#[test]
fn standard_streams_and_digest_only() {
    use std::io::Write;
    use std::process::Stdio;
    let text = b"/ 4096 40755 2 0 0 0 1.0 - - -\n/f 100 100644 1 0 0 0 1.0 ab/cd - -\n";
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("in.dump");
    fs::write(&dump, text).unwrap();

    let mut child = sealtree()
        .args(["mkcomposefs", "--from-file", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let image = out.stdout;

    let only = run_ok(&[
        OsStr::new("mkcomposefs"),
        OsStr::new("--from-file"),
        OsStr::new("--print-digest-only"),
        dump.as_os_str(),
    ]);
    let printed = String::from_utf8(only.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        hex::encode(sealtree::fsverity::digest_bytes(&image))
    );
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no image written"
    );

    let refused = run(&[
        OsStr::new("mkcomposefs"),
        OsStr::new("--from-file"),
        OsStr::new("--print-digest-only"),
        dump.as_os_str(),
        tmp.path().join("x.img").as_os_str(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
}

/// A dumpfile of `dirs` directories of 999 files each: a third inline,
/// the rest external objects, as bench/million.sh makes at scale.
fn wide_dumpfile(dirs: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let t = "1700000000.0";
    writeln!(out, "/ 4096 40755 {} 0 0 0 {t} - - -", dirs + 2).unwrap();
    for d in 0..dirs {
        writeln!(out, "/d{d:04} 4096 40755 2 0 0 0 {t} - - -").unwrap();
        for f in 0..999 {
            if f % 3 == 0 {
                writeln!(
                    out,
                    "/d{d:04}/f{f:04} 11 100644 1 0 0 0 {t} - hello\\x20world -"
                )
                .unwrap();
            } else {
                let h = sha256_hex(format!("{d}/{f}").as_bytes());
                writeln!(
                    out,
                    "/d{d:04}/f{f:04} 4096 100644 1 0 0 0 {t} {}/{} - {h}",
                    &h[..2],
                    &h[2..]
                )
                .unwrap();
            }
        }
    }
    out
}

/// The image is written as it is laid out, not held whole: memory grows
/// with the tree (under 320 bytes an entry), and the image reads back as
/// the dumpfile it came from.
#[test]
fn a_large_dumpfile_is_written_in_bounded_memory() {
    let dirs = 250;
    let entries = (dirs * 1000 + 1) as u64;
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("wide.dump");
    let text = wide_dumpfile(dirs);
    fs::write(&dump, &text).unwrap();
    let image = tmp.path().join("wide.cfs");
    let (out, peak) = output_with_peak_rss(sealtree().args([
        OsStr::new("mkcomposefs"),
        OsStr::new("--from-file"),
        dump.as_os_str(),
        image.as_os_str(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bound = entries * 320 / 1024 + 16 * 1024;
    eprintln!("{entries} entries: peak RSS {peak} KiB (bound {bound} KiB)");
    assert!(
        peak < bound,
        "{entries} entries took {peak} KiB, more than {bound} KiB"
    );

    let back = run_ok(&[OsStr::new("composefs-dump"), image.as_os_str()]);
    // Directory sizes are the image's own.
    let without_dir_sizes = |text: &[u8]| {
        let mut tree = dumpfile::parse(text).unwrap();
        for inode in tree.inodes.iter_mut().filter(|i| i.is_dir()) {
            inode.size = 0;
        }
        tree
    };
    assert!(
        without_dir_sizes(&back.stdout) == without_dir_sizes(&text),
        "the image does not read back as its dumpfile"
    );
}
