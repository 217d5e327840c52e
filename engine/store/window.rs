//! Sliding-window feature state: sparse sorted buckets per (feature, entity) with lazy expiry.
//!
//! Semantics (docs/semantics.md, "Feature windows"): with resolution r and n = window / r buckets, an event at t counts at
//! evaluation time T iff floor(t/r) > floor(T/r) - n. Only non-empty buckets are stored, sorted
//! by bucket index; buckets that fall out of the window are dropped on the next update.
//! Numbers are kept as fixed-point i64 in units of 1e-4 so money sums are exact to the cent
//! (every ISO 4217 exponent is <= 4).

use std::num::NonZeroU64;

use super::hll::{item_hash, DistinctState};
use crate::event::Aggregate;

/// Fixed-point scale of stored numbers (1e-4 units).
pub const FIXED_SCALE: f64 = 10_000.0;

/// Converts a number to fixed point; `None` for NaN or infinities. Saturates beyond ±9.2e14.
pub fn to_fixed(v: f64) -> Option<i64> {
    v.is_finite().then(|| (v * FIXED_SCALE).round() as i64)
}

pub fn from_fixed(v: i64) -> f64 {
    v as f64 / FIXED_SCALE
}

/// Window geometry of one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub resolution_ms: i64,
    pub buckets: i64,
}

impl Geometry {
    pub fn new(window_ms: u64, resolution_ms: u64) -> Geometry {
        let resolution_ms = resolution_ms.clamp(1, i64::MAX as u64) as i64;
        let window_ms = window_ms.min(i64::MAX as u64) as i64;
        Geometry {
            resolution_ms,
            buckets: (window_ms / resolution_ms).max(1),
        }
    }

    #[inline]
    pub fn bucket(&self, t_ms: i64) -> i64 {
        // `resolution_ms` is at least 1: for the usual time at or after the epoch, an unsigned
        // divide by a non-zero value has no sign fix-up and no overflow or zero check
        match (
            u64::try_from(t_ms),
            NonZeroU64::new(self.resolution_ms as u64),
        ) {
            (Ok(t), Some(resolution)) => (t / resolution) as i64,
            _ => t_ms.div_euclid(self.resolution_ms),
        }
    }

    /// Newest bucket index that is outside the window at evaluation time `t_ms`.
    pub fn cutoff(&self, t_ms: i64) -> i64 {
        self.bucket(t_ms).saturating_sub(self.buckets)
    }

    /// `(cutoff(latest_ms), bucket(t_ms))`, with one division when they are the same time (an
    /// in-order event is the newest its feature has seen).
    pub fn cutoff_and_bucket(&self, latest_ms: i64, t_ms: i64) -> (i64, i64) {
        let index = self.bucket(t_ms);
        let newest = if latest_ms == t_ms {
            index
        } else {
            self.bucket(latest_ms)
        };
        (newest.saturating_sub(self.buckets), index)
    }
}

/// What one event contributes to a feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contribution {
    Nothing,
    Count,
    Number(i64),
    Item(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBucket {
    pub index: i64,
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumBucket {
    pub index: i64,
    pub count: u32,
    pub sum: i64,
}

/// Min or max of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtremeBucket {
    pub index: i64,
    pub value: i64,
}

/// Newest value of one bucket and its event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBucket {
    pub index: i64,
    pub time_ms: i64,
    pub value: i64,
}

/// Bucket storage, one shape per aggregate family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buckets {
    Count(Vec<CountBucket>),
    Sum(Vec<SumBucket>),
    Extreme(Vec<ExtremeBucket>),
    Last(Vec<LastBucket>),
    Distinct(DistinctState),
}

impl Buckets {
    pub fn empty_for(agg: Aggregate) -> Buckets {
        match agg {
            Aggregate::Count => Buckets::Count(Vec::new()),
            Aggregate::Sum | Aggregate::Avg => Buckets::Sum(Vec::new()),
            Aggregate::Min | Aggregate::Max => Buckets::Extreme(Vec::new()),
            Aggregate::Last => Buckets::Last(Vec::new()),
            Aggregate::Distinct => Buckets::Distinct(DistinctState::Exact(Vec::new())),
        }
    }

    fn fits(&self, agg: Aggregate) -> bool {
        matches!(
            (self, agg),
            (Buckets::Count(_), Aggregate::Count)
                | (Buckets::Sum(_), Aggregate::Sum | Aggregate::Avg)
                | (Buckets::Extreme(_), Aggregate::Min | Aggregate::Max)
                | (Buckets::Last(_), Aggregate::Last)
                | (Buckets::Distinct(_), Aggregate::Distinct)
        )
    }
}

/// Index of the bucket `index` in a sorted bucket list, inserting `fresh` if missing.
fn slot<B>(list: &mut Vec<B>, index: i64, key: impl Fn(&B) -> i64, fresh: B) -> &mut B {
    let at = list.partition_point(|b| key(b) < index);
    if list.get(at).map(&key) != Some(index) {
        list.reserve_exact(1);
        list.insert(at, fresh);
    }
    &mut list[at]
}

fn drop_expired<B>(list: &mut Vec<B>, cutoff: i64, key: impl Fn(&B) -> i64) {
    let expired = list.partition_point(|b| key(b) <= cutoff);
    if expired > 0 {
        list.drain(..expired);
    }
}

/// The state of one feature for one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureState {
    /// `FeatureSpec::id`.
    pub id: u64,
    /// T: newest event time this (feature, entity) has seen.
    pub latest_ms: i64,
    pub buckets: Buckets,
}

impl FeatureState {
    pub fn new(id: u64, agg: Aggregate, latest_ms: i64) -> FeatureState {
        FeatureState {
            id,
            latest_ms,
            buckets: Buckets::empty_for(agg),
        }
    }

    /// Applies one event at `t_ms` and returns the value at the new T.
    pub fn update(
        &mut self,
        agg: Aggregate,
        geometry: Geometry,
        t_ms: i64,
        contribution: Contribution,
        distinct_limit: usize,
    ) -> Option<f64> {
        if !self.buckets.fits(agg) {
            self.buckets = Buckets::empty_for(agg);
        }
        self.latest_ms = self.latest_ms.max(t_ms);
        let (cutoff, index) = geometry.cutoff_and_bucket(self.latest_ms, t_ms);
        self.prune(cutoff);
        if index > cutoff {
            self.add(agg, index, t_ms, contribution, cutoff, distinct_limit);
        }
        self.value(agg, geometry, self.latest_ms)
    }

    fn prune(&mut self, cutoff: i64) {
        match &mut self.buckets {
            Buckets::Count(l) => drop_expired(l, cutoff, |b| b.index),
            Buckets::Sum(l) => drop_expired(l, cutoff, |b| b.index),
            Buckets::Extreme(l) => drop_expired(l, cutoff, |b| b.index),
            Buckets::Last(l) => drop_expired(l, cutoff, |b| b.index),
            Buckets::Distinct(d) => d.prune(cutoff),
        }
    }

    fn add(
        &mut self,
        agg: Aggregate,
        index: i64,
        t_ms: i64,
        contribution: Contribution,
        cutoff: i64,
        distinct_limit: usize,
    ) {
        match (&mut self.buckets, contribution) {
            (_, Contribution::Nothing) => {}
            (Buckets::Count(l), _) => {
                let b = slot(l, index, |b| b.index, CountBucket { index, count: 0 });
                b.count = b.count.saturating_add(1);
            }
            (Buckets::Sum(l), Contribution::Number(v)) => {
                let fresh = SumBucket {
                    index,
                    count: 0,
                    sum: 0,
                };
                let b = slot(l, index, |b| b.index, fresh);
                b.count = b.count.saturating_add(1);
                b.sum = b.sum.saturating_add(v);
            }
            (Buckets::Extreme(l), Contribution::Number(v)) => {
                let at = l.partition_point(|b| b.index < index);
                match l.get_mut(at) {
                    Some(b) if b.index == index => {
                        b.value = if agg == Aggregate::Min {
                            b.value.min(v)
                        } else {
                            b.value.max(v)
                        };
                    }
                    _ => {
                        l.reserve_exact(1);
                        l.insert(at, ExtremeBucket { index, value: v });
                    }
                }
            }
            (Buckets::Last(l), Contribution::Number(v)) => {
                let at = l.partition_point(|b| b.index < index);
                match l.get_mut(at) {
                    Some(b) if b.index == index => {
                        if t_ms >= b.time_ms {
                            b.time_ms = t_ms;
                            b.value = v;
                        }
                    }
                    _ => {
                        l.reserve_exact(1);
                        l.insert(
                            at,
                            LastBucket {
                                index,
                                time_ms: t_ms,
                                value: v,
                            },
                        );
                    }
                }
            }
            (Buckets::Distinct(d), Contribution::Item(hash)) => {
                d.insert(hash, index, cutoff, distinct_limit)
            }
            (Buckets::Distinct(d), Contribution::Number(v)) => {
                d.insert(item_hash(&v.to_le_bytes()), index, cutoff, distinct_limit)
            }
            _ => {}
        }
    }

    /// The value at evaluation time max(`at_ms`, T), without changing anything.
    pub fn value(&self, agg: Aggregate, geometry: Geometry, at_ms: i64) -> Option<f64> {
        let cutoff = geometry.cutoff(at_ms.max(self.latest_ms));
        match &self.buckets {
            Buckets::Count(l) if agg == Aggregate::Count => Some(
                l.iter()
                    .filter(|b| b.index > cutoff)
                    .map(|b| u64::from(b.count))
                    .sum::<u64>() as f64,
            ),
            Buckets::Sum(l) if matches!(agg, Aggregate::Sum | Aggregate::Avg) => {
                let (count, sum) = l
                    .iter()
                    .filter(|b| b.index > cutoff)
                    .fold((0u64, 0i64), |(c, s), b| {
                        (c + u64::from(b.count), s.saturating_add(b.sum))
                    });
                match agg {
                    Aggregate::Sum => Some(from_fixed(sum)),
                    _ if count == 0 => None,
                    _ => Some(from_fixed(sum) / count as f64),
                }
            }
            Buckets::Extreme(l) if matches!(agg, Aggregate::Min | Aggregate::Max) => {
                let live = l.iter().filter(|b| b.index > cutoff).map(|b| b.value);
                let v = if agg == Aggregate::Min {
                    live.min()
                } else {
                    live.max()
                };
                v.map(from_fixed)
            }
            Buckets::Last(l) if agg == Aggregate::Last => l
                .last()
                .filter(|b| b.index > cutoff)
                .map(|b| from_fixed(b.value)),
            Buckets::Distinct(d) if agg == Aggregate::Distinct => Some(d.count(cutoff)),
            _ => empty_value(agg),
        }
    }
}

impl FeatureState {
    pub fn shrink_to_fit(&mut self) {
        match &mut self.buckets {
            Buckets::Count(l) => l.shrink_to_fit(),
            Buckets::Sum(l) => l.shrink_to_fit(),
            Buckets::Extreme(l) => l.shrink_to_fit(),
            Buckets::Last(l) => l.shrink_to_fit(),
            Buckets::Distinct(DistinctState::Exact(l)) => l.shrink_to_fit(),
            Buckets::Distinct(DistinctState::Sketch(_)) => {}
        }
    }

    /// Heap bytes requested for the bucket list (or sketch).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        match &self.buckets {
            Buckets::Count(l) => l.capacity() * size_of::<CountBucket>(),
            Buckets::Sum(l) => l.capacity() * size_of::<SumBucket>(),
            Buckets::Extreme(l) => l.capacity() * size_of::<ExtremeBucket>(),
            Buckets::Last(l) => l.capacity() * size_of::<LastBucket>(),
            Buckets::Distinct(DistinctState::Exact(l)) => {
                l.capacity() * size_of::<super::hll::SeenItem>()
            }
            Buckets::Distinct(DistinctState::Sketch(s)) => s.heap_bytes(),
        }
    }
}

/// The value of a window with nothing in it.
pub fn empty_value(agg: Aggregate) -> Option<f64> {
    match agg {
        Aggregate::Count | Aggregate::Sum | Aggregate::Distinct => Some(0.0),
        Aggregate::Avg | Aggregate::Min | Aggregate::Max | Aggregate::Last => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{Reader, Writer};
    use crate::store::packed::{PackedFeatures, Scratch};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bucket_is_the_euclidean_quotient(
            t in prop_oneof![any::<i64>(), -1_000_000i64..1_000_000, Just(i64::MIN), Just(i64::MAX)],
            resolution in prop_oneof![1u64..100_000, any::<u64>(), Just(60_000), Just(u64::MAX)],
        ) {
            let g = Geometry::new(86_400_000, resolution);
            prop_assert_eq!(g.bucket(t), t.div_euclid(g.resolution_ms));
        }
    }

    /// One event of a generated sequence: time, passed `where`, value in cents (None = missing).
    type Event = (i64, bool, Option<i64>);

    /// The naive reference: every counted event kept in a Vec and filtered at evaluation time.
    fn reference(agg: Aggregate, g: Geometry, events: &[Event], at_ms: i64) -> Option<f64> {
        let latest = events.iter().map(|e| e.0).max()?;
        let cutoff = g.bucket(at_ms.max(latest)) - g.buckets;
        let live: Vec<(i64, i64)> = events
            .iter()
            .filter(|(t, counted, v)| *counted && v.is_some() && g.bucket(*t) > cutoff)
            .map(|(t, _, v)| (*t, v.unwrap_or(0) * 100))
            .collect();
        if live.is_empty() {
            return empty_value(agg);
        }
        let sum: i64 = live.iter().map(|e| e.1).sum();
        Some(match agg {
            Aggregate::Count => live.len() as f64,
            Aggregate::Sum => from_fixed(sum),
            Aggregate::Avg => from_fixed(sum) / live.len() as f64,
            Aggregate::Min => from_fixed(live.iter().map(|e| e.1).min().unwrap_or(0)),
            Aggregate::Max => from_fixed(live.iter().map(|e| e.1).max().unwrap_or(0)),
            Aggregate::Last => {
                let newest = live.iter().map(|e| e.0).max().unwrap_or(0);
                from_fixed(live.iter().rev().find(|e| e.0 == newest).map_or(0, |e| e.1))
            }
            Aggregate::Distinct => {
                let mut values: Vec<i64> = live.iter().map(|e| e.1).collect();
                values.sort_unstable();
                values.dedup();
                values.len() as f64
            }
        })
    }

    fn contribution(agg: Aggregate, counted: bool, value: Option<i64>) -> Contribution {
        match (counted, value) {
            (false, _) | (_, None) => Contribution::Nothing,
            (true, Some(_)) if agg == Aggregate::Count => Contribution::Count,
            (true, Some(cents)) => {
                to_fixed(cents as f64 / 100.0).map_or(Contribution::Nothing, |v| {
                    if agg == Aggregate::Distinct {
                        Contribution::Item(item_hash(&v.to_le_bytes()))
                    } else {
                        Contribution::Number(v)
                    }
                })
            }
        }
    }

    fn aggregates() -> impl Strategy<Value = Aggregate> {
        prop_oneof![
            Just(Aggregate::Count),
            Just(Aggregate::Sum),
            Just(Aggregate::Avg),
            Just(Aggregate::Min),
            Just(Aggregate::Max),
            Just(Aggregate::Last),
            Just(Aggregate::Distinct),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn window_matches_naive_reference(
            agg in aggregates(),
            resolution in 1u64..50,
            buckets in 1u64..12,
            extra in 0u64..3,
            events in proptest::collection::vec(
                (-200i64..1_500, any::<bool>(), proptest::option::weighted(0.9, -5_000i64..5_000)),
                1..80),
            evals in proptest::collection::vec(-200i64..2_500, 1..8),
        ) {
            // window need not be a multiple of the resolution
            let g = Geometry::new(resolution * buckets + extra.min(resolution - 1), resolution);
            let mut state = FeatureState::new(1, agg, i64::MIN);
            for (i, &(t, counted, value)) in events.iter().enumerate() {
                let out = state.update(agg, g, t, contribution(agg, counted, value), 1_000);
                prop_assert_eq!(out, reference(agg, g, &events[..=i], t), "after event {}", i);
            }
            for at in evals {
                prop_assert_eq!(state.value(agg, g, at), reference(agg, g, &events, at), "at {}", at);
            }
            // through the in-memory packed form and the checkpoint encoding and back
            let mut packed = PackedFeatures::default();
            let mut scratch = Scratch::default();
            let sketch = packed.store(None, state.clone(), &mut scratch);
            let mut buf = Vec::new();
            packed.encode(&mut Writer { buf: &mut buf }, |_| sketch.as_deref());
            let (back, sketches) = PackedFeatures::decode(&mut Reader { rest: &buf }, &mut Vec::new()).unwrap();
            prop_assert_eq!(&back, &packed);
            let slot = back.find(1).unwrap();
            let sketch = sketches.into_iter().next().map(|(_, s)| s);
            prop_assert_eq!(back.unpack(&slot, sketch, &mut scratch), state);
        }
    }

    #[test]
    fn bucket_boundaries_follow_the_floor_rule() {
        // window 60 ms, resolution 10 ms: at T=100 buckets 5..=10 count (t in 50..=109)
        let g = Geometry::new(60, 10);
        let mut s = FeatureState::new(1, Aggregate::Count, i64::MIN);
        s.update(Aggregate::Count, g, 49, Contribution::Count, 10);
        s.update(Aggregate::Count, g, 50, Contribution::Count, 10);
        assert_eq!(s.value(Aggregate::Count, g, 99), Some(2.0));
        assert_eq!(
            s.update(Aggregate::Count, g, 100, Contribution::Count, 10),
            Some(2.0)
        );
        // too old: older than T - window, counted nowhere, T unchanged
        assert_eq!(
            s.update(Aggregate::Count, g, 39, Contribution::Count, 10),
            Some(2.0)
        );
        assert_eq!(s.latest_ms, 100);
        assert_eq!(s.value(Aggregate::Count, g, 159), Some(1.0));
        assert_eq!(s.value(Aggregate::Count, g, 160), Some(0.0));
    }

    #[test]
    fn money_sums_are_exact_to_the_cent() {
        let g = Geometry::new(1_000, 10);
        let mut s = FeatureState::new(1, Aggregate::Sum, i64::MIN);
        for _ in 0..10 {
            s.update(
                Aggregate::Sum,
                g,
                0,
                Contribution::Number(to_fixed(0.1).unwrap()),
                10,
            );
        }
        let out = s.update(
            Aggregate::Sum,
            g,
            1,
            Contribution::Number(to_fixed(0.2).unwrap()),
            10,
        );
        assert_eq!(out, Some(1.2));
    }
}
