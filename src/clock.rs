//! Wall-clock time as sealtree records it: seconds since the Unix epoch,
//! shown as UTC dates, and spans such as `7d` given on the command line.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now (0 if the clock is set before it).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds in a span written `N` followed by `s`, `m`, `h` or `d`
/// (`90m`, `7d`); at most ten years.
pub fn parse_span(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}': a span is a number and s, m, h or d, e.g. 7d");
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 && secs <= 10 * 366 * 86_400 => Ok(secs),
        _ => Err(format!("'{text}': between 1s and ten years")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_spans() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_801_311), "2026-11-27 17:41:51 UTC");
        assert_eq!(parse_span("7d"), Ok(7 * 86_400));
        assert_eq!(parse_span("90m"), Ok(5400));
        assert!(parse_span("7").is_err());
        assert!(parse_span("-1d").is_err());
        assert!(parse_span("0s").is_err());
        assert!(parse_span("99999999999999d").is_err());
        assert!(parse_span("").is_err());
    }
}
