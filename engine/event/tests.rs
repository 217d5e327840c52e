//! Tests of the wire codecs: round trips, hostile input, and one test per validation error.
//! (Over 800 lines: one table-like file of codec and validation cases, one test per error.)

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::proto;

const MAX: usize = DEFAULT_MAX_EVENT_BYTES;

fn valid_event() -> PaymentEvent {
    PaymentEvent {
        event_id: "ev-1".into(),
        kind: "authorization".into(),
        event_time_ms: 1_795_395_723_456,
        txn_id: Some("t-1".into()),
        user_id: Some("u-1".into()),
        card_id: Some("c-1".into()),
        amount_minor: Some(1234),
        currency: Some("EUR".into()),
        attrs: BTreeMap::from([("bin".to_string(), "411111".to_string())]),
        ..Default::default()
    }
}

fn json(text: &str) -> Result<PaymentEvent, EventError> {
    decode_event(text.as_bytes(), InputFormat::Json, MAX)
}

fn proto_event(edit: impl FnOnce(&mut proto::PaymentEvent)) -> Vec<u8> {
    let mut p = proto::PaymentEvent::decode(&*encode_event(&valid_event(), OutputFormat::Protobuf))
        .expect("own encoding decodes");
    edit(&mut p);
    p.encode_to_vec()
}

/// Asserts the error's reason code and that its message names `field`.
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, EventError>, code: &str, field: &str) {
    let err = result.expect_err("input must be rejected");
    assert_eq!(err.reason_code(), code, "{err}");
    assert!(
        err.to_string().contains(field),
        "message {:?} must name {field:?}",
        err.to_string()
    );
}

// ---- accepted forms ----

#[test]
fn json_accepts_documented_forms() {
    let ev = json(
        r#"{"event_id":"ev-1","type":"authorization","event_time":"2026-11-23T02:02:03.456+01:00",
            "amount":12.34,"currency":"EUR","user_id":"u-1","card_id":null,"ip":"",
            "attrs":{"bin":"411111"}}"#,
    )
    .expect("valid");
    assert_eq!(ev.event_time_ms, 1_795_395_723_456);
    assert_eq!(ev.amount_minor, Some(1234));
    assert_eq!(ev.user_id.as_deref(), Some("u-1"));
    assert_eq!(ev.card_id, None, "null is absent");
    assert_eq!(ev.ip, None, "empty string is absent");
    assert_eq!(ev.attr("bin"), Some("411111"));

    let ev = json(r#"{"event_id":"e","type":"t","event_time":1700000000000,"amount":"1500","currency":"JPY"}"#)
        .expect("valid");
    assert_eq!(
        (ev.event_time_ms, ev.amount_minor),
        (1_700_000_000_000, Some(1500))
    );

    let ev = json(r#"{"event_id":"e","type":"t","event_time_ms":"1700000000000","amount_minor":"1234","currency":"KWD"}"#)
        .expect("valid");
    assert_eq!(
        (ev.event_time_ms, ev.amount_minor),
        (1_700_000_000_000, Some(1234))
    );
    assert_eq!(ev.amount(), Some(1.234));

    let ev =
        json(r#"{"event_id":"e","type":"t","event_time_ms":1,"amount":"1.234","currency":"KWD"}"#)
            .expect("valid");
    assert_eq!(ev.amount_minor, Some(1234));
}

#[test]
fn auto_detects_json_and_protobuf() {
    let ev = valid_event();
    let mut spaced = b" \n\t".to_vec();
    spaced.extend(encode_event(&ev, OutputFormat::Json));
    assert_eq!(
        decode_event(&spaced, InputFormat::Auto, MAX),
        Ok(ev.clone())
    );
    let pb = encode_event(&ev, OutputFormat::Protobuf);
    assert_eq!(decode_event(&pb, InputFormat::Auto, MAX), Ok(ev));
}

#[test]
fn auto_falls_back_to_protobuf_for_brace_led_messages() {
    // event_id of length 0x7B: the protobuf message starts with "\n{".
    let ev = PaymentEvent {
        event_id: "x".repeat(0x7B),
        ..valid_event()
    };
    let pb = encode_event(&ev, OutputFormat::Protobuf);
    assert_eq!(&pb[..2], b"\n{");
    assert_eq!(decode_event(&pb, InputFormat::Auto, MAX), Ok(ev));
}

#[test]
fn json_output_shape_is_documented_one() {
    let text = String::from_utf8(encode_event(&valid_event(), OutputFormat::Json)).expect("utf8");
    assert_eq!(
        text,
        r#"{"event_id":"ev-1","type":"authorization","event_time_ms":1795395723456,"txn_id":"t-1","user_id":"u-1","card_id":"c-1","amount":"12.34","currency":"EUR","attrs":{"bin":"411111"}}"#
    );
    let decision = Decision {
        event_id: "ev-1".into(),
        txn_id: Some("t-1".into()),
        outcome: Outcome::Review,
        score: 30,
        hits: vec![RuleHit {
            rule: Arc::from("card_velocity"),
            outcome: Outcome::Review,
            score: 30,
        }],
        ruleset_version: Arc::from("v7"),
        trigger: Trigger::Timeout,
        shadow: false,
        decided_at_ms: 1_795_395_723_460,
        eval_latency_us: 12,
    };
    let text = String::from_utf8(encode_decision(&decision, OutputFormat::Json)).expect("utf8");
    assert_eq!(
        text,
        r#"{"event_id":"ev-1","txn_id":"t-1","outcome":"review","score":30,"hits":[{"rule":"card_velocity","outcome":"review","score":30}],"ruleset_version":"v7","trigger":"timeout","shadow":false,"decided_at_ms":1795395723460,"eval_latency_us":12}"#
    );
}

#[test]
fn an_oversized_message_s_dead_letter_carries_its_start_and_fits_a_kafka_message() {
    let err = EventError::Oversized {
        size: 2_000_000,
        max: 16 << 20,
    };
    for (size, max_raw, kept) in [
        (100_000, 65_536, 65_536),
        (2_000_000, 16 << 20, DEAD_LETTER_RAW_MAX),
    ] {
        let raw = vec![b'x'; size];
        let bytes = dead_letter(&raw, &err, "payments", 0, 7, 0, max_raw);
        assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
        let dl = decode_dead_letter(&bytes).expect("decodes");
        assert_eq!(dl.raw.len(), kept);
        assert!(dl.raw_truncated);
        assert_eq!(dl.reason_code, "oversized");
        assert_eq!(dl.source_offset, 7);
    }
    let huge_key = vec![b'k'; 999_950];
    assert_eq!(
        dead_letter_key(Some(&huge_key)).map(<[u8]>::len),
        Some(DEAD_LETTER_KEY_MAX)
    );
    assert_eq!(dead_letter_key(Some(b"c-1")), Some(&b"c-1"[..]));
    assert_eq!(dead_letter_key(None), None);
}

#[test]
fn auto_detection_reports_the_protobuf_reason_of_a_message_that_looks_like_json() {
    // an event_id of 123 bytes encodes as `\n{...`: JSON is tried first
    let event = PaymentEvent {
        event_id: "e".repeat(123),
        kind: "authorization".into(),
        event_time_ms: 1_700_000_000_000,
        amount_minor: Some(-5),
        ..PaymentEvent::default()
    };
    let bytes = encode_event(&event, OutputFormat::Protobuf);
    assert_eq!(&bytes[..2], b"\n{");
    let err = decode_event(&bytes, InputFormat::Auto, 1 << 16).expect_err("negative amount");
    assert_ne!(err.reason_code(), "undecodable", "{err}");
    assert!(err.to_string().contains("amount"), "{err}");
}

#[test]
fn dead_letter_carries_raw_bytes_and_reason() {
    let raw = b"{\"event_id\":\"e\"}";
    let err = json(std::str::from_utf8(raw).expect("utf8")).expect_err("no type");
    let bytes = dead_letter(raw, &err, "payments", 3, 42, 1_700_000_000_000, 1024);
    let dl = decode_dead_letter(&bytes).expect("decodes");
    assert_eq!(dl.raw, raw);
    assert!(!dl.raw_truncated);
    assert_eq!(dl.reason_code, "missing_field");
    assert_eq!(dl.reason, "field `type`: required");
    assert_eq!(
        (
            dl.source_topic.as_str(),
            dl.source_partition,
            dl.source_offset,
            dl.rejected_at_ms
        ),
        ("payments", 3, 42, 1_700_000_000_000)
    );
    assert_rejected(decode_dead_letter(&[0xFF]), "undecodable", "payload");
}

#[test]
fn tag_updates_decode_from_both_formats() {
    let u = decode_tag_update(
        br#"{"entity_kind":"user_id","entity_value":"u-1","tag":"trusted","expires_at_ms":"1700000000000"}"#,
        InputFormat::Auto,
        MAX,
    )
    .expect("valid");
    assert_eq!(u.entity, Field::UserId);
    assert_eq!(u.expires_at_ms, Some(1_700_000_000_000));
    let pb = proto::TagUpdate {
        entity_kind: proto::EntityKind::Card as i32,
        entity_value: "c-1".into(),
        tag: "stolen".into(),
        expires_at_ms: 99,
        remove: true,
    }
    .encode_to_vec();
    let u = decode_tag_update(&pb, InputFormat::Protobuf, MAX).expect("valid");
    assert_eq!(
        (u.entity, u.remove, u.expires_at_ms),
        (Field::CardId, true, None)
    );
}

// ---- one test per validation error ----

#[test]
fn rejects_oversized_before_parsing() {
    let big = format!("{{\"event_id\":\"{}\"", "x".repeat(200));
    assert_rejected(
        decode_event(big.as_bytes(), InputFormat::Json, 100),
        "oversized",
        "payload",
    );
    assert_rejected(
        decode_tag_update(&[0; 101], InputFormat::Protobuf, 100),
        "oversized",
        "100 bytes",
    );
}

#[test]
fn rejects_undecodable() {
    assert_rejected(json("{not json"), "undecodable", "JSON");
    assert_rejected(json("[1,2]"), "undecodable", "JSON");
    assert_rejected(json(r#"{"event_id":"e"} trailing"#), "undecodable", "JSON");
    assert_rejected(
        decode_event(&[0xFF, 0xFF], InputFormat::Protobuf, MAX),
        "undecodable",
        "protobuf",
    );
}

#[test]
fn rejects_invalid_utf8() {
    assert_rejected(
        decode_event(b"{\"event_id\":\"\xff\"}", InputFormat::Json, MAX),
        "invalid_utf8",
        "payload",
    );
    assert_rejected(
        json(r#"{"event_id":"e","user_id":"\ud800"}"#),
        "invalid_utf8",
        "user_id",
    );
    let pb = proto_event(|p| p.event_id.clear());
    let mut bad = vec![0x0A, 0x02, 0xC3, 0x28];
    bad.extend(pb);
    assert_rejected(
        decode_event(&bad, InputFormat::Protobuf, MAX),
        "invalid_utf8",
        "event_id",
    );
    // attrs value 0xFF in map entry (field 17: key "k", value "\xff").
    let mut bad_attr = encode_event(&valid_event(), OutputFormat::Protobuf);
    bad_attr.extend([0x8A, 0x01, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, 0xFF]);
    assert_rejected(
        decode_event(&bad_attr, InputFormat::Protobuf, MAX),
        "invalid_utf8",
        "attrs[\"k\"]",
    );
}

#[test]
fn rejects_invalid_type() {
    assert_rejected(
        json(r#"{"event_id":5,"type":"t","event_time":1}"#),
        "invalid_type",
        "event_id",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"attrs":{"k":1}}"#),
        "invalid_type",
        "attrs[\"k\"]",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"amount":true,"currency":"EUR"}"#),
        "invalid_type",
        "amount",
    );
}

#[test]
fn rejects_unknown_field() {
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"amout":"1.00"}"#),
        "unknown_field",
        "amout",
    );
    assert_rejected(
        decode_tag_update(
            br#"{"entity_kind":"user","colour":"red"}"#,
            InputFormat::Json,
            MAX,
        ),
        "unknown_field",
        "colour",
    );
}

#[test]
fn rejects_duplicate_field() {
    assert_rejected(
        json(r#"{"event_id":"e","event_id":"f","type":"t","event_time":1}"#),
        "duplicate_field",
        "event_id",
    );
    assert_rejected(
        json(
            r#"{"event_id":"e","type":"t","event_time":1,"amount":"1","amount_minor":100,"currency":"EUR"}"#,
        ),
        "duplicate_field",
        "amount_minor",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"attrs":{"k":"a","k":"b"}}"#),
        "duplicate_field",
        "attrs[\"k\"]",
    );
}

#[test]
fn rejects_missing_fields() {
    assert_rejected(
        json(r#"{"type":"t","event_time":1}"#),
        "missing_field",
        "event_id",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"","event_time":1}"#),
        "missing_field",
        "type",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t"}"#),
        "missing_field",
        "event_time",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"amount":"1.00"}"#),
        "missing_field",
        "currency",
    );
    let pb = proto_event(|p| p.currency = None);
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "missing_field",
        "currency",
    );
    let pb = proto_event(|p| p.event_time_ms = 0);
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "missing_field",
        "event_time",
    );
    assert_rejected(
        decode_tag_update(
            br#"{"entity_kind":"user","tag":"x"}"#,
            InputFormat::Json,
            MAX,
        ),
        "missing_field",
        "entity_value",
    );
}

#[test]
fn rejects_invalid_amounts() {
    let with_amount = |amount: &str, currency: &str| {
        json(&format!(
            r#"{{"event_id":"e","type":"t","event_time":1,"amount":{amount},"currency":"{currency}"}}"#
        ))
    };
    assert_rejected(with_amount(r#""-1.00""#, "EUR"), "invalid_amount", "amount");
    assert_rejected(with_amount("-1", "EUR"), "invalid_amount", "negative");
    assert_rejected(
        with_amount(r#""1.234""#, "EUR"),
        "invalid_amount",
        "more than 2 decimals",
    );
    assert_rejected(
        with_amount("12.5", "JPY"),
        "invalid_amount",
        "more than 0 decimals",
    );
    assert_rejected(
        with_amount(r#""1e20""#, "EUR"),
        "invalid_amount",
        "overflows",
    );
    assert_rejected(with_amount(r#""12,50""#, "EUR"), "invalid_amount", "amount");
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1,"amount_minor":1.5,"currency":"EUR"}"#),
        "invalid_amount",
        "amount_minor",
    );
    assert_rejected(
        json(
            r#"{"event_id":"e","type":"t","event_time":1,"amount_minor":99999999999999999999,"currency":"EUR"}"#,
        ),
        "invalid_amount",
        "amount_minor",
    );
    let pb = proto_event(|p| p.amount_minor = Some(-5));
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "invalid_amount",
        "amount_minor",
    );
}

#[test]
fn rejects_invalid_currency() {
    for bad in ["eur", "EURO", "E1R", "€€"] {
        let text = format!(
            r#"{{"event_id":"e","type":"t","event_time":1,"amount":"1.00","currency":"{bad}"}}"#
        );
        assert_rejected(json(&text), "invalid_currency", "currency");
    }
    let pb = proto_event(|p| p.currency = Some("usd".into()));
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "invalid_currency",
        "currency",
    );
}

#[test]
fn rejects_invalid_times() {
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":"yesterday"}"#),
        "invalid_time",
        "event_time",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":-5}"#),
        "invalid_time",
        "event_time",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":1.5}"#),
        "invalid_time",
        "event_time",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time_ms":"soon"}"#),
        "invalid_time",
        "event_time_ms",
    );
    assert_rejected(
        json(r#"{"event_id":"e","type":"t","event_time":"1969-12-31T23:59:59Z"}"#),
        "invalid_time",
        "event_time",
    );
    let pb = proto_event(|p| p.event_time_ms = -1);
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "invalid_time",
        "event_time",
    );
    let pb = proto_event(|p| p.event_time_ms = MAX_TIME_MS + 1);
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "invalid_time",
        "year 9999",
    );
}

#[test]
fn rejects_unknown_enums() {
    assert_rejected(
        decode_tag_update(
            br#"{"entity_kind":"planet","entity_value":"p","tag":"x"}"#,
            InputFormat::Json,
            MAX,
        ),
        "unknown_enum",
        "entity_kind",
    );
    let pb = proto::TagUpdate {
        entity_kind: 99,
        entity_value: "u".into(),
        tag: "x".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_rejected(
        decode_tag_update(&pb, InputFormat::Protobuf, MAX),
        "unknown_enum",
        "entity_kind",
    );
    let pb = proto::Decision {
        event_id: "e".into(),
        outcome: 7,
        trigger: proto::Trigger::Event as i32,
        ..Default::default()
    }
    .encode_to_vec();
    assert_rejected(
        decode_decision(&pb, InputFormat::Protobuf),
        "unknown_enum",
        "outcome",
    );
    assert_rejected(
        decode_decision(
            br#"{"event_id":"e","outcome":"maybe","trigger":"event"}"#,
            InputFormat::Json,
        ),
        "unknown_enum",
        "outcome",
    );
    assert_rejected(
        decode_decision(
            br#"{"event_id":"e","outcome":"allow","trigger":"cron"}"#,
            InputFormat::Json,
        ),
        "unknown_enum",
        "trigger",
    );
}

#[test]
fn rejects_too_long_strings() {
    let long = "x".repeat(MAX_STRING_BYTES + 1);
    let text = format!(r#"{{"event_id":"e","type":"t","event_time":1,"user_id":"{long}"}}"#);
    assert_rejected(json(&text), "too_long", "user_id");
    let pb = proto_event(|p| p.event_id = long.clone());
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "too_long",
        "event_id",
    );
    let pb = proto_event(|p| {
        p.attrs
            .insert("note".into(), "y".repeat(MAX_ATTR_VALUE_BYTES + 1));
    });
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "too_long",
        "attrs[\"note\"]",
    );
}

#[test]
fn rejects_too_many_attrs() {
    let attrs: Vec<String> = (0..=MAX_ATTRS).map(|i| format!(r#""k{i}":"v""#)).collect();
    let text = format!(
        r#"{{"event_id":"e","type":"t","event_time":1,"attrs":{{{}}}}}"#,
        attrs.join(",")
    );
    assert_rejected(json(&text), "too_many_attrs", "attrs");
    let pb = proto_event(|p| {
        p.attrs = (0..=MAX_ATTRS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
    });
    assert_rejected(
        decode_event(&pb, InputFormat::Protobuf, MAX),
        "too_many_attrs",
        "attrs",
    );
}

#[test]
fn every_reason_code_is_listed() {
    let samples = [
        EventError::Oversized { size: 2, max: 1 },
        EventError::Undecodable {
            format: "JSON",
            detail: String::new(),
        },
        EventError::InvalidUtf8 {
            field: "f".into(),
            detail: String::new(),
        },
        EventError::InvalidType {
            field: "f".into(),
            expected: "a string",
        },
        EventError::UnknownField { field: "f".into() },
        EventError::DuplicateField {
            field: "f".into(),
            other: "g".into(),
        },
        EventError::MissingField {
            field: "f",
            detail: "required",
        },
        EventError::InvalidAmount {
            field: "f",
            detail: String::new(),
        },
        EventError::InvalidCurrency {
            value: String::new(),
        },
        EventError::InvalidTime {
            field: "f",
            detail: String::new(),
        },
        EventError::UnknownEnum {
            field: "f",
            value: String::new(),
        },
        EventError::TooLong {
            field: "f".into(),
            len: 2,
            max: 1,
        },
        EventError::TooManyAttrs { count: 2, max: 1 },
        EventError::TooManyTags { max: 1 },
    ];
    let codes: Vec<&str> = samples.iter().map(EventError::reason_code).collect();
    assert_eq!(codes, EventError::REASON_CODES);
}

// ---- properties ----

fn optional_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{1,24}")
}

fn arb_event() -> impl Strategy<Value = PaymentEvent> {
    let ids = (
        "[A-Za-z0-9_-]{1,40}",
        "[a-z_]{1,16}",
        1..=MAX_TIME_MS,
        optional_text(),
        optional_text(),
        optional_text(),
        optional_text(),
        optional_text(),
        optional_text(),
    );
    let money = (
        proptest::option::of(0..=i64::MAX),
        proptest::option::of(prop_oneof![
            Just("EUR".to_string()),
            Just("JPY".to_string()),
            Just("KWD".to_string()),
            Just("CLF".to_string()),
            "[A-Z]{3}",
        ]),
    );
    let rest = (
        optional_text(),
        optional_text(),
        optional_text(),
        optional_text(),
        optional_text(),
        proptest::collection::btree_map("\\PC{0,16}", "\\PC{0,32}", 0..6),
    );
    (ids, money, rest).prop_map(|(ids, (amount, currency), rest)| {
        let currency = match (amount, currency) {
            (Some(_), None) => Some("EUR".to_string()),
            (_, c) => c,
        };
        PaymentEvent {
            event_id: ids.0,
            kind: ids.1,
            event_time_ms: ids.2,
            txn_id: ids.3,
            user_id: ids.4,
            card_id: ids.5,
            device_id: ids.6,
            ip: ids.7,
            merchant_id: ids.8,
            amount_minor: amount,
            currency,
            country: rest.0,
            ip_country: rest.1,
            card_country: rest.2,
            mcc: rest.3,
            channel: rest.4,
            attrs: rest.5,
        }
    })
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    proptest::sample::select(Outcome::ALL.to_vec())
}

fn arb_decision() -> impl Strategy<Value = Decision> {
    let hit =
        ("\\PC{0,20}", arb_outcome(), any::<i32>()).prop_map(|(rule, outcome, score)| RuleHit {
            rule: Arc::from(rule),
            outcome,
            score,
        });
    (
        ("\\PC{1,40}", optional_text(), arb_outcome(), any::<i32>()),
        proptest::collection::vec(hit, 0..5),
        (
            "\\PC{0,20}",
            any::<bool>(),
            any::<bool>(),
            any::<i64>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |((event_id, txn_id, outcome, score), hits, rest)| Decision {
                event_id,
                txn_id,
                outcome,
                score,
                hits,
                ruleset_version: Arc::from(rest.0),
                trigger: if rest.1 {
                    Trigger::Timeout
                } else {
                    Trigger::Event
                },
                shadow: rest.2,
                decided_at_ms: rest.3,
                eval_latency_us: rest.4,
            },
        )
}

fn arb_tag_update() -> impl Strategy<Value = TagUpdate> {
    let entities = vec![
        Field::UserId,
        Field::CardId,
        Field::DeviceId,
        Field::Ip,
        Field::MerchantId,
        Field::TxnId,
    ];
    (
        proptest::sample::select(entities),
        "\\PC{1,40}",
        "\\PC{1,20}",
        proptest::option::of(1..=MAX_TIME_MS),
        any::<bool>(),
    )
        .prop_map(|(entity, value, tag, expires, remove)| TagUpdate {
            entity,
            value,
            tag,
            expires_at_ms: if remove { None } else { expires },
            remove,
        })
}

/// Decoding either succeeds with a valid value or fails with a documented reason.
fn assert_typed<T>(
    result: Result<T, EventError>,
    valid: impl Fn(&T) -> bool,
) -> Result<(), TestCaseError> {
    match result {
        Ok(value) => prop_assert!(valid(&value)),
        Err(err) => {
            prop_assert!(EventError::REASON_CODES.contains(&err.reason_code()));
            prop_assert!(!err.to_string().is_empty());
        }
    }
    Ok(())
}

const FORMATS: [InputFormat; 3] = [InputFormat::Protobuf, InputFormat::Json, InputFormat::Auto];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::fuzz_cases(512)))]

    #[test]
    fn events_round_trip_through_both_formats(ev in arb_event()) {
        prop_assert_eq!(validate_event(&ev), Ok(()));
        for (out, input) in [(OutputFormat::Protobuf, InputFormat::Protobuf), (OutputFormat::Json, InputFormat::Json)] {
            let bytes = encode_event(&ev, out);
            let back = decode_event(&bytes, input, MAX);
            prop_assert_eq!(back.as_ref(), Ok(&ev));
            prop_assert_eq!(decode_event(&bytes, InputFormat::Auto, MAX), Ok(ev.clone()));
            // wire -> model -> wire is byte-identical.
            if let Ok(back) = back {
                prop_assert_eq!(encode_event(&back, out), bytes);
            }
        }
    }

    #[test]
    fn decoding_into_a_used_event_equals_a_fresh_decode(
        first in arb_event(),
        second in arb_event(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        // A worker decodes every message into the event it decoded the previous one into:
        // nothing of the previous event may survive, whether the next one decodes or not.
        for (out, input) in [
            (OutputFormat::Protobuf, InputFormat::Protobuf),
            (OutputFormat::Json, InputFormat::Json),
            (OutputFormat::Json, InputFormat::Auto),
        ] {
            let mut bytes = encode_event(&second, out);
            for &(at, value) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let mut reused = decode_event(&encode_event(&first, out), input, MAX)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let result = decode_event_into(&bytes, input, MAX, &mut reused);
            let fresh = decode_event(&bytes, input, MAX);
            prop_assert_eq!(result.clone().map(|()| reused), fresh);
        }
    }

    #[test]
    fn protobuf_matches_the_generated_contract(ev in arb_event()) {
        let generated = proto::PaymentEvent::decode(&*encode_event(&ev, OutputFormat::Protobuf));
        let generated = generated.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&generated.event_id, &ev.event_id);
        prop_assert_eq!(&generated.r#type, &ev.kind);
        prop_assert_eq!(generated.amount_minor, ev.amount_minor);
        prop_assert_eq!(&generated.attrs, &ev.attrs);
    }

    #[test]
    fn decisions_round_trip_through_both_formats(d in arb_decision()) {
        for (out, input) in [(OutputFormat::Protobuf, InputFormat::Protobuf), (OutputFormat::Json, InputFormat::Json)] {
            let bytes = encode_decision(&d, out);
            prop_assert_eq!(decode_decision(&bytes, input), Ok(d.clone()));
            prop_assert_eq!(decode_decision(&bytes, InputFormat::Auto), Ok(d.clone()));
        }
    }

    #[test]
    fn tag_updates_round_trip_through_both_formats(u in arb_tag_update()) {
        for (out, input) in [(OutputFormat::Protobuf, InputFormat::Protobuf), (OutputFormat::Json, InputFormat::Json)] {
            let bytes = encode_tag_update(&u, out);
            prop_assert_eq!(decode_tag_update(&bytes, input, MAX), Ok(u.clone()));
        }
    }

    #[test]
    fn arbitrary_bytes_give_an_event_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in FORMATS {
            assert_typed(decode_event(&bytes, format, MAX), |ev| validate_event(ev).is_ok())?;
            assert_typed(decode_tag_update(&bytes, format, MAX), |u| validate_tag_update(u).is_ok())?;
            assert_typed(decode_decision(&bytes, format), |d| !d.event_id.is_empty())?;
        }
        assert_typed(decode_dead_letter(&bytes), |_| true)?;
    }

    #[test]
    fn json_like_text_gives_an_event_or_a_typed_error(
        members in proptest::collection::vec(
            (
                prop_oneof![Just("event_id".to_string()), Just("type".to_string()), Just("event_time".to_string()),
                            Just("amount".to_string()), Just("currency".to_string()), Just("attrs".to_string()),
                            Just("amount_minor".to_string()), "[a-z_]{1,10}"],
                prop_oneof![Just("\"EUR\"".to_string()), Just("1".to_string()), Just("\"2026-11-23T01:02:03Z\"".to_string()),
                            Just("{\"k\":\"v\"}".to_string()), Just("null".to_string()), "[ -~]{0,12}", "-?[0-9.eE+-]{1,24}"],
            ),
            0..8,
        )
    ) {
        let body: Vec<String> = members.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        for format in FORMATS {
            assert_typed(decode_event(text.as_bytes(), format, MAX), |ev| validate_event(ev).is_ok())?;
            assert_typed(decode_tag_update(text.as_bytes(), format, MAX), |u| validate_tag_update(u).is_ok())?;
        }
    }

    #[test]
    fn corrupted_encodings_give_an_event_or_a_typed_error(
        ev in arb_event(),
        json_out in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let out = if json_out { OutputFormat::Json } else { OutputFormat::Protobuf };
        let mut bytes = encode_event(&ev, out);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let cut = cut.index(bytes.len() + 1);
        for candidate in [&bytes[..], &bytes[..cut]] {
            for format in FORMATS {
                assert_typed(decode_event(candidate, format, MAX), |ev| validate_event(ev).is_ok())?;
            }
        }
    }

    #[test]
    fn fast_protobuf_decode_matches_prost_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(decode_event(&bytes, InputFormat::Protobuf, MAX), decode_event_prost(&bytes));
    }

    #[test]
    fn fast_protobuf_decode_matches_prost_on_corrupted_events(
        ev in arb_event(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let mut bytes = encode_event(&ev, OutputFormat::Protobuf);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let cut = cut.index(bytes.len() + 1);
        let mut appended = bytes.clone();
        appended.extend_from_slice(&extra);
        for candidate in [&bytes[..], &bytes[..cut], &appended[..]] {
            prop_assert_eq!(decode_event(candidate, InputFormat::Protobuf, MAX), decode_event_prost(candidate));
        }
    }

    #[test]
    fn fast_protobuf_decode_matches_prost_with_unknown_and_repeated_fields(
        ev in arb_event(),
        other in arb_event(),
        unknown_tag in 18u32..40,
    ) {
        // Unknown fields of every non-group wire type, and every field sent twice (last wins).
        let mut bytes = encode_event(&ev, OutputFormat::Protobuf);
        for wire_type in [0u32, 1, 2, 5] {
            prost::encoding::encode_varint(u64::from((unknown_tag << 3) | wire_type), &mut bytes);
            match wire_type {
                0 => bytes.extend_from_slice(&[0x96, 0x01]),
                1 => bytes.extend_from_slice(&[7; 8]),
                2 => bytes.extend_from_slice(&[2, b'h', b'i']),
                _ => bytes.extend_from_slice(&[9; 4]),
            }
        }
        bytes.extend(encode_event(&other, OutputFormat::Protobuf));
        prop_assert_eq!(decode_event(&bytes, InputFormat::Protobuf, MAX), decode_event_prost(&bytes));
    }

    #[test]
    fn fast_decision_encoding_matches_prost(d in arb_decision(), score in any::<i32>(), hit_score in any::<i32>()) {
        prop_assert_eq!(encode_decision(&d, OutputFormat::Protobuf), encode_decision_prost(&d));
        let mut d = d;
        d.score = score;
        if let Some(hit) = d.hits.first_mut() {
            hit.score = hit_score;
        }
        prop_assert_eq!(encode_decision(&d, OutputFormat::Protobuf), encode_decision_prost(&d));
    }
}
