//! Editing one packed feature in place for one event: the window rules on packed records
//! ([`update_packed`]), and the typed form for what they leave to it ([`update_typed`]).

use super::{
    i64_at, kind_of, put_i64, put_u32, u32_at, u64_at, unpack, PackedFeatures, Scratch, HEADER,
    WIDTH,
};
use crate::event::Aggregate;
use crate::store::hll::{item_hash, SlidingHll};
use crate::store::window::{empty_value, from_fixed, Contribution, Geometry};

/// A feature after [`update_packed`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edited {
    /// The value after counting.
    pub value: Option<f64>,
    /// T after the event.
    pub latest_ms: i64,
    /// Its record count.
    pub records: usize,
    /// Where it ends in the block (the next feature's header).
    pub end: usize,
}

/// Applies one event to the feature packed at `block[start..]` (its header and records; other
/// features may follow it) in place, exactly as
/// [`FeatureState::update`](crate::store::window::FeatureState::update) does. The block grows
/// or shrinks only when the feature's record count changes, and then by exactly the records
/// added or dropped. `None`, with nothing changed, for what only the typed form does: a
/// sketch, a `distinct` that would outgrow `distinct_limit`.
#[inline]
pub fn update_packed(
    block: &mut Vec<u8>,
    start: usize,
    agg: Aggregate,
    geometry: Geometry,
    t_ms: i64,
    contribution: Contribution,
    distinct_limit: usize,
) -> Option<Edited> {
    // An event that counts nothing in an empty window only advances T: the common case of a
    // feature whose `where` the event fails, decided here without the call.
    if contribution == Contribution::Nothing
        && block[start + 16] == kind_of(agg)
        && u32_at(block, start + 17) == 0
    {
        let latest_ms = i64_at(block, start + 8).max(t_ms);
        put_i64(block, start + 8, latest_ms);
        return Some(Edited {
            value: empty_value(agg),
            latest_ms,
            records: 0,
            end: start + HEADER,
        });
    }
    edit_records(
        block,
        start,
        agg,
        geometry,
        t_ms,
        contribution,
        distinct_limit,
    )
}

/// [`update_packed`] past its empty-window shortcut.
#[inline(never)]
fn edit_records(
    block: &mut Vec<u8>,
    start: usize,
    agg: Aggregate,
    geometry: Geometry,
    t_ms: i64,
    contribution: Contribution,
    distinct_limit: usize,
) -> Option<Edited> {
    let kind = block[start + 16];
    if kind != kind_of(agg) {
        return None;
    }
    let records = u32_at(block, start + 17) as usize;
    let first = start + HEADER;
    let latest_ms = i64_at(block, start + 8).max(t_ms);
    let width = WIDTH[usize::from(kind)];
    let rec = |i: usize| first + i * width;
    let (cutoff, index) = geometry.cutoff_and_bucket(latest_ms, t_ms);
    let adds = index > cutoff
        && match contribution {
            Contribution::Nothing => false,
            Contribution::Count => kind == 0,
            Contribution::Number(_) => true,
            Contribution::Item(_) => kind == 0 || kind == 4,
        };
    if kind == 4 {
        let live = update_exact_distinct(
            block,
            first,
            records,
            cutoff,
            adds.then_some((contribution, index)),
            distinct_limit,
        )?;
        put_i64(block, start + 8, latest_ms);
        put_u32(block, start + 17, live as u32);
        return Some(Edited {
            value: Some(live as f64),
            latest_ms,
            records: live,
            end: first + live * 16,
        });
    }
    // count, sum/avg, min/max, last: buckets sorted by index
    let mut expired = 0;
    while expired < records && i64_at(block, rec(expired)) <= cutoff {
        expired += 1;
    }
    // the first record at or after `index`, searched from the newest: an in-order event lands
    // in the newest bucket or just after it
    let mut at = records;
    while at > expired && i64_at(block, rec(at - 1)) >= index {
        at -= 1;
    }
    let existing = adds && at < records && i64_at(block, rec(at)) == index;
    if existing {
        let r = rec(at);
        match (kind, contribution) {
            (0, _) => {
                let count = u32_at(block, r + 8).saturating_add(1);
                put_u32(block, r + 8, count);
            }
            (1, Contribution::Number(v)) => {
                let (count, sum) = (u32_at(block, r + 8), i64_at(block, r + 12));
                put_u32(block, r + 8, count.saturating_add(1));
                put_i64(block, r + 12, sum.saturating_add(v));
            }
            (2, Contribution::Number(v)) => {
                let old = i64_at(block, r + 8);
                let new = if agg == Aggregate::Min {
                    old.min(v)
                } else {
                    old.max(v)
                };
                put_i64(block, r + 8, new);
            }
            (3, Contribution::Number(v)) if t_ms >= i64_at(block, r + 8) => {
                put_i64(block, r + 8, t_ms);
                put_i64(block, r + 16, v);
            }
            _ => {}
        }
    }
    let mut kept = records - expired;
    if adds && !existing {
        let fresh = fresh_record(kind, index, t_ms, contribution);
        let fresh = &fresh[..width];
        if expired > 0 {
            // the expired records make room: shift the live ones before `at` down over them
            block.copy_within(rec(expired)..rec(at), rec(0));
            let r = rec(at - expired);
            block[r..r + width].copy_from_slice(fresh);
            block.drain(r + width..rec(at));
        } else {
            insert_bytes(block, rec(at), fresh);
        }
        kept += 1;
    } else if expired > 0 {
        block.drain(rec(0)..rec(expired));
    }
    put_i64(block, start + 8, latest_ms);
    put_u32(block, start + 17, kept as u32);
    // every record left is inside the window
    let live = &block[first..first + kept * width];
    let mut records = live.chunks_exact(width);
    let value = match agg {
        Aggregate::Count => Some(records.map(|r| u64::from(u32_at(r, 8))).sum::<u64>() as f64),
        Aggregate::Sum | Aggregate::Avg => {
            let (count, sum) = records.fold((0u64, 0i64), |(c, s), r| {
                (c + u64::from(u32_at(r, 8)), s.saturating_add(i64_at(r, 12)))
            });
            match agg {
                Aggregate::Sum => Some(from_fixed(sum)),
                _ if count == 0 => None,
                _ => Some(from_fixed(sum) / count as f64),
            }
        }
        Aggregate::Min => records.map(|r| i64_at(r, 8)).min().map(from_fixed),
        Aggregate::Max => records.map(|r| i64_at(r, 8)).max().map(from_fixed),
        Aggregate::Last => records.next_back().map(|r| from_fixed(i64_at(r, 16))),
        Aggregate::Distinct => return None,
    };
    Some(Edited {
        value,
        latest_ms,
        records: kept,
        end: first + kept * width,
    })
}

/// The record a counted event opens in a new bucket `index` (the first `WIDTH[kind]` bytes).
fn fresh_record(kind: u8, index: i64, t_ms: i64, contribution: Contribution) -> [u8; 24] {
    let mut fresh = [0u8; 24];
    fresh[..8].copy_from_slice(&index.to_le_bytes());
    match (kind, contribution) {
        (0, _) => fresh[8..12].copy_from_slice(&1u32.to_le_bytes()),
        (1, Contribution::Number(v)) => {
            fresh[8..12].copy_from_slice(&1u32.to_le_bytes());
            fresh[12..20].copy_from_slice(&v.to_le_bytes());
        }
        (2, Contribution::Number(v)) => fresh[8..16].copy_from_slice(&v.to_le_bytes()),
        (3, Contribution::Number(v)) => {
            fresh[8..16].copy_from_slice(&t_ms.to_le_bytes());
            fresh[16..24].copy_from_slice(&v.to_le_bytes());
        }
        _ => {}
    }
    fresh
}

/// Inserts `bytes` at `at`.
fn insert_bytes(block: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let len = block.len();
    // exactly: an entity's block is edited in its own allocation, which stays exact-size
    block.reserve_exact(bytes.len());
    block.extend_from_slice(bytes);
    block.copy_within(at..len, at + bytes.len());
    block[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The exact `distinct` records (item hash, newest bucket; in insertion order) at
/// `block[first..]`: drops the items at or before `cutoff`, then records `add` (the item and
/// its bucket) as [`DistinctState`] does, and returns the live count. `None`, with nothing
/// changed, when the item is new and the set is full (the typed form turns it into a sketch).
fn update_exact_distinct(
    block: &mut Vec<u8>,
    first: usize,
    records: usize,
    cutoff: i64,
    add: Option<(Contribution, i64)>,
    distinct_limit: usize,
) -> Option<usize> {
    const W: usize = 16;
    let hash = match add {
        Some((Contribution::Item(hash), _)) => Some(hash),
        Some((Contribution::Number(v), _)) => Some(item_hash(&v.to_le_bytes())),
        _ => None,
    };
    let items = &block[first..first + records * W];
    let live = items
        .chunks_exact(W)
        .filter(|r| i64_at(r, 8) > cutoff)
        .count();
    let known = hash.and_then(|hash| {
        items
            .chunks_exact(W)
            .position(|r| u64_at(r, 0) == hash && i64_at(r, 8) > cutoff)
    });
    if hash.is_some() && known.is_none() && live >= distinct_limit {
        return None;
    }
    if let (Some(i), Some((_, index))) = (known, add) {
        let at = first + i * W + 8;
        let newest = i64_at(block, at).max(index);
        put_i64(block, at, newest);
    }
    if live < records {
        // keep the live items in order
        let mut to = first;
        for from in (first..first + records * W).step_by(W) {
            if i64_at(block, from + 8) > cutoff {
                block.copy_within(from..from + W, to);
                to += W;
            }
        }
        block.drain(to..first + records * W);
    }
    match (hash, known, add) {
        (Some(hash), None, Some((_, index))) => {
            let mut fresh = [0u8; W];
            fresh[..8].copy_from_slice(&hash.to_le_bytes());
            fresh[8..].copy_from_slice(&index.to_le_bytes());
            insert_bytes(block, first + live * W, &fresh);
            Some(live + 1)
        }
        _ => Some(live),
    }
}

/// Applies one event to the feature at `block[start..]` through its typed form, for what
/// [`update_packed`] leaves to it (`sketch` is the feature's sketch when it has one): unpacks
/// it, updates it and packs it back in its place. Returns the feature after the event and the
/// sketch to keep beside the block.
#[allow(clippy::too_many_arguments)]
pub fn update_typed(
    block: &mut Vec<u8>,
    start: usize,
    sketch: Option<Box<SlidingHll>>,
    agg: Aggregate,
    geometry: Geometry,
    t_ms: i64,
    contribution: Contribution,
    distinct_limit: usize,
    scratch: &mut Scratch,
) -> (Edited, Option<Box<SlidingHll>>) {
    let slot = PackedFeatures::slot_of(&block[start..]);
    let mut state = unpack(&block[start..], &slot, sketch, scratch);
    let value = state.update(agg, geometry, t_ms, contribution, distinct_limit);
    let mut record = std::mem::take(&mut scratch.record);
    record.clear();
    let sketch = PackedFeatures::pack(state, &mut record, scratch);
    block.splice(start..start + slot.end, record.iter().copied());
    scratch.record = record;
    let packed = PackedFeatures::slot_of(&block[start..]);
    let edited = Edited {
        value,
        latest_ms: i64_at(block, start + 8),
        records: packed.records,
        end: start + packed.end,
    };
    (edited, sketch)
}

#[cfg(test)]
mod tests {
    use super::super::pack_one;
    use super::*;
    use crate::store::window::FeatureState;

    #[test]
    fn packed_updates_match_the_typed_update() {
        let aggs = [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Avg,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Last,
            Aggregate::Distinct,
        ];
        let mut scratch = Scratch::default();
        for (resolution_ms, step_ms) in [(10_000, 3_000), (1_000, 9_000), (60_000, 500)] {
            let g = Geometry::new(60_000, resolution_ms);
            for agg in aggs {
                let mut reference = FeatureState::new(7, agg, i64::MIN);
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(kind_of(agg));
                let (mut t, mut edited) = (0i64, 0);
                for event in 0..3_000 {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    // mostly forward, sometimes late, sometimes far behind
                    t += (seed >> 33) as i64 % step_ms - step_ms / 5;
                    if seed >> 58 == 0 {
                        t -= 200_000;
                    }
                    let contribution = match (seed >> 60, agg) {
                        (0, _) => Contribution::Nothing,
                        (1, _) => Contribution::Count,
                        (_, Aggregate::Distinct) if seed >> 62 == 3 => {
                            Contribution::Number((seed >> 20) as i64 % 3)
                        }
                        (_, Aggregate::Distinct) => Contribution::Item((seed >> 24) % 5),
                        _ => Contribution::Number((seed >> 20) as i64 % 10_000 - 2_000),
                    };
                    // other features before and after it
                    let mut block = vec![0xAA; 5];
                    pack_one(&reference, false, &mut block);
                    block.extend_from_slice(&[0xBB; 7]);
                    let before = reference.clone();
                    // (at most 8 items: a new item past them is the typed form's sketch)
                    let want = reference.update(agg, g, t, contribution, 8);
                    let after = update_packed(&mut block, 5, agg, g, t, contribution, 8);
                    let got = after.map(|e| e.value);
                    let Some(got) = got else {
                        let mut unchanged = vec![0xAA; 5];
                        pack_one(&before, false, &mut unchanged);
                        unchanged.extend_from_slice(&[0xBB; 7]);
                        assert_eq!(block, unchanged, "{agg:?} event {event}: changed");
                        continue;
                    };
                    edited += 1;
                    assert_eq!(got, want, "{agg:?} event {event}");
                    assert_eq!(block[block.len() - 7..], [0xBB; 7], "{agg:?} event {event}");
                    let slot = PackedFeatures::slot_of(&block[5..]);
                    assert_eq!(slot.end, block.len() - 5 - 7);
                    let after = after.unwrap();
                    assert_eq!((after.end, after.records), (5 + slot.end, slot.records));
                    assert_eq!(after.latest_ms, reference.latest_ms);
                    let state = unpack(&block[5..], &slot, None, &mut scratch);
                    assert_eq!(state, reference, "{agg:?} event {event}");
                }
                assert!(edited > 500, "{agg:?}: only {edited} events edited packed");
            }
        }
    }
}
