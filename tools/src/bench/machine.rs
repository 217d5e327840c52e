//! What the benchmark ran on: cores, CPU model, memory, versions and the exact command.

use std::process::Command;

/// The machine and software a report was measured with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineInfo {
    pub hostname: String,
    pub os: String,
    pub cores: usize,
    pub cpu_model: String,
    pub memory_bytes: Option<u64>,
    pub veto_version: String,
    pub veto_tools_version: String,
    pub rustc: String,
    pub librdkafka: String,
    pub build_profile: String,
    /// The exact command line, shell-quoted.
    pub command: String,
    /// `/proc/loadavg` when the run started: other work sharing the cores.
    pub load_average: String,
}

impl MachineInfo {
    /// Reads the machine's description (missing sources become "unknown").
    pub fn collect() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            hostname: read_trimmed("/proc/sys/kernel/hostname"),
            os: read_trimmed("/proc/version"),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model: cpu_model(&cpuinfo),
            memory_bytes: mem_total(&meminfo),
            veto_version: veto_version(),
            veto_tools_version: env!("CARGO_PKG_VERSION").to_string(),
            rustc: command_output("rustc", &["--version"]),
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            build_profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            command: command_line(std::env::args()),
            load_average: read_trimmed("/proc/loadavg"),
        }
    }
}

fn veto_version() -> String {
    // both crates share the workspace version; the git commit pins the exact source.
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    format!("{} ({commit})", env!("CARGO_PKG_VERSION"))
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The `model name` line of /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Joins arguments into one shell-quoted command line.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n";
        assert_eq!(cpu_model(cpuinfo), "AMD EPYC 7B13");
        assert_eq!(cpu_model(""), "unknown");
        assert_eq!(
            mem_total("MemTotal:       2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn quotes_only_what_needs_it() {
        let line =
            command_line(["veto-bench", "core", "--out", "my dir", "it's"].map(String::from));
        assert_eq!(line, r"veto-bench core --out 'my dir' 'it'\''s'");
    }

    #[test]
    fn collects_this_machine() {
        let info = MachineInfo::collect();
        assert!(info.cores >= 1);
        assert!(!info.command.is_empty());
        assert!(!info.librdkafka.is_empty());
    }
}
