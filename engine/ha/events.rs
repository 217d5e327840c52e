//! One function per notable election and standby occurrence, each emitting its log line and its metric.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use tracing::{error, info, warn};

use super::Role;

/// The instance's role is now `role` (`veto_ha_active` 1 or 0).
pub fn role_is(role: Role) {
    gauge!("veto_ha_active").set(if role == Role::Active { 1.0 } else { 0.0 });
}

/// The election consumer was assigned the control partition: this instance is elected.
pub fn elected(instance: &str) {
    info!(instance, "elected active: taking over");
    counter!("veto_ha_elections_total", "result" => "won").increment(1);
}

/// The election consumer lost the control partition.
pub fn role_lost(instance: &str, lost: bool) {
    error!(
        instance,
        session_expired = lost,
        "lost the active role: stopping so that only the new active instance publishes"
    );
    counter!("veto_ha_elections_total", "result" => "lost").increment(1);
}

/// The active's election session expired while no broker answers: it keeps the role until the
/// election decides again (nobody can publish meanwhile).
pub fn role_suspended(instance: &str) {
    warn!(
        instance,
        "election session expired while the brokers are unreachable; keeping the role until \
         the election decides again"
    );
}

/// The active was elected again after its session expired during a broker outage.
pub fn re_elected(instance: &str) {
    info!(instance, "elected active again after the broker outage");
    counter!("veto_ha_elections_total", "result" => "kept").increment(1);
}

/// The election consumer joined its group without the control partition.
pub fn standing_by(instance: &str, members_hint: usize) {
    info!(
        instance,
        assigned = members_hint,
        "standby: another instance is active"
    );
}

/// The control topic was created (it was missing).
pub fn control_topic_created(topic: &str) {
    info!(topic, "created the election control topic (1 partition)");
}

/// The control topic could not be created (it may exist already, or the broker refuses).
pub fn control_topic_not_created(topic: &str, reason: &str) {
    warn!(
        topic,
        reason, "could not create the election control topic; it must exist with 1 partition"
    );
}

/// The standby started replaying.
pub fn standby_started(partitions: usize, from_state: usize) {
    info!(
        partitions,
        from_state, "standby: replaying the input up to the active's committed offsets"
    );
}

/// How far the standby's state is behind the main group's committed offsets, in messages.
pub fn standby_lag(lag: i64) {
    gauge!("veto_ha_standby_lag_messages").set(lag as f64);
}

/// A message was replayed into the standby's state.
pub fn replayed(count: u64) {
    counter!("veto_ha_standby_replayed_total").increment(count);
}

/// The standby stopped (shutdown) after replaying `replayed` input messages.
pub fn standby_stopped(replayed: u64, delivered_timeouts: usize) {
    info!(
        replayed,
        delivered_timeouts, "standby stopped; state checkpointed"
    );
}

/// The standby's periodic checkpoint failed.
pub fn standby_checkpoint_failed(error: &dyn std::fmt::Display) {
    warn!(%error, "standby checkpoint failed; the previous one stands");
}

/// A standby poll returned an error (not a message).
pub fn standby_consume_failed(error: &rdkafka::error::KafkaError) {
    counter!("veto_kafka_errors_total", "kind" => "standby").increment(1);
    tracing::debug!(%error, "standby consume error");
}

/// Takeover finished: the state is at the committed offsets, the pipeline starts.
pub fn takeover_ready(elapsed: Duration, caught_up: bool, delivered_timeouts: usize) {
    if caught_up {
        info!(
            ?elapsed,
            delivered_timeouts, "takeover: state at the committed offsets; starting the pipeline"
        );
    } else {
        warn!(
            ?elapsed,
            delivered_timeouts,
            "takeover: catching up to the committed offsets timed out; the pipeline starts at \
             the committed offsets and the state misses the events it had not replayed"
        );
    }
    histogram!("veto_ha_takeover_seconds").record(elapsed.as_secs_f64());
}

/// A fired timer's timeout decision was already published by an earlier active instance.
pub fn timeout_already_delivered() {
    counter!("veto_ha_timeouts_already_delivered_total").increment(1);
}
