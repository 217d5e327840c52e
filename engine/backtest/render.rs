//! The human summary of a backtest report.

use std::fmt::Write as _;

use super::{Amounts, LabelledSet, LabelsSummary, Report, SetReport};
use crate::event::{currency_exponent, minor_to_major, Outcome};

/// The summary printed to stdout.
pub fn render_human(report: &Report) -> String {
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
        let t = &changes.timeouts;
        if t.paired > 0 || !t.only_new.is_empty() || !t.only_baseline.is_empty() {
            let _ = writeln!(
                s,
                "timeouts paired by rule and key: {} ({} changed outcome)",
                t.paired, t.changed
            );
            for tr in &t.transitions {
                let _ = writeln!(
                    s,
                    "  {:>9} -> {:<9} {:>10}  e.g. {}",
                    tr.from,
                    tr.to,
                    tr.events,
                    tr.sample_event_ids.join(", ")
                );
            }
            for (label, only) in [("new", &t.only_new), ("baseline", &t.only_baseline)] {
                if !only.is_empty() {
                    let rules: Vec<String> =
                        only.iter().map(|(r, n)| format!("{r} ({n})")).collect();
                    let _ = writeln!(s, "  only in {label}: {}", rules.join(", "));
                }
            }
        }
    }
    if let Some(tags) = &report.tags {
        let _ = writeln!(
            s,
            "tags: {} updates from {}, {} applied ({} refused: entity full){}",
            tags.updates,
            tags.file,
            tags.applied,
            tags.refused,
            tags.refused_baseline
                .map_or(String::new(), |r| format!(", {r} refused by the baseline"))
        );
    }
    if let Some(summary) = &report.labels {
        render_labels(&mut s, report, summary);
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

/// "12.5%", or "-" when undefined.
fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// "+1.5 pts", or "-" when undefined.
fn points(delta: Option<f64>) -> String {
    delta.map_or_else(|| "-".to_string(), |d| format!("{:+.1} pts", d * 100.0))
}

/// "EUR 1234.56 + USD 7.00", "0" when empty.
fn money(amounts: &Amounts) -> String {
    if amounts.is_empty() {
        return "0".into();
    }
    amounts
        .iter()
        .map(|(c, a)| format!("{c} {}", minor_to_major(*a, currency_exponent(c))))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The sets against the labels: totals, the change, per rule, and the sweeps of the new set.
fn render_labels(s: &mut String, report: &Report, summary: &LabelsSummary) {
    let _ = writeln!(
        s,
        "labels: {} units from {} ({} fraud, {} legit); not in the events: {} fraud, {} legit; \
         {} reported after their decision",
        summary.units,
        summary.file,
        summary.fraud,
        summary.legit,
        summary.fraud_not_in_events,
        summary.legit_not_in_events,
        summary.reported_after_decision
    );
    let _ = writeln!(
        s,
        "{:<28} {:>9} {:>13} {:>7} {:>10} {:>8} {:>10} {:>9} {:>9} {:>15}",
        "set",
        "flagged",
        "fraud caught",
        "recall",
        "legit hurt",
        "blocked",
        "challenged",
        "reviewed",
        "precision",
        "unknown flagged"
    );
    let mut sets: Vec<(&str, &SetReport, &LabelledSet)> = Vec::new();
    if let Some(b) = &report.baseline {
        if let Some(l) = &b.labels {
            sets.push(("baseline", b, l));
        }
    }
    if let Some(l) = &report.new.labels {
        sets.push(("new", &report.new, l));
    }
    for (name, set, l) in &sets {
        let _ = writeln!(
            s,
            "{:<28} {:>9} {:>13} {:>7} {:>10} {:>8} {:>10} {:>9} {:>9} {:>15}",
            format!("{name} {}", set.version),
            l.flagged.count,
            format!("{}/{}", l.fraud_caught.count, l.fraud.count),
            percent(l.recall),
            l.legit_hurt.count,
            l.legit_hurt.block,
            l.legit_hurt.challenge,
            l.legit_hurt.review,
            percent(l.precision),
            format!("{}/{}", l.unknown_flagged.count, l.unknown_events)
        );
    }
    for (name, _, l) in &sets {
        let _ = writeln!(
            s,
            "  {name} amounts: flagged {}; fraud caught {} of {}; legit hurt {}",
            money(&l.flagged.amount),
            money(&l.fraud_caught.amount),
            money(&l.fraud.amount),
            money(&l.legit_hurt.amount)
        );
    }
    let diff = report.changes.as_ref().and_then(|c| c.labels.as_ref());
    if let Some(d) = diff {
        let _ = writeln!(
            s,
            "new vs baseline: fraud caught {:+} ({} newly caught, {} no longer; amount {}), \
             legit hurt {:+} ({} newly hurt, {} no longer), precision {}, recall {}",
            d.fraud_caught,
            d.newly_caught,
            d.no_longer_caught,
            money(&d.fraud_caught_amount),
            d.legit_hurt,
            d.newly_hurt,
            d.no_longer_hurt,
            points(d.precision),
            points(d.recall)
        );
    }
    let Some(new) = &report.new.labels else {
        return;
    };
    let _ = writeln!(
        s,
        "rules against the labels (new set; rules that matched, or changed against the baseline):"
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>8} {:>7} {:>7} {:>10} {:>8} {:>9} {:>7} {:>8} {:>11} {:>11}",
        "rule",
        "matched",
        "fraud",
        "legit",
        "legit hurt",
        "unknown",
        "precision",
        "recall",
        "Δfraud",
        "Δlegit hurt",
        "Δprecision"
    );
    for q in &new.rules {
        let delta = diff.and_then(|d| d.rules.iter().find(|r| r.rule == q.rule));
        if q.matched.count == 0 && delta.is_none() {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<28} {:>8} {:>7} {:>7} {:>10} {:>8} {:>9} {:>7} {:>8} {:>11} {:>11}",
            q.rule,
            q.matched.count,
            q.fraud.count,
            q.legit,
            q.legit_hurt.count,
            q.unknown,
            percent(q.precision),
            percent(q.recall),
            delta.map_or("0".into(), |d| format!("{:+}", d.fraud)),
            delta.map_or("0".into(), |d| format!("{:+}", d.legit_hurt)),
            delta.map_or("-".into(), |d| points(d.precision))
        );
    }
    for d in diff.iter().flat_map(|d| &d.rules) {
        if !new.rules.iter().any(|q| q.rule == d.rule) {
            let _ = writeln!(
                s,
                "  {:<28} (baseline only: fraud {:+}, legit hurt {:+})",
                d.rule, d.fraud, d.legit_hurt
            );
        }
    }
    for sweep in &new.sweeps {
        let _ = writeln!(
            s,
            "score sweep (new set): decide {} when score >= N (N = {} in the rules)",
            sweep.outcome, sweep.threshold
        );
        let _ = writeln!(
            s,
            "  {:>6} {:>9} {:>13} {:>7} {:>10} {:>9} {:>15}  fraud caught amount",
            "N", "flagged", "fraud caught", "recall", "legit hurt", "precision", "unknown flagged",
        );
        for p in &sweep.points {
            let _ = writeln!(
                s,
                "  {:>6} {:>9} {:>13} {:>7} {:>10} {:>9} {:>15}  {}",
                if p.threshold == sweep.threshold {
                    format!("*{}", p.threshold)
                } else {
                    p.threshold.to_string()
                },
                p.flagged,
                p.fraud_caught.count,
                percent(p.recall),
                p.legit_hurt.count,
                percent(p.precision),
                p.unknown_flagged,
                money(&p.fraud_caught.amount)
            );
        }
    }
}
