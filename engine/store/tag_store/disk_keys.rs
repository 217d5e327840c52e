//! `DiskKeys`: per shard, a Bloom filter of the entities that may be on disk (spilled, or only in
//! the checkpoint), so looking up a brand-new entity while the store spills costs no RocksDB read.
//!
//! Every key leaves memory for disk through eviction or stays cold at restore; both insert it
//! here first, so "not in the filter" proves "not on disk". Keys read back, or deleted as idle,
//! stay in the filter (a false positive only costs the read this saves). The filter grows in
//! stages of doubling capacity; its bytes count in the shard's memory, and past
//! [`MAX_FILTER_BYTES`] it switches itself off (every miss reads RocksDB again, as without it).

use fastbloom::BloomFilter;

/// False-positive rate of each stage.
const FALSE_POSITIVE_RATE: f64 = 0.005;
/// Keys the first stage of a shard holds at most and at least; each later stage holds twice the
/// one before. A brand-new key is looked up in every stage (a cache miss each), so the first is
/// as large as [`FIRST_STAGE_BUDGET_PARTS`] allows.
const MAX_FIRST_STAGE_KEYS: usize = 65536;
const MIN_FIRST_STAGE_KEYS: usize = 4096;
/// The first stage takes at most this part of the shard's budget.
const FIRST_STAGE_BUDGET_PARTS: u64 = 8;
/// A shard's filter beyond this many bytes is dropped and stays off until the store is cleared.
pub const MAX_FILTER_BYTES: u64 = 32 << 20;

/// The keys of one shard that may be on disk.
#[derive(Default)]
pub struct DiskKeys {
    stages: Vec<BloomFilter>,
    /// Keys inserted into the last stage, and how many it was sized for.
    in_last: usize,
    capacity_last: usize,
    /// Heap bytes of `stages`.
    bytes: u64,
    /// Too big: every key may be on disk.
    off: bool,
}

/// Bytes of a stage for `keys` keys at [`FALSE_POSITIVE_RATE`]: -n ln p / (ln 2)² bits.
fn stage_bytes(keys: usize) -> u64 {
    let bits = keys as f64 * -FALSE_POSITIVE_RATE.ln() / std::f64::consts::LN_2.powi(2);
    (bits / 8.0) as u64
}

/// Keys of a shard's first stage under a shard budget of `shard_budget` bytes.
fn first_stage_keys(shard_budget: u64) -> usize {
    let mut keys = MAX_FIRST_STAGE_KEYS;
    while keys > MIN_FIRST_STAGE_KEYS && stage_bytes(keys) > shard_budget / FIRST_STAGE_BUDGET_PARTS
    {
        keys /= 2;
    }
    keys
}

/// One hash per (kind, value): the entity hash with the kind byte mixed in.
fn key_hash(kind: u8, entity_hash: u64) -> u64 {
    entity_hash ^ (u64::from(kind) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl DiskKeys {
    /// Records that the entity `(kind byte, value)` with `entity_hash` may be on disk from now on;
    /// `shard_budget` (bytes) sizes the first stage.
    pub fn insert(&mut self, kind: u8, entity_hash: u64, shard_budget: u64) {
        if self.off {
            return;
        }
        if self.stages.is_empty() || self.in_last >= self.capacity_last {
            let capacity = if self.stages.is_empty() {
                first_stage_keys(shard_budget)
            } else {
                self.capacity_last.saturating_mul(2)
            };
            if self.bytes.saturating_add(stage_bytes(capacity)) > MAX_FILTER_BYTES {
                self.off = true;
                self.stages = Vec::new();
                self.bytes = 0;
                return;
            }
            let stage = BloomFilter::with_false_pos(FALSE_POSITIVE_RATE).expected_items(capacity);
            self.bytes += stage.num_bits() as u64 / 8;
            self.stages.push(stage);
            self.capacity_last = capacity;
            self.in_last = 0;
        }
        if let Some(last) = self.stages.last_mut() {
            last.insert_hash(key_hash(kind, entity_hash));
            self.in_last += 1;
        }
    }

    /// `false` only when the entity is certainly not on disk.
    pub fn may_contain(&self, kind: u8, entity_hash: u64) -> bool {
        if self.off {
            return true;
        }
        let hash = key_hash(kind, entity_hash);
        self.stages.iter().any(|stage| stage.contains_hash(hash))
    }

    /// Heap bytes of the filter.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field;

    #[test]
    fn inserted_keys_are_always_found_and_most_others_are_not() {
        let mut keys = DiskKeys::default();
        assert!(!keys.may_contain(Field::CardId as u8, 1));
        let n = 50_000u64;
        let hash = |i: u64| i.wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(17);
        for i in 0..n {
            keys.insert(Field::CardId as u8, hash(i), 0);
        }
        assert!(keys.stages.len() > 1, "the filter grew in stages");
        assert!((0..n).all(|i| keys.may_contain(Field::CardId as u8, hash(i))));
        // the same value of another kind is another entity
        let other_kind = (0..n)
            .filter(|&i| keys.may_contain(Field::UserId as u8, hash(i)))
            .count();
        let fresh = (n..2 * n)
            .filter(|&i| keys.may_contain(Field::CardId as u8, hash(i)))
            .count();
        for false_positives in [other_kind, fresh] {
            assert!(false_positives < (n / 20) as usize, "{false_positives}");
        }
        assert!(keys.bytes() > 0 && keys.bytes() < MAX_FILTER_BYTES);
    }

    #[test]
    fn the_first_stage_is_as_large_as_the_shard_budget_allows() {
        assert_eq!(first_stage_keys(0), MIN_FIRST_STAGE_KEYS);
        assert_eq!(first_stage_keys(u64::MAX), MAX_FIRST_STAGE_KEYS);
        let budget = stage_bytes(16384) * FIRST_STAGE_BUDGET_PARTS;
        assert_eq!(first_stage_keys(budget), 16384);
        assert_eq!(first_stage_keys(budget - 1), 8192);
        let mut keys = DiskKeys::default();
        keys.insert(Field::CardId as u8, 1, budget);
        assert_eq!(keys.capacity_last, 16384);
    }

    #[test]
    fn a_filter_past_its_size_limit_switches_off_and_answers_maybe() {
        let mut keys = DiskKeys {
            capacity_last: usize::MAX / 4,
            ..DiskKeys::default()
        };
        keys.stages.push(BloomFilter::with_num_bits(64).hashes(1));
        keys.in_last = keys.capacity_last;
        keys.insert(Field::Ip as u8, 7, 0);
        assert!(keys.off && keys.stages.is_empty());
        assert!(keys.may_contain(Field::Ip as u8, 12345));
    }
}
