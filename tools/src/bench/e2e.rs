//! Scenario `e2e`: Kafka end-to-end throughput and latency of `veto run` beside a no-rules passthrough.
//!
//! For each system, on the same broker (Apache Kafka, started once per run by the harness unless
//! `--brokers` is given) in the same run, with its own input and output topics:
//! 1. saturation: `--saturation-events` events are produced before the system starts; its
//!    throughput is the rate between the arrival of 20 % and of 95 % of its decisions (the first
//!    burst, work done while its producer was starting, is left out);
//! 2. fixed rates: for each of `--rates`, events are produced at that rate for `--step`, and the
//!    latency of each event (produce call → decision consumed by the harness) is recorded.
//!
//! Veto's saturation throughput is reported as a ratio of the passthrough's. `--rounds N` repeats
//! the comparison, reversing the order of the systems every other round, and reports the median.
//! With both systems, the engine alone (rules and state, no Kafka) is then measured on every
//! core: as a share of the passthrough's throughput it is the ceiling of that ratio here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use veto::proto;
use veto::synth::{Synth, SynthConfig};

use super::broker::Broker;
use super::cpu::{CpuPerEvent, CpuWindow};
use super::garbage::GarbageKind;
use super::kafka::{consumer_config, create_topics};
use super::machine::MachineInfo;
use super::passthrough::Passthrough;
use super::plot::{self, Chart, Series};
use super::report::{now_rfc3339, Report};
use super::stats::{per_slice, LatencySummary, PERCENTILES};
use super::BenchError;
use crate::loadgen::producer_config;
use crate::pace::Pacer;
use crate::wire::{self, EventFormat};

/// The systems the scenario can put under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    /// The no-rules consumer→producer baseline inside the harness.
    Passthrough,
    /// The `veto run` binary as a child process.
    Veto,
}

impl SystemKind {
    fn name(self) -> &'static str {
        match self {
            SystemKind::Passthrough => "passthrough",
            SystemKind::Veto => "veto",
        }
    }
}

/// Arguments of `veto-bench e2e`.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// Output folder for report.json, plots and logs.
    #[arg(long, default_value = "bench-out/e2e")]
    pub out: PathBuf,
    /// Kafka bootstrap servers; default: start Apache Kafka (tests/kafka/broker.sh) on free
    /// 127.0.0.1 ports, once for the whole run.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The `veto` binary; default: `veto` next to this executable.
    #[arg(long, env = "VETO_BIN")]
    pub veto: Option<PathBuf>,
    /// Rule file(s) Veto runs.
    #[arg(long, default_value = "rules/payments.veto")]
    pub rules: PathBuf,
    /// Partitions of every topic the scenario creates.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Events queued before a system starts, to measure its saturation throughput.
    #[arg(long, default_value_t = 50_000)]
    pub saturation_events: u64,
    /// Offered loads of the fixed-rate steps, events/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    pub rates: Vec<f64>,
    /// Length of each fixed-rate step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// How long to wait for the last decisions of a phase.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Before the first system: the passthrough at the highest of `--rates` for this long on
    /// topics of its own, not reported. A broker just started (its JVM not yet compiled)
    /// answers in seconds, not milliseconds, for its first minute or so under load, which
    /// the first system measured would otherwise carry alone. `0s`: no warm-up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub broker_warmup: Duration,
    /// Event encoding on the input topics.
    #[arg(long, value_enum, default_value_t = EventFormat::Protobuf)]
    pub format: EventFormat,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Distinct users in the synthetic stream.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Systems to measure, in order, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "passthrough,veto"
    )]
    pub systems: Vec<SystemKind>,
    /// Rounds of the comparison; every other round runs the systems in reverse order. The
    /// reported ratio is the median of the rounds' ratios.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Also run the bad-input comparison: Veto on a clean stream and on one with this fraction
    /// of garbage (random bytes, truncated encodings, bad JSON, oversized, invalid values),
    /// verifying the dead-letter topic and the decisions.
    #[arg(long)]
    pub garbage: Option<f64>,
    /// Events in each stream of the bad-input comparison.
    #[arg(long, default_value_t = 50_000)]
    pub garbage_events: u64,
    /// Run only the bad-input comparison (needs --garbage), not the systems and steps.
    #[arg(long, requires = "garbage")]
    pub garbage_only: bool,
    /// Garbage kinds to draw from, comma-separated (default: all, uniformly). E.g. leave out
    /// `oversized` to compare streams of similar size in bytes.
    #[arg(long, value_enum, value_delimiter = ',', requires = "garbage")]
    pub garbage_kinds: Vec<GarbageKind>,
}

/// Send and receive times of every event of one system's run, indexed by event number.
pub(super) struct Tracker {
    pub(super) base: Instant,
    /// Wall-clock time at `base`, seconds since the Unix epoch.
    pub(super) base_unix_s: f64,
    pub(super) sent_ns: Vec<AtomicU64>,
    pub(super) recv_ns: Vec<AtomicU64>,
    /// The decision's Kafka timestamp (`CreateTime`: its producer's produce call), epoch
    /// milliseconds; 0 when unknown.
    pub(super) produced_ms: Vec<AtomicI64>,
    pub(super) duplicates: AtomicU64,
    pub(super) foreign: AtomicU64,
}

impl Tracker {
    pub(super) fn new(events: usize) -> Tracker {
        Tracker {
            base: Instant::now(),
            base_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            sent_ns: (0..events).map(|_| AtomicU64::new(0)).collect(),
            recv_ns: (0..events).map(|_| AtomicU64::new(0)).collect(),
            produced_ms: (0..events).map(|_| AtomicI64::new(0)).collect(),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `base`, never 0 (0 marks "not yet").
    pub(super) fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    /// Records the first decision of `event_id`, produced at `produced_ms` (its Kafka
    /// timestamp, when the record has one).
    pub(super) fn record_decision(&self, event_id: &str, produced_ms: Option<i64>) {
        let index = parse_event_index(event_id).filter(|&i| i < self.recv_ns.len());
        let Some(index) = index else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = self.now_ns();
        if self.recv_ns[index]
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else if let Some(ms) = produced_ms {
            self.produced_ms[index].store(ms, Ordering::Relaxed);
        }
    }

    pub(super) fn received_in(&self, range: std::ops::Range<usize>) -> usize {
        self.recv_ns[range]
            .iter()
            .filter(|r| r.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// The id the harness gives event number `index`.
pub fn event_id(index: usize) -> String {
    format!("bench-{index}")
}

/// The event number of a harness event id.
pub fn parse_event_index(id: &str) -> Option<usize> {
    id.strip_prefix("bench-")?.parse().ok()
}

/// Consumes a system's output topic and records every event decision.
pub(super) struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), BenchError>>>,
}

impl Receiver {
    fn start(
        brokers: &str,
        topic: &str,
        partitions: i32,
        tracker: Arc<Tracker>,
    ) -> Result<Receiver, BenchError> {
        Receiver::start_with(brokers, topic, partitions, move |value, produced_ms| {
            let Some(value) = value else {
                tracker.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match wire::decode_decision(value) {
                Ok(d) if d.trigger == proto::Trigger::Timeout as i32 || d.shadow => {}
                Ok(d) => tracker.record_decision(&d.event_id, produced_ms),
                Err(_) => {
                    tracker.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    }

    /// Reads every partition of `topic` from the beginning, handing each record's value and
    /// creation time (its producer's produce call, epoch milliseconds; `None` when the topic
    /// stamps the broker's append time instead) to `on_record`.
    pub(super) fn start_with(
        brokers: &str,
        topic: &str,
        partitions: i32,
        mut on_record: impl FnMut(Option<&[u8]>, Option<i64>) + Send + 'static,
    ) -> Result<Receiver, BenchError> {
        let consumer: BaseConsumer = consumer_config(brokers, "veto-bench-receiver").create()?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let message = message?;
                    let created = match message.timestamp() {
                        rdkafka::Timestamp::CreateTime(ms) => Some(ms),
                        _ => None,
                    };
                    on_record(message.payload(), created);
                }
                Ok(())
            })
            .map_err(|e| BenchError::Invalid(format!("spawn receiver thread: {e}")))?;
        Ok(Receiver {
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn stop(mut self) -> Result<(), BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(BenchError::Invalid("receiver thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Produces numbered synthetic events to the input topic.
pub(super) struct Sender {
    pub(super) producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    pub(super) synth: Synth,
    pub(super) topic: String,
    pub(super) format: EventFormat,
}

impl Sender {
    /// A producer of the run's synthetic stream (seed and key cardinality from `args`) to `topic`.
    pub(super) fn new(brokers: &str, args: &E2eArgs, topic: &str) -> Result<Sender, BenchError> {
        Ok(Sender {
            producer: producer_config(brokers, &[]).create()?,
            synth: Synth::new(SynthConfig {
                seed: args.seed,
                users: args.users,
                ..SynthConfig::default()
            }),
            topic: topic.to_owned(),
            format: args.format,
        })
    }

    /// Sends events `range` at `rate` (None = flat out), stamping each send time.
    fn send(
        &mut self,
        range: std::ops::Range<usize>,
        rate: Option<f64>,
        tracker: &Tracker,
    ) -> Result<(), BenchError> {
        let pacer = Pacer::new(rate);
        for (k, index) in range.enumerate() {
            pacer.pace(k as u64);
            let mut event = self
                .synth
                .next()
                .ok_or_else(|| BenchError::Invalid("synthetic stream ended".into()))?;
            event.event_id = event_id(index);
            let payload = wire::encode_event(&event, self.format);
            tracker.sent_ns[index].store(tracker.now_ns(), Ordering::Relaxed);
            self.send_payload(wire::event_key(&event), &payload)?;
        }
        self.producer_flush()
    }

    /// Waits until every queued record is delivered.
    pub(super) fn producer_flush(&self) -> Result<(), BenchError> {
        Ok(self.producer.flush(Duration::from_secs(60))?)
    }

    /// Queues one record, waiting while the producer's queue is full.
    pub(super) fn send_payload(&self, key: &str, payload: &[u8]) -> Result<(), BenchError> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
}

/// A running system under test.
enum Running {
    Passthrough(Passthrough),
    Veto(VetoProcess),
}

impl Running {
    fn veto_process(&mut self) -> Option<&mut VetoProcess> {
        match self {
            Running::Veto(v) => Some(v),
            Running::Passthrough(_) => None,
        }
    }

    fn stop(self) -> Result<(), BenchError> {
        match self {
            Running::Passthrough(p) => p.stop(),
            Running::Veto(v) => v.stop(),
        }
    }
}

/// `veto run --config FILE` as a child process.
pub struct VetoProcess {
    child: Child,
    log: PathBuf,
}

/// Topics and names one system uses.
#[derive(Debug, Clone)]
pub struct SystemTopics {
    pub input: String,
    pub output: String,
    pub dead_letters: String,
    pub tags: String,
    pub shadow: String,
}

impl SystemTopics {
    /// `bench-<system>-…` in round 1, `bench-<system>-r<round>-…` after it.
    fn for_system(kind: SystemKind, round: u32) -> SystemTopics {
        SystemTopics::named(&round_name(kind, round))
    }

    /// Creates the input, output, dead-letter and tag topics.
    pub(super) fn create(
        &self,
        brokers: &str,
        partitions: i32,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(), BenchError> {
        runtime.block_on(create_topics(
            brokers,
            &[&self.input, &self.output, &self.dead_letters, &self.tags],
            partitions,
        ))
    }

    /// The topics `bench-<name>-payments`, `bench-<name>-decisions` and so on.
    pub fn named(name: &str) -> SystemTopics {
        SystemTopics {
            input: format!("bench-{name}-payments"),
            output: format!("bench-{name}-decisions"),
            dead_letters: format!("bench-{name}-dead-letters"),
            tags: format!("bench-{name}-entity-tags"),
            shadow: format!("bench-{name}-shadow"),
        }
    }
}

/// The `veto.toml` the harness runs Veto with.
pub fn veto_config(
    brokers: &str,
    topics: &SystemTopics,
    rules: &Path,
    format: EventFormat,
    state_dir: &Path,
) -> String {
    let format = match format {
        EventFormat::Protobuf => "protobuf",
        EventFormat::Json => "json",
    };
    let q = |v: &str| toml::Value::String(v.to_string()).to_string();
    format!(
        "[kafka]\nbrokers = {}\ngroup_id = \"veto-bench\"\ninput_format = {}\noutput_format = \"protobuf\"\n\n\
         [kafka.topics]\npayments = {}\ndecisions = {}\ndead_letters = {}\nentity_tags = {}\nshadow = {}\n\n\
         [rules]\npaths = [{}]\n\n\
         [store]\ndata_dir = {}\n\n\
         [pipeline]\nmax_future_skew = \"0s\"\n\n\
         [telemetry]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\nlog_level = \"warn\"\n",
        q(brokers),
        q(format),
        q(&topics.input),
        q(&topics.output),
        q(&topics.dead_letters),
        q(&topics.tags),
        q(&topics.shadow),
        q(&rules.display().to_string()),
        q(&state_dir.display().to_string()),
    )
}

impl VetoProcess {
    pub(super) fn start(
        binary: &Path,
        config: &Path,
        log: PathBuf,
    ) -> Result<VetoProcess, BenchError> {
        let file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            path: log.clone(),
            source,
        })?;
        let file_err = file.try_clone().map_err(|source| BenchError::Io {
            path: log.clone(),
            source,
        })?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file_err)
            .spawn()
            .map_err(|e| BenchError::Veto(format!("spawn {}: {e}", binary.display())))?;
        Ok(VetoProcess { child, log })
    }

    /// Fails when the process has already exited (bad config, missing subcommand, crash).
    /// The process id (for its CPU time in `/proc`).
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(BenchError::Veto(format!(
                    "exited early with {status}; last lines of {}:\n{}",
                    self.log.display(),
                    tail.join("\n")
                )))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(BenchError::Veto(e.to_string())),
        }
    }

    /// SIGTERM, then up to 30 s for the graceful drain, then kill.
    pub(super) fn stop(mut self) -> Result<(), BenchError> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Veto(format!(
                        "exited with {status} after SIGTERM; see {}",
                        self.log.display()
                    )))
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(BenchError::Veto(
            "did not exit within 30 s of SIGTERM; killed".into(),
        ))
    }
}

impl Drop for VetoProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `veto<suffix>.toml` for `topics` into `--out` and starts Veto with it, logging to
/// `veto<suffix>.log` and keeping its state in `veto-state<suffix>`.
pub(super) fn start_veto(
    args: &E2eArgs,
    brokers: &str,
    topics: &SystemTopics,
    suffix: &str,
) -> Result<VetoProcess, BenchError> {
    let binary = veto_binary(args.veto.as_deref())?;
    // the config lives in --out and Veto resolves relative paths against it: use absolute ones.
    let absolute = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| BenchError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let rules = absolute(&args.rules)?;
    let state_dir = absolute(&args.out)?.join(format!("veto-state{suffix}"));
    // state left by an earlier run into the same --out would make Veto resume from its
    // checkpointed offsets (newer than the fresh broker's) and skip the events.
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir).map_err(|source| BenchError::Io {
            path: state_dir.clone(),
            source,
        })?;
    }
    let config_path = args.out.join(format!("veto{suffix}.toml"));
    let config = veto_config(brokers, topics, &rules, args.format, &state_dir);
    std::fs::write(&config_path, config).map_err(|source| BenchError::Io {
        path: config_path.clone(),
        source,
    })?;
    VetoProcess::start(
        &binary,
        &config_path,
        args.out.join(format!("veto{suffix}.log")),
    )
}

/// The `veto` binary: `--veto`, `$VETO_BIN`, else next to this executable.
pub fn veto_binary(given: Option<&Path>) -> Result<PathBuf, BenchError> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| BenchError::Veto(e.to_string()))?
            .with_file_name("veto"),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(BenchError::Veto(format!(
            "{} not found: build it (`cargo build --release --bin veto`) or pass --veto",
            path.display()
        )))
    }
}

/// Throughput of a phase. The first decisions arrive in a burst (produced while the producer was
/// still starting: idempotent producer id, metadata), so the rate is taken between the arrival
/// of 20 % and of 95 % of the decisions; first to last is kept for comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SaturationResult {
    pub events: u64,
    pub received: u64,
    /// From the first decision to the last.
    pub seconds: f64,
    /// Decisions per second between the 20 % and the 95 % arrival marks.
    pub events_per_sec: f64,
    /// Decisions per second from the first decision to the last (an initial burst inflates it).
    pub first_to_last_events_per_sec: f64,
    /// Decisions received in each 250 ms from the first one: the shape of the run.
    pub per_quarter_second: Vec<u64>,
}

/// One fixed-rate step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepResult {
    pub offered_rate: f64,
    pub sent: u64,
    pub received: u64,
    /// Decisions per second from the step's first send to its last decision.
    pub achieved_rate: f64,
    pub latency: Option<LatencySummary>,
    /// When the step's first event was sent, seconds since the Unix epoch: matches
    /// `per_second` with the system's log.
    pub started_unix_s: f64,
    /// Per-second latency percentiles: (seconds since the step began, summary).
    pub per_second: Vec<(f64, LatencySummary)>,
    /// Each trip split at the decision's produce call (its Kafka `CreateTime`, whole
    /// milliseconds): `to_output` from the send to it (the broker, consuming, deciding),
    /// `after_output` from it to the harness receiving the decision (the system's producer, the
    /// broker, the receiver). Each half is off by up to a millisecond the timestamp truncates.
    pub split: Option<TripSplit>,
    /// Veto's CPU per decided event by thread group, from the step's first send until 95 % of
    /// its decisions are in (`None` for the passthrough, which runs inside the harness).
    pub cpu_per_event: Option<CpuPerEvent>,
}

/// The two halves of the step's trips, see [`StepResult::split`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TripSplit {
    pub to_output: LatencySummary,
    pub after_output: LatencySummary,
}

impl TripSplit {
    /// The halves of the trips of events `range` whose decision carried a timestamp.
    fn of(tracker: &Tracker, range: std::ops::Range<usize>) -> Option<TripSplit> {
        let base_ms = tracker.base_unix_s * 1e3;
        let (mut to, mut after) = (Vec::new(), Vec::new());
        for i in range {
            let sent = tracker.sent_ns[i].load(Ordering::Relaxed);
            let recv = tracker.recv_ns[i].load(Ordering::Relaxed);
            let produced = tracker.produced_ms[i].load(Ordering::Relaxed);
            if sent == 0 || recv == 0 || produced == 0 {
                continue;
            }
            // nanoseconds since the tracker's base; a clock step could put it before the base
            let produced = ((produced as f64 - base_ms) * 1e6).max(0.0) as u64;
            to.push(produced.saturating_sub(sent));
            after.push(recv.saturating_sub(produced));
        }
        Some(TripSplit {
            to_output: LatencySummary::from_nanos(&mut to)?,
            after_output: LatencySummary::from_nanos(&mut after)?,
        })
    }
}

impl std::fmt::Display for TripSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |l: &LatencySummary| {
            format!(
                "p50 {:.1} / p99 {:.1} / p99.9 {:.1} ms",
                l.p50_us / 1e3,
                l.p99_us / 1e3,
                l.p999_us / 1e3
            )
        };
        write!(
            f,
            "to the output's produce call {}; after it {}",
            ms(&self.to_output),
            ms(&self.after_output)
        )
    }
}

/// Everything measured for one system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SystemResult {
    pub system: SystemKind,
    /// 1-based round of `--rounds`.
    pub round: u32,
    pub saturation: SaturationResult,
    pub steps: Vec<StepResult>,
    pub duplicates: u64,
    pub foreign_records: u64,
    /// Veto's CPU per decided event by thread group, between the saturation phase's 20 % and
    /// 95 % marks (`None` for the passthrough, which runs inside the harness).
    pub cpu_per_event: Option<CpuPerEvent>,
}

fn wait_for(
    tracker: &Tracker,
    range: std::ops::Range<usize>,
    timeout: Duration,
    veto: Option<&mut VetoProcess>,
    mut cpu: Option<&mut CpuWindow>,
) -> Result<usize, BenchError> {
    let deadline = Instant::now() + timeout;
    let want = range.len();
    let mut veto = veto;
    loop {
        let got = tracker.received_in(range.clone());
        if let Some(cpu) = cpu.as_deref_mut() {
            cpu.observe(got);
        }
        if got >= want || Instant::now() >= deadline {
            return Ok(got);
        }
        if let Some(v) = veto.as_deref_mut() {
            v.check_alive()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn saturation_result(tracker: &Tracker, range: std::ops::Range<usize>) -> SaturationResult {
    let mut recv: Vec<u64> = tracker.recv_ns[range.clone()]
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .filter(|&r| r != 0)
        .collect();
    recv.sort_unstable();
    let first = recv.first().copied().unwrap_or(0);
    let last = recv.last().copied().unwrap_or(0);
    let seconds = (last.saturating_sub(first)) as f64 / 1e9;
    let rate = |from: usize, to: usize| {
        let secs = recv
            .get(to)
            .zip(recv.get(from))
            .map_or(0.0, |(t, f)| (t - f) as f64 / 1e9);
        if secs > 0.0 {
            (to - from) as f64 / secs
        } else {
            0.0
        }
    };
    let n = recv.len();
    const QUARTER_NS: u64 = 250_000_000;
    let mut per_quarter_second = vec![0u64; (last.saturating_sub(first) / QUARTER_NS) as usize + 1];
    for r in &recv {
        per_quarter_second[((r - first) / QUARTER_NS) as usize] += 1;
    }
    SaturationResult {
        events: range.len() as u64,
        received: recv.len() as u64,
        seconds,
        per_quarter_second,
        events_per_sec: rate(n / 5, (n * 19 / 20).min(n.saturating_sub(1))),
        first_to_last_events_per_sec: rate(0, n.saturating_sub(1)),
    }
}

fn step_result(tracker: &Tracker, range: std::ops::Range<usize>, offered: f64) -> StepResult {
    let step_start = tracker.sent_ns[range.start].load(Ordering::Relaxed);
    let mut samples = Vec::with_capacity(range.len());
    let mut last_recv = step_start;
    for i in range.clone() {
        let sent = tracker.sent_ns[i].load(Ordering::Relaxed);
        let recv = tracker.recv_ns[i].load(Ordering::Relaxed);
        if sent != 0 && recv != 0 {
            samples.push((
                Duration::from_nanos(sent.saturating_sub(step_start)),
                recv.saturating_sub(sent),
            ));
            last_recv = last_recv.max(recv);
        }
    }
    let per_second = per_slice(&samples, Duration::from_secs(1));
    let mut latencies: Vec<u64> = samples.iter().map(|(_, l)| *l).collect();
    let seconds = last_recv.saturating_sub(step_start) as f64 / 1e9;
    StepResult {
        offered_rate: offered,
        sent: range.len() as u64,
        received: samples.len() as u64,
        achieved_rate: if seconds > 0.0 {
            samples.len() as f64 / seconds
        } else {
            0.0
        },
        latency: LatencySummary::from_nanos(&mut latencies),
        started_unix_s: tracker.base_unix_s + step_start as f64 / 1e9,
        per_second,
        split: TripSplit::of(tracker, range),
        cpu_per_event: None,
    }
}

/// What tells rounds apart in topic, log and state-folder names: nothing in round 1, `-r<round>` after.
/// Round 0 is the broker's warm-up ([`E2eArgs::broker_warmup`]).
fn round_suffix(round: u32) -> String {
    match round {
        0 => "-warmup".to_string(),
        1 => String::new(),
        n => format!("-r{n}"),
    }
}

/// `veto`, `passthrough-r2`, …
fn round_name(kind: SystemKind, round: u32) -> String {
    format!("{}{}", kind.name(), round_suffix(round))
}

/// The systems of round `round` (1-based): `systems` in odd rounds, reversed in even ones.
fn round_order(systems: &[SystemKind], round: u32) -> Vec<SystemKind> {
    let mut order = systems.to_vec();
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// The median of the rounds' Veto/passthrough ratios, and each round's.
fn ratios(results: &[SystemResult], rounds: u32) -> (Option<f64>, Vec<f64>) {
    let throughput = |k: SystemKind, round: u32| {
        results
            .iter()
            .find(|r| r.system == k && r.round == round)
            .map(|r| r.saturation.events_per_sec)
    };
    let per_round: Vec<f64> = (1..=rounds)
        .filter_map(|round| {
            match (
                throughput(SystemKind::Veto, round),
                throughput(SystemKind::Passthrough, round),
            ) {
                (Some(v), Some(p)) if p > 0.0 => Some(v / p),
                _ => None,
            }
        })
        .collect();
    (median(&per_round), per_round)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => None,
        n if !n.is_multiple_of(2) => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The engine alone (rules and state, no Kafka) on every core, as a share of the passthrough's
/// median saturation throughput: no pipeline can bring Veto's ratio above it on this machine.
fn engine_ceiling(
    args: &E2eArgs,
    results: &[SystemResult],
    cores: usize,
) -> Result<Option<serde_json::Value>, BenchError> {
    let passthrough: Vec<f64> = results
        .iter()
        .filter(|r| r.system == SystemKind::Passthrough)
        .map(|r| r.saturation.events_per_sec)
        .collect();
    let Some(passthrough) = median(&passthrough).filter(|p| *p > 0.0) else {
        return Ok(None);
    };
    let core_args = super::core::CoreArgs {
        threads: vec![cores],
        users: args.users,
        seed: args.seed,
        ..super::core::CoreArgs::with_defaults(args.out.clone(), args.rules.clone())
    };
    let engine = super::core::measure(super::core::load_engine(&args.rules)?, cores, &core_args)?;
    let ceiling = engine.events_per_sec / passthrough;
    eprintln!(
        "engine alone (no Kafka, {cores} threads): {:.0} events/s = {ceiling:.3} of the passthrough's {passthrough:.0}: the ceiling of the ratio on this machine",
        engine.events_per_sec
    );
    Ok(Some(serde_json::json!({
        "engine_events_per_sec": engine.events_per_sec,
        "threads": cores,
        "passthrough_median_events_per_sec": passthrough,
        "ceiling_ratio": ceiling,
    })))
}

/// The warm-up's arguments: one step at the highest offered rate, `--broker-warmup` long.
fn warmup_args(args: &E2eArgs) -> E2eArgs {
    E2eArgs {
        rates: vec![args.rates.iter().copied().fold(0.0, f64::max)],
        step: args.broker_warmup,
        ..args.clone()
    }
}

/// The passthrough through [`warmup_args`] as round 0, on topics of its own; its results are
/// dropped.
fn warm_up_broker(
    args: &E2eArgs,
    brokers: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), BenchError> {
    let warmup = warmup_args(args);
    run_system(SystemKind::Passthrough, 0, &warmup, brokers, runtime).map(|_| ())
}

fn run_system(
    kind: SystemKind,
    round: u32,
    args: &E2eArgs,
    brokers: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<SystemResult, BenchError> {
    let name = round_name(kind, round);
    let topics = SystemTopics::for_system(kind, round);
    topics.create(brokers, args.partitions, runtime)?;
    let step_events: Vec<usize> = args
        .rates
        .iter()
        .map(|r| (r * args.step.as_secs_f64()).round().max(1.0) as usize)
        .collect();
    let saturation = args.saturation_events as usize;
    let total = saturation + step_events.iter().sum::<usize>();
    let tracker = Arc::new(Tracker::new(total));
    let receiver = Receiver::start(
        brokers,
        &topics.output,
        args.partitions,
        Arc::clone(&tracker),
    )?;
    let mut sender = Sender::new(brokers, args, &topics.input)?;

    eprintln!("[{name}] queueing {saturation} events");
    sender.send(0..saturation, None, &tracker)?;
    eprintln!("[{name}] starting");
    let mut running = match kind {
        SystemKind::Passthrough => Running::Passthrough(Passthrough::start(
            brokers,
            &topics.input,
            &topics.output,
            args.format,
        )?),
        SystemKind::Veto => {
            Running::Veto(start_veto(args, brokers, &topics, &round_suffix(round))?)
        }
    };
    // the same marks as the saturation rate (20 % and 95 % of the decisions)
    let mut cpu = running
        .veto_process()
        .map(|v| CpuWindow::new(v.pid(), saturation / 5, saturation * 19 / 20));
    // startup (group join) is not part of the measured interval, but it bounds the wait.
    let got = wait_for(
        &tracker,
        0..saturation,
        args.drain_timeout + Duration::from_secs(30),
        running.veto_process(),
        cpu.as_mut(),
    )?;
    let saturation_res = saturation_result(&tracker, 0..saturation);
    eprintln!(
        "[{name}] saturation: {got}/{saturation} decisions, {:.0} events/s",
        saturation_res.events_per_sec
    );
    let cpu_per_event = cpu.and_then(|c| c.result());
    if let Some(cpu) = &cpu_per_event {
        eprintln!("[{name}] CPU per decided event (/proc, 20 %–95 % of saturation): {cpu}");
    }
    let mut steps = Vec::new();
    let mut start = saturation;
    for (rate, count) in args.rates.iter().zip(&step_events) {
        let range = start..start + count;
        // from the step's start (none of its events decided yet) to 95 % of its decisions
        let mut cpu = running
            .veto_process()
            .map(|v| CpuWindow::new(v.pid(), 0, count * 19 / 20));
        if let Some(cpu) = cpu.as_mut() {
            cpu.observe(0);
        }
        sender.send(range.clone(), Some(*rate), &tracker)?;
        wait_for(
            &tracker,
            range.clone(),
            args.drain_timeout,
            running.veto_process(),
            cpu.as_mut(),
        )?;
        let mut step = step_result(&tracker, range.clone(), *rate);
        step.cpu_per_event = cpu.and_then(|c| c.result());
        eprintln!(
            "[{name}] {rate:.0} events/s offered: {}/{} decisions, achieved {:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
            step.received,
            step.sent,
            step.achieved_rate,
            step.latency.map(|l| l.p50_us).unwrap_or(f64::NAN),
            step.latency.map(|l| l.p99_us).unwrap_or(f64::NAN),
        );
        if let Some(split) = &step.split {
            eprintln!("[{name}] {rate:.0} events/s, each trip split: {split}");
        }
        if let Some(cpu) = &step.cpu_per_event {
            eprintln!("[{name}] CPU per decided event at {rate:.0} events/s (/proc, over the step): {cpu}");
        }
        steps.push(step);
        start = range.end;
    }
    running.stop()?;
    receiver.stop()?;
    Ok(SystemResult {
        system: kind,
        round,
        saturation: saturation_res,
        steps,
        duplicates: tracker.duplicates.load(Ordering::Relaxed),
        foreign_records: tracker.foreign.load(Ordering::Relaxed),
        cpu_per_event,
    })
}

fn plots(out: &Path, results: &[SystemResult], step: Duration) -> Result<Vec<String>, BenchError> {
    let mut written = Vec::new();
    // latency percentiles over time: steps laid end to end on one time axis.
    let mut series = Vec::new();
    for r in results {
        for (pi, (pname, _)) in PERCENTILES.iter().enumerate().filter(|(i, _)| *i != 1) {
            let mut points = Vec::new();
            for (si, s) in r.steps.iter().enumerate() {
                let offset = si as f64 * step.as_secs_f64();
                points.extend(
                    s.per_second
                        .iter()
                        .map(|(t, l)| (offset + t, l.by_index(pi))),
                );
            }
            series.push(Series {
                name: format!("{} {pname}", r.system.name()),
                points,
            });
        }
    }
    let file = "latency_over_time.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "End-to-end latency per second (steps at increasing offered load)",
            x_label: "seconds of fixed-rate load",
            y_label: "latency (µs, log)",
            series,
            log_y: true,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());

    let mut series: Vec<Series> = results
        .iter()
        .map(|r| Series {
            name: r.system.name().to_string(),
            points: r
                .steps
                .iter()
                .map(|s| (s.offered_rate, s.achieved_rate))
                .collect(),
        })
        .collect();
    if let Some(r) = results.first() {
        series.push(Series {
            name: "offered".into(),
            points: r
                .steps
                .iter()
                .map(|s| (s.offered_rate, s.offered_rate))
                .collect(),
        });
    }
    let file = "throughput_vs_offered_load.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "Achieved vs offered throughput",
            x_label: "offered load (events/s)",
            y_label: "decisions/s",
            series,
            log_y: false,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());

    let series = results
        .iter()
        .flat_map(|r| {
            [(2usize, "p99"), (0, "p50")].map(|(pi, pname)| Series {
                name: format!("{} {pname}", r.system.name()),
                points: r
                    .steps
                    .iter()
                    .filter_map(|s| s.latency.map(|l| (s.offered_rate, l.by_index(pi))))
                    .collect(),
            })
        })
        .collect();
    let file = "latency_vs_offered_load.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "End-to-end latency vs offered load",
            x_label: "offered load (events/s)",
            y_label: "latency (µs, log)",
            series,
            log_y: true,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());
    Ok(written)
}

/// Runs the scenario and writes the report; returns the report's path.
pub fn run(args: &E2eArgs) -> Result<PathBuf, BenchError> {
    if args.systems.is_empty() || args.partitions < 1 || args.rates.iter().any(|r| *r <= 0.0) {
        return Err(BenchError::Invalid(
            "need at least one system, --partitions >= 1 and positive --rates".into(),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io {
        path: args.out.clone(),
        source,
    })?;
    let started = Instant::now();
    let started_at = now_rfc3339();
    let machine = MachineInfo::collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    let mut results = Vec::new();
    let broker = Broker::start(args.brokers.as_deref(), &args.out, "e2e")?;
    let broker_info = Some(broker.info.clone());
    let rounds = if args.garbage_only { 0 } else { args.rounds };
    if rounds > 0 && !args.broker_warmup.is_zero() {
        warm_up_broker(args, &broker.info.bootstrap, &runtime)?;
    }
    for round in 1..=rounds {
        for kind in round_order(&args.systems, round) {
            results.push(run_system(
                kind,
                round,
                args,
                &broker.info.bootstrap,
                &runtime,
            )?);
        }
    }
    let bad_input = match args.garbage {
        Some(fraction) => Some(super::badinput::run(
            args,
            fraction,
            &broker.info.bootstrap,
            &runtime,
        )?),
        None => None,
    };
    let (ratio, round_ratios) = ratios(&results, rounds);
    let ceiling = match ratio {
        Some(_) => engine_ceiling(args, &results, machine.cores)?,
        None => None,
    };
    let first_round: Vec<SystemResult> = results.iter().filter(|r| r.round == 1).cloned().collect();
    let plots = plots(&args.out, &first_round, args.step)?;
    let report = Report {
        scenario: "e2e".into(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        machine,
        params: serde_json::json!({
            "brokers": args.brokers,
            "rules": args.rules,
            "partitions": args.partitions,
            "saturation_events": args.saturation_events,
            "rates": args.rates,
            "step_seconds": args.step.as_secs_f64(),
            "format": args.format,
            "seed": args.seed,
            "users": args.users,
            "systems": if args.garbage_only { Vec::new() } else { args.systems.clone() },
            "rounds": rounds,
            "garbage": args.garbage,
            "garbage_events": args.garbage_events,
        }),
        results: serde_json::json!({
            "broker": broker_info,
            "systems": results,
            "veto_vs_passthrough_throughput_ratio": ratio,
            "round_ratios": round_ratios,
            "engine_ceiling": ceiling,
            "bad_input": bad_input,
        }),
        plots,
    };
    if let Some(ratio) = ratio {
        let rounds: Vec<String> = round_ratios.iter().map(|r| format!("{r:.3}")).collect();
        eprintln!(
            "veto / passthrough saturation throughput: {ratio:.3} (median of rounds: {})",
            rounds.join(", ")
        );
    }
    report.write(&args.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(system: SystemKind, round: u32, events_per_sec: f64) -> SystemResult {
        SystemResult {
            system,
            round,
            saturation: SaturationResult {
                events: 10,
                received: 10,
                seconds: 1.0,
                events_per_sec,
                first_to_last_events_per_sec: events_per_sec,
                per_quarter_second: vec![10],
            },
            steps: Vec::new(),
            duplicates: 0,
            foreign_records: 0,
            cpu_per_event: None,
        }
    }

    #[test]
    fn every_other_round_reverses_the_order() {
        let systems = [SystemKind::Passthrough, SystemKind::Veto];
        assert_eq!(round_order(&systems, 1), systems);
        assert_eq!(
            round_order(&systems, 2),
            [SystemKind::Veto, SystemKind::Passthrough]
        );
        assert_eq!(round_order(&systems, 3), systems);
        assert_eq!(round_name(SystemKind::Veto, 1), "veto");
        assert_eq!(round_name(SystemKind::Veto, 3), "veto-r3");
    }

    #[test]
    fn the_broker_warms_up_at_the_highest_rate_on_topics_of_its_own() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: E2eArgs,
        }
        let parse = |argv: &[&str]| <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.args);
        let args = parse(&["e2e", "--rates", "1000,20000,5000", "--step", "40s"]).expect("args");
        assert_eq!(args.broker_warmup, Duration::from_secs(60));
        let warmup = warmup_args(&args);
        assert_eq!(warmup.rates, vec![20000.0]);
        assert_eq!(warmup.step, Duration::from_secs(60));
        assert_eq!(warmup.saturation_events, args.saturation_events);
        let topics = SystemTopics::for_system(SystemKind::Passthrough, 0);
        assert_eq!(topics.input, "bench-passthrough-warmup-payments");
        assert_ne!(
            topics.input,
            SystemTopics::for_system(SystemKind::Passthrough, 1).input
        );
        let off = parse(&["e2e", "--broker-warmup", "0s"]).expect("args");
        assert!(off.broker_warmup.is_zero());
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds() {
        use SystemKind::{Passthrough, Veto};
        let results = [
            result(Passthrough, 1, 100.0),
            result(Veto, 1, 50.0),
            result(Veto, 2, 90.0),
            result(Passthrough, 2, 100.0),
            result(Passthrough, 3, 200.0),
            result(Veto, 3, 140.0),
        ];
        let (median, rounds) = ratios(&results, 3);
        assert_eq!(rounds, vec![0.5, 0.9, 0.7]);
        assert_eq!(median, Some(0.7));
        let (median, rounds) = ratios(&results[..4], 2);
        assert_eq!(rounds, vec![0.5, 0.9]);
        assert!((median.expect("two rounds") - 0.7).abs() < 1e-12);
        assert_eq!(ratios(&results[..1], 1), (None, Vec::new()));
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_index(&event_id(12345)), Some(12345));
        assert_eq!(parse_event_index("ev-42-1"), None);
        assert_eq!(parse_event_index("bench-x"), None);
    }

    #[test]
    fn tracker_counts_duplicates_and_foreign_records() {
        let tracker = Tracker::new(3);
        tracker.record_decision("bench-1", None);
        tracker.record_decision("bench-1", None);
        tracker.record_decision("bench-9", None);
        tracker.record_decision("other", None);
        assert_eq!(tracker.received_in(0..3), 1);
        assert_eq!(tracker.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(tracker.foreign.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn saturation_skips_the_start_burst() {
        // 10 decisions arrive at once, then one every 10 ms from t = 1 s
        let tracker = Tracker::new(100);
        for (i, r) in tracker.recv_ns.iter().enumerate() {
            let at = if i < 10 {
                1
            } else {
                1_000_000_000 + i as u64 * 10_000_000
            };
            r.store(at, Ordering::Relaxed);
        }
        let result = saturation_result(&tracker, 0..100);
        assert_eq!(result.received, 100);
        assert!((result.events_per_sec - 100.0).abs() < 1e-9, "{result:?}");
        assert!((result.first_to_last_events_per_sec - 99.0 / 1.99).abs() < 1e-6);
        assert_eq!(result.per_quarter_second[0], 10);
        let empty = saturation_result(&Tracker::new(3), 0..3);
        assert_eq!((empty.received, empty.events_per_sec), (0, 0.0));
    }

    #[test]
    fn step_latency_is_receive_minus_send() {
        let tracker = Tracker::new(4);
        for (i, (sent, recv)) in [(1_000, 11_000), (2_000, 22_000), (3_000, 0), (4_000, 9_000)]
            .into_iter()
            .enumerate()
        {
            tracker.sent_ns[i].store(sent, Ordering::Relaxed);
            tracker.recv_ns[i].store(recv, Ordering::Relaxed);
        }
        let step = step_result(&tracker, 0..4, 100.0);
        assert_eq!(step.sent, 4);
        assert_eq!(step.received, 3);
        let latency = step.latency.expect("samples");
        assert_eq!(latency.max_us, 20.0);
        assert_eq!(latency.p50_us, 10.0);
        assert!(step.split.is_none(), "no decision carried a timestamp");
        let sat = saturation_result(&tracker, 0..4);
        assert_eq!(sat.received, 3);
        assert!((sat.seconds - 13e-6).abs() < 1e-12);
    }

    #[test]
    fn a_trip_splits_at_the_decisions_produce_call() {
        let tracker = Tracker::new(3);
        let base_ms = (tracker.base_unix_s * 1e3).ceil() as i64;
        // sent 1 ms and 2 ms after the base's millisecond; produced 3 ms after sending the
        // first, 5 ms after the second; received 1 ms and 4 ms after that
        let base_ns = ((base_ms as f64 - tracker.base_unix_s * 1e3) * 1e6) as u64;
        for (i, (sent_ms, produced_ms, recv_ms)) in [(1, 4, 5), (2, 7, 11)].into_iter().enumerate()
        {
            tracker.sent_ns[i].store(base_ns + sent_ms * 1_000_000, Ordering::Relaxed);
            tracker.recv_ns[i].store(base_ns + recv_ms * 1_000_000, Ordering::Relaxed);
            tracker.produced_ms[i].store(base_ms + produced_ms as i64, Ordering::Relaxed);
        }
        // the third never got a decision
        tracker.sent_ns[2].store(base_ns, Ordering::Relaxed);
        let split = TripSplit::of(&tracker, 0..3).expect("two trips");
        assert_eq!(split.to_output.count, 2);
        let near = |us: f64, want_ms: f64| (us / 1e3 - want_ms).abs() < 0.01;
        assert!(near(split.to_output.p50_us, 3.0), "{split:?}");
        assert!(near(split.to_output.max_us, 5.0), "{split:?}");
        assert!(near(split.after_output.p50_us, 1.0), "{split:?}");
        assert!(near(split.after_output.max_us, 4.0), "{split:?}");
        let printed = split.to_string();
        assert!(
            printed.starts_with("to the output's produce call p50 3.0 / p99 5.0")
                && printed.contains("; after it p50 1.0 / p99 4.0"),
            "{printed}"
        );
    }

    #[test]
    fn veto_config_names_the_systems_topics() {
        let topics = SystemTopics::for_system(SystemKind::Veto, 1);
        let text = veto_config(
            "127.0.0.1:9092",
            &topics,
            Path::new("rules/payments.veto"),
            EventFormat::Protobuf,
            Path::new("bench-out/state"),
        );
        let parsed: toml::Table = text.parse().expect("valid toml");
        assert_eq!(parsed["kafka"]["brokers"].as_str(), Some("127.0.0.1:9092"));
        assert_eq!(
            parsed["kafka"]["topics"]["payments"].as_str(),
            Some("bench-veto-payments")
        );
        assert!(text.contains("bench-veto-payments"));
        assert!(text.contains("bench-veto-decisions"));
    }
}
