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

/// The commit metadata of the offsets an exactly-once checkpoint's transaction commits.
pub fn checkpoint_metadata(sequence: u64) -> String {
    format!("veto-checkpoint:{sequence}")
}

/// Whether the transaction of checkpoint `sequence`, which committed consumer `offsets`
/// `(topic, partition, next offset)`, committed. Initialising a producer with the same
/// `transactional.id` first fences the previous one: its open transaction is aborted and one
/// already committing completes, so the group's committed offsets (read with `read_committed`)
/// then tell the final outcome. The offsets must match and so must their metadata, the
/// checkpoint's sequence: two transactions with the same offsets (idle input, only timeout
/// decisions in them) are told apart. Offsets committed without metadata (by a version that
/// did not write it) are judged by their offsets alone.
pub fn transaction_committed(
    settings: &PipelineSettings,
    offsets: &[(String, i32, i64)],
    sequence: u64,
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
        .map_err(|source| transaction("read committed offsets", source))?;
    let committed: Vec<(String, i32, Option<i64>, String)> = committed
        .elements()
        .iter()
        .map(|e| {
            let offset = e.offset().to_raw();
            (
                e.topic().to_owned(),
                e.partition(),
                offset,
                e.metadata().to_owned(),
            )
        })
        .collect();
    Ok(is_committed(offsets, sequence, &committed))
}

/// Whether `committed` `(topic, partition, offset, metadata)` holds every one of `offsets` with
/// checkpoint `sequence`'s metadata (or none).
fn is_committed(
    offsets: &[(String, i32, i64)],
    sequence: u64,
    committed: &[(String, i32, Option<i64>, String)],
) -> bool {
    let metadata = checkpoint_metadata(sequence);
    offsets.iter().all(|(topic, partition, next)| {
        committed.iter().any(|(t, p, offset, meta)| {
            t == topic
                && p == partition
                && *offset == Some(*next)
                && (meta.is_empty() || *meta == metadata)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64, meta: &str) -> Vec<(String, i32, Option<i64>, String)> {
        vec![("payments".into(), 0, Some(offset), meta.into())]
    }

    #[test]
    fn a_transaction_committed_only_when_offsets_and_its_sequence_match() {
        let offsets = [("payments".to_string(), 0, 10)];
        assert!(is_committed(&offsets, 7, &at(10, "veto-checkpoint:7")));
        // same offsets, an earlier checkpoint's transaction (idle input, timeouts only)
        assert!(!is_committed(&offsets, 7, &at(10, "veto-checkpoint:6")));
        assert!(!is_committed(&offsets, 7, &at(9, "veto-checkpoint:7")));
        assert!(!is_committed(&offsets, 7, &[]));
        // committed by a version that wrote no metadata: the offsets decide
        assert!(is_committed(&offsets, 7, &at(10, "")));
    }
}
