//! Contract checks shared by every wire format: required fields, limits, amounts, currencies, times.

use super::error::EventError;
use super::model::{Decision, Field, PaymentEvent, TagUpdate};
use super::parse::MAX_TIME_MS;

/// Default limit on an input message's size (64 KiB), checked before parsing.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Longest accepted id or other top-level string field, in bytes.
pub const MAX_STRING_BYTES: usize = 256;
/// Most `attrs` entries per event.
pub const MAX_ATTRS: usize = 64;
/// Longest `attrs` key, in bytes.
pub const MAX_ATTR_KEY_BYTES: usize = 128;
/// Longest `attrs` value, in bytes.
pub const MAX_ATTR_VALUE_BYTES: usize = 1024;

/// Rejects a payload over `max` bytes; runs before any parsing.
pub fn check_size(bytes: &[u8], max: usize) -> Result<(), EventError> {
    if bytes.len() > max {
        return Err(EventError::Oversized {
            size: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Checks an event against the contract (see `docs/wire-format.md`).
///
/// Decoders call it on every event; producers (synth, tests) can call it to make sure they
/// only emit events Veto accepts.
pub fn validate_event(ev: &PaymentEvent) -> Result<(), EventError> {
    if ev.event_id.is_empty() {
        return Err(EventError::MissingField {
            field: "event_id",
            detail: "required",
        });
    }
    if ev.kind.is_empty() {
        return Err(EventError::MissingField {
            field: "type",
            detail: "required",
        });
    }
    check_time("event_time", ev.event_time_ms)?;
    for field in Field::ALL {
        if let Some(value) = ev.str_field(field) {
            check_len(field.name(), value, MAX_STRING_BYTES)?;
        }
    }
    if let Some(currency) = &ev.currency {
        check_currency(currency)?;
    }
    if let Some(minor) = ev.amount_minor {
        if minor < 0 {
            return Err(EventError::InvalidAmount {
                field: "amount_minor",
                detail: format!("negative amount {minor}"),
            });
        }
        if ev.currency.is_none() {
            return Err(EventError::MissingField {
                field: "currency",
                detail: "required when an amount is given",
            });
        }
    }
    if ev.attrs.len() > MAX_ATTRS {
        return Err(EventError::TooManyAttrs {
            count: ev.attrs.len(),
            max: MAX_ATTRS,
        });
    }
    for (key, value) in &ev.attrs {
        if key.len() > MAX_ATTR_KEY_BYTES {
            return Err(EventError::TooLong {
                field: format!("attrs key {:?}…", truncated(key)),
                len: key.len(),
                max: MAX_ATTR_KEY_BYTES,
            });
        }
        if value.len() > MAX_ATTR_VALUE_BYTES {
            return Err(EventError::TooLong {
                field: format!("attrs[{key:?}]"),
                len: value.len(),
                max: MAX_ATTR_VALUE_BYTES,
            });
        }
    }
    Ok(())
}

/// Checks a tag update: a taggable entity kind, non-empty value and tag, a positive expiry.
pub fn validate_tag_update(update: &TagUpdate) -> Result<(), EventError> {
    if entity_kind_name(update.entity).is_none() {
        return Err(EventError::UnknownEnum {
            field: "entity_kind",
            value: format!("{:?} (entity field `{}`)", update.entity, update.entity),
        });
    }
    if update.value.is_empty() {
        return Err(EventError::MissingField {
            field: "entity_value",
            detail: "required",
        });
    }
    if update.tag.is_empty() {
        return Err(EventError::MissingField {
            field: "tag",
            detail: "required",
        });
    }
    check_len("entity_value", &update.value, MAX_STRING_BYTES)?;
    check_len("tag", &update.tag, MAX_STRING_BYTES)?;
    if let Some(expires) = update.expires_at_ms {
        check_time("expires_at_ms", expires)?;
    }
    Ok(())
}

/// Checks a decision read back from the wire: it must name its event.
pub fn validate_decision(decision: &Decision) -> Result<(), EventError> {
    if decision.event_id.is_empty() {
        return Err(EventError::MissingField {
            field: "event_id",
            detail: "required",
        });
    }
    Ok(())
}

/// The wire name of a taggable entity kind (`user`, `card`, ...); `None` for fields that are not entities.
pub fn entity_kind_name(field: Field) -> Option<&'static str> {
    match field {
        Field::UserId => Some("user"),
        Field::CardId => Some("card"),
        Field::DeviceId => Some("device"),
        Field::Ip => Some("ip"),
        Field::MerchantId => Some("merchant"),
        Field::TxnId => Some("txn"),
        _ => None,
    }
}

/// The entity field for a wire entity kind; accepts `user` as well as the field name `user_id`.
pub fn entity_kind_from_name(name: &str) -> Option<Field> {
    let field = Field::from_name(name).or_else(|| {
        [
            Field::UserId,
            Field::CardId,
            Field::DeviceId,
            Field::Ip,
            Field::MerchantId,
            Field::TxnId,
        ]
        .into_iter()
        .find(|&f| entity_kind_name(f) == Some(name))
    })?;
    entity_kind_name(field).map(|_| field)
}

/// An event or expiry time must be after the epoch and before year 10000.
pub(crate) fn check_time(field: &'static str, ms: i64) -> Result<(), EventError> {
    if ms == 0 && field == "event_time" {
        return Err(EventError::MissingField {
            field,
            detail: "required (epoch milliseconds > 0)",
        });
    }
    if ms <= 0 {
        return Err(EventError::InvalidTime {
            field,
            detail: format!("{ms} is not after the Unix epoch"),
        });
    }
    if ms > MAX_TIME_MS {
        return Err(EventError::InvalidTime {
            field,
            detail: format!("{ms} is after year 9999"),
        });
    }
    Ok(())
}

/// A currency is three upper-case ASCII letters.
pub fn check_currency(code: &str) -> Result<(), EventError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(EventError::InvalidCurrency {
            value: truncated(code).to_string(),
        })
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), EventError> {
    if value.len() > max {
        return Err(EventError::TooLong {
            field: field.to_string(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The first 32 characters of a value quoted in an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}
