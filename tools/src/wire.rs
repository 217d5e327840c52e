//! Wire encoding used by the tools: payment events out (protobuf or JSON), decisions in (protobuf).

use prost::Message;
use veto::event::PaymentEvent;
use veto::proto;

/// Encoding of the payment events the tools produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFormat {
    /// `veto.v1.PaymentEvent` protobuf.
    Protobuf,
    /// One JSON object with the protobuf field names.
    Json,
}

/// Errors decoding what Veto (or the passthrough) published.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("undecodable decision protobuf: {0}")]
    Decision(#[from] prost::DecodeError),
}

/// The protobuf message of an event.
pub fn to_proto(event: &PaymentEvent) -> proto::PaymentEvent {
    proto::PaymentEvent {
        event_id: event.event_id.clone(),
        r#type: event.kind.clone(),
        event_time_ms: event.event_time_ms,
        txn_id: event.txn_id.clone(),
        user_id: event.user_id.clone(),
        card_id: event.card_id.clone(),
        device_id: event.device_id.clone(),
        ip: event.ip.clone(),
        merchant_id: event.merchant_id.clone(),
        amount_minor: event.amount_minor,
        currency: event.currency.clone(),
        country: event.country.clone(),
        ip_country: event.ip_country.clone(),
        card_country: event.card_country.clone(),
        mcc: event.mcc.clone(),
        channel: event.channel.clone(),
        attrs: event.attrs.clone(),
    }
}

/// The JSON object of an event: protobuf field names, missing optional fields omitted.
pub fn to_json(event: &PaymentEvent) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("event_id".into(), event.event_id.clone().into());
    obj.insert("type".into(), event.kind.clone().into());
    obj.insert("event_time_ms".into(), event.event_time_ms.into());
    let strings = [
        ("txn_id", &event.txn_id),
        ("user_id", &event.user_id),
        ("card_id", &event.card_id),
        ("device_id", &event.device_id),
        ("ip", &event.ip),
        ("merchant_id", &event.merchant_id),
        ("currency", &event.currency),
        ("country", &event.country),
        ("ip_country", &event.ip_country),
        ("card_country", &event.card_country),
        ("mcc", &event.mcc),
        ("channel", &event.channel),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            obj.insert(name.into(), v.clone().into());
        }
    }
    if let Some(amount) = event.amount_minor {
        obj.insert("amount_minor".into(), amount.into());
    }
    if !event.attrs.is_empty() {
        let attrs = event
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect();
        obj.insert("attrs".into(), serde_json::Value::Object(attrs));
    }
    serde_json::Value::Object(obj)
}

/// Encodes an event as a Kafka record value.
pub fn encode_event(event: &PaymentEvent, format: EventFormat) -> Vec<u8> {
    match format {
        EventFormat::Protobuf => to_proto(event).encode_to_vec(),
        EventFormat::Json => to_json(event).to_string().into_bytes(),
    }
}

/// Decodes a `veto.v1.Decision` record value.
pub fn decode_decision(bytes: &[u8]) -> Result<proto::Decision, WireError> {
    Ok(proto::Decision::decode(bytes)?)
}

/// The Kafka key of an event: its user, so one user's events stay in order on one partition.
pub fn event_key(event: &PaymentEvent) -> &str {
    event
        .user_id
        .as_deref()
        .or(event.card_id.as_deref())
        .unwrap_or(&event.event_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veto::synth::{Synth, SynthConfig};

    #[test]
    fn protobuf_round_trips_every_field() {
        for event in Synth::new(SynthConfig::default()).take(200) {
            let bytes = encode_event(&event, EventFormat::Protobuf);
            let back = proto::PaymentEvent::decode(bytes.as_slice()).expect("own encoding decodes");
            assert_eq!(back, to_proto(&event));
            assert_eq!(back.event_id, event.event_id);
            assert_eq!(back.amount_minor, event.amount_minor);
        }
    }

    #[test]
    fn json_uses_protobuf_names_and_omits_missing() {
        let event = PaymentEvent {
            event_id: "e1".into(),
            kind: "authorization".into(),
            event_time_ms: 5,
            amount_minor: Some(1234),
            currency: Some("EUR".into()),
            ..Default::default()
        };
        let json: serde_json::Value =
            serde_json::from_slice(&encode_event(&event, EventFormat::Json)).expect("valid json");
        assert_eq!(json["type"], "authorization");
        assert_eq!(json["amount_minor"], 1234);
        assert!(json.get("user_id").is_none());
        assert_eq!(event_key(&event), "e1");
    }

    #[test]
    fn garbage_is_not_a_decision() {
        assert!(decode_decision(&[0xff, 0xff, 0xff]).is_err());
    }
}
