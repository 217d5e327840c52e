//! `/readyz` of the service: the active is ready while the pipeline is (partitions assigned, a
//! broker up), a standby while it replays; role, lag, broker, partitions and rules in the body.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::ha::{HaStatus, Role};
use crate::pipeline::PipelineStatus;
use crate::reload::ReloadStatus;
use crate::telemetry::Readiness;

/// The readiness the HTTP endpoint reports.
pub(super) struct ServiceReadiness {
    pub(super) pipeline: Arc<PipelineStatus>,
    pub(super) reload: Arc<Mutex<ReloadStatus>>,
    pub(super) ha: Arc<HaStatus>,
}

impl Readiness for ServiceReadiness {
    /// Active: ready while the pipeline consumes. Standby: ready while it replays (it is
    /// healthy and able to take over); `role` and `standby_lag` tell them apart.
    fn readiness(&self) -> (bool, serde_json::Value) {
        let role = self.ha.role();
        let (ready, reachable) = match role {
            Role::Active => (
                self.pipeline.is_ready(),
                self.pipeline.is_broker_reachable(),
            ),
            Role::Standby => (self.ha.standby_reachable(), self.ha.standby_reachable()),
        };
        let details = serde_json::json!({
            "role": role.name(),
            "instance_id": &self.ha.instance_id,
            "standby_lag": self.ha.standby_lag(),
            "broker_reachable": reachable,
            "assigned_partitions": self.pipeline.assigned_partitions().len(),
            "rules": &*self.reload.lock(),
        });
        (ready, details)
    }
}
