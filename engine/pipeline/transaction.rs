//! Exactly-once role change: fences the previous producer of the role's transactional id; the checkpoint commit metadata.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

use super::error::PipelineError;
use super::settings::PipelineSettings;

/// Deadline of each broker call made here.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The commit metadata of the offsets an exactly-once checkpoint's transaction commits: ties
/// each committed offset to the checkpoint whose state it belongs to (visible with
/// `kafka-consumer-groups --describe --verbose` and to any reader of the group's offsets).
pub fn checkpoint_metadata(sequence: u64) -> String {
    format!("veto-checkpoint:{sequence}")
}

fn client_config(settings: &PipelineSettings, client: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", format!("veto-{client}"));
    for (key, value) in &settings.librdkafka {
        config.set(key, value);
    }
    config
}

/// Initialises a producer with the role's `transactional.id` and drops it: the previous
/// producer with that id is fenced (a zombie can no longer commit), its open transaction is
/// aborted and one already committing completes. A no-op in at-least-once mode.
pub fn fence(settings: &PipelineSettings) -> Result<(), PipelineError> {
    let Some(id) = &settings.transactional_id else {
        return Ok(());
    };
    let producer: BaseProducer = client_config(settings, "fence")
        .set("transactional.id", id)
        .create()
        .map_err(|source| PipelineError::ClientCreation {
            client: "fencing producer",
            source,
        })?;
    producer
        .init_transactions(CALL_TIMEOUT)
        .map_err(|source| PipelineError::Transaction {
            context: "fence the previous instance",
            source,
        })?;
    Ok(())
}
