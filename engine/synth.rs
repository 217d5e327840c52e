//! Synthetic payment workload for `veto demo`, the load generator and benches: Zipf-distributed
//! entities, normal authorize→capture flows, and the fraud patterns the default rules catch.
//! [`Synth::next_labelled`] also says which pattern planted each event: the ground truth of a
//! labelled stream (`veto-loadgen --labels-out`, `veto backtest --labels`).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

use crate::event::PaymentEvent;

/// Shape of the synthetic stream.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Seed: the same seed gives the same stream.
    pub seed: u64,
    /// Number of distinct users; cards, devices and IPs scale with it.
    pub users: u64,
    /// Number of distinct merchants.
    pub merchants: u64,
    /// Zipf exponent of entity popularity (1.0 ≈ realistic skew).
    pub zipf_exponent: f64,
    /// Fraction of new payment flows that follow a fraud pattern (0.0..=1.0).
    pub fraud_rate: f64,
    /// Event time of the first event, epoch ms.
    pub start_ms: i64,
    /// New payment flows per second of event time (captures come on top).
    pub flows_per_sec: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            users: 100_000,
            merchants: 2_000,
            zipf_exponent: 1.0,
            fraud_rate: 0.05,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            flows_per_sec: 1_000.0,
        }
    }
}

/// The fraud patterns the synthetic stream plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Many tiny authorizations on one card across merchants.
    CardTesting,
    /// A burst of ordinary authorizations on one card.
    VelocityBurst,
    /// A payment from an IP in a sanctioned country.
    SanctionedGeo,
    /// An authorization whose capture never comes.
    AuthWithoutCapture,
    /// A large amount from a user hopping between devices.
    NewDeviceBigAmount,
}

impl Pattern {
    /// The snake-case name written next to a label.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::CardTesting => "card_testing",
            Pattern::VelocityBurst => "velocity_burst",
            Pattern::SanctionedGeo => "sanctioned_geo",
            Pattern::AuthWithoutCapture => "auth_without_capture",
            Pattern::NewDeviceBigAmount => "new_device_big_amount",
        }
    }

    /// The ground-truth label of an event: `fraud` when a pattern planted it, else `legit`.
    pub fn label(pattern: Option<Pattern>) -> &'static str {
        match pattern {
            Some(_) => "fraud",
            None => "legit",
        }
    }
}

const PATTERNS: [Pattern; 5] = [
    Pattern::CardTesting,
    Pattern::VelocityBurst,
    Pattern::SanctionedGeo,
    Pattern::AuthWithoutCapture,
    Pattern::NewDeviceBigAmount,
];

const COUNTRIES: [&str; 6] = ["DE", "FR", "NL", "ES", "IT", "GB"];
const SANCTIONED: [&str; 3] = ["KP", "IR", "SY"];
const CHANNELS: [&str; 3] = ["web", "app", "pos"];
const MCCS: [&str; 5] = ["5411", "5812", "5999", "4111", "7995"];

/// An endless, deterministic iterator of synthetic payment events in event-time order.
pub struct Synth {
    cfg: SynthConfig,
    rng: StdRng,
    users: Zipf<f64>,
    merchants: Zipf<f64>,
    amounts: LogNormal<f64>,
    /// Events not yet due, by (event time, planting sequence), with the pattern that planted
    /// them (`None`: a normal flow).
    pending: BTreeMap<(i64, u64), (PaymentEvent, Option<Pattern>)>,
    now_ms: f64,
    seq: u64,
}

impl Synth {
    /// Builds a generator; invalid sizes are clamped to at least 1.
    pub fn new(cfg: SynthConfig) -> Synth {
        let users = Zipf::new(cfg.users.max(1) as f64, cfg.zipf_exponent.max(0.01))
            .unwrap_or_else(|_| Zipf::new(1.0, 1.0).expect("constant zipf parameters are valid"));
        let merchants = Zipf::new(cfg.merchants.max(1) as f64, cfg.zipf_exponent.max(0.01))
            .unwrap_or_else(|_| Zipf::new(1.0, 1.0).expect("constant zipf parameters are valid"));
        // median ≈ 40 major units, long tail.
        let amounts = LogNormal::new(3.7, 1.0).expect("constant lognormal parameters are valid");
        Synth {
            rng: StdRng::seed_from_u64(cfg.seed),
            now_ms: cfg.start_ms as f64,
            cfg,
            users,
            merchants,
            amounts,
            pending: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Event time of the next new flow, epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.now_ms as i64
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}-{}", self.cfg.seed, self.seq)
    }

    fn schedule(&mut self, ev: PaymentEvent, pattern: Option<Pattern>) {
        self.seq += 1;
        self.pending
            .insert((ev.event_time_ms, self.seq), (ev, pattern));
    }

    fn base_auth(&mut self, user: u64, at_ms: i64) -> PaymentEvent {
        let country = COUNTRIES[(user % COUNTRIES.len() as u64) as usize];
        let merchant = self.merchants.sample(&mut self.rng) as u64;
        let amount = (self.amounts.sample(&mut self.rng) * 100.0).clamp(50.0, 400_000.0) as i64;
        let channel = CHANNELS[self.rng.random_range(0..CHANNELS.len())];
        let mcc = MCCS[(merchant % MCCS.len() as u64) as usize];
        PaymentEvent {
            event_id: self.next_id("ev"),
            kind: "authorization".into(),
            event_time_ms: at_ms,
            txn_id: Some(self.next_id("txn")),
            user_id: Some(format!("user-{user}")),
            card_id: Some(format!("card-{}", user * 2 + (self.seq % 2))),
            device_id: Some(format!("device-{user}")),
            ip: Some(format!(
                "10.{}.{}.{}",
                (user >> 16) & 0xff,
                (user >> 8) & 0xff,
                user & 0xff
            )),
            merchant_id: Some(format!("m-{merchant}")),
            amount_minor: Some(amount),
            currency: Some("EUR".into()),
            country: Some(country.into()),
            ip_country: Some(country.into()),
            card_country: Some(country.into()),
            mcc: Some(mcc.into()),
            channel: Some(channel.into()),
            attrs: BTreeMap::new(),
        }
    }

    fn capture_of(&mut self, auth: &PaymentEvent, delay_ms: i64) -> PaymentEvent {
        PaymentEvent {
            event_id: self.next_id("ev"),
            kind: "capture".into(),
            event_time_ms: auth.event_time_ms + delay_ms,
            ..auth.clone()
        }
    }

    /// Plants one new flow (normal or fraud) starting at `at_ms` into the pending queue.
    fn plant_flow(&mut self, at_ms: i64) {
        let user = self.users.sample(&mut self.rng) as u64;
        if self.rng.random::<f64>() >= self.cfg.fraud_rate {
            let auth = self.base_auth(user, at_ms);
            let delay = self.rng.random_range(50..1_500);
            let capture = self.capture_of(&auth, delay);
            self.schedule(auth, None);
            self.schedule(capture, None);
            return;
        }
        // Fraudsters use entities outside the normal population so patterns stay crisp.
        let fraud_user = self.cfg.users + self.rng.random_range(0..self.cfg.users.max(1));
        let pattern = PATTERNS[self.rng.random_range(0..PATTERNS.len())];
        let planted = Some(pattern);
        match pattern {
            Pattern::CardTesting => {
                let card = format!("card-t-{}", self.seq);
                for i in 0..12 {
                    let mut ev = self.base_auth(fraud_user, at_ms + i * 400);
                    ev.card_id = Some(card.clone());
                    ev.amount_minor = Some(self.rng.random_range(50..200));
                    ev.merchant_id = Some(format!("m-{}", self.rng.random_range(0..10_000)));
                    self.schedule(ev, planted);
                }
            }
            Pattern::VelocityBurst => {
                for i in 0..8 {
                    let auth = self.base_auth(fraud_user, at_ms + i * 3_000);
                    let capture = self.capture_of(&auth, 200);
                    self.schedule(auth, planted);
                    self.schedule(capture, planted);
                }
            }
            Pattern::SanctionedGeo => {
                let mut auth = self.base_auth(fraud_user, at_ms);
                let geo = SANCTIONED[self.rng.random_range(0..SANCTIONED.len())];
                auth.ip_country = Some(geo.into());
                let capture = self.capture_of(&auth, 300);
                self.schedule(auth, planted);
                self.schedule(capture, planted);
            }
            Pattern::AuthWithoutCapture => {
                let auth = self.base_auth(fraud_user, at_ms);
                self.schedule(auth, planted);
            }
            Pattern::NewDeviceBigAmount => {
                for i in 0..4 {
                    let mut auth = self.base_auth(fraud_user, at_ms + i * 1_000);
                    auth.device_id = Some(format!("device-new-{}-{i}", self.seq));
                    if i == 3 {
                        auth.amount_minor = Some(self.rng.random_range(600_000..2_000_000));
                    }
                    let capture = self.capture_of(&auth, 250);
                    self.schedule(auth, planted);
                    self.schedule(capture, planted);
                }
            }
        }
    }
}

impl Iterator for Synth {
    type Item = PaymentEvent;

    fn next(&mut self) -> Option<PaymentEvent> {
        Some(self.next_labelled().0)
    }
}

impl Synth {
    /// The next event and the fraud pattern that planted it (`None`: a normal flow).
    pub fn next_labelled(&mut self) -> (PaymentEvent, Option<Pattern>) {
        loop {
            if let Some(entry) = self.pending.first_entry() {
                if entry.key().0 <= self.now_ms as i64 {
                    return entry.remove();
                }
            }
            let at = self.now_ms as i64;
            self.plant_flow(at);
            self.now_ms += 1_000.0 / self.cfg.flows_per_sec.max(0.001);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_time_ordered() {
        let a: Vec<_> = Synth::new(SynthConfig::default()).take(5_000).collect();
        let b: Vec<_> = Synth::new(SynthConfig::default()).take(5_000).collect();
        assert_eq!(a, b);
        assert!(a
            .windows(2)
            .all(|w| w[0].event_time_ms <= w[1].event_time_ms));
        let ids: ahash::AHashSet<_> = a.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), a.len(), "event ids are unique");
    }

    #[test]
    fn labels_name_the_events_each_pattern_planted() {
        let cfg = SynthConfig {
            fraud_rate: 0.3,
            users: 1_000,
            ..Default::default()
        };
        let mut labelled = Synth::new(cfg.clone());
        let plain: Vec<PaymentEvent> = Synth::new(cfg.clone()).take(20_000).collect();
        let mut seen = Vec::new();
        for want in &plain {
            let (ev, pattern) = labelled.next_labelled();
            assert_eq!(&ev, want, "labelling does not change the stream");
            let user: u64 = ev
                .user_id
                .as_deref()
                .and_then(|u| u.strip_prefix("user-"))
                .and_then(|u| u.parse().ok())
                .expect("synthetic user id");
            // Normal flows draw users 1..=users, fraudsters users..2*users.
            if user < cfg.users {
                assert_eq!(pattern, None, "{ev:?}");
            }
            if user > cfg.users {
                assert!(pattern.is_some(), "{ev:?}");
            }
            if ev
                .card_id
                .as_deref()
                .is_some_and(|c| c.starts_with("card-t-"))
            {
                assert_eq!(pattern, Some(Pattern::CardTesting));
            }
            if ev
                .ip_country
                .as_deref()
                .is_some_and(|c| SANCTIONED.contains(&c))
            {
                assert_eq!(pattern, Some(Pattern::SanctionedGeo));
            }
            if let Some(p) = pattern {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
        assert_eq!(seen.len(), PATTERNS.len(), "every pattern is labelled");
        assert_eq!(Pattern::label(Some(Pattern::CardTesting)), "fraud");
        assert_eq!(Pattern::label(None), "legit");
    }

    #[test]
    fn plants_every_pattern() {
        let cfg = SynthConfig {
            fraud_rate: 0.5,
            ..Default::default()
        };
        let events: Vec<_> = Synth::new(cfg).take(20_000).collect();
        assert!(events.iter().any(|e| e.ip_country.as_deref() == Some("KP")
            || e.ip_country.as_deref() == Some("IR")
            || e.ip_country.as_deref() == Some("SY")));
        assert!(events.iter().any(|e| e
            .card_id
            .as_deref()
            .is_some_and(|c| c.starts_with("card-t-"))));
        assert!(events
            .iter()
            .any(|e| e.amount_minor.unwrap_or(0) >= 600_000));
        let captures = events.iter().filter(|e| e.kind == "capture").count();
        let auths = events.iter().filter(|e| e.kind == "authorization").count();
        assert!(captures < auths, "some authorizations are never captured");
    }
}
