//! JSON codec: events and tag updates with per-field errors, decisions both ways, same field names as the proto.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::error::EventError;
use super::model::{
    assign, assign_optional, currency_exponent, Decision, Field, Outcome, PaymentEvent, RuleHit,
    TagUpdate, Trigger,
};
use super::parse::{major_to_minor, minor_to_major, parse_rfc3339_ms};
use super::validate::{
    check_currency, entity_kind_from_name, entity_kind_name, validate_decision, validate_event,
    validate_tag_update, MAX_ATTRS,
};

/// Keys accepted at the top level of a JSON payment event.
const EVENT_KEYS: [&str; 19] = [
    "event_id",
    "type",
    "event_time",
    "event_time_ms",
    "txn_id",
    "user_id",
    "card_id",
    "device_id",
    "ip",
    "merchant_id",
    "amount",
    "amount_minor",
    "currency",
    "country",
    "ip_country",
    "card_country",
    "mcc",
    "channel",
    "attrs",
];

/// Keys accepted in a JSON tag update.
const TAG_UPDATE_KEYS: [&str; 5] = [
    "entity_kind",
    "entity_value",
    "tag",
    "expires_at_ms",
    "remove",
];

/// Decodes and validates a JSON payment event (size already checked by the caller) into
/// `ev`, overwriting every field and reusing its strings' buffers.
pub(crate) fn decode_event_into(bytes: &[u8], ev: &mut PaymentEvent) -> Result<(), EventError> {
    let text = utf8_payload(bytes)?;
    let members = top_level_object(text)?;
    let mut amount_major: Option<&RawValue> = None;
    let mut seen = SeenKeys::default();
    for (key, raw) in &members.0 {
        let known = EVENT_KEYS.iter().find(|k| **k == key.as_ref()).copied();
        let key = known.ok_or_else(|| EventError::UnknownField {
            field: shortened(key),
        })?;
        let slot = match key {
            "event_time_ms" => "event_time",
            "amount_minor" => "amount",
            other => other,
        };
        seen.insert(slot, key)?;
        match key {
            "event_id" => assign(&mut ev.event_id, &string(key, raw)?.unwrap_or_default()),
            "type" => assign(&mut ev.kind, &string(key, raw)?.unwrap_or_default()),
            "event_time" | "event_time_ms" => ev.event_time_ms = event_time(key, raw)?,
            "amount" => amount_major = Some(*raw),
            "amount_minor" => ev.amount_minor = amount_minor(raw)?,
            "attrs" => ev.attrs = attrs(raw)?,
            _ => {
                let value = string(key, raw)?;
                if let Some(slot) = Field::from_name(key).and_then(|f| ev.optional_str_mut(f)) {
                    assign_optional(slot, value.as_deref());
                }
            }
        }
    }
    // what the object did not name is absent
    for field in Field::ALL {
        if seen.has(field.name()) {
            continue;
        }
        match field {
            Field::EventId => ev.event_id.clear(),
            Field::Type => ev.kind.clear(),
            Field::EventTime => ev.event_time_ms = 0,
            Field::Amount => ev.amount_minor = None,
            other => {
                if let Some(slot) = ev.optional_str_mut(other) {
                    *slot = None;
                }
            }
        }
    }
    if !seen.has("attrs") {
        ev.attrs.clear();
    }
    if let Some(raw) = amount_major {
        ev.amount_minor = amount_from_major(raw, ev.currency.as_deref())?;
    }
    validate_event(ev)
}

/// Encodes an event as JSON: `amount` as a decimal string in major units (or `amount_minor`
/// when the event has no currency), `event_time_ms` as epoch milliseconds.
pub(crate) fn encode_event(ev: &PaymentEvent) -> Vec<u8> {
    let (amount, amount_minor) = match (ev.amount_minor, ev.currency.as_deref()) {
        (Some(minor), Some(currency)) => (
            Some(minor_to_major(minor, currency_exponent(currency))),
            None,
        ),
        (minor, _) => (None, minor),
    };
    let out = EventOut {
        event_id: &ev.event_id,
        kind: &ev.kind,
        event_time_ms: ev.event_time_ms,
        txn_id: ev.txn_id.as_deref(),
        user_id: ev.user_id.as_deref(),
        card_id: ev.card_id.as_deref(),
        device_id: ev.device_id.as_deref(),
        ip: ev.ip.as_deref(),
        merchant_id: ev.merchant_id.as_deref(),
        amount,
        amount_minor,
        currency: ev.currency.as_deref(),
        country: ev.country.as_deref(),
        ip_country: ev.ip_country.as_deref(),
        card_country: ev.card_country.as_deref(),
        mcc: ev.mcc.as_deref(),
        channel: ev.channel.as_deref(),
        attrs: &ev.attrs,
    };
    to_json(&out)
}

/// Decodes and validates a JSON tag update (size already checked by the caller).
pub(crate) fn decode_tag_update(bytes: &[u8]) -> Result<TagUpdate, EventError> {
    let text = utf8_payload(bytes)?;
    let members = top_level_object(text)?;
    let mut entity = None;
    let mut update = TagUpdate {
        entity: super::model::Field::UserId,
        value: String::new(),
        tag: String::new(),
        expires_at_ms: None,
        remove: false,
    };
    let mut seen = SeenKeys::default();
    for (key, raw) in &members.0 {
        let known = TAG_UPDATE_KEYS
            .iter()
            .find(|k| **k == key.as_ref())
            .copied();
        let key = known.ok_or_else(|| EventError::UnknownField {
            field: shortened(key),
        })?;
        seen.insert(key, key)?;
        match key {
            "entity_kind" => {
                let name = string(key, raw)?.unwrap_or_default();
                entity =
                    Some(
                        entity_kind_from_name(&name).ok_or_else(|| EventError::UnknownEnum {
                            field: "entity_kind",
                            value: format!("{:?}", shortened(&name)),
                        })?,
                    );
            }
            "entity_value" => update.value = owned(string(key, raw)?),
            "tag" => update.tag = owned(string(key, raw)?),
            "expires_at_ms" => {
                let ms = integer(raw).map_err(|text| EventError::InvalidTime {
                    field: "expires_at_ms",
                    detail: format!("{text} is not an integer number of epoch milliseconds"),
                })?;
                update.expires_at_ms = ms.filter(|&ms| ms != 0);
            }
            _ => {
                update.remove = serde_json::from_str::<Option<bool>>(raw.get())
                    .map_err(|_| EventError::InvalidType {
                        field: "remove".into(),
                        expected: "true or false",
                    })?
                    .unwrap_or(false)
            }
        }
    }
    update.entity = entity.ok_or(EventError::MissingField {
        field: "entity_kind",
        detail: "required",
    })?;
    if update.remove {
        update.expires_at_ms = None;
    }
    validate_tag_update(&update)?;
    Ok(update)
}

/// Encodes a tag update as JSON; `expires_at_ms` is omitted when the tag never expires.
pub(crate) fn encode_tag_update(update: &TagUpdate) -> Vec<u8> {
    let out = TagUpdateOut {
        entity_kind: entity_kind_name(update.entity).unwrap_or("unspecified"),
        entity_value: &update.value,
        tag: &update.tag,
        expires_at_ms: update.expires_at_ms,
        remove: update.remove,
    };
    to_json(&out)
}

/// Encodes a decision as JSON (see `docs/wire-format.md` for the shape), appended to `buf`.
pub(crate) fn encode_decision_into(d: &Decision, buf: &mut Vec<u8>) {
    let out = DecisionOut {
        event_id: &d.event_id,
        txn_id: d.txn_id.as_deref(),
        outcome: d.outcome.name(),
        score: d.score,
        hits: HitsOut(&d.hits),
        ruleset_version: &d.ruleset_version,
        trigger: d.trigger.name(),
        shadow: d.shadow,
        decided_at_ms: d.decided_at_ms,
        eval_latency_us: d.eval_latency_us,
    };
    serde_json::to_writer(buf, &out)
        .expect("a decision holds only strings, integers and booleans; a Vec never fails a write");
}

/// Decodes a JSON decision (as written by [`encode_decision_into`]).
pub(crate) fn decode_decision(bytes: &[u8]) -> Result<Decision, EventError> {
    let text = utf8_payload(bytes)?;
    let input: DecisionIn = serde_json::from_str(text).map_err(|e| EventError::Undecodable {
        format: "JSON",
        detail: e.to_string(),
    })?;
    let outcome = |field: &'static str, name: &str| {
        Outcome::from_name(name).ok_or_else(|| EventError::UnknownEnum {
            field,
            value: format!("{:?}", shortened(name)),
        })
    };
    let trigger = match input.trigger.as_str() {
        "event" => Trigger::Event,
        "timeout" => Trigger::Timeout,
        other => {
            return Err(EventError::UnknownEnum {
                field: "trigger",
                value: format!("{:?}", shortened(other)),
            })
        }
    };
    let mut hits = Vec::with_capacity(input.hits.len());
    for hit in input.hits {
        hits.push(RuleHit {
            rule: hit.rule.into(),
            outcome: outcome("hits.outcome", &hit.outcome)?,
            score: hit.score,
        });
    }
    let decision = Decision {
        event_id: input.event_id,
        txn_id: input.txn_id.filter(|t| !t.is_empty()),
        outcome: outcome("outcome", &input.outcome)?,
        score: input.score,
        hits,
        ruleset_version: input.ruleset_version.into(),
        trigger,
        shadow: input.shadow,
        decided_at_ms: input.decided_at_ms,
        eval_latency_us: input.eval_latency_us,
    };
    validate_decision(&decision)?;
    Ok(decision)
}

/// The payload as text, or `invalid_utf8` pointing at the first bad byte.
fn utf8_payload(bytes: &[u8]) -> Result<&str, EventError> {
    std::str::from_utf8(bytes).map_err(|e| EventError::InvalidUtf8 {
        field: "payload".into(),
        detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
    })
}

fn top_level_object(text: &str) -> Result<Members<'_>, EventError> {
    serde_json::from_str(text).map_err(|e| EventError::Undecodable {
        format: "JSON",
        detail: e.to_string(),
    })
}

/// Serializes a plain output struct; these hold only strings, integers and string maps.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value)
        .expect("JSON output structs hold only strings, integers and string maps")
}

/// A string field; `null` and `""` both mean absent. Borrowed from the payload unless the
/// string has escapes.
fn string<'a>(field: &str, raw: &'a RawValue) -> Result<Option<Cow<'a, str>>, EventError> {
    if let Ok(value) = serde_json::from_str::<Option<&'a str>>(raw.get()) {
        return Ok(value.filter(|s| !s.is_empty()).map(Cow::Borrowed));
    }
    match serde_json::from_str::<Option<String>>(raw.get()) {
        Ok(value) => Ok(value.filter(|s| !s.is_empty()).map(Cow::Owned)),
        Err(e) if e.classify() == Category::Syntax => Err(EventError::InvalidUtf8 {
            field: field.to_string(),
            detail: "invalid unicode escape in string".into(),
        }),
        Err(_) => Err(EventError::InvalidType {
            field: field.to_string(),
            expected: "a string",
        }),
    }
}

/// A [`string`] field's value as an owned string; absent is empty.
fn owned(value: Option<Cow<'_, str>>) -> String {
    value.map(Cow::into_owned).unwrap_or_default()
}

/// An integer given as a JSON number or a decimal string (proto3 JSON writes int64 as strings).
/// `Err` carries the offending text for the caller's message.
fn integer(raw: &RawValue) -> Result<Option<i64>, String> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    let digits: Cow<'_, str> = if text.starts_with('"') {
        Cow::Owned(serde_json::from_str::<String>(text).map_err(|_| shortened(text))?)
    } else {
        Cow::Borrowed(text)
    };
    let body = digits.strip_prefix('-').unwrap_or(&digits);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(shortened(text));
    }
    digits.parse::<i64>().map(Some).map_err(|_| shortened(text))
}

/// `event_time` (RFC 3339 string or epoch-ms number) or `event_time_ms` (epoch ms).
fn event_time(key: &'static str, raw: &RawValue) -> Result<i64, EventError> {
    let text = raw.get().trim();
    let ms = if key == "event_time" && text.starts_with('"') {
        let s = string(key, raw)?.unwrap_or_default();
        parse_rfc3339_ms(&s).map_err(|detail| EventError::InvalidTime { field: key, detail })?
    } else {
        match integer(raw) {
            Ok(Some(ms)) => ms,
            Ok(None) => return Ok(0),
            Err(text) => {
                return Err(EventError::InvalidTime {
                    field: key,
                    detail: format!(
                    "{text} is not an RFC 3339 string or an integer number of epoch milliseconds"
                ),
                })
            }
        }
    };
    if ms <= 0 {
        return Err(EventError::InvalidTime {
            field: key,
            detail: format!("{ms} ms is not after the Unix epoch"),
        });
    }
    Ok(ms)
}

fn amount_minor(raw: &RawValue) -> Result<Option<i64>, EventError> {
    integer(raw).map_err(|text| EventError::InvalidAmount {
        field: "amount_minor",
        detail: format!("{text} is not an integer number of minor units in the 64-bit range"),
    })
}

/// `amount` in major units, as a decimal string or a JSON number, converted exactly.
fn amount_from_major(raw: &RawValue, currency: Option<&str>) -> Result<Option<i64>, EventError> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    let decimal = if text.starts_with('"') {
        string("amount", raw)?.unwrap_or_default()
    } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        Cow::Borrowed(text)
    } else {
        return Err(EventError::InvalidType {
            field: "amount".into(),
            expected: "a decimal string or number",
        });
    };
    let currency = currency.ok_or(EventError::MissingField {
        field: "currency",
        detail: "required when an amount is given",
    })?;
    check_currency(currency)?;
    major_to_minor(&decimal, currency_exponent(currency))
        .map(Some)
        .map_err(|detail| EventError::InvalidAmount {
            field: "amount",
            detail,
        })
}

/// `attrs`: an object of string values; `null` means none.
fn attrs(raw: &RawValue) -> Result<BTreeMap<String, String>, EventError> {
    let mut out = BTreeMap::new();
    if raw.get().trim() == "null" {
        return Ok(out);
    }
    let members: Members<'_> = serde_json::from_str(raw.get()).map_err(|e| match e.classify() {
        Category::Syntax => EventError::InvalidUtf8 {
            field: "attrs".into(),
            detail: "invalid unicode escape in key".into(),
        },
        _ => EventError::InvalidType {
            field: "attrs".into(),
            expected: "an object of strings",
        },
    })?;
    if members.0.len() > MAX_ATTRS {
        return Err(EventError::TooManyAttrs {
            count: members.0.len(),
            max: MAX_ATTRS,
        });
    }
    for (key, value) in members.0 {
        let field = || format!("attrs[{:?}]", shortened(&key));
        let value = match serde_json::from_str::<String>(value.get()) {
            Ok(v) => v,
            Err(e) if e.classify() == Category::Syntax => {
                return Err(EventError::InvalidUtf8 {
                    field: field(),
                    detail: "invalid unicode escape in string".into(),
                })
            }
            Err(_) => {
                return Err(EventError::InvalidType {
                    field: field(),
                    expected: "a string",
                })
            }
        };
        if out.contains_key(key.as_ref()) {
            return Err(EventError::DuplicateField {
                field: field(),
                other: field(),
            });
        }
        out.insert(key.into_owned(), value);
    }
    Ok(out)
}

/// At most 64 characters of an input-controlled name, for error messages.
fn shortened(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Which contract slots a JSON object has filled, and under which key.
#[derive(Default)]
struct SeenKeys(SmallVec<[(&'static str, &'static str); EVENT_KEYS.len()]>);

impl SeenKeys {
    fn insert(&mut self, slot: &'static str, key: &'static str) -> Result<(), EventError> {
        if let Some((_, first)) = self.0.iter().find(|(s, _)| *s == slot) {
            return Err(EventError::DuplicateField {
                field: key.into(),
                other: (*first).into(),
            });
        }
        self.0.push((slot, key));
        Ok(())
    }

    fn has(&self, slot: &str) -> bool {
        self.0.iter().any(|(s, _)| *s == slot)
    }
}

/// The members of one JSON object in document order (duplicates kept), values unparsed; keys
/// borrowed from the payload unless they have escapes, and inline up to an event's key count.
struct Members<'a>(SmallVec<[(Cow<'a, str>, &'a RawValue); EVENT_KEYS.len()]>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = SmallVec::new();
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'a RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    event_time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    txn_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcc: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attrs: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct TagUpdateOut<'a> {
    entity_kind: &'static str,
    entity_value: &'a str,
    tag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<i64>,
    remove: bool,
}

#[derive(Serialize)]
struct DecisionOut<'a> {
    event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    txn_id: Option<&'a str>,
    outcome: &'static str,
    score: i32,
    hits: HitsOut<'a>,
    ruleset_version: &'a str,
    trigger: &'static str,
    shadow: bool,
    decided_at_ms: i64,
    eval_latency_us: u32,
}

/// A decision's hits, written as an array of [`HitOut`] without collecting them.
struct HitsOut<'a>(&'a [RuleHit]);

impl Serialize for HitsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|h| HitOut {
            rule: &h.rule,
            outcome: h.outcome.name(),
            score: h.score,
        }))
    }
}

#[derive(Serialize)]
struct HitOut<'a> {
    rule: &'a str,
    outcome: &'static str,
    score: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionIn {
    event_id: String,
    #[serde(default)]
    txn_id: Option<String>,
    outcome: String,
    #[serde(default)]
    score: i32,
    #[serde(default)]
    hits: Vec<HitIn>,
    #[serde(default)]
    ruleset_version: String,
    trigger: String,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    decided_at_ms: i64,
    #[serde(default)]
    eval_latency_us: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HitIn {
    rule: String,
    outcome: String,
    #[serde(default)]
    score: i32,
}
