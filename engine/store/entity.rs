//! One entity's state (features, tags, expiry horizon), its byte accounting and its encoding.

use super::codec::{DecodeError, Reader, Writer};
use super::window::FeatureState;
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

/// Everything the store keeps about one (kind, value) entity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entity {
    pub features: Vec<FeatureState>,
    /// Tags, rarely changed, so a boxed slice (16 bytes, no allocation when empty).
    pub tags: Box<[Tag]>,
    /// Event time after which every window is empty and every tag expired.
    pub holds_until_ms: i64,
    /// Shard-local access stamp, for picking the coldest entities to spill.
    pub last_access: u32,
    /// Changed since the last checkpoint.
    pub dirty: bool,
    /// A copy exists in the checkpoint column family.
    pub persisted: bool,
}

/// Fixed per-entity overhead of the shard map besides the entity itself: the key box, one
/// control byte and the slack of a hash table kept at most 7/8 full (about 1/4 on average).
pub const MAP_ENTRY_OVERHEAD: usize = size_of::<Box<str>>() + 1;

impl Entity {
    /// Approximate bytes this entity and its key occupy in memory, allocator rounding included.
    pub fn accounted_bytes(&self, key_len: usize) -> usize {
        let entry = size_of::<Entity>() + MAP_ENTRY_OVERHEAD;
        let entry = entry + entry / 4;
        let features = alloc_size(self.features.capacity() * size_of::<FeatureState>())
            + self
                .features
                .iter()
                .map(|f| alloc_size(f.heap_bytes()))
                .sum::<usize>();
        let tags = alloc_size(self.tags.len() * size_of::<Tag>())
            + self
                .tags
                .iter()
                .map(|t| alloc_size(t.name.len()))
                .sum::<usize>();
        entry + alloc_size(key_len) + features + tags
    }

    pub fn feature(&self, id: u64) -> Option<&FeatureState> {
        self.features.iter().find(|f| f.id == id)
    }

    pub fn extend_horizon(&mut self, until_ms: i64) {
        self.holds_until_ms = self.holds_until_ms.max(until_ms);
    }

    pub fn has_tag(&self, tag: &str, now_ms: i64) -> bool {
        self.tags.iter().any(|t| &*t.name == tag && t.is_live(now_ms))
    }

    /// Sets (or replaces) a tag.
    pub fn set_tag(&mut self, tag: &str, expires_at_ms: Option<i64>) {
        let mut tags: Vec<Tag> = std::mem::take(&mut self.tags).into_vec();
        tags.retain(|t| &*t.name != tag);
        tags.push(Tag {
            name: tag.into(),
            expires_at_ms,
        });
        self.tags = tags.into_boxed_slice();
        self.extend_horizon(expires_at_ms.unwrap_or(i64::MAX));
    }

    /// Removes a tag; returns whether it was present.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        if !self.tags.iter().any(|t| &*t.name == tag) {
            return false;
        }
        let mut tags = std::mem::take(&mut self.tags).into_vec();
        tags.retain(|t| &*t.name != tag);
        self.tags = tags.into_boxed_slice();
        true
    }

    /// Drops tags expired at or before `now_ms`; returns whether any was dropped.
    pub fn purge_tags(&mut self, now_ms: i64) -> bool {
        if self.tags.iter().all(|t| t.is_live(now_ms)) {
            return false;
        }
        let mut tags = std::mem::take(&mut self.tags).into_vec();
        tags.retain(|t| t.is_live(now_ms));
        self.tags = tags.into_boxed_slice();
        true
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut w = Writer { buf };
        w.u8(ENTITY_FORMAT);
        w.u8(u8::from(self.persisted));
        w.zigzag(self.holds_until_ms);
        w.varint(self.features.len() as u64);
        for f in &self.features {
            f.encode(&mut w);
        }
        w.varint(self.tags.len() as u64);
        for t in self.tags.iter() {
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
        let mut r = Reader { rest: bytes };
        if r.u8()? != ENTITY_FORMAT {
            return Err(DecodeError("unknown entity format"));
        }
        let persisted = r.u8()? != 0;
        let holds_until_ms = r.zigzag()?;
        let n = r.len()?;
        let mut features = Vec::with_capacity(n);
        for _ in 0..n {
            features.push(FeatureState::decode(&mut r)?);
        }
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
        Ok(Entity {
            features,
            tags: tags.into_boxed_slice(),
            holds_until_ms,
            last_access: 0,
            dirty: false,
            persisted,
        })
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
    use super::*;
    use crate::event::Aggregate;
    use crate::store::window::{Contribution, Geometry};

    #[test]
    fn entity_round_trips_and_rejects_damage() {
        let mut e = Entity::default();
        let g = Geometry::new(600_000, 10_000);
        let mut f = FeatureState::new(7, Aggregate::Sum, i64::MIN);
        f.update(Aggregate::Sum, g, 1_000, Contribution::Number(12_345), 10);
        e.features.push(f);
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
    fn tags_expire_in_event_time() {
        let mut e = Entity::default();
        e.set_tag("trusted", Some(1_000));
        assert!(e.has_tag("trusted", 999));
        assert!(!e.has_tag("trusted", 1_000));
        assert!(!e.purge_tags(999));
        assert!(e.purge_tags(1_000));
        assert!(e.tags.is_empty());
        e.set_tag("a", None);
        assert!(e.remove_tag("a"));
        assert!(!e.has_tag("a", 0));
    }
}
