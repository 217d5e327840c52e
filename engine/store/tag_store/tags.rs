//! Tags on entities: reads at an event's time and updates from rules and the entity-tags topic.

use super::{entity_hash, TagStore};
use crate::event::{Field, TagUpdate};
use crate::store::telemetry;

impl TagStore {
    /// Whether the entity carries the tag at event time `now_ms`.
    pub fn has_tag(&self, entity: Field, value: &str, tag: &str, now_ms: i64) -> bool {
        let _gate = self.gate.read();
        let hash = entity_hash(value);
        let mut shard = self.lock(self.shard_of(hash));
        let found = self
            .entity_mut(&mut shard, entity, value, hash, false)
            .is_some_and(|e| e.has_tag(tag, now_ms));
        self.keep_within_budget(&mut shard);
        found
    }

    /// Calls `each` with the name of every tag the entity carries at event time `now_ms`
    /// (for callers asking about several tags of one entity: one lookup for all).
    pub fn for_each_tag(
        &self,
        entity: Field,
        value: &str,
        now_ms: i64,
        mut each: impl FnMut(&str),
    ) {
        let _gate = self.gate.read();
        let hash = entity_hash(value);
        let mut shard = self.lock(self.shard_of(hash));
        if let Some(e) = self.entity_mut(&mut shard, entity, value, hash, false) {
            for tag in e.tags().iter().filter(|t| t.is_live(now_ms)) {
                each(&tag.name);
            }
        }
        self.keep_within_budget(&mut shard);
    }

    /// Applies a tag update; `false` when it was refused because the entity already holds
    /// [`MAX_TAGS`](crate::store::MAX_TAGS) tags (said in the log and metrics).
    pub fn apply_tag(&self, update: &TagUpdate) -> bool {
        let _gate = self.gate.read();
        let hash = entity_hash(&update.value);
        let mut shard = self.lock(self.shard_of(hash));
        let create = !update.remove;
        let mut applied = true;
        if let Some(entity) =
            self.entity_mut(&mut shard, update.entity, &update.value, hash, create)
        {
            let before = entity.accounted_bytes(update.value.len());
            if update.remove {
                entity.dirty |= entity.remove_tag(&update.tag);
            } else if entity.set_tag(&update.tag, update.expires_at_ms) {
                entity.dirty = true;
            } else {
                applied = false;
                telemetry::tag_limit_reached(update.entity.name(), &update.tag);
            }
            let after = entity.accounted_bytes(update.value.len());
            shard.bytes = (shard.bytes + after as u64).saturating_sub(before as u64);
        }
        self.keep_within_budget(&mut shard);
        applied
    }
}
