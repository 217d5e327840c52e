//! One function per notable pipeline occurrence, each emitting its log line and its metric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use tracing::{debug, error, info, warn};

use crate::event::Outcome;

/// Logs the 1st, 2nd, 4th, 8th, ... occurrence of something that can happen per event.
fn sampled(counter: &AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}

/// The per-event metrics of the workers as handles, registered once per pipeline run: the
/// `counter!` macros with a runtime label build a key and look it up in the registry on
/// every call, which showed up per event.
pub struct DecisionMetrics {
    decided: Counter,
    outcomes: [Counter; 4],
    shadow_outcomes: [Counter; 4],
    eval: Histogram,
    tag_updates: Counter,
}

impl DecisionMetrics {
    /// Registers the handles with the recorder installed now (the process-wide one).
    pub fn register() -> DecisionMetrics {
        DecisionMetrics {
            decided: counter!("veto_events_total", "result" => "decided"),
            outcomes: Outcome::ALL.map(|o| counter!("veto_decisions_total", "outcome" => o.name())),
            shadow_outcomes: Outcome::ALL
                .map(|o| counter!("veto_shadow_decisions_total", "outcome" => o.name())),
            eval: histogram!("veto_eval_duration_seconds"),
            tag_updates: counter!("veto_events_total", "result" => "tag_update"),
        }
    }

    fn index(outcome: Outcome) -> usize {
        match outcome {
            Outcome::Allow => 0,
            Outcome::Review => 1,
            Outcome::Challenge => 2,
            Outcome::Block => 3,
        }
    }

    /// A payment event was decided; `outcome` is the enforced (non-shadow) outcome.
    pub fn event_decided(&self, outcome: Outcome, eval: Duration) {
        self.decided.increment(1);
        self.outcomes[Self::index(outcome)].increment(1);
        self.eval.record(eval.as_secs_f64());
    }

    /// A shadow rule set's decision was published (see [`shadow_decided`]).
    pub fn shadow_decided(&self, outcome: Outcome) {
        self.shadow_outcomes[Self::index(outcome)].increment(1);
    }

    /// A tag update from the entity-tags topic was applied.
    pub fn tag_update_applied(&self) {
        self.tag_updates.increment(1);
    }
}

/// A shadow rule set's decision was published.
pub fn shadow_decided(outcome: Outcome) {
    counter!("veto_shadow_decisions_total", "outcome" => outcome.name()).increment(1);
}

/// A shadow decision was dropped because no shadow topic is configured.
pub fn shadow_dropped() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    counter!("veto_shadow_decisions_dropped_total").increment(1);
    if let Some(n) = sampled(&SEEN) {
        warn!(
            dropped = n,
            "shadow decision dropped: no shadow topic configured"
        );
    }
}

/// A timeout decision from the timers was published.
pub fn timeout_decided(outcome: Outcome) {
    counter!("veto_decisions_total", "outcome" => outcome.name()).increment(1);
    counter!("veto_timeout_decisions_total").increment(1);
}

/// An input message was rejected and sent to the dead-letter topic.
pub fn dead_lettered(
    reason_code: &'static str,
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    counter!("veto_events_total", "result" => "dead_letter").increment(1);
    counter!("veto_dead_letters_total", "reason" => reason_code).increment(1);
    if let Some(n) = sampled(&SEEN) {
        warn!(
            reason_code,
            reason,
            topic,
            partition,
            offset,
            dead_letters = n,
            "input message sent to the dead-letter topic"
        );
    }
}

/// A queued message of a revoked partition was skipped; the new owner will consume it.
pub fn revoked_message_skipped() {
    counter!("veto_events_total", "result" => "skipped_revoked").increment(1);
}

/// Partitions were assigned to this consumer.
pub fn partitions_assigned(partitions: &[(String, i32)], total_assigned: usize) {
    info!(?partitions, "partitions assigned");
    gauge!("veto_assigned_partitions").set(total_assigned as f64);
}

/// A newly assigned partition's committed offset is ahead of the decider's state: another
/// consumer in the group decided and committed past it. The partition starts at the committed
/// offset; the state misses those events (only a second member in the main group, which the
/// election prevents, or a takeover whose catch-up timed out, gets here).
pub fn state_behind_committed(topic: &str, partition: i32, state: i64, committed: i64) {
    warn!(
        topic,
        partition,
        state,
        committed,
        missed = committed - state,
        "partition starts at the committed offset, ahead of the state: events in between were \
         decided elsewhere and are not counted here"
    );
    counter!("veto_state_behind_committed_total").increment(1);
}

/// A partition starts from where the decider's state stands (the restored checkpoint, or the
/// offset it was revoked at) instead of the committed offset.
pub fn partition_starts_from_state(
    topic: &str,
    partition: i32,
    state: i64,
    committed: Option<i64>,
) {
    info!(
        topic,
        partition,
        state,
        ?committed,
        "partition starts from the state's offset, not the committed one"
    );
    counter!("veto_checkpoint_seeks_total").increment(1);
}

/// Partitions were revoked; in-flight work drained (or not, within the deadline).
pub fn partitions_revoked(
    partitions: &[(String, i32)],
    total_assigned: usize,
    drained: bool,
    lost: bool,
) {
    if drained {
        info!(?partitions, lost, "partitions revoked");
    } else {
        warn!(
            ?partitions,
            lost,
            "partitions revoked before their in-flight work drained; it will be consumed again"
        );
    }
    gauge!("veto_assigned_partitions").set(total_assigned as f64);
}

/// The rebalance callback reported an error.
pub fn rebalance_failed(reason: &str) {
    warn!(reason, "consumer group rebalance error");
    counter!("veto_kafka_errors_total", "kind" => "rebalance").increment(1);
}

/// Offsets were committed (or the commit failed).
pub fn offsets_committed(count: usize, result: Result<(), &rdkafka::error::KafkaError>) {
    match result {
        Ok(()) => {
            debug!(partitions = count, "offsets committed");
            counter!("veto_offset_commits_total", "result" => "ok").increment(1);
        }
        Err(e) => {
            warn!(partitions = count, error = %e, "offset commit failed; it is retried with the next commit");
            counter!("veto_offset_commits_total", "result" => "error").increment(1);
        }
    }
}

/// Exactly-once mode: a transaction with the decisions since the last one and the consumer
/// offsets of `partitions` partitions committed.
pub fn transaction_committed(partitions: usize) {
    info!(partitions, "kafka transaction committed");
    counter!("veto_transactions_committed_total").increment(1);
}

/// The pipeline quiesced for a state checkpoint (`quiet` false: the drain timeout passed first).
pub fn checkpoint_quiesced(waited: Duration, quiet: bool) {
    if quiet {
        debug!(waited = ?waited, "pipeline quiesced for a checkpoint");
    } else {
        warn!(waited = ?waited, "pipeline not quiet within the drain timeout; checkpoint and commit skipped until the next interval");
    }
    histogram!("veto_checkpoint_quiesce_seconds").record(waited.as_secs_f64());
}

/// A checkpoint let the workers go on: they started no batch for `paused` (the quiesce, the
/// decider's snapshot and the offsets' commit request).
pub fn checkpoint_pause_ended(paused: Duration) {
    debug!(paused = ?paused, "workers resumed after a checkpoint");
    histogram!("veto_checkpoint_pause_seconds").record(paused.as_secs_f64());
}

/// An assigned partition's queue could not be split from the consumer's (the pipeline stops).
pub fn partition_queue_failed(topic: &str, partition: i32) {
    counter!("veto_kafka_errors_total", "kind" => "partition_queue").increment(1);
    error!(
        topic,
        partition, "could not give the partition a queue of its own"
    );
}

/// The producer's local queue is full: the sender waits (never drops).
pub fn producer_queue_full() {
    debug!("producer queue full, waiting");
    counter!("veto_producer_queue_full_total").increment(1);
}

/// A produced message failed delivery and will be produced again after `backoff`.
pub fn delivery_failed(
    topic: &str,
    error: &rdkafka::error::KafkaError,
    attempt: u32,
    backoff: Duration,
) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    counter!("veto_delivery_failures_total").increment(1);
    if let Some(n) = sampled(&SEEN) {
        warn!(topic, %error, attempt, ?backoff, failures = n, "delivery failed, retrying");
    }
}

/// A Kafka client reported an error (broker down, transport failure, ...).
pub fn kafka_client_error(client: &'static str, error: &rdkafka::error::KafkaError, reason: &str) {
    warn!(client, %error, reason, "kafka client error");
    counter!("veto_kafka_errors_total", "kind" => client).increment(1);
}

/// Broker reachability changed.
pub fn broker_reachability_changed(reachable: bool) {
    if reachable {
        info!("kafka broker reachable");
    } else {
        warn!("kafka brokers unreachable; retrying with backoff");
    }
    gauge!("veto_broker_reachable").set(if reachable { 1.0 } else { 0.0 });
}

/// Polling the consumer returned an error (not a message).
pub fn consume_failed(error: &rdkafka::error::KafkaError) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    counter!("veto_kafka_errors_total", "kind" => "consume").increment(1);
    if let Some(n) = sampled(&SEEN) {
        warn!(%error, errors = n, "consume error");
    }
}

/// Consumer lag of one partition, from the consumer's statistics.
pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!("veto_consumer_lag", "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// Shutdown started: fetching stopped, in-flight work draining.
pub fn drain_started(timeout: Duration) {
    info!(?timeout, "pipeline stopping: draining in-flight events");
}

/// Shutdown finished within the deadline.
pub fn drain_finished(elapsed: Duration, partitions: usize) {
    info!(
        ?elapsed,
        partitions, "pipeline drained and offsets committed"
    );
}

/// Shutdown hit its deadline with work still in flight.
pub fn drain_timed_out(timeout: Duration, unacknowledged: i64, busy_workers: usize) {
    error!(
        ?timeout,
        unacknowledged,
        busy_workers,
        "pipeline drain timed out; unacknowledged events will be consumed again"
    );
    counter!("veto_drain_timeouts_total").increment(1);
}

/// A log line from librdkafka, forwarded to tracing (librdkafka errors and warnings stay visible).
pub fn librdkafka_log(
    client: &'static str,
    level: rdkafka::config::RDKafkaLogLevel,
    facility: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as Level;
    match level {
        Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
            error!(target: "librdkafka", client, facility, "{message}")
        }
        Level::Warning => warn!(target: "librdkafka", client, facility, "{message}"),
        Level::Notice | Level::Info => info!(target: "librdkafka", client, facility, "{message}"),
        Level::Debug => debug!(target: "librdkafka", client, facility, "{message}"),
    }
}
