//! Tests of the reloader: shadow reloads, the swap deadline, rollbacks, and the rule diff.

use std::path::{Path, PathBuf};

use super::*;
use crate::synth::{Synth, SynthConfig};

fn compile(src: &str) -> RuleSet {
    let report = crate::rules::compile_source("t.veto", src, Path::new("."));
    assert!(!report.has_errors(), "{}", report.render_human(false));
    report.ruleset.expect("rule set")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An engine running the set in `live_file`, with its store under `dir`.
fn engine_on(dir: &Path, live_file: &Path) -> Arc<Engine> {
    let store = crate::store::TagStore::open(crate::store::StoreConfig {
        data_dir: dir.join("store"),
        ..crate::store::StoreConfig::default()
    })
    .expect("store");
    let timers = Arc::new(crate::decider::EventTimeTimers::default());
    let live = load_rules_blocking(&[live_file.to_path_buf()]).expect("live rules");
    Arc::new(Engine::new(live, Arc::new(store), timers))
}

/// The rule set version of the decision of a fresh synthetic event.
fn decided_version(engine: &Engine, synth: &mut Synth) -> String {
    let event = synth.next().expect("event");
    engine
        .decide(&event, event.event_time_ms)
        .decision
        .ruleset_version
        .to_string()
}

/// Waits (up to 60 s) until the reload status satisfies `done`.
async fn until(status: &parking_lot::Mutex<ReloadStatus>, done: impl Fn(&ReloadStatus) -> bool) {
    let limit = Instant::now() + Duration::from_secs(60);
    while !done(&status.lock()) {
        assert!(
            Instant::now() < limit,
            "status never changed: {:?}",
            status.lock()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of one series in a Prometheus text rendering (0 when absent).
fn series(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn paths(live: &Path) -> RulePaths {
    RulePaths {
        live: vec![live.to_path_buf()],
        shadow: Vec::new(),
    }
}

#[test]
fn sigusr1_reloads_the_shadow_too_and_a_bad_shadow_file_keeps_the_previous_shadow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_file = dir.path().join("live.veto");
    let shadow_file = dir.path().join("shadow.veto");
    write(
        &live_file,
        "version \"live-1\"\nrule a when amount > 5 then review\n",
    );
    write(
        &shadow_file,
        "version \"shadow-1\"\nrule a when amount > 1 then review\n",
    );
    let engine = engine_on(dir.path(), &live_file);
    let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
    let paths = RulePaths {
        live: vec![live_file.clone()],
        shadow: vec![shadow_file.clone()],
    };
    runtime().block_on(async {
        load_shadow(&engine, &paths.shadow).await.expect("shadow");
        let (tx, rx) = requests();
        let reloader = tokio::spawn(run_reloader(
            engine.clone(),
            paths,
            Duration::from_secs(60),
            rx,
            status.clone(),
            |_: &RuleSet, _: &RuleSet, _: SetKind| {},
        ));
        // Both files change; the shadow one is broken.
        write(
            &live_file,
            "version \"live-2\"\nrule a when amount > 6 then review\n",
        );
        write(
            &shadow_file,
            "version \"shadow-2\"\nrule a when amount > then review\n",
        );
        assert!(tx.reload());
        drop(tx);
        reloader.await.expect("reloader");
    });
    assert_eq!(&**engine.rules().version(), "live-2");
    let shadow = engine
        .shadow_rules()
        .expect("the previous shadow keeps running");
    assert_eq!(&**shadow.version(), "shadow-1");
    let s = status.lock();
    assert_eq!((s.reloads, s.failures), (1, 0));
    assert!(s.shadow_last_error.is_some());
}

#[test]
fn sigusr2_returns_to_the_previous_set_once_and_a_second_one_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_file = dir.path().join("live.veto");
    write(
        &live_file,
        "version \"v1\"\nrule a when amount > 5 then review\n",
    );
    let engine = engine_on(dir.path(), &live_file);
    let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let mut synth = Synth::new(SynthConfig::default());
    let swapped = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let on_swap = {
        let swapped = Arc::clone(&swapped);
        move |old: &RuleSet, new: &RuleSet, _: SetKind| {
            swapped
                .lock()
                .push(format!("{} -> {}", old.version(), new.version()));
        }
    };
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let (tx, rx) = requests();
            let reloader = tokio::spawn(run_reloader(
                engine.clone(),
                paths(&live_file),
                Duration::from_secs(60),
                rx,
                status.clone(),
                on_swap,
            ));
            // Nothing swapped yet: nothing to return to.
            assert!(tx.rollback());
            until(&status, |_| {
                series(
                    &metrics.render(),
                    "veto_rules_rollbacks_total{result=\"no_previous\"}",
                ) == 1.0
            })
            .await;
            assert_eq!(decided_version(&engine, &mut synth), "v1");

            write(
                &live_file,
                "version \"v2\"\nrule a when amount > 6 then review\n",
            );
            assert!(tx.reload());
            until(&status, |s| s.reloads == 1).await;
            assert_eq!(decided_version(&engine, &mut synth), "v2");
            assert_eq!(status.lock().previous_version.as_deref(), Some("v1"));

            assert!(tx.rollback());
            until(&status, |s| s.rollbacks == 1).await;
            for _ in 0..3 {
                assert_eq!(decided_version(&engine, &mut synth), "v1");
            }
            assert!(tx.rollback());
            drop(tx);
            reloader.await.expect("reloader");
        });
    });
    assert_eq!(
        decided_version(&engine, &mut synth),
        "v1",
        "the second rollback changed nothing"
    );
    let s = status.lock();
    assert_eq!(
        (s.live_version.as_str(), s.previous_version.as_deref()),
        ("v1", None)
    );
    assert_eq!((s.reloads, s.rollbacks, s.failures), (1, 1, 0));
    assert_eq!(
        *swapped.lock(),
        ["v1 -> v2", "v2 -> v1"],
        "timers see both swaps"
    );
    let rendered = metrics.render();
    assert_eq!(
        series(&rendered, "veto_rules_rollbacks_total{result=\"swapped\"}"),
        1.0
    );
    assert_eq!(
        series(
            &rendered,
            "veto_rules_rollbacks_total{result=\"no_previous\"}"
        ),
        2.0
    );
    assert_eq!(
        series(&rendered, "veto_rules_version_info{version=\"v1\"}"),
        1.0
    );
    assert_eq!(
        series(&rendered, "veto_rules_version_info{version=\"v2\"}"),
        0.0
    );
}

/// A rule file of `rules` rules (and one test block), version `version`.
fn big_rule_file(version: &str, rules: usize) -> String {
    let mut text = format!("version \"{version}\"\n");
    for i in 0..rules {
        text.push_str(&format!(
            "rule r{i} \"rule {i}\" when type == \"authorization\" and amount > {} then review, score 1\n",
            1_000_000 + i
        ));
    }
    text.push_str(
        "test \"small payment\" {\n  event { type: \"authorization\", amount: 10, at: 0s }\n  expect allow\n}\n",
    );
    text
}

#[test]
fn a_reload_past_the_deadline_is_abandoned_and_counted_and_the_old_set_keeps_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_file = dir.path().join("live.veto");
    write(
        &live_file,
        "version \"small\"\nrule a when amount > 5 then review\n",
    );
    let engine = engine_on(dir.path(), &live_file);
    let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let mut synth = Synth::new(SynthConfig::default());
    write(&live_file, &big_rule_file("big", 3000));
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let (tx, rx) = requests();
            let reloader = tokio::spawn(run_reloader(
                engine.clone(),
                paths(&live_file),
                Duration::from_millis(1),
                rx,
                status.clone(),
                |_: &RuleSet, _: &RuleSet, _: SetKind| {},
            ));
            assert!(tx.reload());
            drop(tx);
            reloader.await.expect("reloader");
        });
    });
    assert_eq!(&**engine.rules().version(), "small");
    assert_eq!(decided_version(&engine, &mut synth), "small");
    {
        let s = status.lock();
        assert_eq!((s.reloads, s.failures, s.deadline_exceeded), (1, 1, 1));
        let error = s.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("rules.swap_deadline (1ms)"), "{error}");
    }
    let rendered = metrics.render();
    assert_eq!(
        series(&rendered, "veto_rules_swap_deadline_exceeded_total"),
        1.0
    );
    assert_eq!(series(&rendered, "veto_rules_reload_failures_total"), 1.0);
    assert_eq!(
        series(
            &rendered,
            "veto_rules_reloads_total{result=\"deadline_exceeded\"}"
        ),
        1.0
    );
    assert_eq!(
        series(&rendered, "veto_rules_reloads_total{result=\"swapped\"}"),
        0.0
    );

    // The same file within a generous deadline swaps: the deadline, not the file, stopped it
    // (and the abandoned work does not hold up the reload thread).
    runtime().block_on(async {
        let (tx, rx) = requests();
        let reloader = tokio::spawn(run_reloader(
            engine.clone(),
            paths(&live_file),
            Duration::from_secs(60),
            rx,
            status.clone(),
            |_: &RuleSet, _: &RuleSet, _: SetKind| {},
        ));
        assert!(tx.reload());
        drop(tx);
        reloader.await.expect("reloader");
    });
    assert_eq!(decided_version(&engine, &mut synth), "big");
    assert_eq!(status.lock().previous_version.as_deref(), Some("small"));
}

#[test]
fn a_rejected_file_keeps_the_running_set_and_leaves_the_rollback_target_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_file: PathBuf = dir.path().join("live.veto");
    write(
        &live_file,
        "version \"v1\"\nrule a when amount > 5 then review\n",
    );
    let engine = engine_on(dir.path(), &live_file);
    let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
    runtime().block_on(async {
        let (tx, rx) = requests();
        let reloader = tokio::spawn(run_reloader(
            engine.clone(),
            paths(&live_file),
            Duration::from_secs(60),
            rx,
            status.clone(),
            |_: &RuleSet, _: &RuleSet, _: SetKind| {},
        ));
        write(
            &live_file,
            "version \"v2\"\nrule a when amount > 6 then review\n",
        );
        assert!(tx.reload());
        until(&status, |s| s.reloads == 1).await;
        write(
            &live_file,
            "version \"v3\"\nrule a when amount > then review\n",
        );
        assert!(tx.reload());
        until(&status, |s| s.reloads == 2).await;
        assert_eq!(status.lock().failures, 1);
        assert!(tx.rollback());
        drop(tx);
        reloader.await.expect("reloader");
    });
    assert_eq!(
        &**engine.rules().version(),
        "v1",
        "the rollback returns past the rejected file"
    );
}

#[test]
fn diff_names_added_removed_and_changed_rules_only() {
    let lists = "list geo = [\"KP\", \"IR\", \"SY\", \"CU\", \"NG\", \"RU\", \"BY\", \"VE\", \"XX\", \"YY\"]\n";
    let old = compile(&format!(
        "{lists}rule keep when ip_country in geo then block\nrule edit when amount > 5 then review\nrule gone when amount > 9 then review\n"
    ));
    let new = compile(&format!(
        "{lists}rule keep when ip_country in geo then block\nrule edit when amount > 6 then review\nrule fresh when amount > 1 then review\n"
    ));
    let diff = RuleDiff::between(&old, &new);
    let names = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&diff.added), ["fresh"]);
    assert_eq!(names(&diff.removed), ["gone"]);
    assert_eq!(names(&diff.changed), ["edit"]);
}
