//! `PipelineSettings`: topics, formats, pool and queue sizes, deadlines, librdkafka overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::event::{InputFormat, OutputFormat};

use super::error::PipelineError;

/// Everything the pipeline needs to know; the lead's config layer fills it from `veto.toml`.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// `bootstrap.servers`, e.g. "127.0.0.1:9092".
    pub brokers: String,
    /// Consumer group id; every Veto instance of one deployment shares it.
    pub group_id: String,
    /// Topic of incoming `PaymentEvent`s.
    pub payments_topic: String,
    /// Topic of incoming `TagUpdate`s.
    pub entity_tags_topic: String,
    /// Topic decisions (event and timeout) are published to.
    pub decisions_topic: String,
    /// Topic rejected input messages are published to as `DeadLetter`.
    pub dead_letters_topic: String,
    /// Topic of shadow-rule-set decisions; `None` drops them (counted).
    pub shadow_topic: Option<String>,
    /// Wire format of incoming events and tag updates.
    pub input_format: InputFormat,
    /// Wire format of published decisions.
    pub output_format: OutputFormat,
    /// librdkafka properties applied to both the consumer and the producer, after Veto's own
    /// (so they win), e.g. `security.protocol`, `statistics.interval.ms`.
    pub librdkafka: BTreeMap<String, String>,
    /// Worker threads deciding events; any idle worker takes the next partition with work.
    pub workers: usize,
    /// Messages kept waiting in each assigned partition's queue (librdkafka's
    /// `queued.min.messages`; `queued.max.messages.kbytes` bounds all partitions together).
    pub queue_capacity: usize,
    /// Messages larger than this go to the dead-letter topic as `oversized`.
    pub max_event_bytes: usize,
    /// Payment events further ahead of the wall clock than this are dead-lettered as
    /// `invalid_time`; `None` accepts any event time.
    pub max_future_skew: Option<Duration>,
    /// How long shutdown (and a partition revocation) may take to drain in-flight work.
    pub drain_timeout: Duration,
    /// How often safe offsets are reported and committed.
    pub commit_interval: Duration,
    /// Exactly-once delivery: the producer's `transactional.id`. Decisions and consumer
    /// offsets are then committed in one Kafka transaction with each checkpoint.
    pub transactional_id: Option<String>,
    /// The consumer's `session.timeout.ms` and `heartbeat.interval.ms` (`[ha]`): a dead
    /// active instance's partitions move after this long. `None`: librdkafka's defaults.
    pub session: Option<(Duration, Duration)>,
    /// The consumer's and producer's `client.id`.
    pub client_id: String,
}

impl Default for PipelineSettings {
    fn default() -> PipelineSettings {
        PipelineSettings {
            brokers: "127.0.0.1:9092".to_owned(),
            group_id: "veto".to_owned(),
            payments_topic: "payments".to_owned(),
            entity_tags_topic: "entity-tags".to_owned(),
            decisions_topic: "decisions".to_owned(),
            dead_letters_topic: "dead-letters".to_owned(),
            shadow_topic: None,
            input_format: InputFormat::default(),
            output_format: OutputFormat::default(),
            librdkafka: BTreeMap::new(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 100_000,
            max_event_bytes: 64 * 1024,
            max_future_skew: Some(Duration::from_secs(600)),
            drain_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_secs(1),
            transactional_id: None,
            session: None,
            client_id: "veto".to_owned(),
        }
    }
}

impl PipelineSettings {
    /// Rejects settings the pipeline cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let invalid = |setting: &'static str, reason: &str| {
            Err(PipelineError::InvalidSetting {
                setting,
                reason: reason.to_owned(),
            })
        };
        let topics = [
            ("payments_topic", &self.payments_topic),
            ("entity_tags_topic", &self.entity_tags_topic),
            ("decisions_topic", &self.decisions_topic),
            ("dead_letters_topic", &self.dead_letters_topic),
        ];
        for (setting, topic) in topics {
            if topic.is_empty() {
                return invalid(setting, "must not be empty");
            }
        }
        if self.payments_topic == self.entity_tags_topic {
            return invalid("entity_tags_topic", "must differ from payments_topic");
        }
        let outputs = [
            ("decisions_topic", Some(&self.decisions_topic)),
            ("dead_letters_topic", Some(&self.dead_letters_topic)),
            ("shadow_topic", self.shadow_topic.as_ref()),
        ];
        for (setting, topic) in outputs {
            if topic.is_some_and(|t| *t == self.payments_topic || *t == self.entity_tags_topic) {
                return invalid(setting, "must differ from the input topics");
            }
        }
        if self.shadow_topic.as_deref() == Some("") {
            return invalid("shadow_topic", "must not be empty when set");
        }
        if self.brokers.is_empty() {
            return invalid("brokers", "must not be empty");
        }
        if self.group_id.is_empty() {
            return invalid("group_id", "must not be empty");
        }
        if self.workers == 0 {
            return invalid("workers", "must be at least 1");
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity", "must be at least 1");
        }
        if self.max_event_bytes == 0 {
            return invalid("max_event_bytes", "must be at least 1");
        }
        if self.commit_interval.is_zero() {
            return invalid("commit_interval", "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(PipelineSettings::default().validate().is_ok());
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let settings = PipelineSettings {
            workers: 0,
            ..PipelineSettings::default()
        };
        let err = settings.validate().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");

        let settings = PipelineSettings {
            entity_tags_topic: "payments".into(),
            ..PipelineSettings::default()
        };
        let err = settings.validate().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("entity_tags_topic"), "{err}");
    }
}
