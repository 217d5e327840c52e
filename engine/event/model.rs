//! In-memory types: `PaymentEvent`, `Field`, `Outcome`, `Decision`, `TagUpdate`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One payment event as the engine sees it, decoded and validated.
///
/// Amounts are kept exactly, as integer minor units of `currency`; rules read them as a
/// decimal in major units through [`PaymentEvent::amount`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentEvent {
    /// Globally unique id of the event.
    pub event_id: String,
    /// Event type, e.g. "authorization" (the `type` field on the wire).
    pub kind: String,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    pub txn_id: Option<String>,
    pub user_id: Option<String>,
    pub card_id: Option<String>,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub merchant_id: Option<String>,
    /// Amount in integer minor units of `currency`.
    pub amount_minor: Option<i64>,
    /// ISO 4217 alphabetic code.
    pub currency: Option<String>,
    pub country: Option<String>,
    pub ip_country: Option<String>,
    pub card_country: Option<String>,
    pub mcc: Option<String>,
    pub channel: Option<String>,
    /// Extra attributes, read in rules as `attrs["key"]`.
    pub attrs: BTreeMap<String, String>,
}

/// A named top-level field of [`PaymentEvent`], as rules and entity keys refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    EventId = 0,
    Type = 1,
    EventTime = 2,
    TxnId = 3,
    UserId = 4,
    CardId = 5,
    DeviceId = 6,
    Ip = 7,
    MerchantId = 8,
    Amount = 9,
    Currency = 10,
    Country = 11,
    IpCountry = 12,
    CardCountry = 13,
    Mcc = 14,
    Channel = 15,
}

impl Field {
    /// Every field, in wire order.
    pub const ALL: [Field; 16] = [
        Field::EventId,
        Field::Type,
        Field::EventTime,
        Field::TxnId,
        Field::UserId,
        Field::CardId,
        Field::DeviceId,
        Field::Ip,
        Field::MerchantId,
        Field::Amount,
        Field::Currency,
        Field::Country,
        Field::IpCountry,
        Field::CardCountry,
        Field::Mcc,
        Field::Channel,
    ];

    /// The name used in rule files, JSON and docs.
    pub fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::Type => "type",
            Field::EventTime => "event_time",
            Field::TxnId => "txn_id",
            Field::UserId => "user_id",
            Field::CardId => "card_id",
            Field::DeviceId => "device_id",
            Field::Ip => "ip",
            Field::MerchantId => "merchant_id",
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::Country => "country",
            Field::IpCountry => "ip_country",
            Field::CardCountry => "card_country",
            Field::Mcc => "mcc",
            Field::Channel => "channel",
        }
    }

    /// Looks a field up by its rule-file name.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Looks a field up by its `repr(u8)` value (used by persisted entity keys).
    pub fn from_u8(v: u8) -> Option<Field> {
        Field::ALL.get(usize::from(v)).copied()
    }

    /// Numeric fields (`amount` in major units, `event_time` in epoch ms); all others are strings.
    pub fn is_numeric(self) -> bool {
        matches!(self, Field::Amount | Field::EventTime)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PaymentEvent {
    /// The value of a string field; `None` when missing or when the field is numeric.
    pub fn str_field(&self, field: Field) -> Option<&str> {
        let v = match field {
            Field::EventId => return Some(&self.event_id),
            Field::Type => return Some(&self.kind),
            Field::EventTime | Field::Amount => return None,
            Field::TxnId => &self.txn_id,
            Field::UserId => &self.user_id,
            Field::CardId => &self.card_id,
            Field::DeviceId => &self.device_id,
            Field::Ip => &self.ip,
            Field::MerchantId => &self.merchant_id,
            Field::Currency => &self.currency,
            Field::Country => &self.country,
            Field::IpCountry => &self.ip_country,
            Field::CardCountry => &self.card_country,
            Field::Mcc => &self.mcc,
            Field::Channel => &self.channel,
        };
        v.as_deref()
    }

    /// The value of a numeric field: `amount` in major units, `event_time` in epoch ms.
    pub fn num_field(&self, field: Field) -> Option<f64> {
        match field {
            Field::Amount => self.amount(),
            Field::EventTime => Some(self.event_time_ms as f64),
            _ => None,
        }
    }

    /// The amount in major units (e.g. 12.34 for 1234 minor units of EUR).
    pub fn amount(&self) -> Option<f64> {
        let minor = self.amount_minor?;
        let exp = currency_exponent(self.currency.as_deref().unwrap_or(""));
        Some(minor as f64 / POW10[exp as usize])
    }

    /// An extra attribute, `attrs["key"]` in rules.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    /// The optional string field `field`, to overwrite in place; `None` for `event_id`, `type`
    /// and the numeric fields.
    pub(crate) fn optional_str_mut(&mut self, field: Field) -> Option<&mut Option<String>> {
        Some(match field {
            Field::EventId | Field::Type | Field::EventTime | Field::Amount => return None,
            Field::TxnId => &mut self.txn_id,
            Field::UserId => &mut self.user_id,
            Field::CardId => &mut self.card_id,
            Field::DeviceId => &mut self.device_id,
            Field::Ip => &mut self.ip,
            Field::MerchantId => &mut self.merchant_id,
            Field::Currency => &mut self.currency,
            Field::Country => &mut self.country,
            Field::IpCountry => &mut self.ip_country,
            Field::CardCountry => &mut self.card_country,
            Field::Mcc => &mut self.mcc,
            Field::Channel => &mut self.channel,
        })
    }
}

/// Overwrites `slot` with `value`, reusing the string's buffer: a decoder filling one event
/// after another allocates only when a value outgrows the previous one.
pub(crate) fn assign(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

/// [`assign`] for an optional field: `None` (or an empty value) leaves it absent.
pub(crate) fn assign_optional(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value.filter(|v| !v.is_empty())) {
        (Some(s), Some(v)) => assign(s, v),
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// 10^exponent for every value `currency_exponent` returns (exact in f64).
const POW10: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];

/// Number of minor-unit digits of an ISO 4217 currency (2 unless listed as an exception).
/// Called for every amount read, so it matches the three bytes rather than comparing strings.
pub fn currency_exponent(code: &str) -> u32 {
    let &[a, b, c] = code.as_bytes() else {
        return 2;
    };
    match &[a, b, c] {
        b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG" | b"RWF"
        | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
        b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
        b"CLF" | b"UYW" => 4,
        _ => 2,
    }
}

/// A verdict, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Outcome {
    #[default]
    Allow,
    Review,
    Challenge,
    Block,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Allow,
        Outcome::Review,
        Outcome::Challenge,
        Outcome::Block,
    ];

    /// The lower-case name used in rule files, JSON and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Review => "review",
            Outcome::Challenge => "challenge",
            Outcome::Block => "block",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A feature aggregate, shared by the rule language and the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    Last,
}

impl Aggregate {
    pub const ALL: [Aggregate; 7] = [
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Avg,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Distinct,
        Aggregate::Last,
    ];

    /// The lower-case name used in rule files (`count`, `sum`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Distinct => "distinct",
            Aggregate::Last => "last",
        }
    }

    pub fn from_name(name: &str) -> Option<Aggregate> {
        Aggregate::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What caused a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Trigger {
    /// The event itself.
    #[default]
    Event,
    /// A sequence rule's timer fired for the event.
    Timeout,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Event => "event",
            Trigger::Timeout => "timeout",
        }
    }
}

/// One matching rule inside a decision.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: Arc<str>,
    pub outcome: Outcome,
    pub score: i32,
}

impl Clone for RuleHit {
    fn clone(&self) -> RuleHit {
        RuleHit {
            rule: Arc::clone(&self.rule),
            outcome: self.outcome,
            score: self.score,
        }
    }

    /// Leaves the rule name's shared count alone when it names the same rule (a decision
    /// buffer refilled event after event mostly holds the same hits).
    fn clone_from(&mut self, source: &RuleHit) {
        if !Arc::ptr_eq(&self.rule, &source.rule) {
            self.rule = Arc::clone(&source.rule);
        }
        self.outcome = source.outcome;
        self.score = source.score;
    }
}

/// The engine's answer for one event (or one fired timer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub event_id: String,
    pub txn_id: Option<String>,
    pub outcome: Outcome,
    pub score: i32,
    /// Every matching rule, in rule-file order.
    pub hits: Vec<RuleHit>,
    pub ruleset_version: Arc<str>,
    pub trigger: Trigger,
    pub shadow: bool,
    /// Wall-clock time of the decision, epoch ms.
    pub decided_at_ms: i64,
    /// Time spent in the engine for this event, microseconds.
    pub eval_latency_us: u32,
}

/// Sets or removes a tag on an entity (from rules or the `entity-tags` topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagUpdate {
    /// The field naming the entity kind, e.g. `Field::UserId`.
    pub entity: Field,
    pub value: String,
    pub tag: String,
    /// Event-time expiry in epoch ms; `None` never expires.
    pub expires_at_ms: Option<i64>,
    pub remove: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
            assert_eq!(Field::from_u8(f as u8), Some(f));
        }
        assert_eq!(Field::from_name("card"), None);
    }

    #[test]
    fn amount_uses_currency_exponent() {
        let mut e = PaymentEvent {
            amount_minor: Some(123_456),
            currency: Some("EUR".into()),
            ..Default::default()
        };
        assert_eq!(e.amount(), Some(1234.56));
        e.currency = Some("JPY".into());
        assert_eq!(e.amount(), Some(123_456.0));
        e.currency = Some("KWD".into());
        assert_eq!(e.amount(), Some(123.456));
        e.currency = Some("CLF".into());
        assert_eq!(e.amount(), Some(12.3456));
        for (code, exp) in [
            ("", 2),
            ("jpy", 2),
            ("JPYX", 2),
            ("JP", 2),
            ("XPF", 0),
            ("TND", 3),
        ] {
            assert_eq!(currency_exponent(code), exp, "{code}");
        }
    }

    #[test]
    fn outcomes_are_ordered() {
        assert!(Outcome::Allow < Outcome::Review);
        assert!(Outcome::Review < Outcome::Challenge);
        assert!(Outcome::Challenge < Outcome::Block);
    }
}
