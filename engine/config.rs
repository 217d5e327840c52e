//! Engine configuration: `veto.toml` plus `VETO_SECTION__KEY` environment overrides, validated with errors naming the key and where it was set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::providers::{Env, Format, Toml};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{InputFormat, OutputFormat, DEFAULT_MAX_EVENT_BYTES};

/// Prefix of environment overrides: `VETO_KAFKA__BROKERS` sets `kafka.brokers`.
pub const ENV_PREFIX: &str = "VETO_";
/// Separator of nesting levels in environment override names.
pub const ENV_SEPARATOR: &str = "__";

/// Why the configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The file given with `--config` does not exist or is not a file.
    #[error("config file {}: not found", path.display())]
    NotFound { path: PathBuf },
    /// The file is not valid TOML.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A key is unknown, has the wrong type or a value out of range.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `store.shards`.
        key: String,
        /// Where the value came from: the file path, `environment variable VETO_...` or `default`.
        origin: String,
        message: String,
    },
}

/// The whole engine configuration (`veto.toml`). Every section and key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker connection, topics and wire formats.
    pub kafka: KafkaConfig,
    /// Which rule files to run.
    pub rules: RulesConfig,
    /// The in-memory tag store, its spill and checkpoints.
    pub store: StoreConfig,
    /// The timer wheel behind sequence rules.
    pub timers: TimersConfig,
    /// Workers and queues between Kafka and the engine.
    pub pipeline: PipelineConfig,
    /// Metrics endpoint and logging.
    pub telemetry: TelemetryConfig,
    /// Active/standby election between the instances of one deployment.
    pub ha: HaConfig,
}

/// `[kafka]`: brokers, consumer group, topics, formats and delivery guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group id; every Veto instance of one deployment shares it.
    pub group_id: String,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Encoding of `payments` and `entity_tags` messages: `protobuf`, `json` or `auto`.
    pub input_format: InputFormat,
    /// Encoding of decisions (and shadow decisions): `protobuf` or `json`.
    /// Dead letters are always protobuf.
    pub output_format: OutputFormat,
    /// `at_least_once` (default) or `exactly_once` (Kafka transactions).
    pub delivery: Delivery,
    /// Exactly-once only: the producer's `transactional.id`, stable across restarts and the
    /// same for every instance of the deployment (it names the active role: a new active
    /// instance fences the old one); empty (default) means `veto-<group_id>`.
    pub transactional_id: String,
    /// Extra librdkafka properties passed to every client unchanged, e.g.
    /// `"security.protocol" = "SASL_SSL"`. Keys Veto sets itself are rejected.
    pub librdkafka: BTreeMap<String, String>,
}

/// `[kafka.topics]`: names of the topics Veto reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Input: payment events.
    pub payments: String,
    /// Input: tag updates from other systems.
    pub entity_tags: String,
    /// Output: one decision per event and per fired timer.
    pub decisions: String,
    /// Output: rejected input messages with the reason.
    pub dead_letters: String,
    /// Output: decisions of the shadow rule set (only written when `rules.shadow_paths` is set).
    pub shadow: String,
    /// Election: a one-partition topic whose owner in the group `<group_id>.leader` is the
    /// active instance (created by Veto when missing and the broker allows it).
    pub control: String,
}

/// Delivery guarantee for decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// A partition's offset is stored only after its decisions are acknowledged.
    #[default]
    AtLeastOnce,
    /// Decisions and consumer offsets in one Kafka transaction per checkpoint, aligned with
    /// the state checkpoint (see `docs/pipeline.md`).
    ExactlyOnce,
}

/// `[rules]`: the live rule set and an optional shadow set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files or directories (every `*.veto` inside). Relative paths in a file are
    /// relative to that file's directory.
    pub paths: Vec<PathBuf>,
    /// Rule files or directories of a shadow set, evaluated beside the live one; its decisions
    /// go to `kafka.topics.shadow` and are never enforced. Empty: no shadow set.
    pub shadow_paths: Vec<PathBuf>,
    /// How long a reload (SIGUSR1) may spend reading, checking, compiling and testing a set
    /// before it is abandoned and the running set kept, e.g. "500ms"; between 1ms and 10m.
    #[serde(with = "humantime_serde")]
    pub swap_deadline: Duration,
}

/// `[store]`: the sharded tag store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Number of shards; a power of two.
    pub shards: usize,
    /// The store's memory (entity state, RocksDB's memory, an allocator reserve); above it the
    /// coldest entities spill to RocksDB, e.g. "1GiB".
    pub memory_budget: ByteSize,
    /// Directory of the RocksDB spill and checkpoints. Relative paths in a file are relative
    /// to that file's directory.
    pub data_dir: PathBuf,
    /// How often state, timers and offsets are checkpointed, e.g. "30s".
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// `distinct()` keeps exact sets up to this many values per entity, then a HyperLogLog sketch.
    pub distinct_exact_limit: usize,
}

/// `[timers]`: the timing wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// Tick of the wheel, e.g. "1ms"; between 100µs and 1s.
    #[serde(with = "humantime_serde")]
    pub resolution: Duration,
    /// Capacity of the channel carrying arm/cancel requests and fired timers.
    pub channel_capacity: usize,
}

/// `[pipeline]`: workers and queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Worker threads; 0 uses one per available core.
    pub workers: usize,
    /// Messages kept waiting in each assigned partition's queue (librdkafka's
    /// `queued.min.messages`; all queues together hold at most 16 MiB).
    pub queue_capacity: usize,
    /// Largest accepted input message, e.g. "64KiB"; larger ones are dead-lettered as `oversized`.
    pub max_event_bytes: ByteSize,
    /// On SIGTERM, how long to wait for in-flight events before giving up, e.g. "10s".
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Payment events whose `event_time` is further ahead of Veto's clock than this are
    /// dead-lettered as `invalid_time` (one far-future event would otherwise move its
    /// entities' windows past every real event); "0s" accepts any time (replays of
    /// synthetic, time-compressed streams).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
}

/// `[telemetry]`: metrics endpoint and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint.
    pub listen: SocketAddr,
    /// `human` (default) or `json` log lines.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. "info" or "veto=debug,rdkafka=warn".
    pub log_level: String,
}

pub use crate::telemetry::LogFormat;

/// `[ha]`: how fast a dead active instance is noticed and replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// `session.timeout.ms` of the election consumer and of the active's consumer: an
    /// instance that stops heartbeating for this long loses the role, e.g. "3s".
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` of both consumers, e.g. "500ms"; below `session_timeout / 3`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// This instance's name in logs and Kafka client ids; empty means `<hostname>-<pid>`.
    pub instance_id: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            session_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(500),
            instance_id: String::new(),
        }
    }
}

impl HaConfig {
    /// The configured instance id, else `<hostname>-<pid>`.
    pub fn instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "veto".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "veto".into(),
            topics: TopicsConfig::default(),
            input_format: InputFormat::Auto,
            output_format: OutputFormat::Protobuf,
            delivery: Delivery::AtLeastOnce,
            transactional_id: String::new(),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            payments: "payments".into(),
            entity_tags: "entity-tags".into(),
            decisions: "decisions".into(),
            dead_letters: "dead-letters".into(),
            shadow: "decisions-shadow".into(),
            control: "veto-control".into(),
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: vec![PathBuf::from("rules/payments.veto")],
            shadow_paths: Vec::new(),
            swap_deadline: DEFAULT_SWAP_DEADLINE,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            shards: 64,
            memory_budget: ByteSize::gib(1),
            data_dir: PathBuf::from("data"),
            checkpoint_interval: Duration::from_secs(30),
            distinct_exact_limit: 256,
        }
    }
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            resolution: Duration::from_millis(1),
            channel_capacity: 65_536,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            queue_capacity: 100_000,
            max_event_bytes: ByteSize::b(DEFAULT_MAX_EVENT_BYTES as u64),
            drain_timeout: Duration::from_secs(10),
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Human,
            log_level: "info".into(),
        }
    }
}

/// librdkafka properties Veto sets itself; setting them in `kafka.librdkafka` is an error.
const RESERVED_LIBRDKAFKA_KEYS: [(&str, &str); 6] = [
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("enable.auto.commit", "Veto commits offsets itself"),
    ("enable.auto.offset.store", "Veto stores offsets itself"),
    (
        "transactional.id",
        "set kafka.delivery = \"exactly_once\" (and kafka.transactional_id) instead",
    ),
    ("enable.idempotence", "Veto always enables it"),
];

/// Longest `store.checkpoint_interval` in exactly-once mode: transactions stay well inside
/// the producer's 60 s `transaction.timeout.ms`.
const MAX_EXACTLY_ONCE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Default `rules.swap_deadline`.
pub const DEFAULT_SWAP_DEADLINE: Duration = Duration::from_millis(500);

/// Bounds of `rules.swap_deadline`.
const SWAP_DEADLINE_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(600));

/// Default `pipeline.max_future_skew`.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(600);

/// Largest accepted `pipeline.max_event_bytes`.
const MAX_EVENT_BYTES_LIMIT: u64 = 16 * 1024 * 1024;

impl KafkaConfig {
    /// The producer's `transactional.id` in exactly-once mode, `None` in at-least-once mode.
    pub fn transactional_id(&self) -> Option<String> {
        (self.delivery == Delivery::ExactlyOnce).then(|| {
            if self.transactional_id.is_empty() {
                format!("veto-{}", self.group_id)
            } else {
                self.transactional_id.clone()
            }
        })
    }
}

impl Config {
    /// Loads `path` (when given) over the defaults, then applies `VETO_SECTION__KEY`
    /// environment overrides, resolves relative paths against the file's directory and
    /// validates every value.
    ///
    /// Environment variables starting with `VETO_` but without `__` (e.g. `VETO_CONFIG`) are
    /// not overrides and are ignored.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains(ENV_SEPARATOR))
                .split(ENV_SEPARATOR),
        );
        let mut config: Config = figment.extract().map_err(from_figment_error)?;
        config.resolve_relative_paths(&figment);
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key: key.to_string(),
                origin: origin_of(figment.find_metadata(key), key),
                message,
            })?;
        Ok(config)
    }

    /// Number of worker threads: `pipeline.workers`, or one per available core when 0.
    pub fn worker_count(&self) -> usize {
        match self.pipeline.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `pipeline.max_event_bytes` as a byte count (validated to be at most 16 MiB).
    pub fn max_event_bytes(&self) -> usize {
        usize::try_from(self.pipeline.max_event_bytes.as_u64()).unwrap_or(usize::MAX)
    }

    /// Checks values serde cannot: ranges, powers of two, non-empty names.
    /// Returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let kafka = &self.kafka;
        let topics = &kafka.topics;
        let non_empty: [(&'static str, &str); 8] = [
            ("kafka.brokers", &kafka.brokers),
            ("kafka.group_id", &kafka.group_id),
            ("kafka.topics.payments", &topics.payments),
            ("kafka.topics.entity_tags", &topics.entity_tags),
            ("kafka.topics.decisions", &topics.decisions),
            ("kafka.topics.dead_letters", &topics.dead_letters),
            ("kafka.topics.shadow", &topics.shadow),
            ("kafka.topics.control", &topics.control),
        ];
        for (key, value) in non_empty {
            if value.trim().is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        let outputs: [(&'static str, &str); 4] = [
            ("kafka.topics.decisions", &topics.decisions),
            ("kafka.topics.dead_letters", &topics.dead_letters),
            ("kafka.topics.shadow", &topics.shadow),
            ("kafka.topics.control", &topics.control),
        ];
        for (key, value) in outputs {
            if value == topics.payments || value == topics.entity_tags {
                return Err((key, format!("{value:?} is also an input topic")));
            }
        }
        for (reserved, hint) in RESERVED_LIBRDKAFKA_KEYS {
            if kafka.librdkafka.contains_key(reserved) {
                return Err((
                    "kafka.librdkafka",
                    format!("{reserved:?} is set by Veto; {hint}"),
                ));
            }
        }
        // librdkafka itself checks names and values: at load, not when the clients start.
        for (key, value) in &kafka.librdkafka {
            let mut client = rdkafka::ClientConfig::new();
            client.set(key, value);
            if let Err(e) = client.create_native_config() {
                return Err(("kafka.librdkafka", format!("{key:?} = {value:?}: {e}")));
            }
        }
        if self.rules.paths.is_empty() {
            return Err((
                "rules.paths",
                "needs at least one rule file or directory".into(),
            ));
        }
        let (min_deadline, max_deadline) = SWAP_DEADLINE_RANGE;
        let deadline = self.rules.swap_deadline;
        if deadline < min_deadline || deadline > max_deadline {
            return Err((
                "rules.swap_deadline",
                format!(
                    "{} is outside 1ms..10m",
                    humantime::format_duration(deadline)
                ),
            ));
        }
        let shards = self.store.shards;
        if shards == 0 || !shards.is_power_of_two() || shards > 65_536 {
            return Err((
                "store.shards",
                format!("{shards} is not a power of two between 1 and 65536"),
            ));
        }
        if self.store.memory_budget.as_u64() == 0 {
            return Err(("store.memory_budget", "must be more than 0 bytes".into()));
        }
        if self.store.checkpoint_interval < Duration::from_millis(100) {
            return Err((
                "store.checkpoint_interval",
                format!(
                    "{} is shorter than 100ms",
                    humantime::format_duration(self.store.checkpoint_interval)
                ),
            ));
        }
        if self.kafka.delivery == Delivery::ExactlyOnce
            && self.store.checkpoint_interval > MAX_EXACTLY_ONCE_CHECKPOINT_INTERVAL
        {
            return Err((
                "store.checkpoint_interval",
                format!(
                    "{} is longer than 30s, the limit with kafka.delivery = \"exactly_once\" \
                     (each checkpoint commits a transaction, which the broker aborts after 60s)",
                    humantime::format_duration(self.store.checkpoint_interval)
                ),
            ));
        }
        let ha = &self.ha;
        if ha.session_timeout < Duration::from_millis(500) || ha.session_timeout > HOUR {
            return Err((
                "ha.session_timeout",
                format!(
                    "{} is outside 500ms..1h",
                    humantime::format_duration(ha.session_timeout)
                ),
            ));
        }
        if ha.heartbeat_interval.is_zero() || ha.heartbeat_interval * 3 > ha.session_timeout {
            return Err((
                "ha.heartbeat_interval",
                format!(
                    "{} must be positive and at most a third of ha.session_timeout",
                    humantime::format_duration(ha.heartbeat_interval)
                ),
            ));
        }
        let resolution = self.timers.resolution;
        if resolution < Duration::from_micros(100) || resolution > Duration::from_secs(1) {
            return Err((
                "timers.resolution",
                format!(
                    "{} is outside 100us..1s",
                    humantime::format_duration(resolution)
                ),
            ));
        }
        // Upper bounds too: a huge count or duration must be an error naming its key, not an
        // allocation failure or an overflow in the running service.
        let counts: [(&'static str, usize, usize, usize); 4] = [
            (
                "timers.channel_capacity",
                self.timers.channel_capacity,
                1,
                1 << 24,
            ),
            ("pipeline.workers", self.pipeline.workers, 0, 1024),
            (
                "pipeline.queue_capacity",
                self.pipeline.queue_capacity,
                1,
                1 << 20,
            ),
            (
                "store.distinct_exact_limit",
                self.store.distinct_exact_limit,
                1,
                1 << 20,
            ),
        ];
        for (key, value, min, max) in counts {
            if value < min || value > max {
                return Err((key, format!("{value} is outside {min}..={max}")));
            }
        }
        let durations: [(&'static str, Duration, Duration); 3] = [
            ("pipeline.drain_timeout", self.pipeline.drain_timeout, HOUR),
            (
                "pipeline.max_future_skew",
                self.pipeline.max_future_skew,
                30 * DAY,
            ),
            (
                "store.checkpoint_interval",
                self.store.checkpoint_interval,
                DAY,
            ),
        ];
        for (key, value, max) in durations {
            if value > max {
                return Err((
                    key,
                    format!(
                        "{} is longer than {}",
                        humantime::format_duration(value),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        let max_event = self.pipeline.max_event_bytes.as_u64();
        if max_event == 0 || max_event > MAX_EVENT_BYTES_LIMIT {
            return Err((
                "pipeline.max_event_bytes",
                format!("{max_event} bytes is outside 1 B..16 MiB"),
            ));
        }
        if self.pipeline.drain_timeout.is_zero() {
            return Err(("pipeline.drain_timeout", "must be more than 0".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level) {
            return Err((
                "telemetry.log_level",
                format!("{:?} is not a valid filter: {e}", self.telemetry.log_level),
            ));
        }
        Ok(())
    }

    /// Makes relative paths set in a file relative to that file's directory.
    fn resolve_relative_paths(&mut self, figment: &Figment) {
        let base = |key: &str| -> Option<PathBuf> {
            match &figment.find_metadata(key)?.source {
                Some(Source::File(file)) => file.parent().map(Path::to_path_buf),
                _ => None,
            }
        };
        let resolve = |base: &Option<PathBuf>, path: &mut PathBuf| {
            if let Some(dir) = base {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        };
        let rules_base = base("rules.paths");
        self.rules
            .paths
            .iter_mut()
            .for_each(|p| resolve(&rules_base, p));
        let shadow_base = base("rules.shadow_paths");
        self.rules
            .shadow_paths
            .iter_mut()
            .for_each(|p| resolve(&shadow_base, p));
        resolve(&base("store.data_dir"), &mut self.store.data_dir);
    }
}

/// Converts figment's error (first of possibly several) into one naming the key and its origin.
fn from_figment_error(err: figment::Error) -> ConfigError {
    let Some(first) = err.into_iter().next() else {
        return ConfigError::Syntax {
            origin: "configuration".into(),
            message: "unknown error".into(),
        };
    };
    // For unknown fields figment's path already ends with the unknown key.
    let key = first.path.join(".");
    let origin = origin_of(first.metadata.as_ref(), &key);
    let message = first.kind.to_string();
    if key.is_empty() {
        ConfigError::Syntax { origin, message }
    } else {
        ConfigError::Invalid {
            key,
            origin,
            message,
        }
    }
}

/// Where a key's value came from: the file's path, the environment variable's name, or `default`.
fn origin_of(metadata: Option<&Metadata>, key: &str) -> String {
    match metadata {
        Some(Metadata {
            source: Some(Source::File(file)),
            ..
        }) => file.display().to_string(),
        Some(md) if md.name.contains("environment") => format!(
            "environment variable {ENV_PREFIX}{}",
            key.replace('.', ENV_SEPARATOR).to_ascii_uppercase()
        ),
        Some(md) => md.name.to_string(),
        None => "default".into(),
    }
}

// figment::Jail dictates the closures' error type (figment::Error, which is large).
#[allow(clippy::result_large_err)]
#[cfg(test)]
mod tests;
