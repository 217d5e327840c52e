//! All window features of one entity packed into a single heap block of fixed-width records.
//!
//! Layout, per feature, in insertion order: id u64, T (`latest_ms`) i64, storage kind u8,
//! record count u32 (a 21-byte header), then the records, little-endian, unpadded:
//!
//! | kind | storage | record | bytes |
//! |---|---|---|---|
//! | 0 | count | index i64, count u32 | 12 |
//! | 1 | sum/avg | index i64, count u32, sum i64 | 20 |
//! | 2 | min/max | index i64, value i64 | 16 |
//! | 3 | last | index i64, event time i64, value i64 | 24 |
//! | 4 | distinct, exact | item hash u64, newest bucket i64 | 16 |
//! | 5 | distinct, sketch | none: the sketch lives beside the block (`Entity`'s extras) | 0 |
//!
//! An event edits a feature's records in place ([`update_packed`]); only sketches and a
//! `distinct` outgrowing its exact limit go through the typed form ([`FeatureState`], vectors
//! recycled through [`Scratch`]). The encoded (checkpoint) form is format 1, unchanged.

use super::codec::{DecodeError, Reader, Writer};
use super::hll::{DistinctState, SeenItem, SlidingHll};
use super::window::{
    Buckets, Contribution, CountBucket, ExtremeBucket, FeatureState, LastBucket, SumBucket,
};
use crate::event::Aggregate;

mod edit;

pub use edit::{update_packed, update_typed};

const HEADER: usize = 21;
/// Storage kind of a `distinct` feature whose sketch is kept beside the block.
pub const KIND_SKETCH: u8 = 5;
/// Record width of each storage kind.
const WIDTH: [usize; 6] = [12, 20, 16, 24, 16, 0];

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The storage kind of aggregate `agg` (`distinct`: exact items).
fn kind_of(agg: Aggregate) -> u8 {
    match agg {
        Aggregate::Count => 0,
        Aggregate::Sum | Aggregate::Avg => 1,
        Aggregate::Min | Aggregate::Max => 2,
        Aggregate::Last => 3,
        Aggregate::Distinct => 4,
    }
}

/// Distinct sketches of an entity, by feature id.
pub type Sketches = Vec<(u64, Box<SlidingHll>)>;

/// Where one feature sits in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub at: usize,
    pub end: usize,
    pub id: u64,
    pub kind: u8,
    pub records: usize,
}

/// Vectors recycled between unpack and pack, so the update path does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    count: Vec<CountBucket>,
    sum: Vec<SumBucket>,
    extreme: Vec<ExtremeBucket>,
    last: Vec<LastBucket>,
    items: Vec<SeenItem>,
    record: Vec<u8>,
    /// The block of the entity being updated (`Entity::update_features`).
    pub(super) block: Vec<u8>,
    /// An event's contribution to each feature of one entity (filled by the tag store).
    pub(super) contributions: Vec<Contribution>,
}

/// The packed features of one entity (16 bytes inline, one exact-size heap block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedFeatures {
    bytes: Box<[u8]>,
}

impl PackedFeatures {
    /// Heap bytes requested for the block.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The features, in order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        let b = &self.bytes;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at + HEADER > b.len() {
                return None;
            }
            let kind = b[at + 16];
            let records = u32_at(b, at + 17) as usize;
            let end = at + HEADER + records * WIDTH[usize::from(kind)];
            let slot = Slot {
                at,
                end,
                id: u64_at(b, at),
                kind,
                records,
            };
            at = end;
            Some(slot)
        })
    }

    pub fn find(&self, id: u64) -> Option<Slot> {
        self.slots().find(|s| s.id == id)
    }

    /// Appends the header of an empty feature (T = `i64::MIN`, no records), as a new
    /// [`FeatureState`] packs.
    pub fn push_empty(block: &mut Vec<u8>, id: u64, agg: Aggregate) {
        block.reserve_exact(HEADER);
        block.extend_from_slice(&id.to_le_bytes());
        block.extend_from_slice(&i64::MIN.to_le_bytes());
        block.push(kind_of(agg));
        block.extend_from_slice(&0u32.to_le_bytes());
    }

    /// The slot of the feature whose header starts `feature` (`at` = 0).
    pub fn slot_of(feature: &[u8]) -> Slot {
        let kind = feature[16];
        let records = u32_at(feature, 17) as usize;
        Slot {
            at: 0,
            end: HEADER + records * WIDTH[usize::from(kind)],
            id: u64_at(feature, 0),
            kind,
            records,
        }
    }

    /// The id of the feature whose header starts at `block[at..]`; `None` at the block's end.
    pub fn id_at(block: &[u8], at: usize) -> Option<u64> {
        (at + HEADER <= block.len()).then(|| u64_at(block, at))
    }

    /// Where the header of feature `id` starts in `block`.
    pub fn position(block: &[u8], id: u64) -> Option<usize> {
        let mut at = 0;
        while at + HEADER <= block.len() {
            let slot = PackedFeatures::slot_of(&block[at..]);
            if slot.id == id {
                return Some(at);
            }
            at += slot.end;
        }
        None
    }

    /// Lends the heap block out to be edited with [`update_packed`] (no copy: the allocation
    /// becomes the vector's buffer); [`PackedFeatures::return_block`] takes it back.
    pub fn lend_block(&mut self) -> Vec<u8> {
        Vec::from(std::mem::take(&mut self.bytes))
    }

    /// Takes back an edited block: without a copy when its size did not change or it grew by
    /// exactly what the edits reserved, else reallocated to its exact size.
    pub fn return_block(&mut self, block: Vec<u8>) {
        self.bytes = block.into_boxed_slice();
    }

    /// Replaces the block with a copy of `block` (one exact-size allocation).
    pub fn set_block(&mut self, block: &[u8]) {
        self.bytes = Box::from(block);
    }

    /// T of the feature at `slot`.
    pub fn latest_ms(&self, slot: &Slot) -> i64 {
        i64_at(&self.bytes, slot.at + 8)
    }

    pub fn len(&self) -> usize {
        self.slots().count()
    }

    /// The typed form of the feature at `slot`; `sketch` is its sketch when `slot.kind` is 5.
    /// Hand it back with [`PackedFeatures::store`] or [`Scratch::recycle`].
    pub fn unpack(
        &self,
        slot: &Slot,
        sketch: Option<Box<SlidingHll>>,
        scratch: &mut Scratch,
    ) -> FeatureState {
        unpack(&self.bytes, slot, sketch, scratch)
    }

    /// Appends the packed form of `state` to `out` and hands its vectors back to `scratch`;
    /// returns its sketch, which the caller keeps beside the block.
    pub fn pack(
        mut state: FeatureState,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Option<Box<SlidingHll>> {
        let sketch = match &mut state.buckets {
            Buckets::Distinct(d @ DistinctState::Sketch(_)) => {
                match std::mem::replace(d, DistinctState::Exact(Vec::new())) {
                    DistinctState::Sketch(sketch) => Some(sketch),
                    DistinctState::Exact(_) => None,
                }
            }
            _ => None,
        };
        pack_one(&state, sketch.is_some(), out);
        scratch.recycle(state);
        sketch
    }

    /// Packs `state` back in place of `slot` (or appends it when `slot` is `None`); returns its
    /// sketch, which the caller keeps beside the block.
    pub fn store(
        &mut self,
        slot: Option<&Slot>,
        state: FeatureState,
        scratch: &mut Scratch,
    ) -> Option<Box<SlidingHll>> {
        let mut record = std::mem::take(&mut scratch.record);
        record.clear();
        let sketch = PackedFeatures::pack(state, &mut record, scratch);
        let (at, end) = slot.map_or((self.bytes.len(), self.bytes.len()), |s| (s.at, s.end));
        if end - at == record.len() {
            self.bytes[at..end].copy_from_slice(&record);
        } else {
            let mut bytes = Vec::with_capacity(self.bytes.len() - (end - at) + record.len());
            bytes.extend_from_slice(&self.bytes[..at]);
            bytes.extend_from_slice(&record);
            bytes.extend_from_slice(&self.bytes[end..]);
            self.bytes = bytes.into_boxed_slice();
        }
        scratch.record = record;
        sketch
    }

    /// Keeps the features `keep` accepts; returns whether any was dropped.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) -> bool {
        let mut bytes = Vec::new();
        let mut dropped = false;
        for slot in self.slots() {
            if keep(slot.id) {
                bytes.extend_from_slice(&self.bytes[slot.at..slot.end]);
            } else {
                dropped = true;
            }
        }
        if dropped {
            self.bytes = bytes.into_boxed_slice();
        }
        dropped
    }

    /// Appends the features in checkpoint format 1 (the sketch of a kind-5 feature comes from
    /// `sketch_of`).
    pub fn encode<'s>(
        &self,
        w: &mut Writer<'_>,
        sketch_of: impl Fn(u64) -> Option<&'s SlidingHll>,
    ) {
        let b = &self.bytes;
        w.varint(self.len() as u64);
        for slot in self.slots() {
            w.u64_fixed(slot.id);
            w.zigzag(i64_at(b, slot.at + 8));
            w.u8(slot.kind);
            if slot.kind == KIND_SKETCH {
                match sketch_of(slot.id) {
                    Some(sketch) => sketch.encode(w),
                    None => SlidingHll::new().encode(w),
                }
                continue;
            }
            w.varint(slot.records as u64);
            let width = WIDTH[usize::from(slot.kind)];
            for r in (0..slot.records).map(|i| slot.at + HEADER + i * width) {
                match slot.kind {
                    0 => {
                        w.zigzag(i64_at(b, r));
                        w.varint(u64::from(u32_at(b, r + 8)));
                    }
                    1 => {
                        w.zigzag(i64_at(b, r));
                        w.varint(u64::from(u32_at(b, r + 8)));
                        w.zigzag(i64_at(b, r + 12));
                    }
                    2 => {
                        w.zigzag(i64_at(b, r));
                        w.zigzag(i64_at(b, r + 8));
                    }
                    3 => {
                        w.zigzag(i64_at(b, r));
                        w.zigzag(i64_at(b, r + 8));
                        w.zigzag(i64_at(b, r + 16));
                    }
                    _ => {
                        w.u64_fixed(u64_at(b, r));
                        w.zigzag(i64_at(b, r + 8));
                    }
                }
            }
        }
    }

    /// Decodes the features of checkpoint format 1 straight into a block (one allocation; `out`
    /// is a reusable buffer); sketches are returned with their feature ids.
    pub fn decode(
        r: &mut Reader<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(PackedFeatures, Sketches), DecodeError> {
        out.clear();
        let mut sketches = Vec::new();
        let count = |r: &mut Reader<'_>| -> Result<u32, DecodeError> {
            u32::try_from(r.varint()?).map_err(|_| DecodeError("bucket count too large"))
        };
        let n = r.len()?;
        for _ in 0..n {
            let id = r.u64_fixed()?;
            let latest_ms = r.zigzag()?;
            let kind = r.u8()?;
            if usize::from(kind) >= WIDTH.len() {
                return Err(DecodeError("unknown bucket kind"));
            }
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&latest_ms.to_le_bytes());
            out.push(kind);
            if kind == KIND_SKETCH {
                out.extend_from_slice(&0u32.to_le_bytes());
                sketches.push((id, Box::new(SlidingHll::decode(r)?)));
                continue;
            }
            let records = r.len()?;
            let records32 = u32::try_from(records).map_err(|_| DecodeError("too many buckets"))?;
            out.extend_from_slice(&records32.to_le_bytes());
            for _ in 0..records {
                match kind {
                    0 => {
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                        out.extend_from_slice(&count(r)?.to_le_bytes());
                    }
                    1 => {
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                        out.extend_from_slice(&count(r)?.to_le_bytes());
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                    }
                    2 => {
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                    }
                    3 => {
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                    }
                    _ => {
                        out.extend_from_slice(&r.u64_fixed()?.to_le_bytes());
                        out.extend_from_slice(&r.zigzag()?.to_le_bytes());
                    }
                }
            }
        }
        Ok((
            PackedFeatures {
                bytes: Box::from(out.as_slice()),
            },
            sketches,
        ))
    }
}

/// The typed form of the feature at `slot` of block `b` (see [`PackedFeatures::unpack`]).
pub fn unpack(
    b: &[u8],
    slot: &Slot,
    sketch: Option<Box<SlidingHll>>,
    scratch: &mut Scratch,
) -> FeatureState {
    let latest_ms = i64_at(b, slot.at + 8);
    let width = WIDTH[usize::from(slot.kind)];
    let records = (0..slot.records).map(|i| slot.at + HEADER + i * width);
    let buckets = match slot.kind {
        0 => {
            let mut l = std::mem::take(&mut scratch.count);
            l.extend(records.map(|r| CountBucket {
                index: i64_at(b, r),
                count: u32_at(b, r + 8),
            }));
            Buckets::Count(l)
        }
        1 => {
            let mut l = std::mem::take(&mut scratch.sum);
            l.extend(records.map(|r| SumBucket {
                index: i64_at(b, r),
                count: u32_at(b, r + 8),
                sum: i64_at(b, r + 12),
            }));
            Buckets::Sum(l)
        }
        2 => {
            let mut l = std::mem::take(&mut scratch.extreme);
            l.extend(records.map(|r| ExtremeBucket {
                index: i64_at(b, r),
                value: i64_at(b, r + 8),
            }));
            Buckets::Extreme(l)
        }
        3 => {
            let mut l = std::mem::take(&mut scratch.last);
            l.extend(records.map(|r| LastBucket {
                index: i64_at(b, r),
                time_ms: i64_at(b, r + 8),
                value: i64_at(b, r + 16),
            }));
            Buckets::Last(l)
        }
        KIND_SKETCH => Buckets::Distinct(match sketch {
            Some(sketch) => DistinctState::Sketch(sketch),
            None => DistinctState::Exact(Vec::new()),
        }),
        _ => {
            let mut l = std::mem::take(&mut scratch.items);
            l.extend(records.map(|r| SeenItem {
                hash: u64_at(b, r),
                bucket: i64_at(b, r + 8),
            }));
            Buckets::Distinct(DistinctState::Exact(l))
        }
    };
    FeatureState {
        id: slot.id,
        latest_ms,
        buckets,
    }
}

/// Appends the packed form of `state` (as a sketch slot when `sketch`: the sketch itself is kept
/// beside the block).
fn pack_one(state: &FeatureState, sketch: bool, out: &mut Vec<u8>) {
    let header = |out: &mut Vec<u8>, kind: u8, records: usize| {
        out.extend_from_slice(&state.id.to_le_bytes());
        out.extend_from_slice(&state.latest_ms.to_le_bytes());
        out.push(kind);
        // a list of 2^32 buckets would take at least 48 GiB: the count always fits
        out.extend_from_slice(&(records as u32).to_le_bytes());
    };
    if sketch {
        return header(out, KIND_SKETCH, 0);
    }
    match &state.buckets {
        Buckets::Count(l) => {
            header(out, 0, l.len());
            for b in l {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.count.to_le_bytes());
            }
        }
        Buckets::Sum(l) => {
            header(out, 1, l.len());
            for b in l {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.count.to_le_bytes());
                out.extend_from_slice(&b.sum.to_le_bytes());
            }
        }
        Buckets::Extreme(l) => {
            header(out, 2, l.len());
            for b in l {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.value.to_le_bytes());
            }
        }
        Buckets::Last(l) => {
            header(out, 3, l.len());
            for b in l {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.time_ms.to_le_bytes());
                out.extend_from_slice(&b.value.to_le_bytes());
            }
        }
        Buckets::Distinct(DistinctState::Exact(items)) => {
            header(out, 4, items.len());
            for i in items {
                out.extend_from_slice(&i.hash.to_le_bytes());
                out.extend_from_slice(&i.bucket.to_le_bytes());
            }
        }
        Buckets::Distinct(DistinctState::Sketch(_)) => header(out, KIND_SKETCH, 0),
    }
}

impl Scratch {
    /// Takes back the vectors of a typed feature for the next unpack.
    pub fn recycle(&mut self, state: FeatureState) {
        fn keep<T>(mut v: Vec<T>, slot: &mut Vec<T>) {
            v.clear();
            if v.capacity() > slot.capacity() {
                *slot = v;
            }
        }
        match state.buckets {
            Buckets::Count(l) => keep(l, &mut self.count),
            Buckets::Sum(l) => keep(l, &mut self.sum),
            Buckets::Extreme(l) => keep(l, &mut self.extreme),
            Buckets::Last(l) => keep(l, &mut self.last),
            Buckets::Distinct(DistinctState::Exact(l)) => keep(l, &mut self.items),
            Buckets::Distinct(DistinctState::Sketch(_)) => {}
        }
    }
}
