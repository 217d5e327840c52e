//! The load generator: synthetic payments to Kafka at a fixed rate or flat out, or to a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use veto::synth::{Pattern, Synth, SynthConfig};

use crate::pace::Pacer;
use crate::wire::{self, EventFormat};

/// Command line of `veto-loadgen`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "veto-loadgen",
    version,
    about = "Produce synthetic payments to Kafka or a file"
)]
pub struct LoadgenArgs {
    /// Kafka bootstrap servers (host:port,...). Ignored with --out.
    #[arg(long, env = "VETO_LOADGEN_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "payments")]
    pub topic: String,
    /// Write the stream to this file instead of Kafka: `.jsonl` (one JSON event a line),
    /// `.pb` (length-delimited `veto.v1.PaymentEvent`) or `.kcat` (a topic dump as
    /// `kcat -C -t payments -e -f '%S %s\n'` writes it, values encoded per --format), the
    /// inputs of `veto backtest`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out, also write each event's ground truth here (`.jsonl` or `.csv`): `event_id`,
    /// `label` (`fraud` when a fraud pattern planted the event, else `legit`) and `pattern`,
    /// the input of `veto backtest --labels`.
    #[arg(long, requires = "out")]
    pub labels_out: Option<PathBuf>,
    /// Events per second; 0 = flat out.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Number of events to produce; 0 = until --duration ends (or forever).
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Stop after this long (e.g. "30s", "5m"), whichever of --count and --duration comes first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Encoding of the events on Kafka (and of the values in a `.kcat` dump).
    #[arg(long, value_enum, default_value_t = EventFormat::Protobuf)]
    pub format: EventFormat,
    /// Seed of the synthetic stream: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of distinct users (key cardinality); cards, devices and IPs scale with it.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Number of distinct merchants.
    #[arg(long, default_value_t = 2_000)]
    pub merchants: u64,
    /// Fraction of payment flows that follow a fraud pattern (0.0..=1.0).
    #[arg(long, default_value_t = 0.05)]
    pub fraud_rate: f64,
    /// Event time of the first event in epoch ms; default: now.
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Seconds of event time per second of wall time at a fixed --rate (default 1: event time
    /// follows the wall clock). A soak uses e.g. 600 so that 24 h windows fill in minutes.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Extra librdkafka producer properties, `key=value`, repeatable.
    #[arg(long = "producer-property", value_parser = parse_property)]
    pub producer_properties: Vec<(String, String)>,
    /// Create these topics (comma-separated) before producing; existing ones are kept.
    #[arg(long, value_delimiter = ',')]
    pub create_topics: Vec<String>,
    /// Partitions of the topics created with --create-topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Only create the --create-topics topics, produce nothing.
    #[arg(long, requires = "create_topics")]
    pub create_only: bool,
    /// No progress bar (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("--fraud-rate must be within 0.0..=1.0, got {0}")]
    FraudRate(f64),
    #[error("--time-scale must be a positive number, got {0}")]
    TimeScale(f64),
    #[error("--out {0}: unknown extension, expected .jsonl, .pb or .kcat")]
    OutExtension(PathBuf),
    #[error("--out {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--labels-out {0}: unknown extension, expected .jsonl or .csv")]
    LabelsExtension(PathBuf),
    #[error("--labels-out {path}: {source}")]
    LabelsIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Topics(#[from] crate::topics::TopicError),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0} events were not delivered to Kafka")]
    Undelivered(u64),
}

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadgenSummary {
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub delivery_errors: u64,
}

impl std::fmt::Display for LoadgenSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events: {}  bytes: {}  seconds: {:.2}  events/s: {:.0}  delivery errors: {}",
            self.events, self.bytes, self.seconds, self.events_per_sec, self.delivery_errors
        )
    }
}

/// The file formats `--out` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    JsonLines,
    LengthDelimitedProtobuf,
    /// The Kafka record values (in `--format`) as `kcat -f '%S %s\n'` prints them: the
    /// length in decimal, a space, the value, a newline.
    KcatDump,
}

impl FileFormat {
    /// Picks the format from the file extension.
    pub fn from_path(path: &Path) -> Result<FileFormat, LoadgenError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Ok(FileFormat::JsonLines),
            Some("pb") => Ok(FileFormat::LengthDelimitedProtobuf),
            Some("kcat") => Ok(FileFormat::KcatDump),
            _ => Err(LoadgenError::OutExtension(path.to_path_buf())),
        }
    }
}

impl LoadgenArgs {
    /// The synthetic stream these arguments describe.
    pub fn synth_config(&self) -> Result<SynthConfig, LoadgenError> {
        if !(0.0..=1.0).contains(&self.fraud_rate) {
            return Err(LoadgenError::FraudRate(self.fraud_rate));
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err(LoadgenError::TimeScale(self.time_scale));
        }
        let flows_per_sec = if self.rate > 0.0 {
            // Each flow is about two events (authorization + capture): event time advances
            // `time_scale` seconds per wall second.
            (self.rate / 2.0 / self.time_scale).max(1e-3)
        } else {
            SynthConfig::default().flows_per_sec
        };
        Ok(SynthConfig {
            seed: self.seed,
            users: self.users.max(1),
            merchants: self.merchants.max(1),
            fraud_rate: self.fraud_rate,
            start_ms: self.start_ms.unwrap_or(now_ms),
            flows_per_sec,
            ..SynthConfig::default()
        })
    }

    fn limit_reached(&self, sent: u64, started: Instant) -> bool {
        (self.count > 0 && sent >= self.count)
            || self.duration.is_some_and(|d| started.elapsed() >= d)
    }
}

fn progress_bar(args: &LoadgenArgs) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = if args.count > 0 {
        ProgressBar::new(args.count)
    } else {
        ProgressBar::new_spinner()
    };
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} events ({per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Runs the load generator to completion and returns its summary.
pub fn run(args: &LoadgenArgs) -> Result<LoadgenSummary, LoadgenError> {
    let synth = Synth::new(args.synth_config()?);
    if !args.create_topics.is_empty() {
        let topics: Vec<&str> = args.create_topics.iter().map(String::as_str).collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LoadgenError::Runtime)?
            .block_on(crate::topics::create_topics(
                &args.brokers,
                &topics,
                args.partitions,
            ))?;
        if args.create_only {
            return Ok(summary(0, 0, Instant::now(), 0));
        }
    }
    match &args.out {
        Some(path) => write_file(args, path, synth),
        None => produce_kafka(args, synth),
    }
}

/// The ground truth of a synthetic stream, one line per event.
struct LabelsOut {
    path: PathBuf,
    csv: bool,
    out: BufWriter<File>,
}

impl LabelsOut {
    fn create(path: &Path) -> Result<LabelsOut, LoadgenError> {
        let csv = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => true,
            Some("jsonl") => false,
            _ => return Err(LoadgenError::LabelsExtension(path.to_path_buf())),
        };
        let mut labels = LabelsOut {
            path: path.to_path_buf(),
            csv,
            out: BufWriter::new(File::create(path).map_err(|source| LoadgenError::LabelsIo {
                path: path.to_path_buf(),
                source,
            })?),
        };
        if csv {
            labels.put(b"event_id,label,pattern\n")?;
        }
        Ok(labels)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), LoadgenError> {
        self.out
            .write_all(bytes)
            .map_err(|source| LoadgenError::LabelsIo {
                path: self.path.clone(),
                source,
            })
    }

    fn write(&mut self, event_id: &str, pattern: Option<Pattern>) -> Result<(), LoadgenError> {
        let label = Pattern::label(pattern);
        let name = pattern.map_or("", Pattern::name);
        let line = if self.csv {
            // Synthetic event ids are `ev-<seed>-<n>`: nothing to quote.
            format!("{event_id},{label},{name}\n")
        } else {
            let mut line = serde_json::json!({ "event_id": event_id, "label": label });
            if let Some(p) = pattern {
                line["pattern"] = p.name().into();
            }
            format!("{line}\n")
        };
        self.put(line.as_bytes())
    }

    fn finish(mut self) -> Result<(), LoadgenError> {
        self.out.flush().map_err(|source| LoadgenError::LabelsIo {
            path: self.path.clone(),
            source,
        })
    }
}

fn write_file(
    args: &LoadgenArgs,
    path: &Path,
    mut synth: Synth,
) -> Result<LoadgenSummary, LoadgenError> {
    let format = FileFormat::from_path(path)?;
    let io_err = |source| LoadgenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io_err)?);
    let mut labels = args
        .labels_out
        .as_deref()
        .map(LabelsOut::create)
        .transpose()?;
    let bar = progress_bar(args);
    let pacer = Pacer::new(None);
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        if args.limit_reached(events, pacer.start()) {
            break;
        }
        let (event, pattern) = synth.next_labelled();
        if let Some(labels) = &mut labels {
            labels.write(&event.event_id, pattern)?;
        }
        buf.clear();
        match format {
            FileFormat::JsonLines => {
                buf.extend_from_slice(wire::to_json(&event).to_string().as_bytes());
                buf.push(b'\n');
            }
            FileFormat::LengthDelimitedProtobuf => {
                wire::to_proto(&event)
                    .encode_length_delimited(&mut buf)
                    .map_err(|e| io_err(std::io::Error::other(e)))?;
            }
            FileFormat::KcatDump => {
                let value = wire::encode_event(&event, args.format);
                buf.extend_from_slice(format!("{} ", value.len()).as_bytes());
                buf.extend_from_slice(&value);
                buf.push(b'\n');
            }
        }
        out.write_all(&buf).map_err(io_err)?;
        events += 1;
        bytes += buf.len() as u64;
        if events % 4096 == 0 {
            bar.set_position(events);
        }
    }
    out.flush().map_err(io_err)?;
    if let Some(labels) = labels {
        labels.finish()?;
    }
    bar.finish_and_clear();
    Ok(summary(events, bytes, pacer.start(), 0))
}

fn summary(events: u64, bytes: u64, started: Instant, delivery_errors: u64) -> LoadgenSummary {
    let seconds = started.elapsed().as_secs_f64();
    LoadgenSummary {
        events,
        bytes,
        seconds,
        events_per_sec: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
        delivery_errors,
    }
}

/// Counts failed deliveries reported by librdkafka.
#[derive(Default)]
struct DeliveryCounter {
    failed: Arc<AtomicU64>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(%error, "event delivery failed");
            }
        }
    }
}

/// Producer settings shared by the load generator and the bench harness.
pub fn producer_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "none")
        .set("acks", "all");
    for (k, v) in extra {
        config.set(k, v);
    }
    config
}

fn produce_kafka(args: &LoadgenArgs, synth: Synth) -> Result<LoadgenSummary, LoadgenError> {
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<DeliveryCounter> =
        producer_config(&args.brokers, &args.producer_properties).create_with_context(
            DeliveryCounter {
                failed: Arc::clone(&failed),
            },
        )?;
    let bar = progress_bar(args);
    let rate = (args.rate > 0.0).then_some(args.rate);
    let pacer = Pacer::new(rate);
    let (mut events, mut bytes) = (0u64, 0u64);
    for event in synth {
        if args.limit_reached(events, pacer.start()) {
            break;
        }
        pacer.pace(events);
        let payload = wire::encode_event(&event, args.format);
        let key = wire::event_key(&event);
        let mut record = BaseRecord::to(&args.topic).key(key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        events += 1;
        bytes += payload.len() as u64;
        if events % 1024 == 0 {
            bar.set_position(events);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    bar.finish_and_clear();
    let failed = failed.load(Ordering::Relaxed);
    let result = summary(events, bytes, pacer.start(), failed);
    if failed > 0 {
        eprintln!("{result}");
        return Err(LoadgenError::Undelivered(failed));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> LoadgenArgs {
        let mut argv = vec!["veto-loadgen", "--quiet"];
        argv.extend_from_slice(extra);
        LoadgenArgs::parse_from(argv)
    }

    #[test]
    fn writes_jsonl_and_pb_files_with_the_same_stream() {
        let dir = tempfile::tempdir().expect("temp dir");
        let jsonl = dir.path().join("events.jsonl");
        let pb = dir.path().join("events.pb");
        let common = ["--count", "500", "--seed", "7", "--start-ms", "1000"];
        let a = args(&[&common[..], &["--out", jsonl.to_str().expect("utf-8 path")]].concat());
        let b = args(&[&common[..], &["--out", pb.to_str().expect("utf-8 path")]].concat());
        assert_eq!(run(&a).expect("jsonl run").events, 500);
        assert_eq!(run(&b).expect("pb run").events, 500);

        let text = std::fs::read_to_string(&jsonl).expect("read jsonl");
        let json_ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["event_id"].as_str().expect("event_id").to_string()
            })
            .collect();
        let bytes = std::fs::read(&pb).expect("read pb");
        let mut rest = bytes.as_slice();
        let mut pb_ids = Vec::new();
        while !rest.is_empty() {
            let ev =
                veto::proto::PaymentEvent::decode_length_delimited(&mut rest).expect("pb record");
            pb_ids.push(ev.event_id);
        }
        assert_eq!(json_ids.len(), 500);
        assert_eq!(json_ids, pb_ids);
    }

    #[test]
    fn a_kcat_dump_replays_like_the_jsonl_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let common = ["--count", "800", "--seed", "9", "--start-ms", "1000"];
        let replay = |name: &str, extra: &[&str]| {
            let out = dir.path().join(name);
            let argv = [
                &common[..],
                extra,
                &["--out", out.to_str().expect("utf-8 path")],
            ]
            .concat();
            assert_eq!(run(&args(&argv)).expect("loadgen").events, 800);
            let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
            let mut report = veto::backtest::backtest(&veto::backtest::BacktestOptions {
                rules: vec![rules.clone()],
                baseline: vec![rules],
                events: out,
                ..Default::default()
            })
            .expect("backtest");
            assert_eq!((report.events, report.bad_records), (800, 0), "{name}");
            (report.seconds, report.events_per_second) = (0.0, 0.0);
            report.events_file.clear();
            report
        };
        let jsonl = replay("e.jsonl", &[]);
        assert_eq!(replay("e.kcat", &[]), jsonl);
        assert_eq!(replay("j.kcat", &["--format", "json"]), jsonl);
        // The framing kcat's `-f '%S %s\n'` writes: length, space, value, newline.
        let dump = std::fs::read(dir.path().join("j.kcat")).expect("read");
        let text = String::from_utf8(dump).expect("json values are text");
        let first = text.lines().next().expect("a record");
        let (len, value) = first.split_once(' ').expect("length and value");
        assert_eq!(len.parse::<usize>().expect("decimal length"), value.len());
        assert!(value.starts_with('{'));
    }

    #[test]
    fn labels_out_gives_every_event_its_ground_truth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = dir.path().join("e.jsonl");
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let mut planted = Synth::new(
            args(&["--seed", "3", "--fraud-rate", "0.2", "--start-ms", "1000"])
                .synth_config()
                .expect("valid"),
        );
        let expected: Vec<(String, Option<Pattern>)> = (0..2_000)
            .map(|_| {
                let (ev, p) = planted.next_labelled();
                (ev.event_id, p)
            })
            .collect();
        assert!(expected.iter().any(|(_, p)| p.is_some()));
        assert!(expected.iter().any(|(_, p)| p.is_none()));
        for name in ["l.csv", "l.jsonl"] {
            let labels = dir.path().join(name);
            let a = args(&[
                "--count",
                "2000",
                "--seed",
                "3",
                "--fraud-rate",
                "0.2",
                "--start-ms",
                "1000",
                "--out",
                &path(&events),
                "--labels-out",
                &path(&labels),
            ]);
            assert_eq!(run(&a).expect("run").events, 2_000);
            let text = std::fs::read_to_string(&labels).expect("read labels");
            let got: Vec<(String, String, String)> = if name.ends_with(".csv") {
                let mut lines = text.lines();
                assert_eq!(lines.next(), Some("event_id,label,pattern"));
                lines
                    .map(|l| {
                        let f: Vec<&str> = l.split(',').collect();
                        (f[0].to_string(), f[1].to_string(), f[2].to_string())
                    })
                    .collect()
            } else {
                text.lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).expect("json");
                        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                        (s("event_id"), s("label"), s("pattern"))
                    })
                    .collect()
            };
            let want: Vec<(String, String, String)> = expected
                .iter()
                .map(|(id, p)| {
                    let label = if p.is_some() { "fraud" } else { "legit" };
                    (
                        id.clone(),
                        label.to_string(),
                        p.map_or("", Pattern::name).to_string(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let bad = args(&[
            "--count",
            "1",
            "--out",
            &path(&events),
            "--labels-out",
            "l.txt",
        ]);
        assert!(matches!(run(&bad), Err(LoadgenError::LabelsExtension(_))));
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            FileFormat::from_path(Path::new("x.csv")),
            Err(LoadgenError::OutExtension(_))
        ));
        assert!(matches!(
            args(&["--fraud-rate", "1.5"]).synth_config(),
            Err(LoadgenError::FraudRate(_))
        ));
        assert!(matches!(
            args(&["--time-scale", "0"]).synth_config(),
            Err(LoadgenError::TimeScale(_))
        ));
        let scaled = args(&["--rate", "1000", "--time-scale", "600"])
            .synth_config()
            .expect("valid");
        // 500 flows per wall second spread over 600 s of event time.
        assert!((scaled.flows_per_sec - 500.0 / 600.0).abs() < 1e-9);
        assert!(parse_property("linger.ms=5").is_ok());
        assert!(parse_property("nokey").is_err());
    }

    #[test]
    fn duration_limits_an_unbounded_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("e.jsonl");
        let a = args(&[
            "--count",
            "0",
            "--duration",
            "50ms",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        let summary = run(&a).expect("run");
        assert!(summary.events > 0);
        assert!(summary.seconds >= 0.05);
    }
}
