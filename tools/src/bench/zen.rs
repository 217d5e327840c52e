//! ZEN comparison of `veto-bench core` (feature `zen`): GoRules' zen-engine evaluating a 40-row
//! first-hit decision table (`tools/zen/payments-table.json`) over the same synthetic events on
//! one thread. Inputs are converted before the clock starts, so only evaluation is timed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use veto::event::PaymentEvent;
use zen_engine::model::DecisionContent;
use zen_engine::{Decision, DecisionEngine, Variable};

use super::BenchError;

/// The zen-engine version measured.
pub const ZEN_VERSION: &str = "2.1.6";

/// What the comparison measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZenResult {
    pub table: PathBuf,
    pub zen_engine: &'static str,
    /// Rows of the decision table.
    pub rules: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Decisions by the table's `outcome` output.
    pub outcomes: BTreeMap<String, u64>,
    /// Veto's 1-thread events/s of the same run divided by ZEN's.
    pub veto_ratio: Option<f64>,
}

/// A compiled ZEN decision and its row count.
pub struct ZenTable {
    decision: Decision,
    rules: usize,
}

/// Loads and compiles the JDM decision at `path`.
pub fn load(path: &Path) -> Result<ZenTable, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |what: String| BenchError::Invalid(format!("{}: {what}", path.display()));
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let rules = raw["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["type"] == "decisionTableNode")
        .filter_map(|n| n["content"]["rules"].as_array())
        .map(Vec::len)
        .sum();
    let content: DecisionContent =
        serde_json::from_value(raw).map_err(|e| invalid(format!("not a JDM decision: {e}")))?;
    let mut decision = DecisionEngine::default()
        .create_decision(Arc::new(content))
        .map_err(|e| invalid(format!("{e:?}")))?;
    decision
        .validate()
        .map_err(|e| invalid(format!("invalid decision graph: {e}")))?;
    decision.compile();
    Ok(ZenTable { decision, rules })
}

/// The table's input for one payment: amounts in major units, the hour of day in UTC.
pub fn input(e: &PaymentEvent) -> Variable {
    let amount = e.amount_minor.map(|a| a as f64 / 100.0);
    let hour = e.event_time_ms.rem_euclid(86_400_000) / 3_600_000;
    Variable::from(json!({
        "type": e.kind,
        "amount": amount,
        "currency": e.currency,
        "ipCountry": e.ip_country,
        "cardCountry": e.card_country,
        "country": e.country,
        "mcc": e.mcc,
        "channel": e.channel,
        "hour": hour,
    }))
}

impl ZenTable {
    /// Evaluates one input; returns the `outcome` and `rule` outputs.
    pub async fn decide(&self, input: Variable) -> Result<(String, String), BenchError> {
        let response = self
            .decision
            .evaluate(input)
            .await
            .map_err(|e| BenchError::Invalid(format!("zen evaluation: {e:?}")))?;
        let text = |key: &str| {
            response
                .result
                .dot(key)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        Ok((text("outcome"), text("rule")))
    }
}

/// Evaluates the table on `events` after `warmup` of them, on this thread.
pub fn measure(
    table: &Path,
    events: &[PaymentEvent],
    warmup: usize,
) -> Result<ZenResult, BenchError> {
    let zen = load(table)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| BenchError::Invalid(format!("tokio runtime: {e}")))?;
    let warmup = warmup.min(events.len());
    let (warm, measured) = events.split_at(warmup);
    let warm: Vec<Variable> = warm.iter().map(input).collect();
    let inputs: Vec<Variable> = measured.iter().map(input).collect();
    runtime.block_on(async {
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for i in warm {
            std::hint::black_box(zen.decide(i).await?);
        }
        let started = Instant::now();
        for i in inputs {
            let (outcome, _) = zen.decide(i).await?;
            *outcomes.entry(outcome).or_default() += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let n = measured.len() as u64;
        Ok(ZenResult {
            table: table.to_path_buf(),
            zen_engine: ZEN_VERSION,
            rules: zen.rules,
            events: n,
            seconds,
            events_per_sec: if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            },
            outcomes,
            veto_ratio: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/zen/payments-table.json"
        ))
    }

    fn auth(amount_minor: i64) -> PaymentEvent {
        PaymentEvent {
            event_id: "e".into(),
            kind: "authorization".into(),
            event_time_ms: 1_767_225_600_000 + 12 * 3_600_000,
            amount_minor: Some(amount_minor),
            currency: Some("EUR".into()),
            country: Some("DE".into()),
            ip_country: Some("DE".into()),
            card_country: Some("DE".into()),
            mcc: Some("5411".into()),
            channel: Some("web".into()),
            ..PaymentEvent::default()
        }
    }

    #[test]
    fn the_table_decides_first_hit_as_written() {
        let zen = load(&table()).expect("table");
        assert_eq!(zen.rules, 40);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let decide = |e: PaymentEvent| rt.block_on(zen.decide(input(&e))).expect("decide");
        let rule = |e: PaymentEvent| decide(e).1;
        assert_eq!(decide(auth(4_000)), ("allow".into(), "default".into()));
        let mut e = auth(4_000);
        e.ip_country = Some("IR".into());
        assert_eq!(decide(e), ("block".into(), "sanctioned_ip".into()));
        assert_eq!(rule(auth(0)), "zero_amount_auth");
        let mut e = auth(4_000);
        e.currency = Some("XYZ".into());
        assert_eq!(rule(e), "unsupported_currency");
        let mut e = auth(600_000);
        e.card_country = Some("FR".into());
        assert_eq!(rule(e), "cross_border_high_amount");
        assert_eq!(rule(auth(600_000)), "high_amount_de_web");
        let mut e = auth(300_000);
        e.mcc = Some("7995".into());
        e.event_time_ms -= 10 * 3_600_000; // 02:00 UTC
        assert_eq!(rule(e), "gambling_at_night");
    }

    #[test]
    fn a_missing_table_names_its_path() {
        let err = load(Path::new("no/such.json")).err().expect("error");
        assert!(err.to_string().contains("no/such.json"), "{err}");
    }
}
