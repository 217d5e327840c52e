//! The broker under test: a single-node Apache Kafka started by `tests/kafka/broker.sh` on free
//! 127.0.0.1 ports in the output folder, or brokers given by the user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::BenchError;

/// Where the broker comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerInfo {
    /// "Apache Kafka (started by the harness)" or "external".
    pub kind: String,
    pub bootstrap: String,
    pub version: String,
}

/// A running broker; one the harness started is stopped when this is dropped.
pub struct Broker {
    pub info: BrokerInfo,
    /// The state folder of a broker the harness started.
    dir: Option<PathBuf>,
}

/// The Kafka version `tests/kafka/broker.sh` runs.
pub const KAFKA_VERSION: &str = "4.4.0";

/// `tests/kafka/broker.sh`: `$VETO_KAFKA_SCRIPT`, else the repository's copy.
pub fn broker_script() -> PathBuf {
    match std::env::var_os("VETO_KAFKA_SCRIPT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kafka/broker.sh"),
    }
}

/// Runs `broker.sh <command> <dir>`; its standard output, trimmed.
fn script(command: &str, dir: &Path) -> Result<String, BenchError> {
    let script = broker_script();
    let out = Command::new("bash")
        .arg(&script)
        .arg(command)
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| BenchError::Broker(format!("run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(BenchError::Broker(format!(
            "{} {command} {} failed ({}); see {}/broker.log",
            script.display(),
            dir.display(),
            out.status,
            dir.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Broker {
    /// Uses `brokers` when given, else starts Apache Kafka with its state and log in
    /// `<out>/kafka-<label>` and waits until it serves requests.
    pub fn start(brokers: Option<&str>, out: &Path, label: &str) -> Result<Broker, BenchError> {
        if let Some(b) = brokers {
            return Ok(Broker {
                info: BrokerInfo {
                    kind: "external".into(),
                    bootstrap: b.to_string(),
                    version: "unknown".into(),
                },
                dir: None,
            });
        }
        let dir = out.join(format!("kafka-{label}"));
        // a fresh broker: a previous run's log would be read as this run's input
        let _ = script("stop", &dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| BenchError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let dir = std::path::absolute(&dir).map_err(|source| BenchError::Io {
            path: dir.clone(),
            source,
        })?;
        let bootstrap = script("start", &dir)?;
        Ok(Broker {
            info: BrokerInfo {
                kind: "Apache Kafka, single-node KRaft (started by the harness)".into(),
                bootstrap,
                version: KAFKA_VERSION.into(),
            },
            dir: Some(dir),
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = script("stop", dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_script_is_the_repositorys() {
        let script = broker_script();
        assert!(script.ends_with("tests/kafka/broker.sh"));
        assert!(script.exists(), "{}", script.display());
    }

    #[test]
    fn external_brokers_are_used_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(Some("kafka:9092"), dir.path(), "x").expect("external");
        assert_eq!(broker.info.bootstrap, "kafka:9092");
        assert_eq!(broker.info.kind, "external");
    }
}
