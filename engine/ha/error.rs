//! `HaError`: why the election or the standby could not run.

use rdkafka::error::KafkaError;
use thiserror::Error;

use crate::pipeline::PipelineError;

/// Errors of the election and the standby replay; each names what failed.
#[derive(Debug, Error)]
pub enum HaError {
    #[error("creating the kafka {client}: {source}")]
    ClientCreation {
        client: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("election: subscribing to the control topic {topic:?}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("standby: {context}: {source}")]
    Kafka {
        context: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("starting thread `{name}`: {source}")]
    ThreadSpawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("takeover: fencing the previous active instance: {0}")]
    Fence(#[source] PipelineError),
    #[error(
        "this instance lost the active role (its election session expired or another instance \
         was elected): stopping at once so that only the new active instance publishes; restart \
         it and it joins as a standby"
    )]
    LostRole,
}
