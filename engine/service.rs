//! `veto run`: wires config, tag store, timers, rules, pipeline, telemetry and signals into the service.
//!
//! The pieces it wires live in the child modules: `live` (the engine as the pipeline drives
//! it, with at-least-once checkpoints), `exactly_once` (transactional checkpoints and settling
//! a pending one at start), `timers` (live sequence-rule timers and their timeout decisions),
//! `rule_hits` (cached rule-hit counters) and `readiness` (`/readyz`). Every instance starts as a
//! standby (`crate::ha`) and runs the pipeline once elected.

mod exactly_once;
mod live;
mod readiness;
mod rule_hits;
mod timers;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::decider::Engine;
use crate::ha::{
    self, DeliveredTimeouts, Election, ElectionSettings, HaError, HaStatus, Role, Standby,
    StandbyEnd, StandbySettings,
};
use crate::pipeline::{self, PipelineSettings, PipelineStatus, RunSummary};
use crate::reload::{self, ReloadStatus};
use crate::rules::RuleSet;
use crate::store::{StoreConfig, TagStore};
use crate::telemetry::{self, LogChoice};
use crate::timer::{TimerConfig, TimerService};
use exactly_once::discard_pending_checkpoint;
use live::LiveDecider;
use readiness::ServiceReadiness;
use timers::{cancel_removed_sequences, forward_timeouts};

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
    let summary = runtime.block_on(serve(
        config,
        signals.requests,
        reload::stopped(signals.stop),
    ))?;
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

/// Runs the service on `config` until `shutdown` completes; reload and rollback requests come
/// from `requests`.
/// On shutdown it drains the pipeline, writes a final checkpoint and stops the timers.
pub async fn serve(
    config: Config,
    requests: reload::Requests,
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
    let timers = Arc::new(timers);
    // Nothing fires before this instance is active (a standby publishes nothing).
    timers.hold();
    let mut checkpointed = Vec::new();
    if let Some(restored) = restored {
        if !restored.timers.is_empty() {
            let armed = timers.restore(&restored.timers)?;
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
        config.rules.swap_deadline,
        requests,
        reload_status.clone(),
        move |old: &RuleSet, new: &RuleSet, kind: reload::SetKind| {
            cancel_removed_sequences(&swap_timers, old, new, kind)
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
    timers.release();

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
