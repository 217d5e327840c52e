//! `PipelineError`: why the pipeline could not start or did not stop cleanly.

use std::time::Duration;

use rdkafka::error::KafkaError;
use thiserror::Error;

/// Errors of the Kafka pipeline; each names what failed.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("pipeline setting `{setting}`: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },
    #[error("creating the kafka {client}: {source}")]
    ClientCreation {
        client: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("subscribing to topics {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: KafkaError,
    },
    #[error("starting thread `{name}`: {source}")]
    ThreadSpawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a pipeline thread panicked: {0}")]
    ThreadPanicked(String),
    #[error("kafka producer hit a fatal error ({code}): {reason}")]
    ProducerFatal { code: String, reason: String },
    #[error(
        "drain did not finish within {timeout:?}: {unacknowledged} outputs unacknowledged, \
         {busy_workers} workers busy; offsets committed up to the last acknowledged event"
    )]
    DrainTimeout {
        timeout: Duration,
        unacknowledged: i64,
        busy_workers: usize,
    },
    #[error(
        "fenced by another instance with transactional id {transactional_id:?} ({reason}): it \
         has taken over the active role and this deployment's transactions; stopping (this \
         instance's open transaction is aborted and invisible to read_committed readers). \
         Restart this instance: it joins as a standby"
    )]
    Fenced {
        transactional_id: String,
        reason: String,
    },
    #[error("kafka transaction failed ({context}): {source}; the next start settles it")]
    Transaction {
        context: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error(
        "exactly-once: revoked partitions could not be committed ({reason}); their decisions \
         are in the open transaction, which this run must not commit: stopping (the next start \
         settles from the checkpoint)"
    )]
    RevokeUncommitted { reason: String },
    #[error(
        "partition {partition} of {topic} is not read through a queue of its own (it could not \
         be split from the consumer's, or a message of it reached the consumer's): its messages \
         cannot be decided in order; stopping"
    )]
    PartitionQueue { topic: String, partition: i32 },
    #[error("committing final offsets: {source}")]
    FinalCommit {
        #[source]
        source: KafkaError,
    },
}
