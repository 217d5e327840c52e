//! `FeaturePlan`: a rule set's features grouped by the entity kind they are kept per, with each
//! feature's update precomputed once per rule set instead of once per event.

use super::entity::{FeatureUpdate, Updates};
use super::window::Geometry;
use super::FeatureSpec;
use crate::event::Field;

/// The features of a rule set by entity kind, in order of first appearance; within a kind, in
/// spec order. [`super::TagStore::update_planned`] updates one entity per group.
#[derive(Debug, Clone, Default)]
pub struct FeaturePlan {
    pub(super) groups: Vec<PlanGroup>,
    /// `(i, first)`: spec `i` has the same definition (id) as the earlier spec `first`, so it
    /// is kept once, under `first`, and reads its value (an event must not count twice).
    pub(super) aliases: Vec<(usize, usize)>,
    len: usize,
}

/// The features of one entity kind.
#[derive(Debug, Clone)]
pub(super) struct PlanGroup {
    pub kind: Field,
    /// The spec index of each feature.
    pub specs: Vec<usize>,
    /// The update of each feature (an event adds its contribution).
    pub updates: Vec<FeatureUpdate>,
    /// The longest window of `updates`.
    longest_window_ms: i64,
}

impl PlanGroup {
    /// What an event updates in the group's entity.
    pub fn updates(&self) -> Updates<'_> {
        Updates {
            features: &self.updates,
            longest_window_ms: self.longest_window_ms,
        }
    }
}

impl FeaturePlan {
    pub fn new(specs: &[FeatureSpec]) -> FeaturePlan {
        let mut groups: Vec<PlanGroup> = Vec::new();
        let mut aliases = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(first) = specs[..i].iter().position(|s| s.id == spec.id) {
                aliases.push((i, first));
                continue;
            }
            let update = FeatureUpdate {
                id: spec.id,
                agg: spec.agg,
                geometry: Geometry::new(spec.window_ms, spec.resolution_ms),
                window_ms: i64::try_from(spec.window_ms).unwrap_or(i64::MAX),
            };
            let at = match groups.iter().position(|g| g.kind == spec.by) {
                Some(at) => at,
                None => {
                    groups.push(PlanGroup {
                        kind: spec.by,
                        specs: Vec::new(),
                        updates: Vec::new(),
                        longest_window_ms: 0,
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[at];
            group.specs.push(i);
            group.longest_window_ms = group.longest_window_ms.max(update.window_ms);
            group.updates.push(update);
        }
        FeaturePlan {
            groups,
            aliases,
            len: specs.len(),
        }
    }

    /// The number of features (the length of the value list an update writes).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
