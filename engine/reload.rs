//! Hot swap of the rule sets (live and shadow): the one-at-a-time reloader (SIGUSR1, bounded by
//! `rules.swap_deadline`), the rollback to the previous live set (SIGUSR2), and the log line +
//! metrics of every swap, rollback, rejected file or abandoned reload. The signals themselves
//! are in `signals`.

mod signals;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decider::Engine;
use crate::rules::RuleSet;

pub use signals::{listen_signals, requests, stopped, Request, RequestSender, Requests, Signals};

/// Why a reload did not produce a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The files were rejected; holds the rendered diagnostics.
    #[error("{0}")]
    Rejected(String),
    /// The set was not read, checked, compiled and tested within `rules.swap_deadline`.
    #[error(
        "abandoned: not ready within rules.swap_deadline ({}ms)",
        .deadline.as_millis()
    )]
    DeadlineExceeded { deadline: Duration },
    /// The loading thread failed (a bug, not the files).
    #[error("rule loading task failed: {0}")]
    Task(String),
}

/// Status of the reloads and rollbacks, for `/readyz` details.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub live_version: String,
    /// Reload requests served (swapped, rejected or abandoned).
    pub reloads: u64,
    /// Reloads that left the running set in place (rejected or past the deadline).
    pub failures: u64,
    /// Of `failures`, reloads abandoned at `rules.swap_deadline`.
    pub deadline_exceeded: u64,
    pub last_error: Option<String>,
    /// The set a rollback (SIGUSR2) would return to, if any.
    pub previous_version: Option<String>,
    /// Rollbacks that swapped.
    pub rollbacks: u64,
    /// Version of the shadow set, when one is loaded.
    pub shadow_version: Option<String>,
    /// Diagnostics of the last rejected shadow file (the previous shadow keeps running).
    pub shadow_last_error: Option<String>,
}

/// Reads, checks, compiles and tests rule files off the async runtime (no deadline: start-up).
pub async fn load_rules(paths: Vec<PathBuf>) -> Result<Arc<RuleSet>, String> {
    let joined = tokio::task::spawn_blocking(move || load_rules_blocking(&paths)).await;
    joined.unwrap_or_else(|e| Err(LoadError::Task(e.to_string()).to_string()))
}

/// [`load_rules`] bounded by `deadline`: past it the work is abandoned (it stops at its next
/// step: after compiling, or before the next test block) and `DeadlineExceeded` comes back.
pub async fn load_rules_within(
    paths: Vec<PathBuf>,
    deadline: Duration,
) -> Result<Arc<RuleSet>, LoadError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancelled);
    let task =
        tokio::task::spawn_blocking(move || on_reload_thread(|| load_and_test(&paths, &flag)));
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(Some(loaded))) => loaded.map_err(LoadError::Rejected),
        // Cancelled without a timeout: cannot happen (only the timeout sets the flag).
        Ok(Ok(None)) => Err(LoadError::DeadlineExceeded { deadline }),
        Ok(Err(e)) => Err(LoadError::Task(e.to_string())),
        Err(_elapsed) => {
            cancelled.store(true, Ordering::Relaxed);
            Err(LoadError::DeadlineExceeded { deadline })
        }
    }
}

/// Loads rule files and runs the set's own tests; on failure returns the rendered diagnostics.
///
/// The work runs on the reload thread (see `on_reload_thread`).
pub fn load_rules_blocking(paths: &[PathBuf]) -> Result<Arc<RuleSet>, String> {
    on_reload_thread(|| load_and_test(paths, &AtomicBool::new(false)))
        .unwrap_or_else(|| Err("rule loading was cancelled".into()))
}

/// Runs `work` on the reload thread: one dedicated thread at the priority the process started
/// with, the same as the pipeline workers (they do not change theirs). Off the workers' own
/// threads, yet with a guaranteed share of the CPU when they saturate every core: a reload
/// then takes one thread's fair share instead of waiting for idle time. Reloads (and the
/// rule tests inside one) run one at a time on it. When the thread cannot start, `work` runs
/// on the caller's thread.
fn on_reload_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "veto-reload".to_owned())
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Loads and tests; `None` once `cancelled` is set (checked after compiling and between tests).
fn load_and_test(
    paths: &[PathBuf],
    cancelled: &AtomicBool,
) -> Option<Result<Arc<RuleSet>, String>> {
    let report = crate::rules::load(paths);
    if cancelled.load(Ordering::Relaxed) {
        return None;
    }
    let failed = report.has_errors();
    let rendered = report.render_human(false);
    let Some(rules) = report.ruleset.filter(|_| !failed) else {
        return Some(Err(rendered));
    };
    let rules = Arc::new(rules);
    let failures = crate::ruletest::failures_unless(&rules, cancelled)?;
    Some(if failures.is_empty() {
        Ok(rules)
    } else {
        Err(format!("rule tests failed:\n{}", failures.join("\n")))
    })
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
            shadow_rejected(&LoadError::Rejected(diagnostics.clone()));
            Err(diagnostics)
        }
    }
}

/// Serves reload (SIGUSR1) and rollback (SIGUSR2) requests one at a time until `requests`
/// closes. A reload loads the live set, then the shadow set, each within `deadline`; each is
/// swapped on its own success, a rejected or abandoned one keeps its previous set. A rollback
/// swaps the live set back to the one the last swap replaced (once: a second rollback without
/// a swap in between is a logged no-op).
pub async fn run_reloader(
    engine: Arc<Engine>,
    paths: RulePaths,
    deadline: Duration,
    mut requests: Requests,
    status: Arc<parking_lot::Mutex<ReloadStatus>>,
    on_swap: impl Fn(&RuleSet, &RuleSet, SetKind) + Send + 'static,
) {
    let mut reloader = Reloader {
        engine,
        paths,
        deadline,
        status,
        on_swap,
        previous: None,
    };
    while let Some(request) = requests.next().await {
        let served = match request {
            Request::Reload(signalled_at) => reloader.reload(signalled_at).await,
            Request::Rollback(signalled_at) => reloader.rollback(signalled_at).await,
        };
        if served.is_none() {
            return; // the runtime is shutting down
        }
    }
}

struct Reloader<F> {
    engine: Arc<Engine>,
    paths: RulePaths,
    deadline: Duration,
    status: Arc<parking_lot::Mutex<ReloadStatus>>,
    on_swap: F,
    /// The live set the last swap replaced: where a rollback returns to.
    previous: Option<Arc<RuleSet>>,
}

impl<F: Fn(&RuleSet, &RuleSet, SetKind) + Send> Reloader<F> {
    /// One SIGUSR1; `None` when the runtime is shutting down.
    async fn reload(&mut self, signalled_at: Instant) -> Option<()> {
        let outcome = match load_rules_within(self.paths.live.clone(), self.deadline).await {
            Ok(new_rules) => {
                let (old, live, diff) = self.swap_live(new_rules).await?;
                rules_swapped(&old, &live, &diff, signalled_at.elapsed());
                self.previous = Some(old);
                Ok(live)
            }
            Err(error) => {
                match &error {
                    LoadError::DeadlineExceeded { deadline } => {
                        rules_swap_abandoned(*deadline, signalled_at.elapsed());
                    }
                    LoadError::Rejected(_) | LoadError::Task(_) => rules_rejected(&error),
                }
                Err(error)
            }
        };
        let shadow = if self.paths.shadow.is_empty() {
            None
        } else {
            Some(self.reload_shadow().await)
        };
        let mut s = self.status.lock();
        s.reloads += 1;
        match outcome {
            Ok(live) => {
                s.live_version = live.version().to_string();
                s.previous_version = self.previous.as_ref().map(|p| p.version().to_string());
                s.last_error = None;
            }
            Err(error) => {
                s.failures += 1;
                if matches!(error, LoadError::DeadlineExceeded { .. }) {
                    s.deadline_exceeded += 1;
                }
                s.last_error = Some(error.to_string());
            }
        }
        match shadow {
            Some(Ok(version)) => {
                s.shadow_version = Some(version.to_string());
                s.shadow_last_error = None;
            }
            Some(Err(error)) => s.shadow_last_error = Some(error.to_string()),
            None => {}
        }
        Some(())
    }

    /// One SIGUSR2; `None` when the runtime is shutting down.
    async fn rollback(&mut self, signalled_at: Instant) -> Option<()> {
        let Some(previous) = self.previous.take() else {
            rollback_without_previous(self.engine.rules().version());
            return Some(());
        };
        let (old, live, diff) = self.swap_live(previous).await?;
        rules_rolled_back(&old, &live, &diff, signalled_at.elapsed());
        let mut s = self.status.lock();
        s.rollbacks += 1;
        s.live_version = live.version().to_string();
        s.previous_version = None;
        Some(())
    }

    /// Makes `new` the live set; returns the replaced set, the live one and what changed.
    async fn swap_live(&self, new: Arc<RuleSet>) -> Option<(Arc<RuleSet>, Arc<RuleSet>, RuleDiff)> {
        let engine = Arc::clone(&self.engine);
        let (old, live, diff) = off_runtime(move || {
            let old = engine.swap_rules(new);
            let live = engine.rules();
            // After the swap: naming the changed rules is not on the way to the new set.
            let diff = RuleDiff::between(&old, &live);
            (old, live, diff)
        })
        .await?;
        (self.on_swap)(&old, &live, SetKind::Live);
        Some((old, live, diff))
    }

    /// Reloads the shadow set; on success returns its version.
    async fn reload_shadow(&self) -> Result<Arc<str>, LoadError> {
        match load_rules_within(self.paths.shadow.clone(), self.deadline).await {
            Ok(rules) => {
                let version = rules.version().clone();
                let (swapping, new) = (Arc::clone(&self.engine), rules.clone());
                let old = off_runtime(move || swapping.swap_shadow(Some(new)))
                    .await
                    .ok_or_else(|| LoadError::Task("the runtime is shutting down".to_owned()))?;
                if let Some(old) = &old {
                    (self.on_swap)(old, &rules, SetKind::Shadow);
                }
                shadow_swapped(old.as_ref().map(|o| o.version().as_ref()), &version);
                Ok(version)
            }
            Err(error) => {
                shadow_rejected(&error);
                Err(error)
            }
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

fn shadow_rejected(error: &LoadError) {
    let result = match error {
        LoadError::DeadlineExceeded { .. } => "deadline_exceeded",
        LoadError::Rejected(_) | LoadError::Task(_) => "rejected",
    };
    metrics::counter!("veto_shadow_reloads_total", "result" => result).increment(1);
    tracing::error!(
        diagnostics = %error,
        "shadow rule files rejected; the live set is unaffected and the previous shadow (if any) keeps running"
    );
}

fn rules_rejected(error: &LoadError) {
    metrics::counter!("veto_rules_reloads_total", "result" => "rejected").increment(1);
    metrics::counter!("veto_rules_reload_failures_total").increment(1);
    tracing::error!(
        diagnostics = %error,
        "rule reload rejected, the previous rule set keeps running"
    );
}

fn rules_swap_abandoned(deadline: Duration, signal_to_abandon: Duration) {
    metrics::counter!("veto_rules_reloads_total", "result" => "deadline_exceeded").increment(1);
    metrics::counter!("veto_rules_reload_failures_total").increment(1);
    metrics::counter!("veto_rules_swap_deadline_exceeded_total").increment(1);
    tracing::error!(
        deadline_ms = deadline.as_secs_f64() * 1e3,
        signal_to_abandon_ms = signal_to_abandon.as_secs_f64() * 1e3,
        "rule reload abandoned: not ready within rules.swap_deadline, the previous rule set keeps running"
    );
}

fn rules_rolled_back(old: &RuleSet, new: &RuleSet, diff: &RuleDiff, signal_to_live: Duration) {
    metrics::counter!("veto_rules_rollbacks_total", "result" => "swapped").increment(1);
    rules_version_live(Some(old.version()), new.version());
    tracing::warn!(
        old_version = %old.version(),
        new_version = %new.version(),
        added = ?diff.added,
        removed = ?diff.removed,
        changed = ?diff.changed,
        signal_to_live_ms = signal_to_live.as_secs_f64() * 1e3,
        "rule set rolled back to the previous one"
    );
}

fn rollback_without_previous(live: &str) {
    metrics::counter!("veto_rules_rollbacks_total", "result" => "no_previous").increment(1);
    tracing::warn!(
        live_version = live,
        "rollback ignored: no previous rule set (none swapped since the start or the last rollback)"
    );
}

#[cfg(test)]
mod tests;
