//! Live sequence-rule timers: timers of removed rules cancelled on a swap, and fired timers
//! turned into timeout decisions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::decider::{Engine, SHADOW_TIMER_PREFIX};
use crate::ha::{self, DeliveredTimeouts};
use crate::pipeline::{Delivered, TimeoutDecision};
use crate::reload;
use crate::rules::RuleSet;
use crate::timer::{FiredReceiver, TimerService};

/// Cancels the armed timers of sequence rules the new set no longer has.
pub(super) fn cancel_removed_sequences(
    timers: &TimerService,
    old: &RuleSet,
    new: &RuleSet,
    kind: reload::SetKind,
) {
    for seq in old.sequences() {
        if !new.sequences().iter().any(|s| s.rule == seq.rule) {
            let cancelled = match kind {
                reload::SetKind::Live => timers.cancel_sequence(&seq.rule),
                reload::SetKind::Shadow => {
                    timers.cancel_sequence(&format!("{SHADOW_TIMER_PREFIX}{}", seq.rule))
                }
            };
            metrics::counter!("veto_timers_dropped_on_swap_total").increment(cancelled as u64);
            tracing::info!(rule = %seq.rule, cancelled, "sequence rule removed, its timers are cancelled");
        }
    }
}

/// Turns fired timers into timeout decisions for the pipeline to publish.
pub(super) async fn forward_timeouts(
    mut fired: FiredReceiver,
    engine: Arc<Engine>,
    timers: Arc<TimerService>,
    out: mpsc::Sender<TimeoutDecision>,
    handled: Arc<AtomicU64>,
    delivered: Arc<DeliveredTimeouts>,
) {
    while let Some(fired) = fired.recv().await {
        let (id, payload) = (fired.id, fired.payload);
        if delivered.take(&payload.rule, payload.event_id()) {
            // An earlier active instance published this timeout already.
            ha::timeout_already_delivered();
            timers.acknowledge(id);
            handled.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        let Some(decision) = engine.timeout_decision(
            &payload.rule,
            payload.event_id().to_owned(),
            payload.txn_id().map(str::to_owned),
            fired.fired_at_ms,
        ) else {
            // The sequence rule was removed by a swap: nothing to publish.
            timers.acknowledge(id);
            handled.fetch_add(1, Ordering::AcqRel);
            continue;
        };
        let timers = Arc::clone(&timers);
        let timeout = TimeoutDecision {
            decision,
            delivered: Some(Delivered::new(move || timers.acknowledge(id))),
        };
        if out.send(timeout).await.is_err() {
            return;
        }
    }
}
