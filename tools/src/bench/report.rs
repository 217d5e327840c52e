//! The benchmark report: `report.json` with the machine, parameters, results and plot files.

use std::path::{Path, PathBuf};

use super::machine::MachineInfo;
use super::BenchError;

/// Everything one scenario run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    /// Wall-clock start, RFC 3339 (UTC).
    pub started_at: String,
    pub duration_seconds: f64,
    pub machine: MachineInfo,
    /// The scenario's parameters as given.
    pub params: serde_json::Value,
    /// The scenario's measurements.
    pub results: serde_json::Value,
    /// PNG files written beside the report, relative to it.
    pub plots: Vec<String>,
}

impl Report {
    /// Writes `report.json` into `dir` (created if missing) and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&path, text + "\n").map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// Now as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_readable_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = Report {
            scenario: "core".into(),
            started_at: now_rfc3339(),
            duration_seconds: 1.5,
            machine: MachineInfo::collect(),
            params: serde_json::json!({ "threads": 2 }),
            results: serde_json::json!({ "events_per_sec": 10.0 }),
            plots: vec!["throughput.png".into()],
        };
        let path = report.write(&dir.path().join("out")).expect("write");
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        assert_eq!(back["scenario"], "core");
        assert_eq!(back["params"]["threads"], 2);
        assert!(back["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
        assert!(back["started_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')));
    }
}
