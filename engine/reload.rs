//! Hot swap of the rule sets (live and shadow): signals (SIGUSR1 reload, SIGTERM/SIGINT stop), the
//! one-at-a-time reloader, and the log line + metrics of every swap or rejected file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::decider::Engine;
use crate::rules::RuleSet;

/// What a reload attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new set is live.
    Swapped { old: Arc<str>, new: Arc<str> },
    /// The files were rejected; the old set keeps running. Holds the rendered diagnostics.
    Rejected { diagnostics: String },
}

/// Status of the last reload, for `/readyz` details.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub live_version: String,
    pub reloads: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Version of the shadow set, when one is loaded.
    pub shadow_version: Option<String>,
    /// Diagnostics of the last rejected shadow file (the previous shadow keeps running).
    pub shadow_last_error: Option<String>,
}

/// Listens for SIGUSR1 (reload) and SIGTERM/SIGINT (stop) on a dedicated thread.
/// Reload requests coalesce: while one reload runs, any number of signals queue exactly one more.
pub struct Signals {
    pub reload: mpsc::Receiver<Instant>,
    pub stop: watch::Receiver<bool>,
}

/// Installs the signal handlers (signal-hook) and returns the channels they feed.
pub fn listen_signals() -> std::io::Result<Signals> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGTERM, SIGINT])?;
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    std::thread::Builder::new()
        .name("veto-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    // A full channel means a reload is already queued: this one folds into it.
                    let _ = reload_tx.try_send(Instant::now());
                } else {
                    tracing::info!(signal, "stop signal received, draining");
                    let _ = stop_tx.send(true);
                }
            }
        })?;
    Ok(Signals {
        reload: reload_rx,
        stop: stop_rx,
    })
}

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Reads, checks, compiles and tests rule files off the async runtime.
pub async fn load_rules(paths: Vec<PathBuf>) -> Result<Arc<RuleSet>, String> {
    let joined = tokio::task::spawn_blocking(move || load_rules_blocking(&paths)).await;
    joined.unwrap_or_else(|e| Err(format!("rule loading task failed: {e}")))
}

/// Loads rule files and runs the set's own tests; on failure returns the rendered diagnostics.
///
/// The work runs on the reload pool: one thread fewer than the cores, at background priority
/// (nice 19), so a reload does not take CPU from the workers deciding events (under full load
/// it takes longer instead).
pub fn load_rules_blocking(paths: &[PathBuf]) -> Result<Arc<RuleSet>, String> {
    match reload_pool() {
        Some(pool) => pool.install(|| load_and_test(paths)),
        None => load_and_test(paths),
    }
}

/// Threads for reload work at the lowest normal priority; `None` if the pool cannot start
/// (then reloads run on the caller's thread).
fn reload_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // One core fewer than the machine has: a reload leaves a core to the workers.
        let threads =
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("veto-reload-{i}"))
            .start_handler(|_| {
                // Best effort: without it reloads just compete with the workers.
                let _ = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                );
            })
            .build()
            .ok()
    })
    .as_ref()
}

fn load_and_test(paths: &[PathBuf]) -> Result<Arc<RuleSet>, String> {
    let report = crate::rules::load(paths);
    let failed = report.has_errors();
    let rendered = report.render_human(false);
    let Some(rules) = report.ruleset.filter(|_| !failed) else {
        return Err(rendered);
    };
    let rules = Arc::new(rules);
    let failures = crate::ruletest::failures(&rules);
    if failures.is_empty() {
        Ok(rules)
    } else {
        Err(format!("rule tests failed:\n{}", failures.join("\n")))
    }
}

/// The rule files a reload reads: the live set and, when configured, the shadow set.
#[derive(Debug, Clone, Default)]
pub struct RulePaths {
    pub live: Vec<PathBuf>,
    /// Empty: no shadow set.
    pub shadow: Vec<PathBuf>,
}

/// Which set a swap replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Live,
    Shadow,
}

/// Loads the shadow set at start. A rejected shadow file is logged and counted, and the
/// service runs without a shadow: a bad candidate never stops the live set.
pub async fn load_shadow(engine: &Engine, paths: &[PathBuf]) -> Result<(), String> {
    if paths.is_empty() {
        return Ok(());
    }
    match load_rules(paths.to_vec()).await {
        Ok(rules) => {
            let version = rules.version().clone();
            engine.swap_shadow(Some(rules));
            shadow_swapped(None, &version);
            Ok(())
        }
        Err(diagnostics) => {
            shadow_rejected(&diagnostics);
            Err(diagnostics)
        }
    }
}

/// Serves reload requests one at a time until `requests` closes: the live set, then the
/// shadow set; each is swapped on its own success, a rejected one keeps its previous set.
pub async fn run_reloader(
    engine: Arc<Engine>,
    paths: RulePaths,
    mut requests: mpsc::Receiver<Instant>,
    status: Arc<parking_lot::Mutex<ReloadStatus>>,
    on_swap: impl Fn(&RuleSet, &RuleSet, SetKind) + Send + 'static,
) {
    while let Some(signalled_at) = requests.recv().await {
        let outcome = match load_rules(paths.live.clone()).await {
            Ok(new_rules) => {
                let new_version = new_rules.version().clone();
                let old = engine.rules();
                let diff = RuleDiff::between(&old, &new_rules);
                let swapping = Arc::clone(&engine);
                let Some(old_rules) = off_runtime(move || swapping.swap_rules(new_rules)).await
                else {
                    return; // the runtime is shutting down
                };
                let live = engine.rules();
                on_swap(&old_rules, &live, SetKind::Live);
                rules_swapped(&old_rules, &live, &diff, signalled_at.elapsed());
                ReloadOutcome::Swapped {
                    old: old_rules.version().clone(),
                    new: new_version,
                }
            }
            Err(diagnostics) => {
                rules_rejected(&diagnostics);
                ReloadOutcome::Rejected { diagnostics }
            }
        };
        let shadow = if paths.shadow.is_empty() {
            None
        } else {
            Some(reload_shadow(&engine, &paths.shadow, &on_swap).await)
        };
        let mut s = status.lock();
        s.reloads += 1;
        match outcome {
            ReloadOutcome::Swapped { new, .. } => {
                s.live_version = new.to_string();
                s.last_error = None;
            }
            ReloadOutcome::Rejected { diagnostics } => {
                s.failures += 1;
                s.last_error = Some(diagnostics);
            }
        }
        match shadow {
            Some(Ok(version)) => {
                s.shadow_version = Some(version.to_string());
                s.shadow_last_error = None;
            }
            Some(Err(diagnostics)) => s.shadow_last_error = Some(diagnostics),
            None => {}
        }
    }
}

/// Runs a swap on a blocking thread, not on the async runtime: a swap that drops features
/// walks every entity under the shard locks and waits for a checkpoint in progress. `None`
/// when the runtime is shutting down; a panic in `swap` propagates.
async fn off_runtime<T: Send + 'static>(swap: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(swap).await {
        Ok(value) => Some(value),
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => None,
        },
    }
}

/// Reloads the shadow set; on success returns its version.
async fn reload_shadow(
    engine: &Arc<Engine>,
    paths: &[PathBuf],
    on_swap: &(impl Fn(&RuleSet, &RuleSet, SetKind) + Send),
) -> Result<Arc<str>, String> {
    match load_rules(paths.to_vec()).await {
        Ok(rules) => {
            let version = rules.version().clone();
            let (swapping, new) = (Arc::clone(engine), rules.clone());
            let old = off_runtime(move || swapping.swap_shadow(Some(new)))
                .await
                .ok_or_else(|| "the runtime is shutting down".to_owned())?;
            if let Some(old) = &old {
                on_swap(old, &rules, SetKind::Shadow);
            }
            shadow_swapped(old.as_ref().map(|o| o.version().as_ref()), &version);
            Ok(version)
        }
        Err(diagnostics) => {
            shadow_rejected(&diagnostics);
            Err(diagnostics)
        }
    }
}

/// Rules added, removed and changed between two sets, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuleDiff {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
    pub changed: Vec<Arc<str>>,
}

impl RuleDiff {
    pub fn between(old: &RuleSet, new: &RuleSet) -> RuleDiff {
        let old_names: BTreeSet<Arc<str>> = old.rule_names().into_iter().collect();
        let new_names: BTreeSet<Arc<str>> = new.rule_names().into_iter().collect();
        RuleDiff {
            added: new_names.difference(&old_names).cloned().collect(),
            removed: old_names.difference(&new_names).cloned().collect(),
            changed: new_names
                .intersection(&old_names)
                .filter(|name| compiled_form(old, name) != compiled_form(new, name))
                .cloned()
                .collect(),
        }
    }
}

/// A rule's compiled form, compared to tell a changed rule from an unchanged one.
fn compiled_form(rules: &RuleSet, name: &str) -> Option<String> {
    rules
        .rules()
        .iter()
        .find(|r| &*r.name == name)
        .map(|r| format!("{r:?}"))
}

/// Sets `veto_rules_version_info{version}` to 1 for the live set (0 for the previous one).
pub fn rules_version_live(old: Option<&str>, new: &str) {
    if let Some(old) = old {
        metrics::gauge!("veto_rules_version_info", "version" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("veto_rules_version_info", "version" => new.to_owned()).set(1.0);
}

fn rules_swapped(old: &RuleSet, new: &RuleSet, diff: &RuleDiff, signal_to_live: Duration) {
    metrics::counter!("veto_rules_reloads_total", "result" => "swapped").increment(1);
    metrics::histogram!("veto_rules_swap_duration_seconds").record(signal_to_live.as_secs_f64());
    rules_version_live(Some(old.version()), new.version());
    tracing::info!(
        old_version = %old.version(),
        new_version = %new.version(),
        added = ?diff.added,
        removed = ?diff.removed,
        changed = ?diff.changed,
        signal_to_live_ms = signal_to_live.as_secs_f64() * 1e3,
        "rule set swapped"
    );
}

fn shadow_swapped(old: Option<&str>, new: &str) {
    metrics::counter!("veto_shadow_reloads_total", "result" => "swapped").increment(1);
    tracing::info!(
        old_version = old,
        new_version = new,
        "shadow rule set loaded"
    );
}

fn shadow_rejected(diagnostics: &str) {
    metrics::counter!("veto_shadow_reloads_total", "result" => "rejected").increment(1);
    tracing::error!(
        diagnostics = %diagnostics,
        "shadow rule files rejected; the live set is unaffected and the previous shadow (if any) keeps running"
    );
}

fn rules_rejected(diagnostics: &str) {
    metrics::counter!("veto_rules_reloads_total", "result" => "rejected").increment(1);
    metrics::counter!("veto_rules_reload_failures_total").increment(1);
    tracing::error!(
        diagnostics = %diagnostics,
        "rule reload rejected, the previous rule set keeps running"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str) -> RuleSet {
        let report = crate::rules::compile_source("t.veto", src, std::path::Path::new("."));
        assert!(!report.has_errors(), "{}", report.render_human(false));
        report.ruleset.expect("rule set")
    }

    #[test]
    fn sigusr1_reloads_the_shadow_too_and_a_bad_shadow_file_keeps_the_previous_shadow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live_file = dir.path().join("live.veto");
        let shadow_file = dir.path().join("shadow.veto");
        let write = |path: &std::path::Path, text: &str| std::fs::write(path, text).expect("write");
        write(
            &live_file,
            "version \"live-1\"\nrule a when amount > 5 then review\n",
        );
        write(
            &shadow_file,
            "version \"shadow-1\"\nrule a when amount > 1 then review\n",
        );
        let store = crate::store::TagStore::open(crate::store::StoreConfig {
            data_dir: dir.path().join("store"),
            ..crate::store::StoreConfig::default()
        })
        .expect("store");
        let timers = Arc::new(crate::decider::EventTimeTimers::default());
        let live = load_rules_blocking(std::slice::from_ref(&live_file)).expect("live rules");
        let engine = Arc::new(Engine::new(live, Arc::new(store), timers));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
        let paths = RulePaths {
            live: vec![live_file.clone()],
            shadow: vec![shadow_file.clone()],
        };
        runtime.block_on(async {
            load_shadow(&engine, &paths.shadow).await.expect("shadow");
            let (tx, rx) = mpsc::channel(1);
            let reloader = tokio::spawn(run_reloader(
                engine.clone(),
                paths,
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
            tx.send(Instant::now()).await.expect("request");
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
}
