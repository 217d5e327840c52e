//! `/readyz` of the service: ready while the pipeline is (partitions assigned, a broker up),
//! with the broker, partition and rule-set state in the body.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::pipeline::PipelineStatus;
use crate::reload::ReloadStatus;
use crate::telemetry::Readiness;

/// The readiness the HTTP endpoint reports.
pub(super) struct ServiceReadiness {
    pub(super) pipeline: Arc<PipelineStatus>,
    pub(super) reload: Arc<Mutex<ReloadStatus>>,
}

impl Readiness for ServiceReadiness {
    fn readiness(&self) -> (bool, serde_json::Value) {
        let ready = self.pipeline.is_ready();
        let details = serde_json::json!({
            "broker_reachable": self.pipeline.is_broker_reachable(),
            "assigned_partitions": self.pipeline.assigned_partitions().len(),
            "rules": &*self.reload.lock(),
        });
        (ready, details)
    }
}
