//! Field escaping of the composefs dumpfile format: `\\`, `\n`, `\r`, `\t`
//! and `\xXY`; `-` alone stands for "no value".

/// How a field is escaped on output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Paths: everything but graphic ASCII is escaped.
    Standard,
    /// Optional fields: as `Standard`, and a lone `-` is escaped so it is
    /// not read back as "no value".
    LoneDash,
    /// Extended attribute names and values: as `Standard`, and `=` too.
    Equal,
}

/// Append `bytes` to `out`, escaped in `style`.
pub fn escape(out: &mut Vec<u8>, bytes: &[u8], style: Style) {
    if style == Style::LoneDash && bytes == b"-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    // Most bytes of most fields stand for themselves: copied in runs.
    let plain =
        |b: u8| matches!(b, 0x21..=0x7e) && b != b'\\' && !(b == b'=' && style == Style::Equal);
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| !plain(b)) {
        out.extend_from_slice(&rest[..at]);
        escape_byte(out, rest[at], style);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// Append the escape of one byte that does not stand for itself.
fn escape_byte(out: &mut Vec<u8>, b: u8, style: Style) {
    match b {
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'=' if style == Style::Equal => out.extend_from_slice(b"\\x3d"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// Append `value` (or `-` for none) to `out`.
pub fn escape_optional(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => escape(out, v, Style::LoneDash),
        None => out.push(b'-'),
    }
}

/// Decode an escaped field.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&kind) = field.get(i) else {
            return Err("no character after escape '\\'".into());
        };
        i += 1;
        match kind {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let digits = field
                    .get(i..i + 2)
                    .ok_or("hex escape '\\x' needs two hex digits")?;
                let hi = (digits[0] as char).to_digit(16);
                let lo = (digits[1] as char).to_digit(16);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi << 4 | lo) as u8),
                    _ => return Err(format!("invalid hex escape '\\x{}'", digits.escape_ascii())),
                }
                i += 2;
            }
            other => {
                return Err(format!(
                    "unsupported escape '\\{}'",
                    (other as char).escape_default()
                ))
            }
        }
    }
    Ok(out)
}

/// Decode an optional field: `-` alone is `None`.
pub fn unescape_optional(field: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if field == b"-" {
        return Ok(None);
    }
    unescape(field).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        for style in [Style::Standard, Style::LoneDash, Style::Equal] {
            let mut out = Vec::new();
            escape(&mut out, &all, style);
            assert!(!out.contains(&b' ') && !out.contains(&b'\n'));
            assert_eq!(unescape(&out).unwrap(), all);
        }
    }

    #[test]
    fn lone_dash_and_equal() {
        let mut out = Vec::new();
        escape_optional(&mut out, Some(b"-"));
        assert_eq!(out, b"\\x2d");
        assert_eq!(unescape_optional(&out).unwrap(), Some(b"-".to_vec()));
        assert_eq!(unescape_optional(b"-").unwrap(), None);
        out.clear();
        escape(&mut out, b"a=b", Style::Equal);
        assert_eq!(out, b"a\\x3db");
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert!(unescape(b"abc\\").is_err());
        assert!(unescape(b"\\x4").is_err());
        assert!(unescape(b"\\xzz").is_err());
        assert!(unescape(b"\\q").is_err());
    }
}
