//! The Kafka pipeline: consume → decide → publish, at-least-once, with dead letters and a graceful drain.
//!
//! ```text
//! payments, entity-tags ──► consumer (group member; source thread: rebalances, commits)
//!                             │ a queue per assigned partition (librdkafka's, bounded prefetch)
//!                             ▼
//!                           worker threads (read ready partitions' queues; one worker each at a time)
//!                             │ decode → Decider::decide / apply_tag_update → encode
//!                             ▼
//!   timeout decisions ──►   sink (idempotent producer) ──► decisions / shadow / dead letters
//!                             │ delivery reports
//!                             ▼
//!                           ack trackers ──► safe offsets ──► Decider::on_safe_offsets, commit
//! ```
//!
//! See `docs/pipeline.md` for the delivery guarantees, backpressure, rebalance and shutdown.

mod ack;
mod error;
mod events;
mod feed;
mod partition;
mod settings;
mod sink;
mod source;
mod status;
mod transaction;
mod worker;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::decider::Decided;
use crate::event::{encode_decision, Decision, EventError, OutputFormat, PaymentEvent, TagUpdate};

pub use ack::{AckSeq, AckTracker};
pub use error::PipelineError;
pub(crate) use events::{kafka_client_error, librdkafka_log};
pub use settings::PipelineSettings;
pub use sink::{Delivered, PRODUCER_SETTINGS};
pub(crate) use source::wait_until;
pub use status::{PipelineStatus, RunSummary};
pub use transaction::{checkpoint_metadata, fence};

use sink::{AckToken, Sink};
use source::Source;
use status::RunCounters;
use worker::{decision_key, WorkerPool};

/// The engine as the pipeline sees it; the lead implements it with rules, store and timers.
pub trait Decider: Send + Sync + 'static {
    /// Decides one event into `out`: its decision, and a shadow decision (`shadow = true`,
    /// for the shadow topic) when a shadow set runs. Called from worker threads, never on the
    /// async runtime; the events of one partition arrive in offset order. `out` holds the
    /// worker's previous decisions: overwrite them in place to reuse their buffers.
    fn decide(&self, event: &PaymentEvent, out: &mut Decided);

    /// Applies a tag update from the entity-tags topic (worker thread, in partition order).
    /// An error dead-letters the update with its reason.
    fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError>;

    /// Called (on the source thread, keep it cheap) with offsets `(topic, partition, next
    /// offset to consume)` that are safe: every earlier message's outputs are acknowledged.
    /// They are committed to Kafka right after this call returns.
    fn on_safe_offsets(&self, offsets: &[(String, i32, i64)]) {
        let _ = offsets;
    }

    /// How often the decider checkpoints its state; `None` for a stateless decider.
    ///
    /// With `Some`, offsets are committed to Kafka only right after a checkpoint, with exactly
    /// the checkpoint's offsets (instead of every `commit_interval`), so Kafka's commit never
    /// runs ahead of the state: a restart without the checkpoint replays what the state lacks.
    fn checkpoint_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Writes a checkpoint at a quiesced point: nothing is being decided and every decided
    /// message's outputs are acknowledged, so `offsets` (next offset to consume of every owned
    /// partition) describe exactly the state. Then calls `publish` once to hand those offsets
    /// to Kafka: a consumer commit, or in exactly-once mode the transaction commit (decisions
    /// and offsets together), given the checkpoint's sequence (`Some`), which the transaction
    /// carries as the offsets' commit metadata (see [`checkpoint_metadata`]); its error says
    /// the offsets are not committed. A decider that
    /// cannot checkpoint now may skip both (the next interval tries again). Runs on the source
    /// thread; the workers resume when it returns, so a decider may capture its state here and
    /// write it after returning (the engine does, docs/store.md).
    fn checkpoint(
        &self,
        offsets: &[(String, i32, i64)],
        publish: &mut dyn FnMut(Option<u64>) -> Result<(), String>,
    ) {
        let _ = offsets;
        let _ = publish(None);
    }

    /// Shutdown has begun: stop producing timeout decisions (a timer that fired now could
    /// miss both the timeout publisher and the final checkpoint); those still armed go into
    /// the final checkpoint instead.
    fn stopping(&self) {}

    /// A timeout decision taken from the channel was published (or dropped, e.g. no shadow
    /// topic); exactly-once checkpoints wait until every fired timer got this far.
    fn timeout_handled(&self) {}

    /// The next offset to consume for a newly assigned partition according to the decider's
    /// state: the messages before it are counted in it, none after. The partition starts
    /// there, whatever offset is committed in Kafka: after a restart the restored checkpoint's
    /// offset, after a rebalance in the same run the safe offset it was revoked at (its
    /// commit may have failed). `None`: start from Kafka's committed offset.
    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let _ = (topic, partition);
        None
    }
}

/// A timeout decision to publish (from the timers), and what to do once Kafka has it.
#[derive(Debug)]
pub struct TimeoutDecision {
    pub decision: Decision,
    pub delivered: Option<Delivered>,
}

/// Runs the pipeline until `shutdown` resolves, then drains and commits.
///
/// Decisions from `extra` (timeout decisions from the timers) are published too. Returns the
/// run's totals; past `settings.drain_timeout` after shutdown it returns
/// [`PipelineError::DrainTimeout`] (offsets are still committed up to the last safe one).
/// An unreachable broker is not an error: clients retry with backoff and `status` reports
/// not ready.
pub async fn run(
    settings: PipelineSettings,
    decider: Arc<dyn Decider>,
    extra: mpsc::Receiver<TimeoutDecision>,
    status: Arc<PipelineStatus>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunSummary, PipelineError> {
    settings.validate()?;
    let counters = Arc::new(RunCounters::default());
    let abort = Arc::new(AtomicBool::new(false));
    // Exactly-once start-up waits for the transaction coordinator: off the async runtime.
    let (sink, retry_thread) = {
        let (settings, status, abort) = (settings.clone(), Arc::clone(&status), Arc::clone(&abort));
        tokio::task::spawn_blocking(move || Sink::start(&settings, status, abort))
            .await
            .map_err(|_| PipelineError::ThreadPanicked("the sink start-up".to_owned()))??
    };
    let workers = WorkerPool::start(
        &settings,
        Arc::clone(&decider),
        Arc::clone(&sink),
        Arc::clone(&counters),
        Arc::clone(&status),
        Arc::clone(&abort),
    )?;
    let stop_at = Arc::new(OnceLock::new());
    let source = Source::new(
        &settings,
        Arc::clone(&decider),
        Arc::clone(&status),
        workers,
        Arc::clone(&sink),
        Arc::clone(&counters),
        abort,
        Arc::clone(&stop_at),
    )?;
    let (done_tx, mut done_rx) = oneshot::channel();
    let name = "veto-source".to_owned();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ = done_tx.send(source.run());
        })
        .map_err(|source| PipelineError::ThreadSpawn { name, source })?;

    let exactly_once = settings.transactional_id.is_some();
    let stop_timeouts = Arc::new(Notify::new());
    let mut timeouts = tokio::spawn(publish_timeouts(
        extra,
        Arc::clone(&sink),
        Arc::clone(&decider),
        TimeoutTopics {
            decisions: settings.decisions_topic.clone(),
            shadow: settings.shadow_topic.clone(),
            format: settings.output_format,
        },
        Arc::clone(&counters),
        Arc::clone(&stop_timeouts),
    ));

    tokio::pin!(shutdown);
    let ended_early = tokio::select! {
        () = &mut shutdown => None,
        result = &mut done_rx => Some(result),
    };
    let deadline = Instant::now() + settings.drain_timeout;
    decider.stopping();
    // Exactly-once: timeouts already fired keep flowing until the source's final transaction
    // committed (its checkpoint pauses the timers and waits for every fired one to be published).
    if !exactly_once {
        stop_timeouts.notify_one();
        if tokio::time::timeout_at(deadline.into(), &mut timeouts)
            .await
            .is_err()
        {
            timeouts.abort();
        }
    }
    let _ = stop_at.set(deadline);
    let result = match ended_early {
        Some(result) => result,
        None => done_rx.await,
    };
    if exactly_once {
        timeouts.abort();
    }
    retry_thread.stop();
    result.unwrap_or_else(|_| {
        Err(PipelineError::ThreadPanicked(
            "the source thread".to_owned(),
        ))
    })
}

/// Where timeout decisions go.
struct TimeoutTopics {
    decisions: String,
    shadow: Option<String>,
    format: OutputFormat,
}

/// Publishes timeout decisions until told to stop, then publishes those already queued.
async fn publish_timeouts(
    mut extra: mpsc::Receiver<TimeoutDecision>,
    sink: Arc<Sink>,
    decider: Arc<dyn Decider>,
    topics: TimeoutTopics,
    counters: Arc<RunCounters>,
    stop: Arc<Notify>,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.notified() => break,
            decision = extra.recv() => match decision {
                Some(timeout) => {
                    publish_timeout(timeout, &sink, &topics, &counters).await;
                    decider.timeout_handled();
                }
                None => {
                    stop.notified().await;
                    return;
                }
            },
        }
    }
    while let Ok(timeout) = extra.try_recv() {
        publish_timeout(timeout, &sink, &topics, &counters).await;
        decider.timeout_handled();
    }
}

async fn publish_timeout(
    timeout: TimeoutDecision,
    sink: &Sink,
    topics: &TimeoutTopics,
    counters: &RunCounters,
) {
    let TimeoutDecision {
        decision,
        delivered,
    } = timeout;
    let topic = if decision.shadow {
        match &topics.shadow {
            Some(topic) => topic,
            None => {
                if let Some(delivered) = delivered {
                    delivered.run();
                }
                return events::shadow_dropped();
            }
        }
    } else {
        &topics.decisions
    };
    let payload = encode_decision(&decision, topics.format);
    if sink
        .send_async(
            topic,
            Some(decision_key(&decision)),
            &payload,
            AckToken::Timeout(delivered),
        )
        .await
    {
        if decision.shadow {
            events::shadow_decided(decision.outcome);
        } else {
            events::timeout_decided(decision.outcome);
        }
        counters
            .timeout_decisions
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}
