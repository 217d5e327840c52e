//! What rules read while an event is decided: the feature values the store just computed and
//! the tags of the event's entities (each entity's read once per event).

use std::cell::RefCell;

use crate::event::{Field, PaymentEvent};
use crate::rules::EvalContext;
use crate::store::TagStore;

/// The live tags of the event's own entities at the event's time, by kind, each read once per
/// event: rules ask about several tags of the same entity.
#[derive(Default)]
pub(super) struct EntityTags {
    /// Bit `kind as usize` set: `names[kind as usize]` holds that entity's tags.
    known: u32,
    /// The bits of `known` whose entity has tags (most have none).
    tagged: u32,
    names: [Vec<Box<str>>; Field::ALL.len()],
}

impl EntityTags {
    pub(super) fn clear(&mut self) {
        let mut tagged = self.tagged;
        while tagged != 0 {
            self.names[tagged.trailing_zeros() as usize].clear();
            tagged &= tagged - 1;
        }
        self.known = 0;
        self.tagged = 0;
    }

    pub(super) fn set<'n>(&mut self, kind: Field, names: impl Iterator<Item = &'n str>) {
        self.fill(kind, |held| held.extend(names.map(Box::from)));
    }

    /// Records the tags `fill` pushes as those of the entity of `kind`; returns them.
    fn fill(&mut self, kind: Field, fill: impl FnOnce(&mut Vec<Box<str>>)) -> &[Box<str>] {
        let held = &mut self.names[kind as usize];
        held.clear();
        fill(held);
        self.known |= 1 << kind as u32;
        if !held.is_empty() {
            self.tagged |= 1 << kind as u32;
        }
        held
    }

    pub(super) fn get(&self, kind: Field) -> Option<&[Box<str>]> {
        (self.known & (1 << kind as u32) != 0).then(|| self.names[kind as usize].as_slice())
    }
}

/// Reads features from the values the store just computed and tags from the store.
pub(super) struct StoreContext<'a> {
    event: &'a PaymentEvent,
    values: &'a [Option<f64>],
    store: &'a TagStore,
    /// Tags of the event's entities: those the feature update saw, and those read since.
    tags: RefCell<&'a mut EntityTags>,
}

impl<'a> StoreContext<'a> {
    pub(super) fn new(
        event: &'a PaymentEvent,
        values: &'a [Option<f64>],
        store: &'a TagStore,
        tags: &'a mut EntityTags,
    ) -> StoreContext<'a> {
        StoreContext {
            event,
            values,
            store,
            tags: RefCell::new(tags),
        }
    }
}

impl EvalContext for StoreContext<'_> {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.values.get(slot).copied().flatten()
    }

    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        // the cache holds the event's own entities (the same memory, so the same value)
        let is_events = self
            .event
            .str_field(entity)
            .is_some_and(|v| std::ptr::eq(v, value));
        if is_events {
            self.has_event_tag(self.event, entity, tag)
        } else {
            self.store
                .has_tag(entity, value, tag, self.event.event_time_ms)
        }
    }

    fn has_event_tag(&self, event: &PaymentEvent, entity: Field, tag: &str) -> bool {
        if !std::ptr::eq(event, self.event) {
            return event
                .str_field(entity)
                .is_some_and(|v| self.store.has_tag(entity, v, tag, event.event_time_ms));
        }
        let mut cache = self.tags.borrow_mut();
        if let Some(names) = cache.get(entity) {
            return names.iter().any(|n| &**n == tag);
        }
        let Some(value) = event.str_field(entity) else {
            return false;
        };
        let now_ms = event.event_time_ms;
        let names = cache.fill(entity, |held| {
            self.store
                .for_each_tag(entity, value, now_ms, |name| held.push(name.into()))
        });
        names.iter().any(|n| &**n == tag)
    }
}
