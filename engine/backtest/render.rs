//! The human summary of a backtest report.

use super::{Report, SetReport};
use crate::event::Outcome;

/// The summary printed to stdout.
pub fn render_human(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backtest: {} events from {} in {:.2} s ({:.0} events/s); {} bad records",
        report.events,
        report.events_file,
        report.seconds,
        report.events_per_second,
        report.bad_records
    );
    let _ = writeln!(
        s,
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "set", "allow", "review", "challenge", "block", "timeouts"
    );
    let mut row = |label: &str, set: &SetReport| {
        let count = |o: Outcome| set.decisions.get(o.name()).copied().unwrap_or(0);
        let timeouts: u64 = set.timeout_decisions.values().sum();
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format!("{label} {}", set.version),
            count(Outcome::Allow),
            count(Outcome::Review),
            count(Outcome::Challenge),
            count(Outcome::Block),
            timeouts
        );
    };
    if let Some(baseline) = &report.baseline {
        row("baseline", baseline);
    }
    row("new", &report.new);
    if let Some(changes) = &report.changes {
        let _ = writeln!(
            s,
            "outcome changed on {} events ({} more kept the outcome with different hits)",
            changes.changed_events, changes.hits_changed_events
        );
        for t in &changes.transitions {
            let _ = writeln!(
                s,
                "  {:>9} -> {:<9} {:>10}  e.g. {}",
                t.from,
                t.to,
                t.events,
                t.sample_event_ids.join(", ")
            );
        }
        if !changes.rule_hit_deltas.is_empty() {
            let _ = writeln!(s, "rule hits (baseline -> new):");
        }
        for d in &changes.rule_hit_deltas {
            let _ = writeln!(
                s,
                "  {:<32} {:>10} -> {:<10} ({:+})",
                d.rule, d.baseline, d.new, d.delta
            );
        }
    }
    for bad in &report.bad_record_samples {
        let _ = writeln!(s, "bad record at line {}: {}", bad.line, bad.error);
    }
    if report.bad_records > report.bad_record_samples.len() as u64 {
        let _ = writeln!(
            s,
            "... and {} more bad records",
            report.bad_records - report.bad_record_samples.len() as u64
        );
    }
    s
}
