//! Criterion benches: evaluating rules/payments.veto per event (with and without the type index), and checking 1,000 rules.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use veto::event::{Field, PaymentEvent};
use veto::rules::{compile_source, load, EvalContext, Evaluation, RuleSet};

/// Precomputed feature values and no tags.
struct Precomputed {
    features: Vec<Option<f64>>,
}

impl EvalContext for Precomputed {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.features.get(slot).copied().flatten()
    }
    fn has_tag(&self, _entity: Field, _value: &str, _tag: &str) -> bool {
        false
    }
}

fn payments() -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let report = load(&[dir]);
    match report.ruleset {
        Some(r) => r,
        None => panic!(
            "rules/payments.veto does not compile:\n{}",
            report.render_human(false)
        ),
    }
}

/// A deterministic mix of event types and field values.
fn synthetic_events(n: usize) -> Vec<PaymentEvent> {
    const TYPES: [&str; 8] = [
        "authorization",
        "authorization",
        "authorization",
        "authorization",
        "capture",
        "refund",
        "login",
        "payout",
    ];
    const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "NG", "GB"];
    (0..n)
        .map(|i| PaymentEvent {
            event_id: format!("e{i}"),
            kind: TYPES[i % TYPES.len()].to_string(),
            event_time_ms: 1_767_225_600_000 + i as i64 * 1_000,
            txn_id: Some(format!("t{}", i / 2)),
            user_id: Some(format!("u{}", i % 97)),
            card_id: Some(format!("c{}", i % 89)),
            device_id: Some(format!("device{}", i % 31)),
            ip: Some(format!("10.0.{}.{}", i % 7, i % 251)),
            merchant_id: Some(format!("m{}", i % 13)),
            amount_minor: Some(((i * 7919) % 900_000) as i64),
            currency: Some("EUR".into()),
            country: Some(COUNTRIES[i % 5].into()),
            ip_country: Some(COUNTRIES[(i / 3) % 5].into()),
            card_country: Some(COUNTRIES[(i / 7) % 5].into()),
            mcc: Some(if i % 11 == 0 { "7995" } else { "5411" }.into()),
            channel: Some(if i % 17 == 0 { "moto" } else { "web" }.into()),
            attrs: Default::default(),
        })
        .collect()
}

fn bench_evaluate(c: &mut Criterion) {
    let indexed = payments();
    let flat = indexed.without_type_index();
    let events = synthetic_events(1024);
    // Feature values: mostly quiet entities, every 20th event a busy one.
    let contexts: Vec<Precomputed> = (0..events.len())
        .map(|i| Precomputed {
            features: (0..indexed.features().len())
                .map(|s| {
                    let base = ((i * 31 + s * 7) % 3) as f64;
                    Some(if i % 20 == 0 { base * 10.0 } else { base })
                })
                .collect(),
        })
        .collect();
    for (label, rs) in [("indexed", &indexed), ("no_index", &flat)] {
        let mut out = Evaluation::default();
        let (mut visited, mut hits) = (0u64, 0u64);
        for (e, ctx) in events.iter().zip(&contexts) {
            rs.evaluate(e, ctx, &mut out);
            visited += u64::from(out.rules_visited);
            hits += out.hits.len() as u64;
        }
        println!(
            "rules_eval/{label}: {} rules, {:.1} rules visited per event, {:.2} hits per event",
            rs.rules().len(),
            visited as f64 / events.len() as f64,
            hits as f64 / events.len() as f64
        );
        c.bench_function(&format!("evaluate_payments_{label}_per_event"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let k = i % events.len();
                i = i.wrapping_add(1);
                rs.evaluate(black_box(&events[k]), &contexts[k], &mut out);
                black_box(out.outcome)
            })
        });
    }
}

fn generated_rules(n: usize) -> String {
    let mut src = String::from("list bad = [\"a\", \"b\", \"c\"]\n");
    for f in 0..20 {
        src.push_str(&format!(
            "feature f{f} = count() by card_id over {}m where type == \"authorization\"\n",
            f + 1
        ));
    }
    for r in 0..n {
        src.push_str(&format!(
            "rule r{r} \"generated {r}\"\n  when type == \"t{}\" and amount > {r} and (f{} > {} or ip in bad) and not card_id matches \"^x{}\"\n  then review, score {}\n",
            r % 10,
            r % 20,
            r % 50,
            r % 7,
            r % 40
        ));
    }
    src.push_str("decide block when score >= 100\ndecide review when score >= 50\n");
    src
}

fn bench_check(c: &mut Criterion) {
    let src = generated_rules(1000);
    let base = PathBuf::from(".");
    let report = compile_source("generated.veto", &src, &base);
    assert!(!report.has_errors(), "{}", report.render_human(false));
    c.bench_function("check_1000_rules", |b| {
        b.iter(|| black_box(compile_source("generated.veto", black_box(&src), &base).has_errors()))
    });
}

criterion_group!(benches, bench_evaluate, bench_check);
criterion_main!(benches);
