//! `veto run`: wires config, tag store, timers, rules, pipeline, telemetry and signals into the service.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::decider::{Engine, TimerSink, SHADOW_TIMER_PREFIX};
use crate::event::{Decision, EventError, PaymentEvent, TagUpdate};
use crate::ha::{
    self, DeliveredTimeouts, Election, ElectionSettings, HaError, HaStatus, Replica, Role, Standby,
    StandbyEnd, StandbySettings,
};
use crate::pipeline::{
    self, Decider, Delivered, PipelineSettings, PipelineStatus, RunSummary, TimeoutDecision,
};
use crate::reload::{self, ReloadStatus};
use crate::rules::RuleSet;
use crate::store::{PartitionOffset, StoreConfig, TagStore};
use crate::telemetry::{self, LogChoice, Readiness};
use crate::timer::{FiredReceiver, TimerConfig, TimerKey, TimerPayload, TimerService};

/// Runs the service until SIGTERM/SIGINT: loads the config, installs signal handlers, serves.
/// Logging starts once the config is read: `log` (the command line) over `[telemetry]`.
pub fn run_service(config_path: Option<&Path>, log: &LogChoice) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM during start-up must drain, not kill.
    let signals = reload::listen_signals().context("install signal handlers")?;
    let config = Config::load(config_path)?;
    log.init(config.telemetry.log_format, &config.telemetry.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veto-rt")
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let summary = runtime.block_on(serve(config, signals.reload, reload::stopped(signals.stop)))?;
    tracing::info!(
        events = summary.events_decided,
        dead_letters = summary.dead_letters,
        "veto stopped cleanly"
    );
    Ok(())
}

/// The process-wide Prometheus recorder (installed once, shared by every `serve` in a process).
/// The lock makes services that start at the same time install it once: the second install
/// would fail.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock();
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = telemetry::install_metrics()?;
    *handle = Some(installed.clone());
    Ok(installed)
}

/// Runs the service on `config` until `shutdown` completes; reload requests come from `reloads`.
/// On shutdown it drains the pipeline, writes a final checkpoint and stops the timers.
pub async fn serve(
    config: Config,
    reloads: mpsc::Receiver<Instant>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunSummary> {
    let metrics = metrics_handle()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let store_config = StoreConfig {
        shards: config.store.shards,
        memory_budget_bytes: config.store.memory_budget.as_u64(),
        data_dir: config.store.data_dir.clone(),
        distinct_exact_limit: config.store.distinct_exact_limit,
        ..StoreConfig::default()
    };
    let instance_id = config.ha.instance_id();
    let settings = pipeline_settings(&config, &instance_id);
    let (store, restored) = tokio::task::spawn_blocking(move || {
        let store = TagStore::open(store_config)?;
        discard_pending_checkpoint(&store)?;
        let restored = store.restore()?;
        anyhow::Ok((store, restored))
    })
    .await??;
    let store = Arc::new(store);

    let (timers, fired) = TimerService::start(TimerConfig {
        resolution: config.timers.resolution,
        channel_capacity: config.timers.channel_capacity,
        ..TimerConfig::default()
    })?;
    let timers = Arc::new(LiveTimers(timers));
    // Nothing fires before this instance is active (a standby publishes nothing).
    timers.0.hold();
    let mut checkpointed = Vec::new();
    if let Some(restored) = restored {
        if !restored.timers.is_empty() {
            let armed = timers.0.restore(&restored.timers)?;
            tracing::info!(armed, "timers restored from checkpoint");
        }
        tracing::info!(
            entities = restored.entities,
            partitions = restored.offsets.len(),
            "state restored from checkpoint"
        );
        checkpointed = restored.offsets;
    }

    let rules = reload::load_rules(config.rules.paths.clone())
        .await
        .map_err(|diagnostics| anyhow::anyhow!("rule files rejected:\n{diagnostics}"))?;
    let engine = Arc::new(Engine::new(rules, store.clone(), timers.clone()));
    reload::rules_version_live(None, engine.rules().version());
    // A bad shadow file is logged and counted; the service runs on without a shadow.
    let shadow_error = reload::load_shadow(&engine, &config.rules.shadow_paths)
        .await
        .err();
    let reload_status = Arc::new(Mutex::new(ReloadStatus {
        live_version: engine.rules().version().to_string(),
        shadow_version: engine.shadow_rules().map(|r| r.version().to_string()),
        shadow_last_error: shadow_error,
        ..ReloadStatus::default()
    }));

    let timeouts_handled = Arc::new(AtomicU64::new(0));
    let live = Arc::new(LiveDecider {
        engine: engine.clone(),
        timers: timers.clone(),
        exactly_once: settings.transactional_id.is_some(),
        timeouts_handled: timeouts_handled.clone(),
        // A checkpoint written before the partitions come back must keep the restored offsets:
        // the restored state has counted everything before them.
        safe_offsets: Mutex::new(checkpointed),
        checkpoint_interval: config.store.checkpoint_interval,
    });

    let delivered = Arc::new(DeliveredTimeouts::new());
    let (timeouts_tx, timeouts_rx) = mpsc::channel(config.timers.channel_capacity.max(1));
    tokio::spawn(forward_timeouts(
        fired,
        engine.clone(),
        timers.clone(),
        timeouts_tx,
        timeouts_handled,
        delivered.clone(),
    ));
    let swap_timers = timers.clone();
    tokio::spawn(reload::run_reloader(
        engine.clone(),
        reload::RulePaths {
            live: config.rules.paths.clone(),
            shadow: config.rules.shadow_paths.clone(),
        },
        reloads,
        reload_status.clone(),
        move |old: &RuleSet, new: &RuleSet, kind: reload::SetKind| {
            cancel_removed_sequences(&swap_timers.0, old, new, kind)
        },
    ));
    tokio::spawn(sweep_store(store.clone(), stop_rx.clone()));

    let status = Arc::new(PipelineStatus::new());
    let ha_status = Arc::new(HaStatus::new(instance_id.clone()));
    let readiness = Arc::new(ServiceReadiness {
        pipeline: status.clone(),
        reload: reload_status,
        ha: ha_status.clone(),
    });
    let (bound, http) = telemetry::serve(
        config.telemetry.listen,
        metrics,
        readiness,
        reload::stopped(stop_rx.clone()),
    )
    .await?;
    tracing::info!(metrics = %bound, version = %engine.rules().version(), "veto running");
    let http = tokio::spawn(http);

    let election_settings = ElectionSettings {
        brokers: config.kafka.brokers.clone(),
        group_id: config.kafka.group_id.clone(),
        control_topic: config.kafka.topics.control.clone(),
        session_timeout: config.ha.session_timeout,
        heartbeat_interval: config.ha.heartbeat_interval,
        instance_id: instance_id.clone(),
        librdkafka: config.kafka.librdkafka.clone(),
    };
    ha::ensure_control_topic(&election_settings).await;
    let election = Election::start(&election_settings)?;
    let mut role = election.role();

    // Every instance starts as a standby: its state catches up to the committed offsets
    // before it may take over, elected or not.
    let standby = Standby::new(
        StandbySettings {
            pipeline: settings.clone(),
            instance_id,
            checkpoint_interval: config.store.checkpoint_interval,
            takeover_timeout: TAKEOVER_CATCH_UP_LIMIT,
        },
        live.clone(),
        delivered,
        ha_status.clone(),
        role.clone(),
        stop_rx.clone(),
    );
    let end = tokio::task::spawn_blocking(move || standby.run()).await??;
    if end == StandbyEnd::Stopped {
        election.leave();
        let _ = http.await;
        return Ok(RunSummary::default());
    }
    ha_status.set_active();
    timers.0.release();

    let run = pipeline::run(
        settings,
        live.clone(),
        timeouts_rx,
        status,
        reload::stopped(stop_rx),
    );
    let result = tokio::select! {
        result = run => result,
        _ = role.wait_for(|r| *r == Role::Standby) => {
            // Split brain guard: another instance is (or is about to be) active.
            return Err(HaError::LostRole.into());
        }
    };
    let summary = result.context("pipeline")?;
    // Exactly-once: the pipeline's last transaction carried the final checkpoint already.
    if !live.exactly_once {
        live.merge_offsets(&summary.final_offsets);
        let checkpoint = live.clone();
        tokio::task::spawn_blocking(move || checkpoint.write_checkpoint())
            .await?
            .context("final checkpoint")?;
    }
    // Leaving hands the role to a standby at once (no session timeout to wait for).
    election.leave();
    let _ = http.await;
    Ok(summary)
}

/// How long a takeover may spend bringing the state to the committed offsets before the
/// pipeline starts where the state stands.
const TAKEOVER_CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

fn pipeline_settings(config: &Config, instance_id: &str) -> PipelineSettings {
    let kafka = &config.kafka;
    PipelineSettings {
        brokers: kafka.brokers.clone(),
        group_id: kafka.group_id.clone(),
        payments_topic: kafka.topics.payments.clone(),
        entity_tags_topic: kafka.topics.entity_tags.clone(),
        decisions_topic: kafka.topics.decisions.clone(),
        dead_letters_topic: kafka.topics.dead_letters.clone(),
        shadow_topic: (!config.rules.shadow_paths.is_empty()).then(|| kafka.topics.shadow.clone()),
        transactional_id: kafka.transactional_id(),
        input_format: kafka.input_format,
        output_format: kafka.output_format,
        librdkafka: kafka.librdkafka.clone(),
        workers: config.worker_count(),
        queue_capacity: config.pipeline.queue_capacity,
        max_event_bytes: config.max_event_bytes(),
        max_future_skew: Some(config.pipeline.max_future_skew).filter(|skew| !skew.is_zero()),
        drain_timeout: config.pipeline.drain_timeout,
        session: Some((config.ha.session_timeout, config.ha.heartbeat_interval)),
        client_id: format!("veto-{instance_id}"),
        ..PipelineSettings::default()
    }
}

/// The live timer service seen as the engine's timer sink.
struct LiveTimers(TimerService);

impl TimerSink for LiveTimers {
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration) {
        let timer_key = TimerKey {
            sequence: rule.clone(),
            key: key.to_owned(),
        };
        let payload = TimerPayload {
            rule: rule.clone(),
            event_id: event.event_id.clone(),
            txn_id: event.txn_id.clone(),
            key: key.to_owned(),
        };
        self.0.arm(timer_key, payload, within);
    }

    fn cancel(&self, rule: &Arc<str>, key: &str) {
        self.0.cancel(&TimerKey {
            sequence: rule.clone(),
            key: key.to_owned(),
        });
    }
}

/// Cancels the armed timers of sequence rules the new set no longer has.
fn cancel_removed_sequences(
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
async fn forward_timeouts(
    mut fired: FiredReceiver,
    engine: Arc<Engine>,
    timers: Arc<LiveTimers>,
    out: mpsc::Sender<TimeoutDecision>,
    handled: Arc<AtomicU64>,
    delivered: Arc<DeliveredTimeouts>,
) {
    while let Some(fired) = fired.recv().await {
        let (id, payload) = (fired.id, fired.payload);
        if delivered.take(&payload.rule, &payload.event_id) {
            // An earlier active instance published this timeout already.
            ha::timeout_already_delivered();
            timers.0.acknowledge(id);
            handled.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        let Some(decision) = engine.timeout_decision(
            &payload.rule,
            payload.event_id,
            payload.txn_id,
            fired.fired_at_ms,
        ) else {
            // The sequence rule was removed by a swap: nothing to publish.
            timers.0.acknowledge(id);
            handled.fetch_add(1, Ordering::AcqRel);
            continue;
        };
        let timers = Arc::clone(&timers);
        let timeout = TimeoutDecision {
            decision,
            delivered: Some(Delivered::new(move || timers.0.acknowledge(id))),
        };
        if out.send(timeout).await.is_err() {
            return;
        }
    }
}

/// Purges expired tags and idle entities every 10 s, off the async runtime.
async fn sweep_store(store: Arc<TagStore>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sweep()).await;
    }
}

/// The engine as the pipeline drives it: decisions, tag updates, offsets and checkpoints.
struct LiveDecider {
    engine: Arc<Engine>,
    timers: Arc<LiveTimers>,
    /// Checkpoints go through Kafka transactions (two-phase, see `TagStore::checkpoint_published`).
    exactly_once: bool,
    /// Fired timers whose timeout decision was published or dropped (compared with the timer
    /// service's delivered count before an exactly-once checkpoint).
    timeouts_handled: Arc<AtomicU64>,
    /// The latest safe offset of every partition seen: where the in-memory state stands (the
    /// restored checkpoint's offsets at start).
    safe_offsets: Mutex<Vec<PartitionOffset>>,
    checkpoint_interval: Duration,
}

impl LiveDecider {
    /// Records the pipeline's `(topic, partition, next offset)` triples, keeping the newest.
    fn merge_offsets(&self, offsets: &[(String, i32, i64)]) {
        let mut safe = self.safe_offsets.lock();
        for (topic, partition, offset) in offsets {
            match safe
                .iter_mut()
                .find(|o| o.topic == *topic && o.partition == *partition)
            {
                Some(o) => o.offset = o.offset.max(*offset),
                None => safe.push(PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                }),
            }
        }
    }

    /// The exactly-once checkpoint: timers paused and every fired one published, so the
    /// transaction holds exactly the timeouts missing from the snapshot; the state is stored
    /// as pending, the transaction commits (decisions, timeouts and `offsets`), then the
    /// state is applied. Skipped (nothing committed) while timeouts are still on their way.
    fn checkpoint_exactly_once(
        &self,
        offsets: &[(String, i32, i64)],
        publish: &mut dyn FnMut(Option<u64>) -> Result<(), String>,
    ) {
        if offsets.is_empty() {
            return; // no partition with a known position: no offsets to tie the transaction to
        }
        let paused = self.timers.0.pause();
        let published = pipeline::wait_until(Instant::now() + TIMEOUTS_PUBLISHED_WAIT, || {
            self.timeouts_handled.load(Ordering::Acquire) >= self.timers.0.delivered()
        });
        if !published {
            drop(paused);
            tracing::warn!("exactly-once checkpoint skipped: timeout decisions still unpublished");
            return;
        }
        let timers = self.timers.0.snapshot_armed();
        let state_offsets = self.safe_offsets.lock().clone();
        let txn_offsets: Vec<PartitionOffset> = offsets
            .iter()
            .map(|(topic, partition, offset)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let result = self.engine.store().checkpoint_published(
            &state_offsets,
            &timers,
            &txn_offsets,
            &mut |sequence| publish(Some(sequence)),
        );
        drop(paused);
        if let Err(e) = result {
            tracing::error!(error = %e, "exactly-once checkpoint failed; the previous one stands");
        }
    }

    /// Writes state, armed timers and the safe offsets in one atomic checkpoint.
    fn write_checkpoint(&self) -> anyhow::Result<()> {
        let offsets = self.safe_offsets.lock().clone();
        let timers = self.timers.0.snapshot();
        let stats = self.engine.store().checkpoint(&offsets, &timers)?;
        tracing::debug!(entities = stats.entities_written, "checkpoint written");
        Ok(())
    }
}

impl Decider for LiveDecider {
    fn decide(&self, event: &PaymentEvent) -> Vec<Decision> {
        let decided = self.engine.decide(event, now_ms());
        rules_hit(&decided.decision);
        let mut decisions = vec![decided.decision];
        decisions.extend(decided.shadow);
        decisions
    }

    fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
        self.engine.apply_tag_update(update)
    }

    fn on_safe_offsets(&self, offsets: &[(String, i32, i64)]) {
        self.merge_offsets(offsets);
    }

    fn checkpoint_interval(&self) -> Option<Duration> {
        Some(self.checkpoint_interval)
    }

    fn checkpoint(
        &self,
        offsets: &[(String, i32, i64)],
        publish: &mut dyn FnMut(Option<u64>) -> Result<(), String>,
    ) {
        self.merge_offsets(offsets);
        if self.exactly_once {
            return self.checkpoint_exactly_once(offsets, publish);
        }
        if let Err(e) = self.write_checkpoint() {
            tracing::error!(error = %e, "periodic checkpoint failed; the previous one stands");
        }
        // Failures are logged by the pipeline; a restart seeks to the checkpoint anyway.
        let _ = publish(None);
    }

    fn stopping(&self) {
        self.timers.0.stop_firing();
    }

    fn timeout_handled(&self) {
        self.timeouts_handled.fetch_add(1, Ordering::AcqRel);
    }

    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.safe_offsets
            .lock()
            .iter()
            .find(|o| o.topic == topic && o.partition == partition)
            .map(|o| o.offset)
    }
}

impl Replica for LiveDecider {
    fn replay_event(&self, event: &PaymentEvent) {
        let _ = self.engine.decide(event, now_ms());
    }

    fn replay_tag_update(&self, update: &TagUpdate) {
        // A refused update was dead-lettered by the active; the state ignores it alike.
        let _ = self.engine.apply_tag_update(update);
    }

    fn replayed_to(&self, topic: &str, partition: i32, next: i64) {
        let mut safe = self.safe_offsets.lock();
        match safe
            .iter_mut()
            .find(|o| o.topic == topic && o.partition == partition)
        {
            Some(o) => o.offset = next,
            None => safe.push(PartitionOffset {
                topic: topic.to_owned(),
                partition,
                offset: next,
            }),
        }
    }

    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        Decider::state_offset(self, topic, partition)
    }

    fn checkpoint(&self) {
        if let Err(e) = self.write_checkpoint() {
            ha::standby_checkpoint_failed(&e);
        }
    }
}

/// Distinct rule names whose counter handles a worker thread keeps; past it the cache starts over
/// (many hot swaps renaming rules), so it stays bounded.
const RULE_HIT_HANDLES: usize = 4096;

/// Counts `veto_rule_hits_total{rule}` for every rule that matched.
///
/// Each worker thread keeps the counter handle of every rule name it has seen: a labelled
/// `counter!` allocates the label and looks the key up in the registry on every call.
fn rules_hit(decision: &Decision) {
    if decision.hits.is_empty() {
        return;
    }
    thread_local! {
        static HANDLES: std::cell::RefCell<HashMap<Arc<str>, metrics::Counter>> =
            std::cell::RefCell::new(HashMap::new());
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        for hit in &decision.hits {
            if let Some(counter) = handles.get(&hit.rule) {
                counter.increment(1);
                continue;
            }
            if handles.len() >= RULE_HIT_HANDLES {
                handles.clear();
            }
            let counter = metrics::counter!("veto_rule_hits_total", "rule" => hit.rule.to_string());
            counter.increment(1);
            handles.insert(Arc::clone(&hit.rule), counter);
        }
    });
}

struct ServiceReadiness {
    pipeline: Arc<PipelineStatus>,
    reload: Arc<Mutex<ReloadStatus>>,
    ha: Arc<HaStatus>,
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

/// How long an exactly-once checkpoint waits for fired timers to be published.
const TIMEOUTS_PUBLISHED_WAIT: Duration = Duration::from_secs(5);

/// Discards a pending exactly-once checkpoint left by a crash between its two phases: the
/// previous checkpoint stands, and the standby replay brings the state from it to the group's
/// committed offsets whether the pending checkpoint's transaction committed or not. (Asking
/// Kafka would need to fence the transactional id, which belongs to the active instance.)
fn discard_pending_checkpoint(store: &TagStore) -> anyhow::Result<()> {
    if store.pending_checkpoint()?.is_some() {
        store.resolve_pending(false)?;
        tracing::info!(
            "pending exactly-once checkpoint discarded: the replay rebuilds the state up to the \
             committed offsets"
        );
    }
    Ok(())
}

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn services_starting_together_share_one_metrics_recorder() {
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        super::metrics_handle()
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            for handle in handles {
                assert_eq!(handle.join().expect("thread"), Ok(()));
            }
        });
    }
}
