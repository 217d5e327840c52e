//! Exact text forms used by the JSON codec: decimal amounts in major units and RFC 3339 timestamps.

/// Latest accepted time: 9999-12-31T23:59:59.999Z in epoch milliseconds.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Converts a decimal number of major units (`"12.34"`, `"1e3"`) to integer minor units with
/// `exponent` decimals, exactly.
///
/// Rejects negative values, malformed text, values that overflow `i64` minor units and values
/// with non-zero digits beyond `exponent` decimals. Trailing zeros are fine (`"12.340"`).
/// The error is a human detail; the caller names the field.
pub fn major_to_minor(text: &str, exponent: u32) -> Result<i64, String> {
    let malformed = || format!("{text:?} is not a decimal number");
    if text.starts_with('-') {
        return Err(format!("negative amount {text}"));
    }
    let (mantissa, exp_text) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || (mantissa.contains('.') && frac_part.is_empty())
    {
        return Err(malformed());
    }
    let exp10: i64 = match exp_text {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return Err(malformed());
            }
            // Exponents this large only make sense for zero; clamp instead of overflowing.
            let magnitude: i64 = digits.parse().unwrap_or(i64::from(u16::MAX));
            let magnitude = magnitude.min(i64::from(u16::MAX));
            if e.starts_with('-') {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    // inline for any amount of up to 32 significant digits: no allocation per event
    let digits: smallvec::SmallVec<[u8; 32]> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .skip_while(|&b| b == b'0')
        .map(|b| b - b'0')
        .collect();
    if digits.is_empty() {
        return Ok(0);
    }
    // value = digits * 10^(exp10 - frac_len); minor = value * 10^exponent.
    let shift = i64::from(exponent) + exp10 - frac_part.len() as i64;
    let overflow = || format!("amount {text} overflows the 64-bit minor-unit range");
    let kept = if shift < 0 {
        let dropped = usize::try_from(-shift).unwrap_or(usize::MAX);
        if dropped > digits.len() || digits[digits.len() - dropped..].iter().any(|&d| d != 0) {
            return Err(format!(
                "amount {text} has more than {exponent} decimals allowed by its currency"
            ));
        }
        &digits[..digits.len() - dropped]
    } else {
        &digits[..]
    };
    let mut minor: i64 = 0;
    for &d in kept {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(d)))
            .ok_or_else(overflow)?;
    }
    for _ in 0..shift.max(0) {
        minor = minor.checked_mul(10).ok_or_else(overflow)?;
    }
    Ok(minor)
}

/// Formats integer minor units as a decimal string of major units with `exponent` decimals.
pub fn minor_to_major(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let digits = minor.unsigned_abs().to_string();
    let exp = exponent as usize;
    if exp == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = exp + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - exp);
    format!("{sign}{int_part}.{frac_part}")
}

/// Parses an RFC 3339 timestamp (`2026-11-23T01:02:03.456+01:00`) to epoch milliseconds.
///
/// Accepts `T`/`t`/space as separator and `Z`/`z`/`±HH:MM` offsets; fractions below a
/// millisecond are truncated. Leap seconds (`:60`) are rejected.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let malformed = || format!("{text:?} is not an RFC 3339 timestamp");
    let b = text.as_bytes();
    if b.len() < 20 || !text.is_ascii() {
        return Err(malformed());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let s = &text[range];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse::<i64>().map_err(|_| malformed())
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(malformed());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(malformed());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err(malformed());
        }
        let ms_digits = &frac[..len.min(3)];
        millis = ms_digits.parse::<i64>().map_err(|_| malformed())?
            * 10i64.pow(3 - ms_digits.len() as u32);
        rest = &frac[len..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (oh, om) = (&rest[1..3], &rest[4..6]);
            if !oh.bytes().chain(om.bytes()).all(|c| c.is_ascii_digit()) {
                return Err(malformed());
            }
            let (oh, om): (i64, i64) = (
                oh.parse().map_err(|_| malformed())?,
                om.parse().map_err(|_| malformed())?,
            );
            if oh > 23 || om > 59 {
                return Err(malformed());
            }
            sign * (oh * 60 + om)
        }
        _ => return Err(malformed()),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(format!("{text:?} is not a valid date and time"));
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn converts_major_units_exactly() {
        assert_eq!(major_to_minor("12.34", 2), Ok(1234));
        assert_eq!(major_to_minor("12.3", 2), Ok(1230));
        assert_eq!(major_to_minor("12", 2), Ok(1200));
        assert_eq!(major_to_minor("12.340", 2), Ok(1234));
        assert_eq!(major_to_minor("0.001", 3), Ok(1));
        assert_eq!(major_to_minor("1500", 0), Ok(1500));
        assert_eq!(major_to_minor("1.5e3", 0), Ok(1500));
        assert_eq!(major_to_minor("1234E-2", 2), Ok(1234));
        assert_eq!(major_to_minor("0.00", 2), Ok(0));
        assert_eq!(major_to_minor("0e999999999999999999999", 2), Ok(0));
        assert_eq!(major_to_minor("92233720368547758.07", 2), Ok(i64::MAX));
    }

    #[test]
    fn rejects_bad_amounts() {
        assert!(major_to_minor("12.345", 2)
            .unwrap_err()
            .contains("decimals"));
        assert!(major_to_minor("1.5", 0).unwrap_err().contains("decimals"));
        assert!(major_to_minor("-1", 2).unwrap_err().contains("negative"));
        assert!(major_to_minor("92233720368547758.08", 2)
            .unwrap_err()
            .contains("overflows"));
        assert!(major_to_minor("1e30", 2).unwrap_err().contains("overflows"));
        for bad in [
            "", ".5", "5.", "+5", "1,5", "1e", "0x10", " 1", "1.2.3", "NaN",
        ] {
            assert!(
                major_to_minor(bad, 2)
                    .unwrap_err()
                    .contains("not a decimal"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn formats_major_units() {
        assert_eq!(minor_to_major(1234, 2), "12.34");
        assert_eq!(minor_to_major(5, 2), "0.05");
        assert_eq!(minor_to_major(0, 3), "0.000");
        assert_eq!(minor_to_major(1500, 0), "1500");
        assert_eq!(minor_to_major(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T01:02:03.456Z"),
            Ok(1_795_395_723_456)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T02:02:03.4567+01:00"),
            Ok(1_795_395_723_456)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-22 20:02:03.4-05:00"),
            Ok(1_795_395_723_400)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00z"),
            Ok(1_709_164_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Ok(MAX_TIME_MS)
        );
    }

    #[test]
    fn rejects_bad_timestamps() {
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T23:59:60Z",
            "2026-11-23T01:02:03",
            "2026-11-23T01:02:03.Z",
            "2026-11-23T01:02:03+0100",
            "2026-11-23",
            "1700000000000",
            "2026-11-23T01:02:03Zjunk",
            "２026-11-23T01:02:03Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn major_minor_round_trip(minor in 0..=i64::MAX, exponent in 0u32..=4) {
            prop_assert_eq!(major_to_minor(&minor_to_major(minor, exponent), exponent), Ok(minor));
        }

        #[test]
        fn amount_parser_never_panics(text in "[-+0-9.eE]{0,30}", exponent in 0u32..=4) {
            let _ = major_to_minor(&text, exponent);
        }

        #[test]
        fn timestamp_parser_never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&text);
        }
    }
}
