//! Kafka helpers of the harness: topic creation and client settings.

use rdkafka::config::ClientConfig;

use super::BenchError;

/// Creates `topics` with `partitions` partitions each; topics that already exist are kept.
pub async fn create_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), BenchError> {
    crate::topics::create_topics(brokers, topics, partitions)
        .await
        .map_err(|e| BenchError::Broker(e.to_string()))
}

/// Consumer settings: reads from the beginning, no auto commit (the harness never resumes).
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        // No fetch pause: librdkafka's default stops fetching for 1 s whenever 100k fetched
        // messages wait, and the passthrough then ran in bursts at 150k events/s instead of
        // several times that without it; the receiver measures, it must not lag.
        .set("fetch.queue.backoff.ms", "1")
        .set("session.timeout.ms", "10000");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_reads_from_the_beginning() {
        let config = consumer_config("b:9092", "g");
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.get("group.id"), Some("g"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("1"));
    }
}
