//! This process's resident memory and CPU time, read from `/proc` (Linux; 0 elsewhere).

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_vm_rss(&status).unwrap_or(0)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Total size of the files directly in `dir` (a RocksDB directory), 0 when unreadable.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process so far (0 when `/proc` cannot be read).
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// User + system CPU seconds of process `pid` so far, every thread it ran included (those that
/// have ended too); `None` when `/proc` cannot be read.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_cpu_seconds(&stat))
}

/// User + system CPU seconds of each thread group of process `pid` so far, by thread name with
/// its trailing index dropped (`veto-worker-0` and `veto-worker-1` are `veto-worker`;
/// librdkafka's `rdk:broker3` is `rdk:broker`). Empty when `/proc` cannot be read.
pub fn thread_cpu_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut groups = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.filter_map(Result::ok) {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        *groups.entry(thread_group(&comm)).or_insert(0.0) += parse_cpu_seconds(&stat);
    }
    groups
}

/// A thread's name without its trailing index (digits and a `-` before them).
fn thread_group(comm: &str) -> String {
    let name = comm.trim();
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let stem = if stem.len() < name.len() {
        stem.trim_end_matches('-')
    } else {
        stem
    };
    if stem.is_empty() { name } else { stem }.to_string()
}

/// User + system seconds of a `/proc/<pid>/stat` line (100 ticks per second).
pub fn parse_cpu_seconds(stat: &str) -> f64 {
    // fields after the parenthesised command name: utime and stime are the 12th and 13th
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let status = "Name:\tveto\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "42 (veto (bench)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert!((parse_cpu_seconds(stat) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn threads_group_by_name_without_index() {
        assert_eq!(thread_group("veto-worker-12\n"), "veto-worker");
        assert_eq!(thread_group("rdk:broker3"), "rdk:broker");
        assert_eq!(thread_group("veto-source"), "veto-source");
        assert_eq!(thread_group("42"), "42");
        if cfg!(target_os = "linux") {
            let busy = std::thread::Builder::new()
                .name("cpu-probe-7".into())
                .spawn(|| {
                    let started = std::time::Instant::now();
                    while started.elapsed() < std::time::Duration::from_millis(200) {
                        std::hint::black_box(0u64);
                    }
                    thread_cpu_seconds(std::process::id())
                })
                .expect("spawn");
            let groups = busy.join().expect("join");
            assert!(
                groups.get("cpu-probe").is_some_and(|s| *s > 0.05),
                "{groups:?}"
            );
        }
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes() > 1 << 20);
            let _busy: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
            assert!(cpu_seconds() >= 0.0);
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("a"), [0u8; 300]).expect("write");
            std::fs::write(dir.path().join("b"), [0u8; 200]).expect("write");
            assert_eq!(dir_bytes(dir.path()), 500);
            assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
        }
    }
}
