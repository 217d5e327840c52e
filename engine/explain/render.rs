//! `veto explain`'s printed form: features, tags read, each rule with the parts of its condition
//! that decided it, the score build-up and the outcome. The JSON form holds every part.

use std::fmt::Write;

use super::Explanation;
use crate::rules::explain::{OperandValue, Verdict};

/// The explanation as text. Each rule shows the parts of its condition that settled it (the
/// first false part of an `and`, the first true part of an `or`, every part when all agreed),
/// each with the values it read.
pub fn render_human(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "event {} ({} at {} ms), rule set {}",
        e.event_id, e.kind, e.event_time_ms, e.ruleset_version
    );
    let _ = writeln!(
        out,
        "state: {} earlier events replayed{}",
        e.replayed_events,
        if e.bad_records > 0 {
            format!(" ({} bad records skipped)", e.bad_records)
        } else {
            String::new()
        }
    );

    out.push_str("\nfeatures (this event counted where marked *)\n");
    let width = e.features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &e.features {
        let _ = writeln!(
            out,
            "  {}{:<width$}  {:>12}   {} = {}",
            if f.counted { "*" } else { " " },
            f.name,
            f.value.as_deref().unwrap_or("missing"),
            f.by,
            quoted(f.entity.as_deref()),
        );
    }

    if !e.tags_read.is_empty() {
        out.push_str("\ntags read\n");
        for t in &e.tags_read {
            let _ = writeln!(
                out,
                "  {} {:?} has tag {:?}: {}",
                t.entity,
                t.value,
                t.tag,
                if t.present { "yes" } else { "no" }
            );
        }
    }

    out.push_str("\nrules\n");
    let width = e.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in e.rules.iter().filter(|r| r.evaluated) {
        let at = r.at.as_ref().map(|a| a.to_string()).unwrap_or_default();
        if r.hit {
            let _ = writeln!(
                out,
                "  HIT   {:<width$}  {} {:+}  {at}",
                r.name, r.outcome, r.score
            );
        } else {
            let _ = writeln!(out, "  miss  {:<width$}  {at}", r.name);
        }
        if let Some(when) = &r.when {
            deciding_parts(when, &mut out);
        }
    }

    let skipped: Vec<&str> = e
        .rules
        .iter()
        .filter(|r| !r.evaluated)
        .map(|r| r.name.as_str())
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "  not evaluated (their type guard excludes {:?} events): {}",
            e.kind,
            skipped.join(", ")
        );
    }

    if !e.sequences.is_empty() {
        out.push_str("\nsequence rules\n");
        for s in &e.sequences {
            let at = s.at.as_ref().map(|a| a.to_string()).unwrap_or_default();
            let effect = match (s.arms, s.cancels) {
                (true, true) => "cancels its timer and arms a new one",
                (true, false) => "arms its timer",
                (false, true) => "cancels its timer",
                (false, false) => "no effect",
            };
            let _ = writeln!(out, "  {}  {effect}  {at}", s.name);
            for (label, verdict) in [("after", &s.after), ("expect", &s.expect)] {
                if let Some(v) = verdict {
                    let _ = writeln!(out, "    {label}:");
                    deciding_parts(v, &mut out);
                }
            }
        }
    }

    out.push('\n');
    let parts: Vec<String> = e
        .rules
        .iter()
        .filter(|r| r.hit && r.score != 0)
        .map(|r| format!("{} {}", r.name, r.score))
        .collect();
    let _ = writeln!(
        out,
        "score {}{}",
        e.score,
        if parts.is_empty() {
            String::new()
        } else {
            format!(" = {}", parts.join(" + "))
        }
    );
    for t in &e.thresholds {
        let _ = writeln!(
            out,
            "  decide {} when score >= {}: {}",
            t.outcome,
            t.min_score,
            if t.met { "met" } else { "not met" }
        );
    }
    let _ = writeln!(out, "outcome {}", e.outcome.to_uppercase());
    out
}

/// Prints the leaves that settled `v`, following the decisive parts of `and`s and `or`s down
/// the tree (a `not` is printed whole, with what it read).
fn deciding_parts(v: &Verdict, out: &mut String) {
    if matches!(v.op, Some("and" | "or")) {
        for child in v.children.iter().filter(|c| c.decisive) {
            deciding_parts(child, out);
        }
        return;
    }
    let mark = match v.result {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "-",
    };
    let _ = write!(out, "        {mark} {}", v.text);
    let mut read = Vec::new();
    operands(v, &mut read);
    let values: Vec<String> = read
        .into_iter()
        .filter(|o| o.text != v.text)
        .map(|o| format!("{} = {}", o.text, o.value.as_deref().unwrap_or("missing")))
        .collect();
    if !values.is_empty() {
        let _ = write!(out, "    ({})", values.join(", "));
    }
    out.push('\n');
}

/// The operands read in `v` and its evaluated parts.
fn operands<'a>(v: &'a Verdict, out: &mut Vec<&'a OperandValue>) {
    out.extend(&v.operands);
    for c in &v.children {
        operands(c, out);
    }
}

fn quoted(value: Option<&str>) -> String {
    value.map_or_else(|| "(none)".into(), |v| format!("{v:?}"))
}
