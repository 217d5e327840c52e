//! `EventError`: why an input message was rejected, with a stable reason code for dead letters and metrics.

use thiserror::Error;

/// Why a payment event, tag update or decision could not be decoded or failed validation.
///
/// `Display` is a human message naming the offending field; [`EventError::reason_code`] is a
/// stable machine-readable code (documented in `docs/wire-format.md`) used in dead letters and
/// as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// The payload is larger than the configured limit; checked before any parsing.
    #[error("payload: {size} bytes exceeds the limit of {max} bytes")]
    Oversized { size: usize, max: usize },
    /// The payload is not well-formed protobuf or JSON at all.
    #[error("payload: undecodable {format}: {detail}")]
    Undecodable {
        format: &'static str,
        detail: String,
    },
    /// A string (or the whole JSON payload) is not valid UTF-8.
    #[error("field `{field}`: {detail}")]
    InvalidUtf8 { field: String, detail: String },
    /// A JSON value has the wrong type, e.g. a number where a string is expected.
    #[error("field `{field}`: expected {expected}")]
    InvalidType {
        field: String,
        expected: &'static str,
    },
    /// A JSON object has a key the contract does not define.
    #[error("field `{field}`: unknown field")]
    UnknownField { field: String },
    /// A field is given twice, or together with its alternative spelling (`amount` and `amount_minor`).
    #[error("field `{field}`: given more than once (also as `{other}`)")]
    DuplicateField { field: String, other: String },
    /// A required field is absent or empty.
    #[error("field `{field}`: {detail}")]
    MissingField {
        field: &'static str,
        detail: &'static str,
    },
    /// The amount is negative, malformed, overflows, or has more decimals than the currency allows.
    #[error("field `{field}`: {detail}")]
    InvalidAmount { field: &'static str, detail: String },
    /// The currency is not three upper-case ASCII letters.
    #[error("field `currency`: {value:?} is not an ISO 4217 code (three upper-case letters)")]
    InvalidCurrency { value: String },
    /// A time is malformed, not positive, or beyond year 9999.
    #[error("field `{field}`: {detail}")]
    InvalidTime { field: &'static str, detail: String },
    /// An enum value (outcome, trigger, entity kind) is unknown or unspecified.
    #[error("field `{field}`: unknown value {value}")]
    UnknownEnum { field: &'static str, value: String },
    /// A string is longer than the contract allows.
    #[error("field `{field}`: {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    /// More `attrs` entries than the contract allows.
    #[error("field `attrs`: {count} entries exceeds the limit of {max}")]
    TooManyAttrs { count: usize, max: usize },
    /// A tag update would give its entity more tags than the store holds per entity.
    #[error("field `tag`: the entity already holds {max} tags, the most allowed")]
    TooManyTags { max: usize },
}

impl EventError {
    /// Every reason code, in documentation order.
    pub const REASON_CODES: [&'static str; 14] = [
        "oversized",
        "undecodable",
        "invalid_utf8",
        "invalid_type",
        "unknown_field",
        "duplicate_field",
        "missing_field",
        "invalid_amount",
        "invalid_currency",
        "invalid_time",
        "unknown_enum",
        "too_long",
        "too_many_attrs",
        "too_many_tags",
    ];

    /// Stable machine-readable reason, used in `DeadLetter.reason_code` and metric labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EventError::Oversized { .. } => "oversized",
            EventError::Undecodable { .. } => "undecodable",
            EventError::InvalidUtf8 { .. } => "invalid_utf8",
            EventError::InvalidType { .. } => "invalid_type",
            EventError::UnknownField { .. } => "unknown_field",
            EventError::DuplicateField { .. } => "duplicate_field",
            EventError::MissingField { .. } => "missing_field",
            EventError::InvalidAmount { .. } => "invalid_amount",
            EventError::InvalidCurrency { .. } => "invalid_currency",
            EventError::InvalidTime { .. } => "invalid_time",
            EventError::UnknownEnum { .. } => "unknown_enum",
            EventError::TooLong { .. } => "too_long",
            EventError::TooManyAttrs { .. } => "too_many_attrs",
            EventError::TooManyTags { .. } => "too_many_tags",
        }
    }
}
