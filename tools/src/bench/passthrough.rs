//! The no-rules baseline: consume payments, produce one trivial `allow` decision per event.
//!
//! It decodes and encodes like Veto does and produces with Veto's producer settings, but keeps
//! no state and evaluates nothing, so the ratio Veto/passthrough isolates what the engine costs
//! on the same broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use veto::proto;

use super::kafka::consumer_config;
use super::BenchError;
use crate::loadgen::producer_config;
use crate::wire::EventFormat;

/// A running passthrough; stop it with [`Passthrough::stop`].
pub struct Passthrough {
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), BenchError>>>,
}

/// The trivial decision the passthrough publishes for an event value.
pub fn trivial_decision(value: &[u8], format: EventFormat) -> Option<proto::Decision> {
    let event_id = match format {
        EventFormat::Protobuf => proto::PaymentEvent::decode(value).ok()?.event_id,
        EventFormat::Json => serde_json::from_slice::<serde_json::Value>(value)
            .ok()?
            .get("event_id")?
            .as_str()?
            .to_string(),
    };
    Some(proto::Decision {
        event_id,
        outcome: proto::Outcome::Allow as i32,
        trigger: proto::Trigger::Event as i32,
        ruleset_version: "passthrough".into(),
        ..Default::default()
    })
}

impl Passthrough {
    /// Starts consuming `input` and producing to `output` on a thread of its own.
    pub fn start(
        brokers: &str,
        input: &str,
        output: &str,
        format: EventFormat,
    ) -> Result<Passthrough, BenchError> {
        let consumer: BaseConsumer = consumer_config(brokers, "veto-bench-passthrough").create()?;
        consumer.subscribe(&[input])?;
        // Veto's own delivery settings (idempotent, acks=all, its linger): the ratio then
        // measures the engine, not a difference in producer configuration.
        let mut config = producer_config(brokers, &[]);
        for (key, value) in veto::pipeline::PRODUCER_SETTINGS {
            config.set(key, value);
        }
        let producer: ThreadedProducer<_> = config.create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let output = output.to_string();
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&forwarded));
        let thread = std::thread::Builder::new()
            .name("passthrough".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(256);
                while !stop_flag.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let message = message?;
                    let Some(decision) = message
                        .payload()
                        .and_then(|value| trivial_decision(value, format))
                    else {
                        continue;
                    };
                    buf.clear();
                    decision
                        .encode(&mut buf)
                        .map_err(|e| BenchError::Invalid(e.to_string()))?;
                    let key = message.key().unwrap_or(decision.event_id.as_bytes());
                    let mut record = BaseRecord::to(&output).key(key).payload(&buf);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                record = r;
                                producer.poll(Duration::from_millis(1));
                            }
                            Err((e, _)) => return Err(e.into()),
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
                producer.flush(Duration::from_secs(30))?;
                Ok(())
            })
            .map_err(|e| BenchError::Invalid(format!("spawn passthrough thread: {e}")))?;
        Ok(Passthrough {
            stop,
            forwarded,
            thread: Some(thread),
        })
    }

    /// Events forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Stops consuming, flushes, and returns the thread's result.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(BenchError::Invalid("passthrough thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_event;
    use veto::event::PaymentEvent;

    #[test]
    fn answers_every_decodable_event_with_allow() {
        let event = PaymentEvent {
            event_id: "b7".into(),
            kind: "authorization".into(),
            event_time_ms: 1,
            ..Default::default()
        };
        for format in [EventFormat::Protobuf, EventFormat::Json] {
            let d = trivial_decision(&encode_event(&event, format), format).expect("decision");
            assert_eq!(d.event_id, "b7");
            assert_eq!(d.outcome, proto::Outcome::Allow as i32);
        }
        assert!(trivial_decision(b"{not json", EventFormat::Json).is_none());
    }
}
