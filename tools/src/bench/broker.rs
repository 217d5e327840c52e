//! The broker under test: a tansu process started on a free 127.0.0.1 port, or brokers given by the user.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// Where the broker comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerInfo {
    /// "tansu (started by the harness)" or "external".
    pub kind: String,
    pub bootstrap: String,
    pub version: String,
}

/// A running broker; a tansu child process is killed when this is dropped.
pub struct Broker {
    pub info: BrokerInfo,
    child: Option<Child>,
}

/// The tansu binary: `$VETO_TANSU`, else `~/.cache/veto-tools/bin/tansu`.
pub fn tansu_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VETO_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/veto-tools/bin/tansu")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Broker(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| BenchError::Broker(e.to_string()))?
        .port();
    Ok(port)
}

/// The arguments that start tansu as a single in-memory broker on `port`.
pub fn tansu_args(port: u16) -> Vec<String> {
    let url = format!("tcp://127.0.0.1:{port}");
    vec![
        "broker".into(),
        "--kafka-listener-url".into(),
        url.clone(),
        "--advertised-listener-url".into(),
        url,
        "--storage-engine".into(),
        "memory://tansu/".into(),
    ]
}

impl Broker {
    /// Uses `brokers` when given, else starts tansu (logging to `tansu-<label>.log` in `log_dir`)
    /// and waits until it accepts connections.
    pub fn start(
        brokers: Option<&str>,
        log_dir: &std::path::Path,
        label: &str,
    ) -> Result<Broker, BenchError> {
        if let Some(b) = brokers {
            return Ok(Broker {
                info: BrokerInfo {
                    kind: "external".into(),
                    bootstrap: b.to_string(),
                    version: "unknown".into(),
                },
                child: None,
            });
        }
        let tansu = tansu_path();
        if !tansu.exists() {
            return Err(BenchError::Broker(format!(
                "{} not found: run `bash tests/run.sh` once (it builds tansu), or set VETO_TANSU, or pass --brokers",
                tansu.display()
            )));
        }
        let version = Command::new(&tansu)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let port = free_port()?;
        let log_path = log_dir.join(format!("tansu-{label}.log"));
        let log = std::fs::File::create(&log_path).map_err(|source| BenchError::Io {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| BenchError::Io {
            path: log_path.clone(),
            source,
        })?;
        let child = Command::new(&tansu)
            .args(tansu_args(port))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| BenchError::Broker(format!("spawn {}: {e}", tansu.display())))?;
        let mut broker = Broker {
            info: BrokerInfo {
                kind: "tansu (started by the harness, memory storage)".into(),
                bootstrap: format!("127.0.0.1:{port}"),
                version,
            },
            child: Some(child),
        };
        broker.wait_listening(port, Duration::from_secs(20), &log_path)?;
        Ok(broker)
    }

    fn wait_listening(
        &mut self,
        port: u16,
        timeout: Duration,
        log_path: &std::path::Path,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError::Broker(format!(
                        "tansu exited with {status}; see {}",
                        log_path.display()
                    )));
                }
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Timeout(format!(
            "tansu did not listen on 127.0.0.1:{port} within {timeout:?}; see {}",
            log_path.display()
        )))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tansu_listens_where_it_advertises() {
        let args = tansu_args(19092);
        assert_eq!(args[0], "broker");
        assert!(args.contains(&"tcp://127.0.0.1:19092".to_string()));
        assert!(free_port().expect("a free port") > 0);
    }

    #[test]
    fn external_brokers_are_used_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(Some("kafka:9092"), dir.path(), "x").expect("external");
        assert_eq!(broker.info.bootstrap, "kafka:9092");
        assert_eq!(broker.info.kind, "external");
    }
}
