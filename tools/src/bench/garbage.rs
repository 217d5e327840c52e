//! Bad input for the e2e garbage mix: payloads Veto must route to the dead-letter topic, each
//! with the reason code Veto gives it (see `veto::event::EventError::reason_code`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use veto::event::{PaymentEvent, DEFAULT_MAX_EVENT_BYTES, MAX_STRING_BYTES, MAX_TIME_MS};

use crate::wire::{self, EventFormat};

/// The kinds of bad input the mix draws from, uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GarbageKind {
    /// Random bytes (protobuf streams: led by an invalid wire type; JSON streams: printable noise).
    RandomBytes,
    /// A real event's encoding cut inside its first field.
    Truncated,
    /// A JSON object cut short (in a protobuf stream: JSON where protobuf is expected).
    BadJson,
    /// A real event padded over the 64 KiB payload limit.
    Oversized,
    /// A negative amount.
    NegativeAmount,
    /// A currency that is not three upper-case letters.
    BadCurrency,
    /// No event id.
    MissingEventId,
    /// An event time beyond year 9999.
    BadTime,
    /// A user id longer than the contract allows.
    TooLongField,
}

impl GarbageKind {
    pub const ALL: [GarbageKind; 9] = [
        GarbageKind::RandomBytes,
        GarbageKind::Truncated,
        GarbageKind::BadJson,
        GarbageKind::Oversized,
        GarbageKind::NegativeAmount,
        GarbageKind::BadCurrency,
        GarbageKind::MissingEventId,
        GarbageKind::BadTime,
        GarbageKind::TooLongField,
    ];

    /// The dead-letter reason code Veto gives this kind.
    pub fn reason_code(self) -> &'static str {
        match self {
            GarbageKind::RandomBytes | GarbageKind::Truncated | GarbageKind::BadJson => {
                "undecodable"
            }
            GarbageKind::Oversized => "oversized",
            GarbageKind::NegativeAmount => "invalid_amount",
            GarbageKind::BadCurrency => "invalid_currency",
            GarbageKind::MissingEventId => "missing_field",
            GarbageKind::BadTime => "invalid_time",
            GarbageKind::TooLongField => "too_long",
        }
    }
}

/// Whether event `index` of a stream with garbage `fraction` is garbage: exactly
/// ⌊n·fraction⌋ of the first n events are, spread evenly.
pub fn is_garbage(index: u64, fraction: f64) -> bool {
    let f = fraction.clamp(0.0, 1.0);
    ((index + 1) as f64 * f).floor() > (index as f64 * f).floor()
}

/// Makes bad payloads out of good events.
pub struct GarbageMaker {
    rng: StdRng,
    format: EventFormat,
    kinds: Vec<GarbageKind>,
}

impl GarbageMaker {
    /// A maker drawing uniformly from `kinds` (every kind when empty).
    pub fn new(seed: u64, format: EventFormat, kinds: &[GarbageKind]) -> GarbageMaker {
        GarbageMaker {
            rng: StdRng::seed_from_u64(seed),
            format,
            kinds: if kinds.is_empty() {
                GarbageKind::ALL.to_vec()
            } else {
                kinds.to_vec()
            },
        }
    }

    /// A kind drawn uniformly and its payload, made from `event` (whose id it replaces with `id`).
    pub fn next(&mut self, event: &PaymentEvent, id: &str) -> (GarbageKind, Vec<u8>) {
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        (kind, self.make(kind, event, id))
    }

    /// The payload of `kind` made from `event`.
    pub fn make(&mut self, kind: GarbageKind, event: &PaymentEvent, id: &str) -> Vec<u8> {
        let mut ev = event.clone();
        ev.event_id = id.to_string();
        match kind {
            GarbageKind::RandomBytes => {
                let len = self.rng.random_range(8..256);
                match self.format {
                    // field 0 with wire type 7: no protobuf message starts like this
                    EventFormat::Protobuf => std::iter::once(0x07)
                        .chain((1..len).map(|_| self.rng.random::<u8>()))
                        .collect(),
                    // printable ASCII that never opens a JSON value
                    EventFormat::Json => std::iter::once(b'#')
                        .chain((1..len).map(|_| self.rng.random_range(b'!'..=b'~')))
                        .collect(),
                }
            }
            GarbageKind::Truncated => {
                let full = wire::encode_event(&ev, self.format);
                // the id is the first field in both encodings: cut inside it
                let id_at = match self.format {
                    EventFormat::Protobuf => 2,
                    EventFormat::Json => full
                        .windows(id.len())
                        .position(|w| w == id.as_bytes())
                        .unwrap_or(1),
                };
                let cut = id_at + self.rng.random_range(0..id.len().max(1));
                full[..cut.min(full.len() - 1)].to_vec()
            }
            GarbageKind::BadJson => {
                let text = wire::to_json(&ev).to_string();
                let cut = self.rng.random_range(text.len() / 4..text.len() - 1);
                text.as_bytes()[..cut].to_vec()
            }
            GarbageKind::Oversized => {
                ev.attrs
                    .insert("padding".into(), "x".repeat(DEFAULT_MAX_EVENT_BYTES + 100));
                wire::encode_event(&ev, self.format)
            }
            GarbageKind::NegativeAmount => {
                ev.amount_minor = Some(-self.rng.random_range(1..1_000_000));
                ev.currency.get_or_insert_with(|| "EUR".into());
                wire::encode_event(&ev, self.format)
            }
            GarbageKind::BadCurrency => {
                ev.currency = Some("eur".into());
                wire::encode_event(&ev, self.format)
            }
            GarbageKind::MissingEventId => {
                ev.event_id.clear();
                wire::encode_event(&ev, self.format)
            }
            GarbageKind::BadTime => {
                ev.event_time_ms = MAX_TIME_MS + 1 + self.rng.random_range(0..1_000_000);
                wire::encode_event(&ev, self.format)
            }
            GarbageKind::TooLongField => {
                ev.user_id = Some("u".repeat(MAX_STRING_BYTES + 1));
                wire::encode_event(&ev, self.format)
            }
        }
    }
}

/// Fingerprint of a payload, to find an injected payload among the dead letters.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What was injected, and the accounting of what came back on the dead-letter topic.
#[derive(Debug, Default)]
pub struct DeadLetterLedger {
    /// fingerprint → (expected reason, copies injected and not yet seen)
    expected: std::collections::HashMap<u64, (&'static str, u32)>,
    pub injected_by_kind: BTreeMap<GarbageKind, u64>,
    pub injected_by_reason: BTreeMap<String, u64>,
    pub received_by_reason: BTreeMap<String, u64>,
    /// Dead letters whose payload was injected with the reason it came back with.
    pub matched: u64,
    /// Dead letters of an injected payload that came back with another reason.
    pub wrong_reason: u64,
    /// Dead letters of payloads never injected (or more copies than injected).
    pub unexpected: u64,
}

impl DeadLetterLedger {
    /// Records an injected payload of `kind`.
    pub fn inject(&mut self, kind: GarbageKind, payload: &[u8]) {
        let entry = self
            .expected
            .entry(fingerprint(payload))
            .or_insert((kind.reason_code(), 0));
        entry.1 += 1;
        *self.injected_by_kind.entry(kind).or_default() += 1;
        *self
            .injected_by_reason
            .entry(kind.reason_code().to_string())
            .or_default() += 1;
    }

    /// Records a dead letter read back: its raw payload and reason code.
    pub fn receive(&mut self, raw: &[u8], reason_code: &str) {
        *self
            .received_by_reason
            .entry(reason_code.to_string())
            .or_default() += 1;
        match self.expected.get_mut(&fingerprint(raw)) {
            Some((reason, left)) if *left > 0 => {
                *left -= 1;
                if *reason == reason_code {
                    self.matched += 1;
                } else {
                    self.wrong_reason += 1;
                }
            }
            _ => self.unexpected += 1,
        }
    }

    pub fn injected(&self) -> u64 {
        self.injected_by_kind.values().sum()
    }

    pub fn received(&self) -> u64 {
        self.received_by_reason.values().sum()
    }

    /// Every injected payload came back exactly once with its reason, and nothing else did.
    pub fn complete(&self) -> bool {
        self.matched == self.injected()
            && self.wrong_reason == 0
            && self.unexpected == 0
            && self.received_by_reason == self.injected_by_reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veto::event::{decode_event, InputFormat};
    use veto::synth::{Synth, SynthConfig};

    #[test]
    fn exactly_the_fraction_is_garbage() {
        for (n, f, want) in [
            (1000u64, 0.10, 100usize),
            (1000, 0.0, 0),
            (999, 0.5, 499),
            (10, 1.0, 10),
        ] {
            assert_eq!(
                (0..n).filter(|&i| is_garbage(i, f)).count(),
                want,
                "{n} {f}"
            );
        }
        // spread evenly: one in every ten
        assert!((0..100)
            .step_by(10)
            .all(|s| (s..s + 10).filter(|&i| is_garbage(i, 0.1)).count() == 1));
    }

    #[test]
    fn veto_gives_every_kind_its_reason_in_both_formats() {
        let events: Vec<PaymentEvent> = Synth::new(SynthConfig::default()).take(300).collect();
        for (format, input) in [
            (EventFormat::Protobuf, InputFormat::Protobuf),
            (EventFormat::Json, InputFormat::Json),
            (EventFormat::Protobuf, InputFormat::Auto),
            (EventFormat::Json, InputFormat::Auto),
        ] {
            let mut maker = GarbageMaker::new(7, format, &[]);
            for (i, event) in events.iter().enumerate() {
                for kind in GarbageKind::ALL {
                    let payload = maker.make(kind, event, &format!("garbage-{i}"));
                    let got = decode_event(&payload, input, DEFAULT_MAX_EVENT_BYTES);
                    assert_eq!(
                        got.as_ref().map_err(|e| e.reason_code()).err(),
                        Some(kind.reason_code()),
                        "{kind:?} in {format:?} read as {input:?}: {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ledger_matches_by_payload_and_reason() {
        let mut ledger = DeadLetterLedger::default();
        ledger.inject(GarbageKind::RandomBytes, b"\x07abc");
        ledger.inject(GarbageKind::BadTime, b"t0");
        ledger.inject(GarbageKind::BadTime, b"t0");
        assert!(!ledger.complete());
        ledger.receive(b"\x07abc", "undecodable");
        ledger.receive(b"t0", "invalid_time");
        ledger.receive(b"t0", "invalid_time");
        assert!(ledger.complete());
        assert_eq!(
            (ledger.injected(), ledger.received(), ledger.matched),
            (3, 3, 3)
        );
        ledger.receive(b"t0", "invalid_time");
        assert_eq!(ledger.unexpected, 1);
        assert!(!ledger.complete());
        let mut wrong = DeadLetterLedger::default();
        wrong.inject(GarbageKind::Oversized, b"big");
        wrong.receive(b"big", "undecodable");
        assert_eq!(wrong.wrong_reason, 1);
        assert!(!wrong.complete());
    }
}
