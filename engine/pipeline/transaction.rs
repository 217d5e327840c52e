//! Exactly-once start-up: fences the previous instance and tells whether its last transaction committed.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::error::PipelineError;
use super::settings::PipelineSettings;

/// Deadline of each broker call made here.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the transaction that committed consumer `offsets` `(topic, partition, next offset)`
/// committed. Initialising a producer with the same `transactional.id` first fences the
/// previous one: its open transaction is aborted and one already committing completes, so the
/// group's committed offsets (read with `read_committed`) then tell the final outcome.
pub fn transaction_committed(
    settings: &PipelineSettings,
    offsets: &[(String, i32, i64)],
) -> Result<bool, PipelineError> {
    let Some(id) = &settings.transactional_id else {
        return Ok(false);
    };
    let client = |client| {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", format!("veto-{client}"));
        for (key, value) in &settings.librdkafka {
            config.set(key, value);
        }
        config
    };
    let transaction = |context, source| PipelineError::Transaction { context, source };
    let creation = |client, source| PipelineError::ClientCreation { client, source };

    let producer: BaseProducer = client("fence")
        .set("transactional.id", id)
        .create()
        .map_err(|source| creation("fencing producer", source))?;
    producer
        .init_transactions(CALL_TIMEOUT)
        .map_err(|source| transaction("fence the previous instance", source))?;
    drop(producer);

    let consumer: BaseConsumer = client("settle")
        .set("group.id", &settings.group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| creation("settling consumer", source))?;
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, _) in offsets {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(tpl, CALL_TIMEOUT)
        .map_err(|source| transaction("read committed offsets", source))?
        .to_topic_map();
    Ok(offsets.iter().all(|(topic, partition, next)| {
        committed
            .get(&(topic.clone(), *partition))
            .and_then(|offset| offset.to_raw())
            == Some(*next)
    }))
}
