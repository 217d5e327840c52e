//! Telemetry: logging setup, the Prometheus recorder, and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) for `veto_eval_duration_seconds`: 1 µs .. 100 ms.
pub const EVAL_BUCKETS: &[f64] = &[
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-1,
];

/// Histogram buckets (seconds) for `veto_timer_lateness_seconds`: 100 µs .. 1 s.
pub const LATENESS_BUCKETS: &[f64] = &[1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 1e-1, 1.0];

/// Histogram buckets (seconds) of every other duration (checkpoints, restores, rule swaps,
/// checkpoint quiesce): 100 µs .. 5 min, so none is exported as a summary.
pub const DURATION_BUCKETS: &[f64] = &[
    1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Errors of the telemetry layer.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics recorder: {0}")]
    Recorder(String),
    #[error("telemetry.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Log output format (`telemetry.log_format`, `--log-format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The log format and level given on the command line (or in `VETO_LOG_FORMAT` /
/// `VETO_LOG_LEVEL`), which win over the defaults passed to [`LogChoice::init`].
#[derive(Debug, Default)]
pub struct LogChoice {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

impl LogChoice {
    /// Starts logging with the chosen format and level, else `format` and `level`.
    pub fn init(&self, format: LogFormat, level: &str) {
        init_logging(
            self.format.unwrap_or(format),
            self.level.as_deref().unwrap_or(level),
        );
    }
}

/// Installs the global tracing subscriber. `level` is an `EnvFilter` directive such as "info"
/// (overridden by `RUST_LOG` when set). Only the first call in a process takes effect.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The Prometheus exporter with Veto's histogram buckets: every histogram gets real buckets.
fn prometheus_builder() -> Result<PrometheusBuilder, TelemetryError> {
    PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("veto_eval_duration_seconds".into()),
                EVAL_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("veto_timer_lateness_seconds".into()),
                LATENESS_BUCKETS,
            )
        })
        .map_err(|e| TelemetryError::Recorder(e.to_string()))
}

/// Installs the global Prometheus recorder with real histogram buckets and returns its handle.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    prometheus_builder()?
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))
}

/// What `/readyz` reports: whether Veto is ready, and a JSON object of details.
pub trait Readiness: Send + Sync + 'static {
    fn readiness(&self) -> (bool, serde_json::Value);
}

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    readiness: Arc<dyn Readiness>,
}

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown` completes.
/// Returns the bound address (useful with port 0) and the serving future.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>), TelemetryError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| TelemetryError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: listen,
            source,
        })?;
    let upkeep = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, readiness });
    let serving = async move {
        let upkeep_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server stopped");
        }
        upkeep_task.abort();
    };
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    Ok((bound, serving))
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn ready_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let (ready, details) = state.readiness.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "details": details });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_is_exported_as_a_histogram_with_buckets() {
        let recorder = prometheus_builder()
            .expect("buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("veto_eval_duration_seconds").record(3e-6);
            metrics::histogram!("veto_store_checkpoint_duration_seconds").record(0.3);
            metrics::histogram!("veto_rules_swap_duration_seconds").record(0.002);
        });
        let text = handle.render();
        for name in [
            "veto_eval_duration_seconds",
            "veto_store_checkpoint_duration_seconds",
            "veto_rules_swap_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name} is not a histogram:\n{text}"
            );
        }
        assert!(
            text.contains("veto_eval_duration_seconds_bucket{le=\"0.000005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("veto_store_checkpoint_duration_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
    }
}
