//! `distinct` state: an exact set of item hashes up to a limit, then a sliding-window HyperLogLog.
//!
//! The sketch is a HyperLogLog with 2^10 registers (standard error 1.04/sqrt(1024) = 3.25%)
//! made sliding by keeping, per register, the Pareto front of (bucket, rho) pairs
//! ("list of future possible maxima", Chabchoub & Hébrail): a register's value at evaluation
//! time is the highest rho among its pairs whose bucket is still inside the window.

use super::codec::{DecodeError, Reader, Writer};
use std::cell::Cell;

/// log2 of the number of sketch registers.
const PRECISION: u32 = 10;
const REGISTERS: usize = 1 << PRECISION;
/// Relative standard error of the sketch estimate: 1.04 / sqrt(2^PRECISION).
pub const SKETCH_STANDARD_ERROR: f64 = 0.0325;

/// Stable 64-bit hash of a distinct item (FNV-1a then a splitmix64 finaliser); persisted, so it
/// must never change between versions.
pub fn item_hash(bytes: &[u8]) -> u64 {
    let mut h = crate::event::stable_hash(bytes);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One item seen in the window: its hash and the newest bucket it was seen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenItem {
    pub hash: u64,
    pub bucket: i64,
}

/// Per-feature distinct state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistinctState {
    /// Exact (up to 64-bit hash collisions) while at most `limit` items are live.
    Exact(Vec<SeenItem>),
    /// Approximate above the limit; returns to `Exact` once every item has expired.
    Sketch(Box<SlidingHll>),
}

impl DistinctState {
    /// Records `hash` in `bucket`; `cutoff` is the newest bucket that is already outside the window.
    pub fn insert(&mut self, hash: u64, bucket: i64, cutoff: i64, limit: usize) {
        match self {
            DistinctState::Exact(items) => {
                if let Some(item) = items.iter_mut().find(|i| i.hash == hash) {
                    item.bucket = item.bucket.max(bucket);
                    return;
                }
                items.retain(|i| i.bucket > cutoff);
                if items.len() < limit {
                    items.reserve_exact(1);
                    items.push(SeenItem { hash, bucket });
                    return;
                }
                let mut sketch = Box::new(SlidingHll::new());
                for item in items.iter() {
                    sketch.insert(item.hash, item.bucket, cutoff);
                }
                sketch.insert(hash, bucket, cutoff);
                *self = DistinctState::Sketch(sketch);
            }
            DistinctState::Sketch(sketch) => sketch.insert(hash, bucket, cutoff),
        }
    }

    /// Drops everything at or before `cutoff`; a sketch left empty becomes an empty exact set.
    pub fn prune(&mut self, cutoff: i64) {
        match self {
            DistinctState::Exact(items) => items.retain(|i| i.bucket > cutoff),
            DistinctState::Sketch(sketch) => {
                if sketch.prune(cutoff) {
                    *self = DistinctState::Exact(Vec::new());
                }
            }
        }
    }

    /// Number of distinct items in buckets after `cutoff`.
    pub fn count(&self, cutoff: i64) -> f64 {
        match self {
            DistinctState::Exact(items) => {
                items.iter().filter(|i| i.bucket > cutoff).count() as f64
            }
            DistinctState::Sketch(sketch) => sketch.estimate(cutoff),
        }
    }
}

/// A sliding-window HyperLogLog.
#[derive(Debug, Clone)]
pub struct SlidingHll {
    /// Per register: Pareto front of (bucket, rho), bucket ascending and rho descending.
    registers: Vec<Vec<(i64, u8)>>,
    /// Oldest bucket of any pair, so pruning is skipped until something can expire.
    oldest: i64,
    /// Number of pairs over all registers (for byte accounting without a scan).
    pairs: usize,
    /// Last estimate and the cutoff it was computed for; cleared when a register changes.
    cached: Cell<Option<(i64, f64)>>,
}

impl PartialEq for SlidingHll {
    fn eq(&self, other: &Self) -> bool {
        self.registers == other.registers
    }
}

impl Eq for SlidingHll {}

impl Default for SlidingHll {
    fn default() -> Self {
        Self::new()
    }
}

impl SlidingHll {
    pub fn new() -> SlidingHll {
        SlidingHll {
            registers: vec![Vec::new(); REGISTERS],
            oldest: i64::MAX,
            pairs: 0,
            cached: Cell::new(None),
        }
    }

    pub fn insert(&mut self, hash: u64, bucket: i64, cutoff: i64) {
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
        let rho = (rest.leading_zeros() + 1) as u8;
        let Some(front) = self.registers.get_mut(index) else {
            return;
        };
        if front.iter().any(|&(b, r)| b >= bucket && r >= rho) {
            return;
        }
        let before = front.len();
        front.retain(|&(b, r)| b > cutoff && !(b <= bucket && r <= rho));
        let at = front.partition_point(|&(b, _)| b < bucket);
        front.insert(at, (bucket, rho));
        self.pairs = self.pairs + front.len() - before;
        self.oldest = self.oldest.min(bucket);
        self.cached.set(None);
    }

    /// Drops pairs at or before `cutoff`; returns true when the sketch is empty.
    pub fn prune(&mut self, cutoff: i64) -> bool {
        if cutoff < self.oldest {
            return false;
        }
        self.cached.set(None);
        let mut oldest = i64::MAX;
        self.pairs = 0;
        for front in &mut self.registers {
            front.retain(|&(b, _)| b > cutoff);
            self.pairs += front.len();
            if let Some(&(b, _)) = front.first() {
                oldest = oldest.min(b);
            }
        }
        self.oldest = oldest;
        oldest == i64::MAX
    }

    pub fn estimate(&self, cutoff: i64) -> f64 {
        if let Some((at, estimate)) = self.cached.get() {
            if at == cutoff {
                return estimate;
            }
        }
        let estimate = self.compute_estimate(cutoff);
        self.cached.set(Some((cutoff, estimate)));
        estimate
    }

    fn compute_estimate(&self, cutoff: i64) -> f64 {
        let m = REGISTERS as f64;
        let mut inverse_sum = 0.0;
        let mut zeros = 0usize;
        for front in &self.registers {
            let rho = front
                .iter()
                .filter(|&&(b, _)| b > cutoff)
                .map(|&(_, r)| r)
                .max()
                .unwrap_or(0);
            if rho == 0 {
                zeros += 1;
            }
            inverse_sum += (-f64::from(rho)).exp2();
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / inverse_sum;
        if raw <= 2.5 * m && zeros > 0 {
            (m * (m / zeros as f64).ln()).round()
        } else {
            raw.round()
        }
    }

    /// Approximate heap bytes (pairs counted by length, not capacity, to avoid a scan).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.registers.capacity() * std::mem::size_of::<Vec<(i64, u8)>>()
            + self.pairs * std::mem::size_of::<(i64, u8)>()
    }

    pub fn encode(&self, w: &mut Writer<'_>) {
        let used = self.registers.iter().filter(|f| !f.is_empty()).count();
        w.varint(used as u64);
        for (index, front) in self.registers.iter().enumerate() {
            if front.is_empty() {
                continue;
            }
            w.varint(index as u64);
            w.varint(front.len() as u64);
            for &(bucket, rho) in front {
                w.zigzag(bucket);
                w.u8(rho);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<SlidingHll, DecodeError> {
        let mut sketch = SlidingHll::new();
        let used = r.len()?;
        for _ in 0..used {
            let index = r.varint()? as usize;
            let n = r.len()?;
            let front = sketch
                .registers
                .get_mut(index)
                .ok_or(DecodeError("sketch register out of range"))?;
            for _ in 0..n {
                let bucket = r.zigzag()?;
                let rho = r.u8()?;
                front.push((bucket, rho));
                sketch.oldest = sketch.oldest.min(bucket);
                sketch.pairs += 1;
            }
        }
        Ok(sketch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(n: u64, bucket: i64) -> SlidingHll {
        let mut s = SlidingHll::new();
        for i in 0..n {
            s.insert(item_hash(&i.to_le_bytes()), bucket, i64::MIN);
        }
        s
    }

    #[test]
    fn sketch_error_stays_within_three_standard_errors() {
        for n in [100u64, 1_000, 5_000, 20_000, 100_000] {
            let estimate = sketch_of(n, 0).estimate(i64::MIN);
            let relative = (estimate - n as f64).abs() / n as f64;
            assert!(
                relative <= 3.0 * SKETCH_STANDARD_ERROR,
                "n={n} estimate={estimate} relative error {relative}"
            );
        }
    }

    #[test]
    fn sketch_forgets_expired_buckets() {
        let mut s = SlidingHll::new();
        for i in 0..10_000u64 {
            s.insert(item_hash(&i.to_le_bytes()), 1, i64::MIN);
        }
        for i in 10_000..12_000u64 {
            s.insert(item_hash(&i.to_le_bytes()), 5, i64::MIN);
        }
        let recent = s.estimate(4);
        assert!(
            (recent - 2_000.0).abs() <= 2_000.0 * 3.0 * SKETCH_STANDARD_ERROR,
            "{recent}"
        );
        let all = s.estimate(0);
        assert!(
            (all - 12_000.0).abs() <= 12_000.0 * 3.0 * SKETCH_STANDARD_ERROR,
            "{all}"
        );
        assert!(!s.prune(4));
        assert!(s.prune(5));
    }

    #[test]
    fn exact_set_switches_to_sketch_above_limit_and_back_when_expired() {
        let mut d = DistinctState::Exact(Vec::new());
        for i in 0..4u64 {
            d.insert(item_hash(&i.to_le_bytes()), 0, -100, 4);
            d.insert(item_hash(&i.to_le_bytes()), 0, -100, 4);
        }
        assert_eq!(d.count(-100), 4.0);
        assert!(matches!(d, DistinctState::Exact(_)));
        d.insert(item_hash(b"x"), 1, -100, 4);
        assert!(matches!(d, DistinctState::Sketch(_)));
        assert_eq!(d.count(-100), 5.0);
        d.prune(1);
        assert!(matches!(d, DistinctState::Exact(_)));
        assert_eq!(d.count(1), 0.0);
    }

    #[test]
    fn sketch_round_trips_through_encoding() {
        let s = sketch_of(3_000, 7);
        let mut buf = Vec::new();
        s.encode(&mut Writer { buf: &mut buf });
        let back = SlidingHll::decode(&mut Reader { rest: &buf }).unwrap();
        assert_eq!(back, s);
    }
}
