//! Wire codecs: protobuf and JSON in and out for events, tag updates and decisions, plus dead letters.

use prost::Message;
use serde::{Deserialize, Serialize};

use super::error::EventError;
use super::fastpb;
use super::json;
use super::model::{Decision, Field, Outcome, PaymentEvent, RuleHit, TagUpdate, Trigger};
use super::validate::{check_size, validate_decision, validate_event, validate_tag_update};
use crate::proto;

/// How input messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Protobuf (`schemas/veto/v1`).
    Protobuf,
    /// JSON with the proto field names (`docs/wire-format.md`).
    Json,
    /// JSON when the first non-whitespace byte is `{`, else protobuf. A `{`-led message that
    /// fails as JSON but decodes as protobuf is accepted as protobuf (a protobuf message can
    /// start with those bytes); otherwise the JSON error is reported.
    #[default]
    Auto,
}

/// How output messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Protobuf (`schemas/veto/v1`).
    #[default]
    Protobuf,
    /// JSON with the proto field names.
    Json,
}

/// Decodes and validates one payment event; rejects payloads over `max_bytes` before parsing.
pub fn decode_event(
    bytes: &[u8],
    format: InputFormat,
    max_bytes: usize,
) -> Result<PaymentEvent, EventError> {
    let mut ev = PaymentEvent::default();
    decode_event_into(bytes, format, max_bytes, &mut ev)?;
    Ok(ev)
}

/// [`decode_event`] into `ev`, overwriting every field and reusing its strings' buffers, so a
/// worker decoding one event after another allocates nothing for them once warm. On `Err`,
/// `ev` holds no meaningful event.
pub fn decode_event_into(
    bytes: &[u8],
    format: InputFormat,
    max_bytes: usize,
    ev: &mut PaymentEvent,
) -> Result<(), EventError> {
    check_size(bytes, max_bytes)?;
    decode_with(
        bytes,
        format,
        ev,
        json::decode_event_into,
        decode_event_protobuf,
    )
}

/// Encodes an event (assumed valid, see [`validate_event`]).
pub fn encode_event(ev: &PaymentEvent, format: OutputFormat) -> Vec<u8> {
    match format {
        OutputFormat::Json => json::encode_event(ev),
        OutputFormat::Protobuf => proto::PaymentEvent {
            event_id: ev.event_id.clone(),
            r#type: ev.kind.clone(),
            event_time_ms: ev.event_time_ms,
            txn_id: ev.txn_id.clone(),
            user_id: ev.user_id.clone(),
            card_id: ev.card_id.clone(),
            device_id: ev.device_id.clone(),
            ip: ev.ip.clone(),
            merchant_id: ev.merchant_id.clone(),
            amount_minor: ev.amount_minor,
            currency: ev.currency.clone(),
            country: ev.country.clone(),
            ip_country: ev.ip_country.clone(),
            card_country: ev.card_country.clone(),
            mcc: ev.mcc.clone(),
            channel: ev.channel.clone(),
            attrs: ev.attrs.clone(),
        }
        .encode_to_vec(),
    }
}

/// Decodes and validates one tag update; rejects payloads over `max_bytes` before parsing.
pub fn decode_tag_update(
    bytes: &[u8],
    format: InputFormat,
    max_bytes: usize,
) -> Result<TagUpdate, EventError> {
    check_size(bytes, max_bytes)?;
    decode_with(
        bytes,
        format,
        &mut (),
        |b, _| json::decode_tag_update(b),
        |b, _| decode_tag_update_protobuf(b),
    )
}

/// Encodes a tag update. An entity field that is not taggable (see `docs/wire-format.md`)
/// encodes as the unspecified kind, which decoders reject.
pub fn encode_tag_update(update: &TagUpdate, format: OutputFormat) -> Vec<u8> {
    match format {
        OutputFormat::Json => json::encode_tag_update(update),
        OutputFormat::Protobuf => proto::TagUpdate {
            entity_kind: entity_kind_to_proto(update.entity) as i32,
            entity_value: update.value.clone(),
            tag: update.tag.clone(),
            expires_at_ms: if update.remove {
                0
            } else {
                update.expires_at_ms.unwrap_or(0)
            },
            remove: update.remove,
        }
        .encode_to_vec(),
    }
}

/// Encodes a decision for the `decisions` (or shadow) topic.
pub fn encode_decision(d: &Decision, format: OutputFormat) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_decision_into(d, format, &mut buf);
    buf
}

/// Encodes a decision into `buf` (cleared first), so a caller can reuse one buffer.
pub fn encode_decision_into(d: &Decision, format: OutputFormat, buf: &mut Vec<u8>) {
    buf.clear();
    match format {
        OutputFormat::Json => json::encode_decision_into(d, buf),
        OutputFormat::Protobuf => fastpb::encode_decision(d, buf),
    }
}

/// The reference encoder (prost) for decisions; the property tests compare it with the fast one.
#[cfg(test)]
pub(crate) fn encode_decision_prost(d: &Decision) -> Vec<u8> {
    proto::Decision {
        event_id: d.event_id.clone(),
        txn_id: d.txn_id.clone().unwrap_or_default(),
        outcome: outcome_to_proto(d.outcome) as i32,
        score: d.score,
        hits: d
            .hits
            .iter()
            .map(|h| proto::RuleHit {
                rule: h.rule.to_string(),
                outcome: outcome_to_proto(h.outcome) as i32,
                score: h.score,
            })
            .collect(),
        ruleset_version: d.ruleset_version.to_string(),
        trigger: match d.trigger {
            Trigger::Event => proto::Trigger::Event,
            Trigger::Timeout => proto::Trigger::Timeout,
        } as i32,
        shadow: d.shadow,
        decided_at_ms: d.decided_at_ms,
        eval_latency_us: d.eval_latency_us,
    }
    .encode_to_vec()
}

/// Decodes a decision (tests and tools read decisions back).
pub fn decode_decision(bytes: &[u8], format: InputFormat) -> Result<Decision, EventError> {
    decode_with(
        bytes,
        format,
        &mut (),
        |b, _| json::decode_decision(b),
        |b, _| decode_decision_protobuf(b),
    )
}

/// Most raw bytes a dead letter carries whatever `max_raw` says: with its key cut to
/// [`DEAD_LETTER_KEY_MAX`], the dead letter fits Kafka's default 1 MB message limit (a refused
/// dead letter would stop its partition).
pub const DEAD_LETTER_RAW_MAX: usize = 900_000;

/// Most bytes of the rejected message's key that its dead letter is keyed by.
pub const DEAD_LETTER_KEY_MAX: usize = 1024;

/// The key a dead letter is published under: the rejected message's key, cut to
/// [`DEAD_LETTER_KEY_MAX`] bytes (the whole message stays at its source offset).
pub fn dead_letter_key(key: Option<&[u8]>) -> Option<&[u8]> {
    key.map(|k| &k[..k.len().min(DEAD_LETTER_KEY_MAX)])
}

/// Builds the protobuf `DeadLetter` for a rejected message, carrying the raw bytes unchanged,
/// or only their first `max_raw` (at most [`DEAD_LETTER_RAW_MAX`]) with `raw_truncated` set.
pub fn dead_letter(
    raw: &[u8],
    err: &EventError,
    topic: &str,
    partition: i32,
    offset: i64,
    now_ms: i64,
    max_raw: usize,
) -> Vec<u8> {
    let kept = raw.len().min(max_raw).min(DEAD_LETTER_RAW_MAX);
    proto::DeadLetter {
        raw: raw[..kept].to_vec(),
        raw_truncated: kept < raw.len(),
        reason_code: err.reason_code().to_string(),
        reason: err.to_string(),
        source_topic: topic.to_string(),
        source_partition: partition,
        source_offset: offset,
        rejected_at_ms: now_ms,
    }
    .encode_to_vec()
}

/// Decodes a protobuf `DeadLetter` (tests and tools read the dead-letter topic).
pub fn decode_dead_letter(bytes: &[u8]) -> Result<proto::DeadLetter, EventError> {
    proto::DeadLetter::decode(bytes).map_err(undecodable_protobuf)
}

/// Picks the decoder for `format`, each decoding into `target`; see [`InputFormat::Auto`] for
/// the detection rule.
fn decode_with<T, R>(
    bytes: &[u8],
    format: InputFormat,
    target: &mut T,
    from_json: fn(&[u8], &mut T) -> Result<R, EventError>,
    from_protobuf: fn(&[u8], &mut T) -> Result<R, EventError>,
) -> Result<R, EventError> {
    match format {
        InputFormat::Json => from_json(bytes, target),
        InputFormat::Protobuf => from_protobuf(bytes, target),
        InputFormat::Auto => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'{') {
                return from_protobuf(bytes, target);
            }
            // `{` after whitespace may also be protobuf: field 1 (`\n`) of length 123 (`{`).
            // When both fail, a protobuf message that decoded but is invalid says more than
            // the JSON attempt's error.
            match from_json(bytes, target) {
                Ok(value) => Ok(value),
                Err(json_err) => from_protobuf(bytes, target).map_err(|pb_err| match pb_err {
                    EventError::Undecodable { .. } => json_err,
                    invalid => invalid,
                }),
            }
        }
    }
}

fn undecodable_protobuf(e: prost::DecodeError) -> EventError {
    EventError::Undecodable {
        format: "protobuf",
        detail: e.to_string(),
    }
}

/// Same tags as `veto.v1.PaymentEvent`, but strings read as bytes so invalid UTF-8 is
/// reported per field, and `attrs` as raw map entries.
#[derive(Clone, PartialEq, Message)]
struct WireEvent {
    #[prost(bytes = "vec", tag = "1")]
    event_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    kind: Vec<u8>,
    #[prost(int64, tag = "3")]
    event_time_ms: i64,
    #[prost(bytes = "vec", optional, tag = "4")]
    txn_id: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    user_id: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    card_id: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "7")]
    device_id: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    ip: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    merchant_id: Option<Vec<u8>>,
    #[prost(int64, optional, tag = "10")]
    amount_minor: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "11")]
    currency: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "12")]
    country: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "13")]
    ip_country: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "14")]
    card_country: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "15")]
    mcc: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "16")]
    channel: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "17")]
    attrs: Vec<WireAttr>,
}

/// One `map<string, string>` entry as it is laid out on the wire.
#[derive(Clone, PartialEq, Message)]
struct WireAttr {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// Same tags as `veto.v1.TagUpdate`, strings read as bytes.
#[derive(Clone, PartialEq, Message)]
struct WireTagUpdate {
    #[prost(int32, tag = "1")]
    entity_kind: i32,
    #[prost(bytes = "vec", tag = "2")]
    entity_value: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    tag: Vec<u8>,
    #[prost(int64, tag = "4")]
    expires_at_ms: i64,
    #[prost(bool, tag = "5")]
    remove: bool,
}

fn utf8(field: &str, bytes: Vec<u8>) -> Result<String, EventError> {
    String::from_utf8(bytes).map_err(|e| EventError::InvalidUtf8 {
        field: field.to_string(),
        detail: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })
}

/// An optional string field; empty means absent.
fn optional_utf8(field: Field, bytes: Option<Vec<u8>>) -> Result<Option<String>, EventError> {
    match bytes {
        Some(b) if !b.is_empty() => utf8(field.name(), b).map(Some),
        _ => Ok(None),
    }
}

fn decode_event_protobuf(bytes: &[u8], ev: &mut PaymentEvent) -> Result<(), EventError> {
    // Well-formed messages take the copy-once path; anything unusual gets prost's exact error.
    match fastpb::decode_event_into(bytes, ev) {
        Some(()) => validate_event(ev),
        None => {
            *ev = decode_event_prost(bytes)?;
            Ok(())
        }
    }
}

/// The reference decoder (prost), for messages the fast path declines.
pub(crate) fn decode_event_prost(bytes: &[u8]) -> Result<PaymentEvent, EventError> {
    let wire = WireEvent::decode(bytes).map_err(undecodable_protobuf)?;
    let mut attrs = std::collections::BTreeMap::new();
    for entry in wire.attrs {
        let key = utf8("attrs key", entry.key)?;
        let value = utf8(&format!("attrs[{key:?}]"), entry.value)?;
        attrs.insert(key, value);
    }
    let ev = PaymentEvent {
        event_id: utf8("event_id", wire.event_id)?,
        kind: utf8("type", wire.kind)?,
        event_time_ms: wire.event_time_ms,
        txn_id: optional_utf8(Field::TxnId, wire.txn_id)?,
        user_id: optional_utf8(Field::UserId, wire.user_id)?,
        card_id: optional_utf8(Field::CardId, wire.card_id)?,
        device_id: optional_utf8(Field::DeviceId, wire.device_id)?,
        ip: optional_utf8(Field::Ip, wire.ip)?,
        merchant_id: optional_utf8(Field::MerchantId, wire.merchant_id)?,
        amount_minor: wire.amount_minor,
        currency: optional_utf8(Field::Currency, wire.currency)?,
        country: optional_utf8(Field::Country, wire.country)?,
        ip_country: optional_utf8(Field::IpCountry, wire.ip_country)?,
        card_country: optional_utf8(Field::CardCountry, wire.card_country)?,
        mcc: optional_utf8(Field::Mcc, wire.mcc)?,
        channel: optional_utf8(Field::Channel, wire.channel)?,
        attrs,
    };
    validate_event(&ev)?;
    Ok(ev)
}

fn decode_tag_update_protobuf(bytes: &[u8]) -> Result<TagUpdate, EventError> {
    let wire = WireTagUpdate::decode(bytes).map_err(undecodable_protobuf)?;
    let entity = match proto::EntityKind::try_from(wire.entity_kind) {
        Ok(proto::EntityKind::User) => Field::UserId,
        Ok(proto::EntityKind::Card) => Field::CardId,
        Ok(proto::EntityKind::Device) => Field::DeviceId,
        Ok(proto::EntityKind::Ip) => Field::Ip,
        Ok(proto::EntityKind::Merchant) => Field::MerchantId,
        Ok(proto::EntityKind::Txn) => Field::TxnId,
        Ok(proto::EntityKind::Unspecified) | Err(_) => {
            return Err(EventError::UnknownEnum {
                field: "entity_kind",
                value: wire.entity_kind.to_string(),
            })
        }
    };
    let update = TagUpdate {
        entity,
        value: utf8("entity_value", wire.entity_value)?,
        tag: utf8("tag", wire.tag)?,
        expires_at_ms: (!wire.remove && wire.expires_at_ms != 0).then_some(wire.expires_at_ms),
        remove: wire.remove,
    };
    validate_tag_update(&update)?;
    Ok(update)
}

fn decode_decision_protobuf(bytes: &[u8]) -> Result<Decision, EventError> {
    let wire = proto::Decision::decode(bytes).map_err(undecodable_protobuf)?;
    let mut hits = Vec::with_capacity(wire.hits.len());
    for hit in wire.hits {
        hits.push(RuleHit {
            rule: hit.rule.into(),
            outcome: outcome_from_proto("hits.outcome", hit.outcome)?,
            score: hit.score,
        });
    }
    let trigger = match proto::Trigger::try_from(wire.trigger) {
        Ok(proto::Trigger::Event) => Trigger::Event,
        Ok(proto::Trigger::Timeout) => Trigger::Timeout,
        Ok(proto::Trigger::Unspecified) | Err(_) => {
            return Err(EventError::UnknownEnum {
                field: "trigger",
                value: wire.trigger.to_string(),
            })
        }
    };
    let decision = Decision {
        event_id: wire.event_id,
        txn_id: Some(wire.txn_id).filter(|t| !t.is_empty()),
        outcome: outcome_from_proto("outcome", wire.outcome)?,
        score: wire.score,
        hits,
        ruleset_version: wire.ruleset_version.into(),
        trigger,
        shadow: wire.shadow,
        decided_at_ms: wire.decided_at_ms,
        eval_latency_us: wire.eval_latency_us,
    };
    validate_decision(&decision)?;
    Ok(decision)
}

#[cfg(test)]
fn outcome_to_proto(outcome: Outcome) -> proto::Outcome {
    match outcome {
        Outcome::Allow => proto::Outcome::Allow,
        Outcome::Review => proto::Outcome::Review,
        Outcome::Challenge => proto::Outcome::Challenge,
        Outcome::Block => proto::Outcome::Block,
    }
}

fn outcome_from_proto(field: &'static str, value: i32) -> Result<Outcome, EventError> {
    match proto::Outcome::try_from(value) {
        Ok(proto::Outcome::Allow) => Ok(Outcome::Allow),
        Ok(proto::Outcome::Review) => Ok(Outcome::Review),
        Ok(proto::Outcome::Challenge) => Ok(Outcome::Challenge),
        Ok(proto::Outcome::Block) => Ok(Outcome::Block),
        Ok(proto::Outcome::Unspecified) | Err(_) => Err(EventError::UnknownEnum {
            field,
            value: value.to_string(),
        }),
    }
}

fn entity_kind_to_proto(field: Field) -> proto::EntityKind {
    match field {
        Field::UserId => proto::EntityKind::User,
        Field::CardId => proto::EntityKind::Card,
        Field::DeviceId => proto::EntityKind::Device,
        Field::Ip => proto::EntityKind::Ip,
        Field::MerchantId => proto::EntityKind::Merchant,
        Field::TxnId => proto::EntityKind::Txn,
        _ => proto::EntityKind::Unspecified,
    }
}
