//! End to end against Apache Kafka (a single-node KRaft broker per test, `tests/kafka/broker.sh`)
//! and the real `veto` binary: every event gets exactly one decision across a SIGTERM mid-stream
//! and a restart; SIGUSR1 swaps rule files live, SIGUSR2 rolls back to the previous set.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use veto::synth::{Synth, SynthConfig};

use support::*;

#[test]
fn sigterm_mid_stream_then_restart_decides_every_event_exactly_once() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers, 2);

    let events: Vec<_> = Synth::new(SynthConfig {
        seed: 11,
        users: 500,
        ..SynthConfig::default()
    })
    .take(400)
    .collect();
    let (first, second) = events.split_at(200);
    produce_events(&brokers, first);
    let data = tempfile::tempdir().expect("tempdir");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let config = write_config(data.path(), &brokers, "veto-e2e", &rules);
    let consumer = decisions_reader(&brokers, "e2e-reader");
    let mut seen = HashMap::new();

    let veto = start_veto(&config);
    read_decisions(&consumer, &mut seen, |s| s.len() >= 50);
    sigterm_and_wait(veto);

    // The second half arrives while Veto is down; the restarted process decides the rest.
    produce_events(&brokers, second);
    let veto = start_veto(&config);
    let total = events.len();
    read_decisions(&consumer, &mut seen, |s| s.len() >= total);
    sigterm_and_wait(veto);
    // Anything still in flight would have arrived by now.
    read_decisions(&consumer, &mut seen, |_| true);

    for e in &events {
        assert_eq!(
            seen.get(&e.event_id).copied(),
            Some(1),
            "event {} must have exactly one decision",
            e.event_id
        );
    }
}

#[test]
fn sigusr1_swaps_good_files_and_rejects_a_bad_one() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers, 2);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("v1")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-swap", &rules);
    let log_path = data.path().join("veto.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let veto = start_veto_logging(&config, log);
    let consumer = decisions_reader(&brokers, "swap-reader");

    let mut synth = Synth::new(SynthConfig {
        seed: 5,
        ..SynthConfig::default()
    });
    let mut probe = |consumer: &BaseConsumer| {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        version_of(consumer, &e.event_id)
    };
    assert_eq!(probe(&consumer), "v1");

    std::fs::write(&rules, with_version("v2")).expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&consumer) != "v2" {
        assert!(Instant::now() < deadline, "v2 never went live");
    }

    std::fs::write(
        &rules,
        format!(
            "{}\nrule broken when amount > \"x\" then block\n",
            with_version("v3")
        ),
    )
    .expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&log_path).expect("read log");
        if log.contains("rule reload rejected") {
            assert!(
                log.contains("type mismatch"),
                "diagnostics are logged: {log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad file was not rejected: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(probe(&consumer), "v2", "a rejected file changes nothing");

    std::fs::write(&rules, with_version("v4")).expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&consumer) != "v4" {
        assert!(Instant::now() < deadline, "v4 never went live");
    }
    sigterm_and_wait(veto);
}

#[test]
fn a_burst_of_50_sigusr1_keeps_the_service_up_and_ends_on_the_last_file() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers, 2);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("burst-0")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-burst", &rules);
    let veto = start_veto(&config);
    let consumer = decisions_reader(&brokers, "burst-reader");
    let mut synth = Synth::new(SynthConfig {
        seed: 9,
        ..SynthConfig::default()
    });
    let first = synth.next().expect("event");
    produce_events(&brokers, std::slice::from_ref(&first));
    assert_eq!(version_of(&consumer, &first.event_id), "burst-0");

    for i in 1..=50 {
        std::fs::write(&rules, with_version(&format!("burst-{i}"))).expect("write rules");
        send_sigusr1(&veto);
        let batch: Vec<_> = synth.by_ref().take(5).collect();
        produce_events(&brokers, &batch);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        if version_of(&consumer, &e.event_id) == "burst-50" {
            break;
        }
        assert!(Instant::now() < deadline, "the last file never went live");
    }
    sigterm_and_wait(veto);
}

#[test]
fn sigusr2_after_a_sigusr1_swap_returns_to_the_previous_set() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers, 2);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("v1")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-rollback", &rules);
    let log_path = data.path().join("veto.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let veto = start_veto_logging(&config, log);
    let consumer = decisions_reader(&brokers, "rollback-reader");
    let mut synth = Synth::new(SynthConfig {
        seed: 13,
        ..SynthConfig::default()
    });
    let mut probe = |consumer: &BaseConsumer| {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        version_of(consumer, &e.event_id)
    };
    assert_eq!(probe(&consumer), "v1");

    // Nothing swapped yet: a rollback is a logged no-op.
    send_sigusr2(&veto);
    wait_for_log(&log_path, "rollback ignored", Duration::from_secs(30));
    assert_eq!(probe(&consumer), "v1");

    std::fs::write(&rules, with_version("v2")).expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&consumer) != "v2" {
        assert!(Instant::now() < deadline, "v2 never went live");
    }

    send_sigusr2(&veto);
    wait_for_log(&log_path, "rule set rolled back", Duration::from_secs(30));
    for _ in 0..5 {
        assert_eq!(probe(&consumer), "v1", "every decision after the rollback");
    }

    // A second rollback has no previous set to return to: v1 stays.
    send_sigusr2(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_count(&log_path, "rollback ignored") < 2 {
        assert!(
            Instant::now() < deadline,
            "the second rollback was not logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(probe(&consumer), "v1");
    assert_eq!(log_count(&log_path, "rule set rolled back"), 1);
    sigterm_and_wait(veto);
}

#[test]
fn a_sigusr1_reload_past_rules_swap_deadline_is_abandoned_counted_and_the_old_set_decides() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers, 2);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("small")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-deadline", &rules);
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replacen("swap_deadline = \"30s\"", "swap_deadline = \"1ms\"", 1),
    )
    .expect("write config");
    let log_path = data.path().join("veto.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let veto = start_veto_logging(&config, log);
    let metrics = metrics_address(&log_path);
    let consumer = decisions_reader(&brokers, "deadline-reader");
    let mut synth = Synth::new(SynthConfig {
        seed: 17,
        ..SynthConfig::default()
    });
    let mut probe = |consumer: &BaseConsumer| {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        version_of(consumer, &e.event_id)
    };
    assert_eq!(probe(&consumer), "small");
    let counter = "veto_rules_swap_deadline_exceeded_total";
    assert_eq!(scrape(&metrics, counter), 0.0);

    // The shipped rules plus 2,000 more: far more than 1 ms of work.
    let mut big = with_version("big");
    for i in 0..2000 {
        big.push_str(&format!(
            "rule extra_{i} \"extra {i}\"\n  when type == \"authorization\" and amount > {} and card_auths_10m >= 100\n  then review, score 1\n\n",
            1_000_000 + i
        ));
    }
    std::fs::write(&rules, big).expect("write rules");
    send_sigusr1(&veto);
    wait_for_log(&log_path, "rule reload abandoned", Duration::from_secs(30));
    for _ in 0..3 {
        assert_eq!(probe(&consumer), "small", "the old set keeps deciding");
    }
    assert_eq!(scrape(&metrics, counter), 1.0);
    assert_eq!(
        scrape(
            &metrics,
            "veto_rules_reloads_total{result=\"deadline_exceeded\"}"
        ),
        1.0
    );
    assert_eq!(
        scrape(&metrics, "veto_rules_version_info{version=\"small\"}"),
        1.0
    );
    assert_eq!(log_count(&log_path, "rule set swapped"), 0);
    sigterm_and_wait(veto);
}

/// Adds lines to the `[kafka]` section of a config written by `write_config*`.
fn with_kafka_lines(config: &std::path::Path, lines: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    std::fs::write(
        config,
        text.replacen("[kafka]\n", &format!("[kafka]\n{lines}\n"), 1),
    )
    .expect("write config");
}

#[test]
fn kill_9_of_the_broker_mid_stream_loses_no_decision() {
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    create_topics(&brokers, 2);
    let events: Vec<_> = Synth::new(SynthConfig {
        seed: 23,
        users: 800,
        ..SynthConfig::default()
    })
    .take(6_000)
    .collect();
    let (first, second) = events.split_at(3_000);
    let data = tempfile::tempdir().expect("tempdir");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let config = write_config_with(
        data.path(),
        &brokers,
        "veto-outage",
        &rules,
        "checkpoint_interval = \"500ms\"",
        &[],
    );
    let log_path = data.path().join("veto.log");
    let mut veto = start_veto_logging(&config, std::fs::File::create(&log_path).expect("log"));
    let consumer = decisions_reader(&brokers, "outage-reader");
    let mut seen = HashMap::new();
    produce_events(&brokers, first);
    read_decisions(&consumer, &mut seen, |s| s.len() >= 1_000);

    // The broker dies mid-stream (decisions in flight, offsets uncommitted), stays down for a
    // while, and comes back on the same log dir and port.
    kafka.kill_9();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        veto.0.try_wait().expect("wait").is_none(),
        "veto exited during the broker outage"
    );
    kafka.restart();
    produce_events(&brokers, second);
    let total = events.len();
    read_decisions(&consumer, &mut seen, |s| s.len() >= total);
    sigterm_and_wait(veto);
    for e in &events {
        assert!(
            seen.contains_key(&e.event_id),
            "event {} has no decision after the broker outage",
            e.event_id
        );
    }
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("kafka brokers unreachable") && log.contains("kafka broker reachable"),
        "the outage is logged: {}",
        &log[..log.len().min(4_000)]
    );
}

#[test]
fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    create_topics(&brokers, 2);
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    // Two deployments (groups) misconfigured with one transactional id: in one group the second
    // instance would only be a standby.
    let start = |name: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config_with(
            dir.path(),
            &brokers,
            &format!("veto-fence-{name}"),
            &rules,
            "checkpoint_interval = \"300ms\"",
            &[],
        );
        with_kafka_lines(
            &config,
            "delivery = \"exactly_once\"\ntransactional_id = \"veto-shared\"",
        );
        let log_path = dir.path().join(format!("{name}.log"));
        let veto = start_veto_logging(&config, std::fs::File::create(&log_path).expect("log"));
        wait_for_log(&log_path, "partitions assigned", Duration::from_secs(60));
        (dir, log_path, veto)
    };
    let mut synth = Synth::new(SynthConfig {
        seed: 3,
        ..SynthConfig::default()
    });
    let (_first_dir, first_log, mut first) = start("first");
    let batch: Vec<_> = synth.by_ref().take(200).collect();
    produce_events(&brokers, &batch);
    wait_for_log(
        &first_log,
        "kafka transaction committed",
        Duration::from_secs(60),
    );

    let (_second_dir, _second_log, second) = start("second");
    let batch: Vec<_> = synth.by_ref().take(200).collect();
    produce_events(&brokers, &batch);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the fenced instance kept running: {}",
            std::fs::read_to_string(&first_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a fenced instance exits with an error");
    let log = std::fs::read_to_string(&first_log).expect("log");
    // When the takeover lands while the first instance is committing, Apache Kafka 4.4.0 can
    // answer that EndTxn with an unknown server error instead of a fencing error (under load,
    // e.g. beside the other test binaries): the instance stops all the same, with the
    // transaction error.
    let fenced = log.contains("fenced by another instance with transactional id \"veto-shared\"");
    let commit_raced = log.contains("kafka transaction failed (commit)")
        && log.contains("EndTxn commit failed: Unknown broker error");
    assert!(
        fenced || commit_raced,
        "the fenced instance says why it stopped: {log}"
    );
    sigterm_and_wait(second);
}
