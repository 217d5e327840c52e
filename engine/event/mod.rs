//! The payment event model shared by the whole engine: events, fields, outcomes, decisions, tag updates.
//!
//! Everything else in Veto depends on this module and on nothing else of Veto's; it never
//! knows Kafka, rules syntax or storage.

mod model;

pub use model::{
    currency_exponent, Aggregate, Decision, Field, Outcome, PaymentEvent, RuleHit, TagUpdate,
    Trigger,
};
