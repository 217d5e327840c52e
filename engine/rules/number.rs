//! Numbers of the rule language: exact decimals for literals, `amount` and arithmetic, and the
//! conversions from events and feature values (docs/rule-language.md, "Numbers").
//!
//! A number is a [`Decimal`]: up to 28 significant digits with up to 28 decimal places, so every
//! literal and amount is held exactly, `+`, `-` and `*` are exact, and comparisons give the
//! decimal answer (`0.1 + 0.2 == 0.3`). A quotient that does not fit is rounded to 28 digits;
//! a result beyond ±7.9 × 10^28, or a division by zero, is missing.

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
pub use rust_decimal::Decimal;

use super::ast::ArithOp;

/// Why a number literal was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralError {
    /// More than 28 significant digits or a magnitude beyond ±7.9 × 10^28.
    TooLarge,
}

/// Parses a literal written as digits with an optional `.` and decimals, exactly.
pub fn parse_literal(digits: &str) -> Result<Decimal, LiteralError> {
    Decimal::from_str_exact(digits)
        .map(|d| d.normalize())
        .map_err(|_| LiteralError::TooLarge)
}

/// An amount of `minor` units with `exponent` decimals (12.34 EUR is 1234 with exponent 2).
pub fn from_minor(minor: i64, exponent: u32) -> Decimal {
    Decimal::new(minor, exponent.min(Decimal::MAX_SCALE))
}

/// A whole number.
pub fn from_int(v: i64) -> Decimal {
    Decimal::from(v)
}

/// Feature values reach the rules as `f64`: counts and distinct counts are whole numbers, and
/// the store keeps sums, minima, maxima and last values in 1e-4 units, so the decimal they
/// stand for is recovered exactly; any other value (an average) is read to about 16
/// significant digits (the precision of an `f64`). `None` for a value that is not finite or
/// out of range.
pub fn from_feature(v: f64) -> Option<Decimal> {
    if let Some(i) = whole(v) {
        return Some(Decimal::from(i));
    }
    if let Some(units) = ten_thousandths(v) {
        return Some(Decimal::new(units, 4).normalize());
    }
    Decimal::from_f64(v)
}

/// `k` when `v` is the `f64` nearest to `k / 10^4` (|k| < 2^53): the value a feature in 1e-4
/// units stands for is exactly `k / 10^4`.
#[inline]
pub fn ten_thousandths(v: f64) -> Option<i64> {
    let scaled = (v * 10_000.0).round();
    (scaled.abs() < EXACT && scaled / 10_000.0 == v).then_some(scaled as i64)
}

/// Below 2^53 every whole `f64` is exact (and the scaled round trip of `from_feature` is
/// reliable).
pub const EXACT: f64 = 9_007_199_254_740_992.0;

/// `v` as an integer when it is whole and below 2^53 in magnitude. A truncating cast and
/// back instead of `fract()`, which is a libm call on baseline x86-64 (no SSE4.1 `roundsd`).
#[inline]
pub fn whole(v: f64) -> Option<i64> {
    // NaN fails the first test; below 2^53 the cast truncates exactly
    (v.abs() < EXACT && (v as i64) as f64 == v).then_some(v as i64)
}

/// Whether `whole(v)` is `Some`, without the float-to-integer cast (whose saturation costs
/// compares): below 2^52 adding and taking away 2^52 rounds to a whole number, which is `v`
/// itself only when `v` is whole; from 2^52 to 2^53 every `f64` is whole.
#[inline]
pub fn is_whole(v: f64) -> bool {
    const WHOLE_STEP: f64 = 4_503_599_627_370_496.0; // 2^52
    let a = v.abs();
    // NaN fails the first test
    a < EXACT && (a >= WHOLE_STEP || (a + WHOLE_STEP) - WHOLE_STEP == a)
}

/// The number as the nearest `f64`.
pub fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// `a <op> b`; `None` (missing) on division by zero or overflow.
pub fn arith(op: ArithOp, a: Decimal, b: Decimal) -> Option<Decimal> {
    match op {
        ArithOp::Add => a.checked_add(b),
        ArithOp::Sub => a.checked_sub(b),
        ArithOp::Mul => a.checked_mul(b),
        ArithOp::Div => a.checked_div(b),
    }
}

/// Hour of day (UTC, 0..=23) of an epoch-milliseconds value.
pub fn hour_of(ms: Decimal) -> Option<Decimal> {
    let hours = ms.checked_div(Decimal::from(3_600_000))?.floor();
    let hour = hours.checked_rem(Decimal::from(24))?;
    Some(if hour.is_sign_negative() && !hour.is_zero() {
        hour + Decimal::from(24)
    } else {
        hour.abs()
    })
}

/// `value` in minor units of a currency with `exponent` decimals; `None` when it has more
/// decimals than that or does not fit in an `i64`.
pub fn to_minor(value: Decimal, exponent: u32) -> Option<i64> {
    let scaled = value.checked_mul(Decimal::from(10i64.checked_pow(exponent)?))?;
    if !scaled.is_integer() {
        return None;
    }
    scaled.to_i64()
}

/// The number as written in a rule file: no trailing zeros (`2.50` prints as `2.5`, `3.0` as `3`).
pub fn format(d: Decimal) -> String {
    d.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_whole_agrees_with_whole() {
        let edges = [
            0.0,
            -0.0,
            0.5,
            1.0,
            -1.0,
            2.5,
            -2.5,
            0.1,
            1e-300,
            1e15 + 0.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            4_503_599_627_370_497.0,
            EXACT - 1.0,
            EXACT,
            -EXACT,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            f64::MAX,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let random = (0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // any bit pattern, and fractions of up to 4 decimals as the store reports them
            [
                f64::from_bits(x),
                (x % 2_000_000_001) as f64 / 10_000.0 - 100_000.0,
            ]
        });
        for v in edges.into_iter().chain(random.flatten()) {
            assert_eq!(is_whole(v), whole(v).is_some(), "{v:e}");
        }
    }

    fn dec(s: &str) -> Decimal {
        parse_literal(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn decimal_arithmetic_is_exact() {
        let dime = from_minor(10, 2);
        assert_eq!(arith(ArithOp::Mul, dime, from_int(3)), Some(dec("0.3")));
        assert_eq!(arith(ArithOp::Add, dime, dec("0.2")), Some(dec("0.3")));
        assert_eq!(
            arith(ArithOp::Add, dec("0.1"), dec("0.2")),
            Some(dec("0.3"))
        );
        assert_eq!(
            arith(ArithOp::Sub, dec("1000000.01"), dec("0.02")),
            Some(dec("999999.99"))
        );
        assert_eq!(arith(ArithOp::Div, dec("1"), from_int(0)), None);
        assert_eq!(arith(ArithOp::Div, dec("7.5"), dec("2.5")), Some(dec("3")));
        assert_eq!(arith(ArithOp::Mul, Decimal::MAX, from_int(2)), None);
        assert_eq!(dec("1.50"), dec("1.5"));
        assert!(dec("0.29") < dec("0.3"));
    }

    #[test]
    fn literals_are_exact_and_bounded() {
        assert_eq!(format(dec("5000.00")), "5000");
        assert_eq!(format(dec("0.10")), "0.1");
        assert_eq!(format(dec("12.345")), "12.345");
        assert_eq!(
            parse_literal("99999999999999999999999999999999"),
            Err(LiteralError::TooLarge)
        );
        assert_eq!(
            parse_literal("0.00000000000000000000000000001"),
            Err(LiteralError::TooLarge)
        );
    }

    #[test]
    fn feature_values_map_back_to_their_decimals() {
        // The store's sums are k / 1e4 in f64: each maps back to exactly k / 1e4.
        for k in [1i64, 3, 10, 30, 12_345, 99_999_999, 123_456_789_012, -5] {
            let v = k as f64 / 10_000.0;
            assert_eq!(from_feature(v), Some(Decimal::new(k, 4)), "{v}");
        }
        // Other values (averages) are read to about 16 significant digits.
        assert_eq!(from_feature(0.1 + 0.2), Some(dec("0.3")));
        assert_eq!(from_feature(10.0 / 3.0), Some(dec("3.333333333333334")));
        assert_eq!(from_feature(7.0), Some(from_int(7)));
        assert_eq!(from_feature(f64::NAN), None);
        assert_eq!(from_feature(f64::INFINITY), None);
        assert_eq!(from_feature(1e300), None);
    }

    #[test]
    fn amounts_convert_like_the_event_model() {
        use crate::event::PaymentEvent;
        for (minor, currency) in [(1234, "EUR"), (5, "JPY"), (123_456, "KWD"), (7, "CLF")] {
            let ev = PaymentEvent {
                amount_minor: Some(minor),
                currency: Some(currency.into()),
                ..Default::default()
            };
            let exp = crate::event::currency_exponent(currency);
            assert_eq!(Some(to_f64(from_minor(minor, exp))), ev.amount());
            assert_eq!(to_minor(from_minor(minor, exp), exp), Some(minor));
        }
        assert_eq!(to_minor(dec("0.105"), 2), None);
        assert_eq!(to_minor(dec("12.50"), 2), Some(1250));
        assert_eq!(to_minor(dec("12.5"), 0), None);
    }

    #[test]
    fn hour_of_day() {
        assert_eq!(hour_of(from_int(7_200_005)), Some(from_int(2)));
        assert_eq!(hour_of(from_int(25 * 3_600_000)), Some(from_int(1)));
        assert_eq!(hour_of(from_int(-1)), Some(from_int(23)));
        assert_eq!(hour_of(from_int(-24 * 3_600_000)), Some(from_int(0)));
    }
}
