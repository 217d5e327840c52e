//! CPU time per decided event of a process under test, by thread group, from `/proc` between two
//! points of a run (the e2e saturation phase's 20 % and 95 % marks).

use std::collections::BTreeMap;

use crate::kit::process::{process_cpu_seconds, thread_cpu_seconds};

/// The group of [`CpuPerEvent::by_thread_us`] for threads that ended between the two samples
/// (or started and ended between them: a checkpoint's writer, the blocking pool's threads),
/// which `/proc/<pid>/task` no longer lists: the process's own total less the listed threads.
pub const ENDED_THREADS: &str = "ended threads";

/// One sample: decided events, CPU seconds by thread group, the process's total CPU seconds
/// and its thread count.
type Sample = (usize, BTreeMap<String, f64>, Option<(f64, usize)>);

fn sample(pid: u32, decided: usize) -> Sample {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let total = process_cpu_seconds(pid).map(|t| (t, threads));
    (decided, thread_cpu_seconds(pid), total)
}

/// Samples a process's thread CPU when the count of decided events first reaches `from_at` and
/// `to_at`.
#[derive(Debug)]
pub struct CpuWindow {
    pid: u32,
    from_at: usize,
    to_at: usize,
    from: Option<Sample>,
    to: Option<Sample>,
}

/// CPU microseconds per decided event between the two samples.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuPerEvent {
    /// Decided events between the two samples.
    pub events: u64,
    /// Every thread of the process.
    pub total_us: f64,
    /// By thread group (`veto-worker`, `veto-source`, `rdk:broker`, `veto-rt`, …; threads
    /// that ended meanwhile under [`ENDED_THREADS`]).
    pub by_thread_us: BTreeMap<String, f64>,
}

impl CpuWindow {
    pub fn new(pid: u32, from_at: usize, to_at: usize) -> CpuWindow {
        CpuWindow {
            pid,
            from_at,
            to_at,
            from: None,
            to: None,
        }
    }

    /// Takes a sample when `decided` first reaches a mark (call it as the count grows).
    pub fn observe(&mut self, decided: usize) {
        if self.from.is_none() && decided >= self.from_at {
            self.from = Some(sample(self.pid, decided));
        } else if self.from.is_some() && self.to.is_none() && decided >= self.to_at {
            self.to = Some(sample(self.pid, decided));
        }
    }

    /// `None` until both samples are taken, or when no events or no CPU lie between them
    /// (`/proc` unreadable).
    pub fn result(&self) -> Option<CpuPerEvent> {
        let ((n0, a, total0), (n1, b, total1)) = (self.from.as_ref()?, self.to.as_ref()?);
        let events = n1.checked_sub(*n0).filter(|&n| n > 0)? as f64;
        let mut by_thread_us: BTreeMap<String, f64> = b
            .iter()
            .map(|(name, s)| {
                let before = a.get(name).copied().unwrap_or(0.0);
                (name.clone(), (s - before).max(0.0) * 1e6 / events)
            })
            .filter(|(_, us)| *us > 0.0)
            .collect();
        let listed_us: f64 = by_thread_us.values().sum();
        let (total_us, threads) = match (total0, total1) {
            (Some((t0, _)), Some((t1, threads))) => {
                (((t1 - t0) * 1e6 / events).max(listed_us), *threads)
            }
            _ => (listed_us, 0),
        };
        // `/proc` rounds each thread's time to 10-ms ticks: a remainder within a tick per
        // thread is that rounding, not a thread that ended
        let rounding_us = 1e4 * (threads + 1) as f64 / events;
        if total_us - listed_us > rounding_us {
            by_thread_us.insert(ENDED_THREADS.to_owned(), total_us - listed_us);
        }
        (total_us > 0.0).then_some(CpuPerEvent {
            events: events as u64,
            total_us,
            by_thread_us,
        })
    }
}

impl std::fmt::Display for CpuPerEvent {
    /// "7.9 µs (veto-worker 5.1, rdk:broker 1.9, …)", largest first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<(&String, &f64)> = self.by_thread_us.iter().collect();
        parts.sort_by(|x, y| y.1.total_cmp(x.1));
        let parts: Vec<String> = parts
            .iter()
            .map(|(name, us)| format!("{name} {us:.2}"))
            .collect();
        write!(f, "{:.2} µs ({})", self.total_us, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_on_this_process_counts_the_busy_thread() {
        if !cfg!(target_os = "linux") {
            return;
        }
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let spinning = std::sync::Arc::clone(&stop);
        let busy = std::thread::Builder::new()
            .name("cpu-window-1".into())
            .spawn(move || {
                while !spinning.load(Ordering::Relaxed) {
                    std::hint::black_box(0u64);
                }
            })
            .expect("spawn");
        let mut window = CpuWindow::new(std::process::id(), 10, 1_010);
        window.observe(5);
        assert!(window.result().is_none());
        window.observe(10);
        std::thread::sleep(std::time::Duration::from_millis(300));
        window.observe(1_010);
        stop.store(true, Ordering::Relaxed);
        busy.join().expect("join");
        let result = window.result().expect("a result");
        assert_eq!(result.events, 1_000);
        // about 300 ms of one core over 1,000 events: ~300 µs each (less on a loaded machine)
        let spun = result
            .by_thread_us
            .get("cpu-window")
            .copied()
            .unwrap_or(0.0);
        assert!(spun > 30.0, "{result}");
    }

    #[test]
    fn a_thread_that_ended_inside_the_window_is_counted() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let mut window = CpuWindow::new(std::process::id(), 10, 1_010);
        window.observe(10);
        std::thread::Builder::new()
            .name("cpu-window-ended".into())
            .spawn(|| {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(400);
                while std::time::Instant::now() < until {
                    std::hint::black_box(0u64);
                }
            })
            .expect("spawn")
            .join()
            .expect("join");
        window.observe(1_010);
        let result = window.result().expect("a result");
        // about 400 ms of one core over 1,000 events: ~400 µs each (less on a loaded machine)
        let ended = result.by_thread_us.get(ENDED_THREADS).copied();
        assert!(ended.is_some_and(|us| us > 40.0), "{result}");
        assert!(result.total_us >= result.by_thread_us.values().sum::<f64>() - 1e-6);
    }

    #[test]
    fn per_event_figures_are_the_differences_over_the_events() {
        let at = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
        };
        let window = CpuWindow {
            pid: 0,
            from_at: 0,
            to_at: 0,
            from: Some((
                1_000,
                at(&[("veto-worker", 1.0), ("rdk:broker", 0.5)]),
                None,
            )),
            to: Some((
                3_000,
                at(&[("veto-worker", 1.02), ("rdk:broker", 0.51), ("new", 0.002)]),
                None,
            )),
        };
        let r = window.result().expect("result");
        assert_eq!(r.events, 2_000);
        assert!((r.by_thread_us["veto-worker"] - 10.0).abs() < 1e-6);
        assert!((r.by_thread_us["rdk:broker"] - 5.0).abs() < 1e-6);
        assert!((r.by_thread_us["new"] - 1.0).abs() < 1e-6);
        assert!((r.total_us - 16.0).abs() < 1e-6);
        assert!(r
            .to_string()
            .starts_with("16.00 µs (veto-worker 10.00, rdk:broker 5.00"));
    }
}
