//! Latency statistics: percentiles of recorded samples and per-second series.

use std::time::Duration;

/// Percentiles of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// The percentiles plotted and reported, with their names.
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// Nearest-rank percentile `p` (0..=100) of sorted samples; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // the epsilon keeps float error (0.999 * 1000 = 999.0000000000001) from bumping the rank
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl LatencySummary {
    /// Summarises samples given in nanoseconds (sorted in place); `None` when there are none.
    pub fn from_nanos(samples: &mut [u64]) -> Option<LatencySummary> {
        samples.sort_unstable();
        let us = |p: f64| percentile(samples, p).map(|ns| ns as f64 / 1_000.0);
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(LatencySummary {
            count: samples.len(),
            mean_us: sum as f64 / samples.len().max(1) as f64 / 1_000.0,
            p50_us: us(50.0)?,
            p90_us: us(90.0)?,
            p99_us: us(99.0)?,
            p999_us: us(99.9)?,
            max_us: us(100.0)?,
        })
    }

    /// The value of one of [`PERCENTILES`] by its position.
    pub fn by_index(&self, index: usize) -> f64 {
        match index {
            0 => self.p50_us,
            1 => self.p90_us,
            2 => self.p99_us,
            _ => self.p999_us,
        }
    }
}

/// Latency percentiles per time slice: `(slice start in seconds since the run began, summary)`.
pub fn per_slice(samples: &[(Duration, u64)], slice: Duration) -> Vec<(f64, LatencySummary)> {
    let slice_ns = slice.as_nanos().max(1);
    let mut buckets: std::collections::BTreeMap<u128, Vec<u64>> = Default::default();
    for (at, ns) in samples {
        buckets
            .entry(at.as_nanos() / slice_ns)
            .or_default()
            .push(*ns);
    }
    buckets
        .into_iter()
        .filter_map(|(i, mut v)| {
            LatencySummary::from_nanos(&mut v).map(|s| ((i * slice_ns) as f64 / 1e9, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u64> = (1..=1000).map(|i| i * 1_000).collect();
        let s = LatencySummary::from_nanos(&mut samples).expect("non-empty");
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.mean_us, 500.5);
        assert!(LatencySummary::from_nanos(&mut []).is_none());
    }

    #[test]
    fn slices_by_time() {
        let samples = vec![
            (Duration::from_millis(100), 1_000),
            (Duration::from_millis(900), 3_000),
            (Duration::from_millis(1_500), 10_000),
        ];
        let slices = per_slice(&samples, Duration::from_secs(1));
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].0, 0.0);
        assert_eq!(slices[0].1.count, 2);
        assert_eq!(slices[1].0, 1.0);
        assert_eq!(slices[1].1.max_us, 10.0);
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_and_bounded(mut v in proptest::collection::vec(0u64..10_000_000, 1..500)) {
            let min = *v.iter().min().unwrap_or(&0) as f64 / 1_000.0;
            let s = LatencySummary::from_nanos(&mut v).expect("non-empty");
            prop_assert!(min <= s.p50_us);
            prop_assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us);
            prop_assert!(s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        }
    }
}
