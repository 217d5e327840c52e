//! One entity's state (features, tags, expiry horizon), its byte accounting and its encoding.

use super::codec::{DecodeError, Reader, Writer};
use super::hll::SlidingHll;
use super::packed::{update_packed, update_typed, PackedFeatures, Scratch, Sketches, KIND_SKETCH};
use super::window::{empty_value, Contribution, FeatureState, Geometry};
use crate::event::Aggregate;
use std::mem::size_of;

/// Version byte at the start of every encoded entity.
const ENTITY_FORMAT: u8 = 1;

/// A tag on an entity; visible to events with time < `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: Box<str>,
    pub expires_at_ms: Option<i64>,
}

impl Tag {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// Everything the store keeps about one (kind, value) entity: 40 bytes inline, one heap block
/// for all window features, and a box for the rarely used parts (tags, distinct sketches).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entity {
    pub features: PackedFeatures,
    /// Tags and sketches; `None` (no allocation) for most entities.
    extra: Option<Box<Extra>>,
    /// Event time after which every window is empty and every tag expired.
    pub holds_until_ms: i64,
    /// Shard-local access stamp, for picking the coldest entities to spill.
    pub last_access: u32,
    /// Changed since the last checkpoint.
    pub dirty: bool,
    /// A copy exists in the checkpoint column family.
    pub persisted: bool,
}

/// The rarely used parts of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Extra {
    /// Rarely changed, so a boxed slice.
    tags: Box<[Tag]>,
    /// The sketch of every `distinct` feature past its exact limit, by feature id.
    sketches: Sketches,
    /// Hot entities (a feature reached [`HOT_RECORDS`] buckets) keep their features here in
    /// typed form, updated in place, and `Entity::features` is empty; sketches then live in
    /// their `FeatureState`. Read back from disk, an entity starts packed again.
    hot: Vec<FeatureState>,
}

/// Removes the sketch of feature `id` from the extras.
fn take_sketch(extra: &mut Option<Box<Extra>>, id: u64) -> Option<Box<SlidingHll>> {
    let extra = extra.as_mut()?;
    let at = extra.sketches.iter().position(|(f, _)| *f == id)?;
    Some(extra.sketches.swap_remove(at).1)
}

/// One event's change to one feature of an entity ([`Entity::update_features`]).
#[derive(Debug, Clone, Copy)]
pub struct FeatureUpdate {
    /// `FeatureSpec::id`.
    pub id: u64,
    pub agg: Aggregate,
    pub geometry: Geometry,
    /// The window length: the entity holds the feature until T + `window_ms`.
    pub window_ms: i64,
}

/// The features of one entity an event updates, in order, with the longest of their windows
/// (how far the update extends the entity's horizon; a plan computes it once).
#[derive(Debug, Clone, Copy)]
pub struct Updates<'a> {
    pub features: &'a [FeatureUpdate],
    pub longest_window_ms: i64,
}

impl<'a> Updates<'a> {
    #[cfg(test)]
    pub fn new(features: &'a [FeatureUpdate]) -> Updates<'a> {
        let longest_window_ms = features.iter().map(|u| u.window_ms).max().unwrap_or(0);
        Updates {
            features,
            longest_window_ms,
        }
    }
}

/// Most tags one entity holds (expired ones count until purged): each `has tag` read of an
/// event's entity copies its tag names, so this bounds that work.
pub const MAX_TAGS: usize = 256;

/// Bucket count of one feature from which its entity keeps features unpacked: unpacking and
/// packing a long bucket list on every event costs more than the typed form's extra bytes.
const HOT_RECORDS: usize = 8;

/// Fixed per-entity overhead of the shard map besides the entity itself: the key (inline up
/// to [`INLINE_KEY`] bytes) and one control byte.
pub const MAP_ENTRY_OVERHEAD: usize = size_of::<compact_str::CompactString>() + 1;

/// Longest entity value held inline in the map's key; a longer one takes a heap block of at
/// least 32 bytes.
pub const INLINE_KEY: usize = size_of::<compact_str::CompactString>();

/// Heap bytes of the map key of an entity value of `len` bytes.
pub fn key_heap_bytes(len: usize) -> usize {
    if len <= INLINE_KEY {
        0
    } else {
        alloc_size(len.max(32))
    }
}

/// An entity's share of its shard map's table: its slot plus the slack of a table kept at most
/// 7/8 full (about 1/4 on average). The shard adds what its tables really take beyond this.
pub const MAP_SLOT_ACCOUNTED: usize =
    (size_of::<Entity>() + MAP_ENTRY_OVERHEAD) + (size_of::<Entity>() + MAP_ENTRY_OVERHEAD) / 4;

impl Entity {
    /// A new, empty entity: dirty, holding nothing.
    pub fn fresh() -> Entity {
        Entity {
            dirty: true,
            holds_until_ms: i64::MIN,
            ..Entity::default()
        }
    }

    /// Approximate bytes this entity and its key occupy in memory, allocator rounding included.
    pub fn accounted_bytes(&self, key_len: usize) -> usize {
        let fixed =
            MAP_SLOT_ACCOUNTED + key_heap_bytes(key_len) + alloc_size(self.features.heap_bytes());
        match &self.extra {
            None => fixed,
            Some(extra) => fixed + extra.accounted_bytes(),
        }
    }

    pub fn tags(&self) -> &[Tag] {
        self.extra.as_ref().map_or(&[], |e| &e.tags)
    }

    fn sketch(&self, id: u64) -> Option<&SlidingHll> {
        let extra = self.extra.as_ref()?;
        extra
            .sketches
            .iter()
            .find(|(f, _)| *f == id)
            .map(|(_, s)| &**s)
    }

    fn take_sketch(&mut self, id: u64) -> Option<Box<SlidingHll>> {
        take_sketch(&mut self.extra, id)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops the extras box when it holds nothing.
    fn tidy_extra(&mut self) {
        if self
            .extra
            .as_ref()
            .is_some_and(|e| e.tags.is_empty() && e.sketches.is_empty() && e.hot.is_empty())
        {
            self.extra = None;
        }
    }

    /// Applies one event to feature `id` (created on first use) and returns its value after
    /// counting and its T (tests; the store updates all features of an entity at once).
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn update_feature(
        &mut self,
        id: u64,
        agg: Aggregate,
        geometry: Geometry,
        t_ms: i64,
        contribution: Contribution,
        distinct_limit: usize,
        scratch: &mut Scratch,
    ) -> (Option<f64>, i64) {
        let update = FeatureUpdate {
            id,
            agg,
            geometry,
            window_ms: 0,
        };
        let mut out = (None, i64::MIN);
        self.update_features(
            t_ms,
            Updates::new(&[update]),
            &[contribution],
            distinct_limit,
            scratch,
            |_, value, latest| out = (value, latest),
        );
        out
    }

    /// Applies one event at `t_ms` to every feature in `updates`, `contributions[k]` to
    /// `updates[k]` (each created on first use, in order when an id repeats); returns whether
    /// the entity's [`Entity::accounted_bytes`] may have changed. Reports `(k, value after counting, T)` for each
    /// `updates[k]` to `report`. Extends the horizon to T + window of each feature.
    /// (`holds_until_ms` is never below T + window of any feature it holds.)
    ///
    /// A packed entity's block is edited in place (its allocation lent out as a vector),
    /// feature by feature in the order of `updates` (only the updated features are touched),
    /// and reallocated only when its size changed. Each feature is edited on its packed records
    /// ([`update_packed`]) or, for what only the typed form does (sketches, a `distinct` that
    /// outgrows the exact limit), unpacked, updated and packed ([`update_typed`]).
    pub fn update_features(
        &mut self,
        t_ms: i64,
        updates: Updates<'_>,
        contributions: &[Contribution],
        distinct_limit: usize,
        scratch: &mut Scratch,
        mut report: impl FnMut(usize, Option<f64>, i64),
    ) -> bool {
        // T + window of every feature is at most the horizon already, and an update moves a
        // feature's T to the event's time only when it is later: so the horizon reaches the
        // event's time plus the longest window, and no further.
        self.holds_until_ms = self
            .holds_until_ms
            .max(t_ms.saturating_add(updates.longest_window_ms));
        let updates = updates.features;
        if let Some(hot) = self
            .extra
            .as_mut()
            .map(|e| &mut e.hot)
            .filter(|h| !h.is_empty())
        {
            for (k, (u, &c)) in updates.iter().zip(contributions).enumerate() {
                let at = match hot.iter().position(|f| f.id == u.id) {
                    Some(at) => at,
                    None => {
                        hot.push(FeatureState::new(u.id, u.agg, i64::MIN));
                        hot.len() - 1
                    }
                };
                let f = &mut hot[at];
                let value = f.update(u.agg, u.geometry, t_ms, c, distinct_limit);
                report(k, value, f.latest_ms);
            }
            return true;
        }
        // an entity with features is edited in its own block; a new one is built in the
        // reused scratch buffer and copied once
        let lent = self.features.heap_bytes() > 0;
        let mut block = if lent {
            self.features.lend_block()
        } else {
            let mut block = std::mem::take(&mut scratch.block);
            block.clear();
            block
        };
        let before = block.len();
        let (mut cursor, mut promote, mut sketches_changed) = (0, false, false);
        for (k, (u, &c)) in updates.iter().zip(contributions).enumerate() {
            // in the order of the updates, a feature usually follows the one before it
            let start = match PackedFeatures::id_at(&block, cursor) {
                Some(id) if id == u.id => cursor,
                _ => PackedFeatures::position(&block, u.id).unwrap_or_else(|| {
                    let at = block.len();
                    PackedFeatures::push_empty(&mut block, u.id, u.agg);
                    at
                }),
            };
            let g = u.geometry;
            let edited = match update_packed(&mut block, start, u.agg, g, t_ms, c, distinct_limit) {
                Some(edited) => edited,
                None => {
                    // the typed form may change what the extras hold
                    sketches_changed = true;
                    let sketch = if block[start + 16] == KIND_SKETCH {
                        take_sketch(&mut self.extra, u.id)
                    } else {
                        None
                    };
                    let (edited, sketch) = update_typed(
                        &mut block,
                        start,
                        sketch,
                        u.agg,
                        g,
                        t_ms,
                        c,
                        distinct_limit,
                        scratch,
                    );
                    if let Some(sketch) = sketch {
                        self.extra_mut().sketches.push((u.id, sketch));
                    }
                    edited
                }
            };
            promote |= edited.records >= HOT_RECORDS;
            report(k, edited.value, edited.latest_ms);
            cursor = edited.end;
        }
        let resized = block.len() != before;
        if lent {
            self.features.return_block(block);
        } else {
            self.features.set_block(&block);
            scratch.block = block;
        }
        if sketches_changed {
            self.tidy_extra();
        }
        if promote {
            self.promote(scratch);
        }
        resized || sketches_changed || promote
    }

    /// Moves every feature to the typed (hot) form.
    fn promote(&mut self, scratch: &mut Scratch) {
        let slots: Vec<_> = self.features.slots().collect();
        let mut hot = Vec::with_capacity(slots.len());
        for slot in &slots {
            let sketch = if slot.kind == KIND_SKETCH {
                self.take_sketch(slot.id)
            } else {
                None
            };
            let mut state = self.features.unpack(slot, sketch, scratch);
            state.shrink_to_fit();
            hot.push(state);
        }
        self.features = PackedFeatures::default();
        self.extra_mut().hot = hot;
    }

    fn hot(&self) -> Option<&[FeatureState]> {
        self.extra
            .as_ref()
            .map(|e| e.hot.as_slice())
            .filter(|h| !h.is_empty())
    }

    /// The value of feature `id` at evaluation time max(`at_ms`, T); `None` when the entity
    /// does not have the feature.
    pub fn feature_value(
        &self,
        id: u64,
        agg: Aggregate,
        geometry: Geometry,
        at_ms: i64,
        scratch: &mut Scratch,
    ) -> Option<Option<f64>> {
        if let Some(hot) = self.hot() {
            let f = hot.iter().find(|f| f.id == id)?;
            return Some(f.value(agg, geometry, at_ms));
        }
        let slot = self.features.find(id)?;
        if slot.kind == KIND_SKETCH {
            let latest_ms = self.features.latest_ms(&slot);
            let cutoff = geometry.cutoff(at_ms.max(latest_ms));
            return Some(match (agg, self.sketch(id)) {
                (Aggregate::Distinct, Some(sketch)) => Some(sketch.estimate(cutoff)),
                _ => empty_value(agg),
            });
        }
        let state = self.features.unpack(&slot, None, scratch);
        let value = state.value(agg, geometry, at_ms);
        scratch.recycle(state);
        Some(value)
    }

    /// Keeps the features `keep` accepts; returns whether any was dropped.
    pub fn retain_features(&mut self, keep: impl Fn(u64) -> bool) -> bool {
        let dropped = self.features.retain(&keep);
        let mut dropped_hot = false;
        if let Some(extra) = self.extra.as_mut() {
            extra.sketches.retain(|(id, _)| keep(*id));
            let before = extra.hot.len();
            extra.hot.retain(|f| keep(f.id));
            dropped_hot = extra.hot.len() != before;
            if dropped_hot {
                extra.hot.shrink_to_fit();
            }
        }
        self.tidy_extra();
        dropped || dropped_hot
    }

    pub fn extend_horizon(&mut self, until_ms: i64) {
        self.holds_until_ms = self.holds_until_ms.max(until_ms);
    }

    pub fn has_tag(&self, tag: &str, now_ms: i64) -> bool {
        self.tags()
            .iter()
            .any(|t| &*t.name == tag && t.is_live(now_ms))
    }

    /// Sets (or replaces) a tag.
    /// Sets (or renews) a tag. A new tag on an entity that already holds [`MAX_TAGS`] is
    /// refused: returns `false`, nothing changed.
    pub fn set_tag(&mut self, tag: &str, expires_at_ms: Option<i64>) -> bool {
        let held = self.tags();
        if held.len() >= MAX_TAGS && !held.iter().any(|t| &*t.name == tag) {
            return false;
        }
        let extra = self.extra_mut();
        let mut tags: Vec<Tag> = std::mem::take(&mut extra.tags).into_vec();
        tags.retain(|t| &*t.name != tag);
        tags.push(Tag {
            name: tag.into(),
            expires_at_ms,
        });
        extra.tags = tags.into_boxed_slice();
        self.extend_horizon(expires_at_ms.unwrap_or(i64::MAX));
        true
    }

    /// Removes a tag; returns whether it was present.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        self.change_tags(|t| &*t.name != tag)
    }

    /// Drops tags expired at or before `now_ms`; returns whether any was dropped.
    pub fn purge_tags(&mut self, now_ms: i64) -> bool {
        self.change_tags(|t| t.is_live(now_ms))
    }

    /// Keeps the tags `keep` accepts; returns whether any was dropped.
    fn change_tags(&mut self, keep: impl Fn(&Tag) -> bool) -> bool {
        let Some(extra) = self.extra.as_mut() else {
            return false;
        };
        if extra.tags.iter().all(&keep) {
            return false;
        }
        let mut tags = std::mem::take(&mut extra.tags).into_vec();
        tags.retain(keep);
        extra.tags = tags.into_boxed_slice();
        self.tidy_extra();
        true
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut w = Writer { buf };
        w.u8(ENTITY_FORMAT);
        w.u8(u8::from(self.persisted));
        w.zigzag(self.holds_until_ms);
        match self.hot() {
            None => self.features.encode(&mut w, |id| self.sketch(id)),
            Some(hot) => {
                // rare (checkpoint or spill of a hot entity): pack a copy
                let mut packed = PackedFeatures::default();
                let mut scratch = Scratch::default();
                let sketches: Vec<_> = hot
                    .iter()
                    .filter_map(|f| Some((f.id, packed.store(None, f.clone(), &mut scratch)?)))
                    .collect();
                packed.encode(&mut w, |id| {
                    sketches.iter().find(|(f, _)| *f == id).map(|(_, s)| &**s)
                });
            }
        }
        let tags = self.tags();
        w.varint(tags.len() as u64);
        for t in tags {
            w.bytes(t.name.as_bytes());
            match t.expires_at_ms {
                None => w.u8(0),
                Some(at) => {
                    w.u8(1);
                    w.zigzag(at);
                }
            }
        }
    }

    /// Decodes an entity; it comes back clean (not dirty).
    pub fn decode(bytes: &[u8]) -> Result<Entity, DecodeError> {
        Entity::decode_with(bytes, &mut Vec::new())
    }

    /// [`Entity::decode`] with a reusable buffer (restore decodes millions).
    pub fn decode_with(bytes: &[u8], buf: &mut Vec<u8>) -> Result<Entity, DecodeError> {
        let mut r = Reader { rest: bytes };
        if r.u8()? != ENTITY_FORMAT {
            return Err(DecodeError("unknown entity format"));
        }
        let persisted = r.u8()? != 0;
        let holds_until_ms = r.zigzag()?;
        let (features, sketches) = PackedFeatures::decode(&mut r, buf)?;
        let n = r.len()?;
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            let name = std::str::from_utf8(r.bytes()?).map_err(|_| DecodeError("tag not utf-8"))?;
            let expires_at_ms = match r.u8()? {
                0 => None,
                1 => Some(r.zigzag()?),
                _ => return Err(DecodeError("bad tag expiry")),
            };
            tags.push(Tag {
                name: name.into(),
                expires_at_ms,
            });
        }
        if !r.rest.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        let extra = (!tags.is_empty() || !sketches.is_empty()).then(|| {
            Box::new(Extra {
                tags: tags.into_boxed_slice(),
                sketches,
                hot: Vec::new(),
            })
        });
        Ok(Entity {
            features,
            extra,
            holds_until_ms,
            last_access: 0,
            dirty: false,
            persisted,
        })
    }
}

impl Extra {
    fn accounted_bytes(&self) -> usize {
        alloc_size(size_of::<Extra>())
            + alloc_size(self.tags.len() * size_of::<Tag>())
            + self
                .tags
                .iter()
                .map(|t| alloc_size(t.name.len()))
                .sum::<usize>()
            + alloc_size(self.sketches.capacity() * size_of::<(u64, Box<SlidingHll>)>())
            + self
                .sketches
                .iter()
                .map(|(_, s)| alloc_size(s.heap_bytes()))
                .sum::<usize>()
            + alloc_size(self.hot.capacity() * size_of::<FeatureState>())
            + self
                .hot
                .iter()
                .map(|f| alloc_size(f.heap_bytes()))
                .sum::<usize>()
    }
}

/// Size of a heap block as glibc malloc hands it out (16-byte granules, 8 bytes of header,
/// 32 bytes minimum); 0 for no allocation.
pub fn alloc_size(requested: usize) -> usize {
    if requested == 0 {
        0
    } else {
        ((requested + 8 + 15) & !15).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::super::hll::DistinctState;
    use super::super::window::Buckets;
    use super::*;

    #[test]
    fn entity_values_up_to_the_inline_length_take_no_key_block() {
        use compact_str::CompactString;
        let inline = "k".repeat(INLINE_KEY);
        let long = "k".repeat(INLINE_KEY + 1);
        assert!(!CompactString::from(inline.as_str()).is_heap_allocated());
        assert!(CompactString::from(long.as_str()).is_heap_allocated());
        assert_eq!(key_heap_bytes(0), 0);
        assert_eq!(key_heap_bytes(INLINE_KEY), 0);
        assert_eq!(key_heap_bytes(INLINE_KEY + 1), alloc_size(32));
        assert_eq!(key_heap_bytes(100), alloc_size(100));
        let e = Entity::fresh();
        assert!(e.accounted_bytes(INLINE_KEY + 1) > e.accounted_bytes(INLINE_KEY));
    }

    #[test]
    fn entity_round_trips_and_rejects_damage() {
        let mut e = Entity::default();
        let g = Geometry::new(600_000, 10_000);
        let mut scratch = Scratch::default();
        let sum = Contribution::Number(12_345);
        e.update_feature(7, Aggregate::Sum, g, 1_000, sum, 10, &mut scratch);
        for item in 0..5 {
            let item = Contribution::Item(item);
            e.update_feature(8, Aggregate::Distinct, g, 1_000, item, 3, &mut scratch);
        }
        e.update_feature(9, Aggregate::Last, g, 2_000, sum, 3, &mut scratch);
        e.set_tag("trusted", Some(5_000));
        e.set_tag("vip", None);
        e.persisted = true;
        let mut buf = Vec::new();
        e.encode(&mut buf);
        let back = Entity::decode(&buf).unwrap();
        assert_eq!(back, e);
        for cut in 0..buf.len() {
            assert!(Entity::decode(&buf[..cut]).is_err(), "prefix {cut} decoded");
        }
    }

    #[test]
    fn hot_entities_switch_to_the_typed_form_and_encode_the_same() {
        let g = Geometry::new(600_000, 10_000);
        let mut e = Entity::default();
        let mut reference = [
            FeatureState::new(1, Aggregate::Count, i64::MIN),
            FeatureState::new(2, Aggregate::Distinct, i64::MIN),
        ];
        let mut scratch = Scratch::default();
        for i in 0..40i64 {
            let t = i * 7_000;
            let updates = [
                (Aggregate::Count, Contribution::Count),
                (Aggregate::Distinct, Contribution::Item(i as u64 % 37)),
            ];
            for ((agg, c), r) in updates.into_iter().zip(&mut reference) {
                let got = e.update_feature(r.id, agg, g, t, c, 4, &mut scratch);
                let want = r.update(agg, g, t, c, 4);
                assert_eq!(got, (want, r.latest_ms), "event {i}");
            }
        }
        assert!(e.hot().is_some() && e.features.heap_bytes() == 0);
        let mut buf = Vec::new();
        e.encode(&mut buf);
        let back = Entity::decode(&buf).unwrap();
        assert!(back.hot().is_none());
        for (agg, r) in [Aggregate::Count, Aggregate::Distinct]
            .into_iter()
            .zip(&reference)
        {
            for at in [0, 280_000, 500_000, 900_000] {
                let want = Some(r.value(agg, g, at));
                assert_eq!(e.feature_value(r.id, agg, g, at, &mut scratch), want);
                assert_eq!(back.feature_value(r.id, agg, g, at, &mut scratch), want);
            }
        }
        assert!(e.accounted_bytes(5) > back.accounted_bytes(5));
    }

    #[test]
    fn batched_updates_match_one_feature_at_a_time() {
        // Several features per event, one of them twice (two rule-set features with the same
        // definition), distinct past its exact limit and back, features added later, and the
        // switch to the hot form: every reported value and T must equal the typed reference.
        for (resolution_ms, hot) in [(10_000, false), (1_000, true)] {
            check_batched_updates(Geometry::new(60_000, resolution_ms), hot);
        }
    }

    fn check_batched_updates(g: Geometry, ends_hot: bool) {
        let feats = [
            (1, Aggregate::Count),
            (2, Aggregate::Sum),
            (3, Aggregate::Distinct),
            (1, Aggregate::Count),
            (4, Aggregate::Last),
            (5, Aggregate::Max),
        ];
        let mut reference: Vec<FeatureState> = Vec::new();
        let mut e = Entity::fresh();
        let mut scratch = Scratch::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut t = 0i64;
        for event in 0..400 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            t += (seed >> 40) as i64 % 900 - 100; // mostly forward, sometimes late
            let live = if event < 50 { 3 } else { feats.len() };
            let updates: Vec<FeatureUpdate> = feats[..live]
                .iter()
                .map(|&(id, agg)| FeatureUpdate {
                    id,
                    agg,
                    geometry: g,
                    window_ms: 50_000 + 10_000 * id as i64,
                })
                .collect();
            let contributions: Vec<Contribution> = feats[..live]
                .iter()
                .map(|&(_, agg)| match agg {
                    Aggregate::Count => Contribution::Count,
                    Aggregate::Distinct => Contribution::Item(seed % 9 + event / 100 * 40),
                    _ => Contribution::Number((seed >> 20) as i64 % 1_000),
                })
                .collect();
            let mut got = vec![(None, 0); updates.len()];
            e.update_features(
                t,
                Updates::new(&updates),
                &contributions,
                4,
                &mut scratch,
                |k, v, latest| got[k] = (v, latest),
            );
            for (k, (u, &c)) in updates.iter().zip(&contributions).enumerate() {
                let r = match reference.iter().position(|f| f.id == u.id) {
                    Some(at) => &mut reference[at],
                    None => {
                        reference.push(FeatureState::new(u.id, u.agg, i64::MIN));
                        reference.last_mut().unwrap()
                    }
                };
                let want = r.update(u.agg, u.geometry, t, c, 4);
                assert_eq!(got[k], (want, r.latest_ms), "event {event}, update {k}");
            }
            // the horizon: the furthest T + window of any feature held
            let horizon = reference
                .iter()
                .map(|r| r.latest_ms + 50_000 + 10_000 * r.id as i64)
                .max();
            assert_eq!(Some(e.holds_until_ms), horizon, "event {event}");
        }
        assert_eq!(e.hot().is_some(), ends_hot);
        let mut seen_sketch = false;
        for (id, agg) in feats {
            let r = reference.iter().find(|f| f.id == id).unwrap();
            seen_sketch |= matches!(r.buckets, Buckets::Distinct(DistinctState::Sketch(_)));
            let want = Some(r.value(agg, g, t + 30_000));
            assert_eq!(e.feature_value(id, agg, g, t + 30_000, &mut scratch), want);
        }
        assert!(seen_sketch || ends_hot, "distinct never became a sketch");
    }

    #[test]
    fn tags_expire_in_event_time() {
        let mut e = Entity::default();
        e.set_tag("trusted", Some(1_000));
        assert!(e.has_tag("trusted", 999));
        assert!(!e.has_tag("trusted", 1_000));
        assert!(!e.purge_tags(999));
        assert!(e.purge_tags(1_000));
        assert!(e.tags().is_empty());
        assert!(e.extra.is_none());
        e.set_tag("a", None);
        assert!(e.remove_tag("a"));
        assert!(!e.has_tag("a", 0));
    }
}
