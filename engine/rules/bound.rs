//! A feature value or the amount compared with a constant, with the decimal answer but without
//! decimal arithmetic per event: the constant is prepared once, when the rule set is compiled.
//!
//! Rules compare exactly (docs/rule-language.md, "Numbers"): `feature > c` compares the decimal
//! the feature value stands for, `amount > c` the amount's exact decimal. The two shapes that
//! make up most conditions get a cheaper route to the same answer:
//!
//! - A whole feature value (counts, distinct counts, most sums) below 2^53 is exactly an `f64`,
//!   and so is a whole `c` below 2^53: comparing the two `f64`s is comparing the decimals.
//! - The amount is `minor` units with the currency's exponent `e` (0 to 4): `amount <op> c` is
//!   `minor <op> c·10^e`, and with `k = floor(c·10^e)` an integer comparison of `minor` with
//!   `k` gives the answer (when `c·10^e` is not whole, `minor` lies on one side of it).
//!
//! Anything else (fractional feature values, a constant beyond these ranges) takes the decimal
//! comparison, so every result equals [`compare`] on the decimals; a property test checks it.

use rust_decimal::prelude::ToPrimitive;

use super::ast::CmpOp;
use super::number::{self, Decimal, EXACT};

/// Currency exponents `currency_exponent` returns are 0 to 4.
const EXPONENTS: usize = 5;

/// `a <op> b`.
pub fn compare<T: PartialOrd + ?Sized>(op: CmpOp, a: &T, b: &T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// `feature <op> c`.
#[derive(Debug, Clone)]
pub struct FeatureBound {
    op: CmpOp,
    c: Decimal,
    /// `c` as an `f64` when it is whole and below 2^53 (so the `f64` is exactly `c`).
    c_f64: Option<f64>,
}

impl FeatureBound {
    pub fn new(op: CmpOp, c: Decimal) -> FeatureBound {
        let c_f64 = (c.fract().is_zero())
            .then(|| c.to_i64())
            .flatten()
            .map(|i| i as f64)
            .filter(|f| f.abs() < EXACT);
        FeatureBound { op, c, c_f64 }
    }

    /// Whether the feature value `v` (as the store reports it) satisfies the comparison;
    /// false when missing.
    #[inline]
    pub fn holds(&self, v: Option<f64>) -> bool {
        let Some(v) = v else {
            return false;
        };
        match self.c_f64 {
            // a whole value (counts, distinct counts) against a whole constant: exact as `f64`
            Some(c) if number::is_whole(v) => compare(self.op, &v, &c),
            _ => self.holds_for(v),
        }
    }

    /// [`FeatureBound::holds`] for a present value that is not whole or a constant that is not.
    #[inline(never)]
    fn holds_for(&self, v: f64) -> bool {
        match self.c_f64 {
            // v is `d` = k / 10^4 rounded to the nearest f64 (a whole d is exactly v). Rounding
            // keeps order, and v is never the whole `c` unless d is: comparing v with c gives
            // the answer for d.
            Some(c) if number::ten_thousandths(v).is_some() => compare(self.op, &v, &c),
            _ => number::from_feature(v).is_some_and(|x| compare(self.op, &x, &self.c)),
        }
    }
}

/// `amount <op> c`.
#[derive(Debug, Clone)]
pub struct AmountBound {
    op: CmpOp,
    c: Decimal,
    /// For exponent `e`: `(floor(c·10^e), whether c·10^e is whole)`, when it fits an `i64`.
    scaled: [Option<(i64, bool)>; EXPONENTS],
}

impl AmountBound {
    pub fn new(op: CmpOp, c: Decimal) -> AmountBound {
        let mut scaled = [None; EXPONENTS];
        for (e, slot) in scaled.iter_mut().enumerate() {
            let factor = Decimal::from(10i64.pow(e as u32));
            *slot = c.checked_mul(factor).and_then(|x| {
                let floor = x.floor();
                floor.to_i64().map(|k| (k, floor == x))
            });
        }
        AmountBound { op, c, scaled }
    }

    /// Whether an amount of `minor` units with `exponent` decimals satisfies the comparison.
    pub fn holds(&self, minor: i64, exponent: u32) -> bool {
        match self.scaled.get(exponent as usize).copied().flatten() {
            Some((k, true)) => compare(self.op, &minor, &k),
            // k < c·10^e < k + 1: `minor` is never equal, and below it iff at most k
            Some((k, false)) => match self.op {
                CmpOp::Eq => false,
                CmpOp::Ne => true,
                CmpOp::Lt | CmpOp::Le => minor <= k,
                CmpOp::Gt | CmpOp::Ge => minor > k,
            },
            None => compare(self.op, &number::from_minor(minor, exponent), &self.c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPS: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];

    /// Constants as rules write them: integers, decimals, large and tiny magnitudes.
    fn constants() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (-1_000i64..1_000).prop_map(Decimal::from),
            (-10_000_000i64..10_000_000, 0u32..7).prop_map(|(m, s)| Decimal::new(m, s)),
            (any::<i64>(), 0u32..29).prop_map(|(m, s)| Decimal::new(m, s)),
            Just(Decimal::MAX),
            Just(Decimal::MIN),
        ]
    }

    /// Feature values as the store reports them: counts, fixed-point sums, averages, extremes.
    fn feature_values() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u32..1_000).prop_map(f64::from),
            (-1_000_000_000i64..1_000_000_000).prop_map(|v| v as f64 / 10_000.0),
            // large sums, where an f64 holds few decimals
            (-(1i64 << 53) + 1..1i64 << 53).prop_map(|v| v as f64 / 10_000.0),
            // a ten-thousandth beside the whole constants
            (-1_000i64..1_000, -3i64..=3).prop_map(|(c, d)| (c * 10_000 + d) as f64 / 10_000.0),
            any::<f64>(),
            Just(EXACT),
            Just(EXACT - 1.0),
            Just(-EXACT),
            Just(f64::NAN),
            Just(f64::INFINITY),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz_cases(4_096)))]

        #[test]
        fn feature_bounds_give_the_decimal_answer(c in constants(), v in feature_values()) {
            for op in OPS {
                let decimal = number::from_feature(v).is_some_and(|x| compare(op, &x, &c));
                prop_assert_eq!(FeatureBound::new(op, c).holds(Some(v)), decimal, "{} {:?} {}", v, op, c);
                prop_assert!(!FeatureBound::new(op, c).holds(None));
            }
        }

        #[test]
        fn amount_bounds_give_the_decimal_answer(
            c in constants(),
            minor in prop_oneof![-100_000i64..100_000, any::<i64>()],
            exponent in 0u32..5,
        ) {
            for op in OPS {
                let decimal = compare(op, &number::from_minor(minor, exponent), &c);
                prop_assert_eq!(AmountBound::new(op, c).holds(minor, exponent), decimal, "{} e{} {:?} {}", minor, exponent, op, c);
            }
        }
    }

    #[test]
    fn boundaries() {
        let c = |s: &str| number::parse_literal(s).expect("literal");
        // 10.005 EUR cannot be written; 1000 and 1001 cents sit either side of it
        let b = AmountBound::new(CmpOp::Ge, c("10.005"));
        assert!(!b.holds(1_000, 2));
        assert!(b.holds(1_001, 2));
        assert!(b.holds(10_005, 3));
        assert!(!AmountBound::new(CmpOp::Eq, c("0.3")).holds(3, 0));
        assert!(AmountBound::new(CmpOp::Eq, c("0.3")).holds(30, 2));
        assert!(FeatureBound::new(CmpOp::Gt, c("2")).holds(Some(3.0)));
        assert!(!FeatureBound::new(CmpOp::Gt, c("2.5")).holds(Some(2.0)));
        // a fractional constant takes the decimal path
        assert!(FeatureBound::new(CmpOp::Eq, c("0.1")).holds(Some(0.1)));
        assert!(FeatureBound::new(CmpOp::Lt, c("2.5")).holds(Some(2.0)));
    }
}
