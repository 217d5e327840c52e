//! The payment event model shared by the whole engine: events, fields, outcomes, decisions, tag updates.
//!
//! Everything else in Veto depends on this module and on nothing else of Veto's; it never
//! knows Kafka, rules syntax or storage.

mod codec;
mod error;
mod fastpb;
mod hash;
mod json;
mod model;
mod parse;
mod validate;

#[cfg(test)]
mod tests;

pub use codec::{
    dead_letter, dead_letter_key, decode_dead_letter, decode_decision, decode_event,
    decode_event_into, decode_tag_update, encode_decision, encode_decision_into, encode_event,
    encode_tag_update, InputFormat, OutputFormat, DEAD_LETTER_KEY_MAX, DEAD_LETTER_RAW_MAX,
};
#[cfg(test)]
pub(crate) use codec::{decode_event_prost, encode_decision_prost};
pub use error::EventError;
pub use hash::stable_hash;
pub use model::{
    currency_exponent, Aggregate, Decision, Field, Outcome, PaymentEvent, RuleHit, TagUpdate,
    Trigger,
};
pub use parse::{major_to_minor, minor_to_major, parse_rfc3339_ms, MAX_TIME_MS};
pub use validate::{
    check_currency, check_size, entity_kind_from_name, entity_kind_name, validate_decision,
    validate_event, validate_tag_update, DEFAULT_MAX_EVENT_BYTES, MAX_ATTRS, MAX_ATTR_KEY_BYTES,
    MAX_ATTR_VALUE_BYTES, MAX_STRING_BYTES,
};
