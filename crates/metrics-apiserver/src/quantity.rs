//! Kubernetes resource quantities and Go durations, written as metrics-server writes them (Go's
//! `resource.Quantity.String()` and `time.Duration.String()`), and parsed from the pod metrics
//! file so that container usage can be validated, canonicalised and summed.

use std::time::Duration;

use crate::Error;

/// How a quantity was written; canonical output keeps binary quantities binary, as Go does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// Decimal SI suffixes (`n`, `u`, `m`, ``, `k`, `M`, …) or a plain/exponent number.
    Decimal,
    /// Binary suffixes (`Ki`, `Mi`, `Gi`, …).
    Binary,
}

/// A parsed quantity held exactly in units of 10⁻⁹ (finer input is rounded up, as Go rounds
/// when it scales).
///
/// ```
/// use metrics_apiserver::quantity::Quantity;
///
/// let q = Quantity::parse("0.5")?;
/// assert_eq!(q.nanos, 500_000_000);
/// assert_eq!(q.to_string(), "500m");
/// assert_eq!(Quantity::parse("2048Ki")?.to_string(), "2Mi");
/// # Ok::<(), metrics_apiserver::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// The value × 10⁹.
    pub nanos: i128,
    /// How it was written.
    pub format: QuantityFormat,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

fn quantity_error(value: &str, reason: &'static str) -> Error {
    Error::Quantity {
        value: value.to_owned(),
        reason,
    }
}

impl Quantity {
    /// A decimal quantity of `nanos` × 10⁻⁹ (CPU in nanocores).
    pub fn from_nanos(nanos: i128) -> Self {
        Quantity {
            nanos,
            format: QuantityFormat::Decimal,
        }
    }

    /// A binary quantity of `bytes` (memory).
    pub fn from_bytes(bytes: i128) -> Self {
        Quantity {
            nanos: bytes.saturating_mul(NANOS_PER_UNIT),
            format: QuantityFormat::Binary,
        }
    }

    /// Parses Kubernetes quantity syntax: an optional sign, digits with an optional fraction,
    /// then one of the suffixes `n u m k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or an exponent `e3`.
    ///
    /// ```
    /// use metrics_apiserver::quantity::Quantity;
    ///
    /// assert_eq!(Quantity::parse("137686214n")?.nanos, 137_686_214);
    /// assert_eq!(Quantity::parse("1Ki")?.nanos, 1024 * 1_000_000_000);
    /// assert!(Quantity::parse("12 Mi").is_err());
    /// assert!(Quantity::parse("").is_err());
    /// # Ok::<(), metrics_apiserver::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, Error> {
        let err = |reason| quantity_error(text, reason);
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut mantissa: i128 = 0;
        let mut digits = 0usize;
        let mut fraction_digits = 0u32;
        let mut seen_dot = false;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(i128::from(b - b'0')))
                        .ok_or_else(|| err("too many digits"))?;
                    digits += 1;
                    if seen_dot {
                        fraction_digits += 1;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => break,
            }
            i += 1;
        }
        if digits == 0 {
            return Err(err(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
        }
        let suffix = &text[i..];
        // The multiplier to nano-units, as numerator and denominator powers.
        let (numerator, mut denominator, format) = match suffix {
            "n" => (1i128, 1i128, QuantityFormat::Decimal),
            "u" => (1_000, 1, QuantityFormat::Decimal),
            "m" => (1_000_000, 1, QuantityFormat::Decimal),
            "" => (NANOS_PER_UNIT, 1, QuantityFormat::Decimal),
            "k" => (NANOS_PER_UNIT * 1_000, 1, QuantityFormat::Decimal),
            "M" => (NANOS_PER_UNIT * 1_000_000, 1, QuantityFormat::Decimal),
            "G" => (NANOS_PER_UNIT * 1_000_000_000, 1, QuantityFormat::Decimal),
            "T" => (NANOS_PER_UNIT * 10i128.pow(12), 1, QuantityFormat::Decimal),
            "P" => (NANOS_PER_UNIT * 10i128.pow(15), 1, QuantityFormat::Decimal),
            "E" => (NANOS_PER_UNIT * 10i128.pow(18), 1, QuantityFormat::Decimal),
            "Ki" => (NANOS_PER_UNIT << 10, 1, QuantityFormat::Binary),
            "Mi" => (NANOS_PER_UNIT << 20, 1, QuantityFormat::Binary),
            "Gi" => (NANOS_PER_UNIT << 30, 1, QuantityFormat::Binary),
            "Ti" => (NANOS_PER_UNIT << 40, 1, QuantityFormat::Binary),
            "Pi" => (NANOS_PER_UNIT << 50, 1, QuantityFormat::Binary),
            "Ei" => (NANOS_PER_UNIT << 60, 1, QuantityFormat::Binary),
            exp if exp.starts_with(['e', 'E']) => {
                let power: i32 = exp[1..]
                    .parse()
                    .map_err(|_| err("unable to parse quantity's suffix"))?;
                let power = power
                    .checked_add(9)
                    .ok_or_else(|| err("exponent too large"))?;
                if !(-38..=27).contains(&power) {
                    return Err(err("exponent out of range"));
                }
                if power >= 0 {
                    (10i128.pow(power.unsigned_abs()), 1, QuantityFormat::Decimal)
                } else {
                    (1, 10i128.pow(power.unsigned_abs()), QuantityFormat::Decimal)
                }
            }
            _ => return Err(err("unable to parse quantity's suffix")),
        };
        denominator = denominator
            .checked_mul(10i128.pow(fraction_digits.min(38)))
            .ok_or_else(|| err("too many fraction digits"))?;
        if fraction_digits > 38 {
            return Err(err("too many fraction digits"));
        }
        let scaled = mantissa
            .checked_mul(numerator)
            .ok_or_else(|| err("quantity too large"))?;
        // Round up to whole nano-units, as Go does when it scales a quantity down.
        let mut nanos = scaled / denominator;
        if scaled % denominator != 0 {
            nanos += 1;
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// Sums two quantities. As Go's `Quantity.Add` on a zero value, a zero left-hand side
    /// takes the other's format.
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl std::fmt::Display for Quantity {
    /// Go's canonical form: binary quantities of whole bytes of at least 1Ki use the largest
    /// binary suffix that divides them exactly; everything else uses the largest decimal SI
    /// suffix that keeps the number whole.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.format == QuantityFormat::Binary && self.nanos % NANOS_PER_UNIT == 0 {
            let bytes = self.nanos / NANOS_PER_UNIT;
            if bytes.abs() >= 1024 {
                return f.write_str(&format_binary_bytes(bytes));
            }
        }
        f.write_str(&format_decimal_nanos(self.nanos))
    }
}

/// Nano-units in Go's canonical decimal form: `137686214n`, `250m`, `2`, `1500u`, `0`.
///
/// ```
/// use metrics_apiserver::quantity::format_decimal_nanos;
///
/// assert_eq!(format_decimal_nanos(137_686_214), "137686214n");
/// assert_eq!(format_decimal_nanos(250_000_000), "250m");
/// assert_eq!(format_decimal_nanos(2_000_000_000), "2");
/// ```
pub fn format_decimal_nanos(nanos: i128) -> String {
    if nanos == 0 {
        return "0".into();
    }
    const SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    let mut value = nanos;
    let mut index = 0;
    while value % 1000 == 0 && index + 1 < SUFFIXES.len() {
        value /= 1000;
        index += 1;
    }
    format!("{value}{}", SUFFIXES[index])
}

/// Bytes in Go's canonical binary form: the largest binary suffix that divides them exactly
/// (`1234567Ki`, `2Mi`), plain bytes below 1Ki or when not a multiple of 1024.
///
/// ```
/// use metrics_apiserver::quantity::format_binary_bytes;
///
/// assert_eq!(format_binary_bytes(1_264_196_608), "1234567Ki");
/// assert_eq!(format_binary_bytes(4 << 30), "4Gi");
/// assert_eq!(format_binary_bytes(1000), "1000");
/// ```
pub fn format_binary_bytes(bytes: i128) -> String {
    if bytes.abs() < 1024 {
        return bytes.to_string();
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes;
    let mut index = 0;
    while value % 1024 == 0 && value != 0 && index + 1 < SUFFIXES.len() {
        value /= 1024;
        index += 1;
    }
    format!("{value}{}", SUFFIXES[index])
}

/// Go's `time.Duration.String()`: `10.062s`, `1m0.5s`, `1h0m0s`, `500ms`, `0s`.
///
/// ```
/// use std::time::Duration;
/// use metrics_apiserver::quantity::format_go_duration;
///
/// assert_eq!(format_go_duration(Duration::from_millis(10_062)), "10.062s");
/// assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
/// ```
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", fixed(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", fixed(ns, 1_000_000));
    }
    let hours = ns / 3_600_000_000_000;
    let minutes = ns / 60_000_000_000 % 60;
    let seconds = fixed(ns % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` with the fraction written out and trailing zeros removed.
fn fixed(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a Go duration (`10.062s`, `1m30s`, `250ms`); negative durations are rejected.
///
/// ```
/// use std::time::Duration;
/// use metrics_apiserver::quantity::parse_go_duration;
///
/// assert_eq!(parse_go_duration("1m0.5s")?, Duration::from_millis(60_500));
/// assert!(parse_go_duration("10").is_err());
/// # Ok::<(), metrics_apiserver::Error>(())
/// ```
pub fn parse_go_duration(text: &str) -> Result<Duration, Error> {
    let err = |reason| Error::Duration {
        value: text.to_owned(),
        reason,
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(err("empty duration"));
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit in duration"))?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err("unknown unit in duration")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err("invalid duration"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("invalid duration"))?
        };
        let mut part = whole
            .checked_mul(unit_ns)
            .ok_or_else(|| err("duration too large"))?;
        let mut scale = unit_ns;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| err("duration too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("duration too large"))?;
    // The remainder is below 10^9 and fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        match Quantity::parse(s) {
            Ok(q) => q.to_string(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn canonical_forms_match_go() {
        // Expected values are what k8s.io/apimachinery's Quantity.String() prints.
        let cases = [
            ("137686214n", "137686214n"),
            ("250m", "250m"),
            ("0.25", "250m"),
            ("1500000n", "1500u"),
            ("1000m", "1"),
            ("2", "2"),
            ("1000", "1k"),
            ("0", "0"),
            ("1Ki", "1Ki"),
            ("1024Ki", "1Mi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("512", "512"),
            ("0.5Ki", "512"),
            ("1234567Ki", "1234567Ki"),
            ("1e3", "1k"),
            ("1E-3", "1m"),
            ("-250m", "-250m"),
            ("+2", "2"),
            (".5", "500m"),
            ("4Gi", "4Gi"),
            ("1Ei", "1Ei"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input), want, "{input}");
        }
    }

    #[test]
    fn finer_than_nano_rounds_up() {
        assert_eq!(canonical("0.1n"), "1n");
        assert_eq!(canonical("1.0000000001"), "1000000001n");
    }

    #[test]
    fn bad_quantities_are_errors_not_panics() {
        for bad in [
            "",
            "-",
            "+",
            ".",
            "m",
            "1x",
            "1 m",
            "1.2.3",
            "1KiB",
            "1e",
            "1e99",
            "1ee3",
            "99999999999999999999999999999999999999999999",
            "1.00000000000000000000000000000000000000001",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sums_keep_the_first_format() {
        let a = Quantity::parse("100Mi").unwrap_or(Quantity::from_nanos(0));
        let b = Quantity::parse("28Mi").unwrap_or(Quantity::from_nanos(0));
        let zero = Quantity::from_nanos(0);
        assert_eq!((zero + a + b).to_string(), "128Mi");
        let cpu = Quantity::parse("10m").unwrap_or(zero);
        assert_eq!((zero + cpu + cpu).to_string(), "20m");
    }

    #[test]
    fn decimal_and_binary_formatting() {
        assert_eq!(format_decimal_nanos(1), "1n");
        assert_eq!(format_decimal_nanos(-1_000_000), "-1m");
        assert_eq!(format_decimal_nanos(10i128.pow(30)), "1000E");
        assert_eq!(format_binary_bytes(1024), "1Ki");
        assert_eq!(format_binary_bytes(1025), "1025");
        assert_eq!(format_binary_bytes(3 * 1024 * 1024), "3Mi");
        assert_eq!(format_binary_bytes(1 << 62), "4Ei");
    }

    #[test]
    fn go_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(2_500), "2.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(10_062), "10.062s"),
            (Duration::from_nanos(10_062_345_678), "10.062345678s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600 + 1), "1h0m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(d), want);
            assert_eq!(parse_go_duration(want).ok(), Some(d), "{want}");
        }
        assert_eq!(
            parse_go_duration("1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        for bad in ["", "s", "10", "1d", "-1s", "1..5s", ".s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
