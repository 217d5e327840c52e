//! Feature `where` filters planned per event type: for each type a rule set's type guards name,
//! each feature's filter is decided at load (never / always) or reduced to what the type guard
//! leaves, so an event evaluates only the filter parts its type does not settle.

use super::by_type::ByType;
use super::compiler::FeatureDef;
use super::eval::{Frame, Pred};
use super::lower::Code;

/// One feature's filter for events of one type.
#[derive(Debug)]
pub enum Filter {
    /// The type fails the filter's type guard: the event is never counted.
    Never,
    /// No filter, or only a type guard the type passes.
    Always,
    /// What remains to evaluate once the type guard holds (lowered).
    Eval(Code),
}

impl Filter {
    fn plan(filter: Option<&Pred>, kind: Option<&str>) -> Filter {
        let Some(pred) = filter else {
            return Filter::Always;
        };
        let rest = match (pred.required_types(), kind) {
            (Some(types), Some(kind)) if types.iter().any(|t| &**t == kind) => {
                pred.without_type_guards()
            }
            (Some(_), _) => return Filter::Never,
            (None, _) => pred.clone(),
        };
        match rest {
            Pred::Const(true) => Filter::Always,
            Pred::Const(false) => Filter::Never,
            rest => Filter::Eval(Code::new(&rest)),
        }
    }

    /// Whether the event in `frame` (of the type this filter was planned for) passes.
    pub fn holds(&self, frame: &Frame<'_>) -> bool {
        match self {
            Filter::Never => false,
            Filter::Always => true,
            Filter::Eval(code) => code.holds(frame),
        }
    }
}

/// The filters of a list of features, planned for every event type their guards name and for
/// all other types.
#[derive(Debug, Default)]
pub struct FeatureFilters {
    by_type: ByType<Box<[Filter]>>,
    /// For a type no guard names.
    other: Box<[Filter]>,
}

impl FeatureFilters {
    pub fn new<'a>(features: impl IntoIterator<Item = &'a FeatureDef>) -> FeatureFilters {
        let filters: Vec<Option<&Pred>> = features.into_iter().map(|f| f.filter.as_ref()).collect();
        let mut types: Vec<Box<str>> = filters
            .iter()
            .flatten()
            .filter_map(|p| p.required_types())
            .flatten()
            .map(|t| Box::from(&*t))
            .collect();
        types.sort();
        types.dedup();
        let plan = |kind: Option<&str>| -> Box<[Filter]> {
            filters.iter().map(|f| Filter::plan(*f, kind)).collect()
        };
        FeatureFilters {
            by_type: types
                .into_iter()
                .map(|t| {
                    let planned = plan(Some(&t));
                    (t, planned)
                })
                .collect(),
            other: plan(None),
        }
    }

    /// The filters, by feature, for events of type `kind`.
    pub fn for_type(&self, kind: &str) -> &[Filter] {
        self.by_type.get(kind).unwrap_or(&self.other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PaymentEvent;
    use crate::rules::eval::NoContext;

    #[test]
    fn planned_filters_agree_with_the_filters() {
        let src = r#"
feature a = count() by card_id over 1h where type == "authorization"
feature b = count() by card_id over 1h where type == "authorization" and amount < 2
feature c = count() by card_id over 1h where type in ["refund", "payout"] or amount > 5
feature d = count() by card_id over 1h
feature e = count() by card_id over 1h where amount > 5
feature f = count() by user_id over 1h where type == "login" and attrs["result"] == "failure"
feature g = count() by user_id over 1h where type in ["refund", "payout"] and type == "refund"
rule r when a > 0 and b > 0 and c > 0 and d > 0 and e > 0 and f > 0 and g > 0 then review
"#;
        let report = crate::rules::compile_source("t.veto", src, std::path::Path::new("."));
        assert!(!report.has_errors(), "{}", report.render_human(false));
        let rules = report.ruleset.expect("rule set");
        let planned = FeatureFilters::new(rules.features());
        let mut checked = 0;
        for kind in ["authorization", "refund", "payout", "login", "capture", ""] {
            for amount_minor in [0, 100, 1_000] {
                for result in [None, Some("failure"), Some("success")] {
                    let mut ev = PaymentEvent {
                        event_id: "e".into(),
                        kind: kind.into(),
                        amount_minor: Some(amount_minor),
                        currency: Some("EUR".into()),
                        ..PaymentEvent::default()
                    };
                    if let Some(result) = result {
                        ev.attrs.insert("result".into(), result.into());
                    }
                    let frame = Frame::new(&ev, &NoContext);
                    let filters = planned.for_type(kind);
                    for (f, filter) in rules.features().iter().zip(filters) {
                        assert_eq!(
                            filter.holds(&frame),
                            f.applies_in(&frame),
                            "feature {} on {kind} {amount_minor} {result:?}",
                            f.name
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 3 * 3 * 7);
        // the guards are settled at load where they can be
        let auth = planned.for_type("authorization");
        assert!(matches!(auth[0], Filter::Always));
        assert!(matches!(auth[5], Filter::Never));
        assert!(matches!(planned.for_type("capture")[0], Filter::Never));
    }
}
