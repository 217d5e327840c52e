//! High availability on Apache Kafka: three `veto run` instances of one deployment (one active,
//! two warm standbys), `kill -9` of the active at random points of a stream with velocity,
//! distinct, tag and sequence rules and external tags; each time a standby takes over and the
//! killed instance comes back as a standby. In both delivery modes:
//! - every event has a decision, every decision (duplicates included) equal to an uninterrupted
//!   single-instance replay's; exactly-once: an independent `read_committed` reader
//!   (`tests/compose/read_topic.py`) sees each decision once and each timeout at most once;
//! - no `auth_without_capture` timeout is lost;
//! - the final feature values and tags of the last active equal the uninterrupted replay's;
//! - the instances started after the first one are standbys: they never consume in the main
//!   group (a second instance cannot split the state);
//! - the time from each kill to the new active's first decision is printed (p50, max).
//!
//! The default is 40,000 events and 3 kills per mode; `VETO_FAILOVER_EVENTS` and
//! `VETO_FAILOVER_KILLS` resize it (docs/operations.md: the 200,000-event run). The Python
//! client comes from `$VETO_PYTHON` (tests/run.sh installs it), else `python3`.

#[path = "failover/checks.rs"]
mod checks;
mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use veto::event::{
    decode_decision, encode_tag_update, Field, InputFormat, OutputFormat, PaymentEvent, TagUpdate,
    Trigger,
};
use veto::synth::{Synth, SynthConfig};

use checks::*;
use support::*;

/// How far production runs ahead of the decisions seen (so the kills land mid-stream).
const STREAM_AHEAD: usize = 10_000;
/// Up to a kill point, production stops this far past it; right before the kill a burst takes it
/// to `2 * AHEAD_OF_KILL` (events in flight when the active dies), and after the kill to
/// `STREAM_AHEAD` past it: the new active always has events left to decide, however fast the
/// old one caught up.
const AHEAD_OF_KILL: usize = STREAM_AHEAD / 4;
/// Session timeout of the election and of the active's consumer.
const SESSION_TIMEOUT: &str = "2s";
const HEARTBEAT: &str = "400ms";
/// Users tagged "fraudster" through the entity-tags topic before the stream starts.
const EXTERNAL_TAGS: usize = 40;

/// The two modes run one after the other (each starts a broker and three `veto` processes).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Decisions read by the test while it runs.
#[derive(Default)]
struct Seen {
    event: HashMap<String, Vec<Verdict>>,
    timeouts: HashMap<String, usize>,
    /// `(decided_at_ms, seen at)` of every decision, for the takeover times.
    decided_at: Vec<(i64, Instant)>,
}

impl Seen {
    fn read_for(&mut self, consumer: &BaseConsumer, span: Duration) {
        let until = Instant::now() + span;
        while Instant::now() < until {
            self.poll(consumer);
        }
    }

    fn poll(&mut self, consumer: &BaseConsumer) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let d = decode_decision(m.payload().expect("payload"), InputFormat::Auto)
                .expect("decision");
            self.decided_at.push((d.decided_at_ms, Instant::now()));
            match d.trigger {
                Trigger::Event => self
                    .event
                    .entry(d.event_id.clone())
                    .or_default()
                    .push(verdict(&d)),
                Trigger::Timeout => *self.timeouts.entry(d.event_id).or_default() += 1,
            }
        }
    }

    /// The first decision taken after `kill_ms` (by the new active: the old one is dead).
    fn first_decided_after(&self, kill_ms: i64) -> Option<(i64, Instant)> {
        self.decided_at
            .iter()
            .filter(|(at, _)| *at > kill_ms)
            .min_by_key(|(at, _)| *at)
            .copied()
    }
}

fn external_tags(events: &[PaymentEvent]) -> Vec<TagUpdate> {
    let users: BTreeSet<&str> = events.iter().filter_map(|e| e.user_id.as_deref()).collect();
    users
        .into_iter()
        .step_by(7)
        .take(EXTERNAL_TAGS)
        .map(|user| TagUpdate {
            entity: Field::UserId,
            value: user.to_owned(),
            tag: "fraudster".to_owned(),
            expires_at_ms: None,
            remove: false,
        })
        .collect()
}

fn produce_tags(brokers: &str, tags: &[TagUpdate]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for tag in tags {
        let payload = encode_tag_update(tag, OutputFormat::Protobuf);
        producer
            .send(
                BaseRecord::to("entity-tags")
                    .key(&tag.value)
                    .payload(&payload),
            )
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn progress_reader(brokers: &str, delivery: Delivery) -> BaseConsumer {
    let isolation = match delivery {
        Delivery::AtLeastOnce => "read_uncommitted",
        Delivery::ExactlyOnce => "read_committed",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "failover-reader")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    consumer.subscribe(&["decisions"]).expect("subscribe");
    consumer
}

/// `line` without its terminal colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// User + system CPU seconds of a running process.
fn cpu_of(veto: &Killed) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", veto.0.id())).unwrap_or_default();
    // utime and stime: the 12th and 13th fields after the parenthesised command name, in
    // ticks of 1/100 s
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

/// One of the three instances: its own data dir and config, a log file per run.
struct Instance {
    name: &'static str,
    dir: PathBuf,
    config: PathBuf,
    runs: usize,
    process: Option<Killed>,
}

impl Instance {
    fn new(root: &Path, name: &'static str, brokers: &str, delivery: Delivery) -> Instance {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("instance dir");
        let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
        let config = write_config_with(
            &dir,
            brokers,
            "veto-ha",
            &rules,
            "checkpoint_interval = \"300ms\"",
            &[],
        );
        let delivery_line = match delivery {
            Delivery::AtLeastOnce => "delivery = \"at_least_once\"",
            Delivery::ExactlyOnce => "delivery = \"exactly_once\"",
        };
        let text = std::fs::read_to_string(&config).expect("read config");
        let text = text.replacen(
            "[kafka]\n",
            &format!("[kafka]\n{delivery_line}\noutput_format = \"json\"\n"),
            1,
        );
        let text = text.replacen(
            "[telemetry]\n",
            &format!(
                "[ha]\nsession_timeout = \"{SESSION_TIMEOUT}\"\nheartbeat_interval = \
                 \"{HEARTBEAT}\"\ninstance_id = \"{name}\"\n\n[telemetry]\n"
            ),
            1,
        );
        std::fs::write(&config, text).expect("write config");
        Instance {
            name,
            dir,
            config,
            runs: 0,
            process: None,
        }
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("veto-{run}.log"))
    }

    fn current_log(&self) -> PathBuf {
        self.log_path(self.runs - 1)
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.log_path(self.runs)).expect("log");
        self.process = Some(start_veto_logging(&self.config, log));
        self.runs += 1;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.current_log()).unwrap_or_default()
    }

    fn is_active(&self) -> bool {
        self.process.is_some() && self.log().contains("elected active")
    }

    fn kill_9(&mut self) {
        let mut veto = self.process.take().expect("running");
        assert!(
            veto.0.try_wait().expect("wait").is_none(),
            "{} exited before it was killed:\n{}",
            self.name,
            self.log()
        );
        veto.0.kill().expect("SIGKILL");
        veto.0.wait().expect("reap");
    }

    fn stop(&mut self) {
        if let Some(veto) = self.process.take() {
            sigterm_and_wait(veto);
        }
    }
}

/// The last lines of every instance's current log (for a failing assertion's message).
fn logs_of(instances: &[Instance]) -> String {
    let mut out = String::new();
    for instance in instances {
        let log = strip_ansi(&instance.log());
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        out += &format!(
            "--- {} (run {}) ---\n{}\n",
            instance.name,
            instance.runs,
            tail.join("\n")
        );
    }
    out
}

fn p50_max(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let p50 = values[(values.len() - 1) / 2];
    (p50, values[values.len() - 1])
}

#[test]
fn at_least_once_standby_takes_over_after_kill_9_losing_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    failover(Delivery::AtLeastOnce);
}

#[test]
fn exactly_once_standby_takes_over_and_a_read_committed_reader_sees_each_decision_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    failover(Delivery::ExactlyOnce);
}

fn failover(delivery: Delivery) {
    let total = env_usize("VETO_FAILOVER_EVENTS", 40_000);
    let kills = env_usize("VETO_FAILOVER_KILLS", 3);
    // One payments partition: stream order is decision order, so every decision of a replay
    // must equal the uninterrupted run's.
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    create_topics(&brokers, 1);
    let events: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: 91,
        users: 3_000,
        ..SynthConfig::default()
    })
    .take(total)
    .collect();
    let tags = external_tags(&events);
    produce_tags(&brokers, &tags);

    let root = tempfile::tempdir().expect("tempdir");
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .into_iter()
        .map(|name| Instance::new(root.path(), name, &brokers, delivery))
        .collect();
    // The first instance is elected; the two started after it stand by.
    instances[0].start();
    wait_for_log(
        &instances[0].current_log(),
        "(\"payments\", 0)",
        Duration::from_secs(90),
    );
    for instance in &mut instances[1..] {
        instance.start();
    }
    for instance in &instances[1..] {
        wait_for_log(
            &instance.current_log(),
            "standby: replaying",
            Duration::from_secs(60),
        );
    }
    // The external tags are applied before the first event arrives.
    std::thread::sleep(Duration::from_secs(1));

    let mut produced = 0;
    let feed = |seen: &Seen, produced: &mut usize, cap: usize| {
        let cap = cap.min(total);
        while *produced < cap && *produced < seen.event.len() + STREAM_AHEAD {
            let end = (*produced + 2_500).min(cap);
            produce_events(&brokers, &events[*produced..end]);
            *produced = end;
        }
    };
    let consumer = progress_reader(&brokers, delivery);
    let mut seen = Seen::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4242);
    let mut decided_after_kill = Vec::new();
    let mut visible_after_kill = Vec::new();

    // What a standby costs against the active, over the same stretch of the stream (before the
    // first kill): CPU of each process per event, sampled at two points.
    let cpu_now = |instances: &[Instance]| -> Vec<f64> {
        instances
            .iter()
            .map(|i| i.process.as_ref().map_or(0.0, cpu_of))
            .collect()
    };
    while seen.event.len() < total / 20 {
        feed(&seen, &mut produced, total);
        seen.read_for(&consumer, Duration::from_millis(50));
    }
    let cpu_window_start = (seen.event.len(), cpu_now(&instances));
    let mut cpu_window = None;

    for kill in 0..kills {
        // Kill k lands at a random point of the k-th of `kills` equal stretches of the stream
        // (the active then has events in flight), and at least 1 s after the last takeover.
        let stretch = total / (kills + 1);
        let kill_at = stretch * (kill + 1) + rng.random_range(0..stretch / 2);
        let not_before = Instant::now() + Duration::from_secs(1);
        while seen.event.len() < kill_at || Instant::now() < not_before {
            feed(&seen, &mut produced, kill_at + AHEAD_OF_KILL);
            seen.read_for(&consumer, Duration::from_millis(50));
        }
        feed(
            &seen,
            &mut produced,
            (kill_at + 2 * AHEAD_OF_KILL).min(total - 1),
        );
        seen.read_for(&consumer, Duration::from_millis(rng.random_range(0..200)));
        if cpu_window.is_none() {
            cpu_window = Some((seen.event.len(), cpu_now(&instances)));
        }
        let active: Vec<usize> = (0..instances.len())
            .filter(|&i| instances[i].is_active())
            .collect();
        assert_eq!(active.len(), 1, "exactly one active instance: {active:?}");
        let victim = active[0];
        let before = seen.event.len();
        let killed_at = Instant::now();
        instances[victim].kill_9();
        // Read once the victim is reaped: a decision it took while the signal was on its way
        // may carry a later time than one read before the kill.
        let kill_ms = now_ms();
        // A standby takes over; the first decision it takes ends the outage.
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            feed(&seen, &mut produced, kill_at + STREAM_AHEAD);
            seen.read_for(&consumer, Duration::from_millis(50));
            if let Some(first) = seen.first_decided_after(kill_ms) {
                break first;
            }
            assert!(
                Instant::now() < deadline,
                "no decision within 60 s of killing {}:\n{}",
                instances[victim].name,
                logs_of(&instances)
            );
        };
        let decided = (first.0 - kill_ms) as f64 / 1000.0;
        let visible = first.1.duration_since(killed_at).as_secs_f64();
        decided_after_kill.push(decided);
        visible_after_kill.push(visible);
        let new_active: Vec<&str> = instances
            .iter()
            .filter(|i| i.is_active())
            .map(|i| i.name)
            .collect();
        eprintln!(
            "kill {kill}: {} killed with {before} events decided; {new_active:?} decided \
             {decided:.2} s after the kill (visible to the reader after {visible:.2} s)",
            instances[victim].name
        );
        assert_eq!(new_active.len(), 1, "one new active: {new_active:?}");
        // The killed instance comes back as a standby.
        instances[victim].start();
        wait_for_log(
            &instances[victim].current_log(),
            "standby: replaying",
            Duration::from_secs(60),
        );
    }

    let reference_dir = tempfile::tempdir().expect("tempdir");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let reference = reference(&rules, &tags, &events, reference_dir.path());
    let finished = |s: &Seen| {
        s.event.len() >= total
            && reference
                .never_captured
                .iter()
                .all(|id| s.timeouts.contains_key(id))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !finished(&seen) {
        assert!(
            Instant::now() < deadline,
            "{} of {total} events decided, {} of {} timeouts\n{}",
            seen.event.len(),
            reference
                .never_captured
                .iter()
                .filter(|id| seen.timeouts.contains_key(*id))
                .count(),
            reference.never_captured.len(),
            logs_of(&instances)
        );
        feed(&seen, &mut produced, total);
        seen.read_for(&consumer, Duration::from_millis(500));
    }
    // Standbys first, so that the role does not move when the active stops.
    let last_active = (0..instances.len())
        .find(|&i| instances[i].is_active())
        .expect("an active instance");
    for (i, instance) in instances.iter_mut().enumerate() {
        if i != last_active {
            instance.stop();
        }
    }
    instances[last_active].stop();

    // The standbys never consumed in the main group: no partition was ever assigned to a run
    // that was not elected.
    for instance in &instances {
        for run in 0..instance.runs {
            let log = std::fs::read_to_string(instance.log_path(run)).expect("log");
            if !log.contains("elected active") {
                assert!(
                    !log.contains("partitions assigned"),
                    "standby run {run} of {} consumed in the main group:\n{log}",
                    instance.name
                );
            }
        }
    }

    // 1. what a downstream reader sees.
    let (decisions, decision_bytes) = independent_read_committed(&brokers);
    let mut duplicated = 0;
    for e in &events {
        let got = decisions
            .get(&("event".to_string(), e.event_id.clone()))
            .unwrap_or_else(|| panic!("event {} has no decision", e.event_id));
        let want = &reference.verdicts[&e.event_id];
        duplicated += got.len() - 1;
        for g in got {
            assert_eq!(
                g, want,
                "decision of {} differs from the reference",
                e.event_id
            );
        }
    }
    let event_decisions = decisions.keys().filter(|(t, _)| t == "event").count();
    assert_eq!(
        event_decisions, total,
        "decisions for events never produced"
    );
    let blocked_by_external_tag = events
        .iter()
        .filter(|e| {
            reference.verdicts[&e.event_id]
                .1
                .iter()
                .any(|r| r == "known_fraudster")
        })
        .count();
    assert!(
        blocked_by_external_tag > 0,
        "the external tags decided nothing"
    );
    // 2. no timer lost.
    assert!(!reference.never_captured.is_empty());
    for id in &reference.never_captured {
        assert!(
            decisions.contains_key(&("timeout".to_string(), id.clone())),
            "no timeout decision for the never-captured authorization {id}"
        );
    }
    let timeouts: Vec<usize> = decisions
        .iter()
        .filter(|((t, _), _)| t == "timeout")
        .map(|(_, v)| v.len())
        .collect();
    let duplicate_timeouts: usize = timeouts.iter().map(|n| n - 1).sum();
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(
            duplicated, 0,
            "a read_committed reader saw duplicate decisions"
        );
        assert_eq!(
            duplicate_timeouts, 0,
            "a read_committed reader saw duplicate timeout decisions"
        );
    }

    // 3. the last active's final state equals the uninterrupted run's.
    let live = restored_store(&instances[last_active].dir.join("state"));
    let compared = compare_state(&reference, &events, &live);
    // The external tags reached the last active, which started as a standby.
    let now = events.iter().map(|e| e.event_time_ms).max().unwrap_or(0);
    for tag in &tags {
        assert!(
            live.has_tag(Field::UserId, &tag.value, &tag.tag, now),
            "external tag {} on {} missing in the last active's state",
            tag.tag,
            tag.value
        );
    }

    // The first instance was active and the two others standbys during the CPU window.
    let (end_count, end_cpu) = cpu_window.expect("a kill");
    let window_events = (end_count - cpu_window_start.0).max(1) as f64;
    let per_event = |i: usize| (end_cpu[i] - cpu_window_start.1[i]) / window_events * 1e6;
    let active_us = per_event(0);
    let standby_us = (per_event(1) + per_event(2)) / 2.0;
    let event_bytes: usize = events
        .iter()
        .map(|e| veto::event::encode_event(e, OutputFormat::Protobuf).len())
        .sum();
    let decision_count: usize = decisions.values().map(Vec::len).sum();
    eprintln!(
        "standby cost over {window_events} events: a standby {standby_us:.1} µs CPU per event, the \
         active {active_us:.1} µs ({:.0} %); a standby reads {:.0} B per event from the broker \
         (payment {:.0} B + decision {:.0} B)",
        standby_us / active_us * 100.0,
        (event_bytes + decision_bytes) as f64 / total as f64,
        event_bytes as f64 / total as f64,
        decision_bytes as f64 / decision_count.max(1) as f64,
    );

    let (decided_p50, decided_max) = p50_max(decided_after_kill);
    let (visible_p50, visible_max) = p50_max(visible_after_kill);
    eprintln!(
        "{delivery:?} failover on Apache Kafka: {total} events, 3 instances, {kills} kills of \
         the active: {duplicated} duplicate decisions (all identical), {} timeout decisions \
         ({duplicate_timeouts} duplicates), all {} never-captured authorizations among them, \
         {blocked_by_external_tag} events blocked by external tags, {compared} feature values \
         and tags equal; kill → first decision of the new active: p50 {decided_p50:.2} s, max \
         {decided_max:.2} s (visible to the reader: p50 {visible_p50:.2} s, max \
         {visible_max:.2} s; session.timeout.ms {SESSION_TIMEOUT})",
        timeouts.len(),
        reference.never_captured.len()
    );
}

/// Split brain: an active frozen (SIGSTOP) past its session timeout loses the role to the
/// standby; when it runs again it stops at once with an error instead of publishing on.
#[test]
fn an_active_that_lost_the_role_while_frozen_stops_when_it_runs_again() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    create_topics(&brokers, 1);
    let root = tempfile::tempdir().expect("tempdir");
    let mut a = Instance::new(root.path(), "a", &brokers, Delivery::AtLeastOnce);
    let mut b = Instance::new(root.path(), "b", &brokers, Delivery::AtLeastOnce);
    a.start();
    wait_for_log(
        &a.current_log(),
        "(\"payments\", 0)",
        Duration::from_secs(90),
    );
    b.start();
    wait_for_log(
        &b.current_log(),
        "standby: replaying",
        Duration::from_secs(60),
    );
    let events: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: 5,
        ..SynthConfig::default()
    })
    .take(2_000)
    .collect();
    produce_events(&brokers, &events[..1_000]);
    let consumer = progress_reader(&brokers, Delivery::AtLeastOnce);
    let mut seen = Seen::default();
    while seen.event.len() < 1_000 {
        seen.read_for(&consumer, Duration::from_millis(200));
    }

    let pid = a.process.as_ref().expect("running").0.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    wait_for_log(&b.current_log(), "elected active", Duration::from_secs(30));
    signal("-CONT");
    let resumed = Instant::now();
    let veto = a.process.as_mut().expect("running");
    let status = loop {
        if let Some(status) = veto.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "the old active kept running after it lost the role:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_after = resumed.elapsed();
    a.process = None;
    assert!(!status.success(), "losing the role is an error exit");
    assert!(a.log().contains("lost the active role"), "{}", a.log());
    // The new active decides what comes next.
    produce_events(&brokers, &events[1_000..]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.event.len() < events.len() {
        assert!(Instant::now() < deadline, "{} decided", seen.event.len());
        seen.read_for(&consumer, Duration::from_millis(200));
    }
    b.stop();
    eprintln!(
        "split brain: the frozen active stopped {:.2} s after it ran again (session.timeout.ms \
         {SESSION_TIMEOUT}); the standby took over and decided all {} events",
        stopped_after.as_secs_f64(),
        events.len()
    );
}
