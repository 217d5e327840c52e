//! `FeaturePlan`: a rule set's features grouped by the entity kind they are kept per, with each
//! feature's update precomputed once per rule set instead of once per event.

use super::entity::FeatureUpdate;
use super::window::{Contribution, Geometry};
use super::FeatureSpec;
use crate::event::Field;

/// The features of a rule set by entity kind, in order of first appearance; within a kind, in
/// spec order. [`super::TagStore::update_planned`] updates one entity per group.
#[derive(Debug, Clone, Default)]
pub struct FeaturePlan {
    /// `(kind, [(spec index, update without its contribution)])`.
    pub(super) groups: Vec<(Field, Vec<(usize, FeatureUpdate)>)>,
    len: usize,
}

impl FeaturePlan {
    pub fn new(specs: &[FeatureSpec]) -> FeaturePlan {
        let mut groups: Vec<(Field, Vec<(usize, FeatureUpdate)>)> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let update = FeatureUpdate {
                id: spec.id,
                agg: spec.agg,
                geometry: Geometry::new(spec.window_ms, spec.resolution_ms),
                window_ms: i64::try_from(spec.window_ms).unwrap_or(i64::MAX),
                contribution: Contribution::Nothing,
            };
            match groups.iter_mut().find(|(kind, _)| *kind == spec.by) {
                Some((_, group)) => group.push((i, update)),
                None => groups.push((spec.by, vec![(i, update)])),
            }
        }
        FeaturePlan {
            groups,
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
