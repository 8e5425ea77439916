//! Go duration strings (`876000h`, `8760h`, `1h30m`, `1.5h`), as cfssl's `expiry` and `backdate`
//! fields are parsed with Go's `time.ParseDuration`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Go's limit: a `time.Duration` is an int64 count of nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string. Negative durations are rejected (no certificate field accepts
/// one); otherwise this accepts exactly what `time.ParseDuration` accepts: a sequence of decimal
/// numbers with optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), or `0`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(pki::parse_go_duration("876000h")?, Duration::from_secs(876_000 * 3600));
/// assert_eq!(pki::parse_go_duration("1h30m")?, Duration::from_secs(5400));
/// assert!(pki::parse_go_duration("10d").is_err()); // Go has no day unit
/// # Ok::<(), pki::Error>(())
/// ```
pub fn parse_go_duration(input: &str) -> Result<Duration> {
    let err = |message: &str| Error::Duration {
        input: input.to_string(),
        message: message.to_string(),
    };
    let mut s = input;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err(
            "empty; use a number and a unit such as 8760h, 1h30m or 90m",
        ));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number (units are ns, us, ms, s, m, h)"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(err("missing unit (ns, us, ms, s, m, h)")),
            _ => {
                return Err(err(&format!(
                    "unknown unit {unit:?} (Go durations use ns, us, ms, s, m, h; 1 year = 8760h)"
                )));
            }
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut value = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| err("out of range"))?;
        // Go keeps fractional digits only as far as they can matter at nanosecond precision.
        let mut scale = unit_nanos;
        for d in frac_part.bytes().take(20) {
            scale /= 10;
            value += u128::from(d - b'0') * scale;
        }
        total = total
            .checked_add(value)
            .ok_or_else(|| err("out of range"))?;
        if total > MAX_NANOS {
            return Err(err("out of range (Go durations stop at about 292 years)"));
        }
        s = rest;
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way cfssl configs usually spell it: whole hours as `8760h`, otherwise
/// Go's `1h30m0s` style.
pub fn format_go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs.is_multiple_of(3600) {
        return format!("{}h", secs / 3600);
    }
    let h = secs / 3600;
    let m = (secs % 3600) / 60;
    let s = secs % 60;
    let frac = d.subsec_nanos();
    let secs_part = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs_part}")
    } else if m > 0 {
        format!("{m}m{secs_part}")
    } else {
        secs_part
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_go_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_what_go_parses() {
        assert_eq!(ok("876000h"), Duration::from_secs(876_000 * 3600));
        assert_eq!(ok("8760h"), Duration::from_secs(8760 * 3600));
        assert_eq!(ok("43800h"), Duration::from_secs(43800 * 3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("90m"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m30.5s"), Duration::new(9930, 500_000_000));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+5m"), Duration::from_secs(300));
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for bad in [
            "", "h", "10", "10d", "1y", "1h30", "abc", "-1h", "1.h.", "1e3h", " 1h",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        // Just above Go's int64 nanosecond limit.
        assert!(parse_go_duration("2562048h").is_err());
        assert!(parse_go_duration("2562047h").is_ok());
    }

    #[test]
    fn errors_name_the_input() {
        let msg = parse_go_duration("10d")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("\"10d\"") && msg.contains("unknown unit"),
            "{msg}"
        );
    }

    #[test]
    fn formats_hours_like_cfssl_configs() {
        assert_eq!(
            format_go_duration(Duration::from_secs(876_000 * 3600)),
            "876000h"
        );
        assert_eq!(format_go_duration(Duration::from_secs(5430)), "1h30m30s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
