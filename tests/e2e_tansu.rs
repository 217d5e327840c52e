//! End to end against a real Kafka-protocol broker process (tansu) and the real `veto` binary:
//! every event gets exactly one decision across a SIGTERM mid-stream and a restart.
//! The broker binary comes from `$VETO_TANSU` (set by tests/run.sh) or `~/.cache/veto-tools/bin/tansu`.

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
