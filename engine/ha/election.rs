//! The election: a consumer in group `<group_id>.leader` on the one-partition control topic; the owner of partition 0 is the active instance.
//!
//! Kafka's group coordinator does the electing: it hands partition 0 to exactly one live
//! member, and to another one after the owner stops heartbeating for `session.timeout.ms`.
//! The cooperative-sticky assignor keeps partition 0 where it is when standbys come and go,
//! so a standby joining never interrupts the active. The owner finds out it lost the role
//! from the revocation (or, when it cannot reach the coordinator, from librdkafka's own
//! session timeout, which reports the assignment lost).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::watch;

use super::error::HaError;
use super::{events, Role};

/// Deadline of the control topic's metadata request and creation.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the election thread's `poll` blocks; bounds how fast a lost role is acted on.
const ELECTION_POLL: Duration = Duration::from_millis(100);

/// Where and how the election runs.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    pub brokers: String,
    /// The deployment's consumer group; the election group is `<group_id>.leader`.
    pub group_id: String,
    pub control_topic: String,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub instance_id: String,
    /// `kafka.librdkafka`, applied after Veto's own settings (they win).
    pub librdkafka: BTreeMap<String, String>,
}

impl ElectionSettings {
    pub fn election_group(&self) -> String {
        format!("{}.leader", self.group_id)
    }
}

/// Creates the control topic with one partition when it is missing; any failure (it exists,
/// the broker refuses) is logged, the election then waits for the topic to exist.
pub async fn ensure_control_topic(settings: &ElectionSettings) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.librdkafka {
        config.set(key, value);
    }
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(admin) => admin,
        Err(e) => {
            return events::control_topic_not_created(&settings.control_topic, &e.to_string())
        }
    };
    // Most starts find it: one metadata request, no admin call (some brokers, and librdkafka's
    // mock cluster, never answer a CreateTopics for an existing topic in time).
    let exists = admin
        .inner()
        .fetch_metadata(Some(&settings.control_topic), ADMIN_TIMEOUT)
        .is_ok_and(|m| {
            m.topics()
                .first()
                .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
        });
    if exists {
        return;
    }
    let topic = NewTopic::new(&settings.control_topic, 1, TopicReplication::Fixed(-1));
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    match admin.create_topics([&topic], &options).await {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(_)) => events::control_topic_created(&settings.control_topic),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => {
                events::control_topic_not_created(&settings.control_topic, &code.to_string())
            }
        },
        Err(e) => events::control_topic_not_created(&settings.control_topic, &e.to_string()),
    }
}

/// The running election: its role watch and its thread.
pub struct Election {
    role: watch::Receiver<Role>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Election {
    /// Joins the election group on a thread of its own.
    pub fn start(settings: &ElectionSettings) -> Result<Election, HaError> {
        let (role_tx, role) = watch::channel(Role::Standby);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", settings.election_group())
            .set(
                "client.id",
                format!("veto-election-{}", settings.instance_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                settings.heartbeat_interval.as_millis().to_string(),
            )
            // Only the assignment matters; nothing is ever produced to the control topic.
            .set("fetch.wait.max.ms", "500")
            // Broker states, to tell an expired session from an unreachable cluster.
            .set("statistics.interval.ms", "1000");
        for (key, value) in &settings.librdkafka {
            config.set(key, value);
        }
        let context = ElectionContext {
            control_topic: settings.control_topic.clone(),
            instance_id: settings.instance_id.clone(),
            role: role_tx,
            unreachable: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<ElectionContext> =
            config
                .create_with_context(context)
                .map_err(|source| HaError::ClientCreation {
                    client: "election consumer",
                    source,
                })?;
        consumer
            .subscribe(&[settings.control_topic.as_str()])
            .map_err(|source| HaError::Subscribe {
                topic: settings.control_topic.clone(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = "veto-election".to_owned();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    while !stop.load(Ordering::Acquire) {
                        // Rebalance callbacks run inside poll; no message is ever expected.
                        let _ = consumer.poll(ELECTION_POLL);
                    }
                    // Leaving the group hands partition 0 to a standby at once.
                    drop(consumer);
                }
            })
            .map_err(|source| HaError::ThreadSpawn { name, source })?;
        Ok(Election {
            role,
            stop,
            thread: Some(thread),
        })
    }

    /// The role as the election last decided it, as a watch.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Leaves the election group (a standby is elected at once when this one was active).
    pub fn leave(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct ElectionContext {
    control_topic: String,
    instance_id: String,
    role: watch::Sender<Role>,
    /// No broker answers (librdkafka's all-brokers-down, until its statistics show one up).
    unreachable: AtomicBool,
    /// The active's session expired while no broker answered: it keeps the role until the
    /// election decides again (re-elected: it carries on; another member elected: it stops).
    suspended: AtomicBool,
}

/// The part of librdkafka's statistics JSON the election reads.
#[derive(serde::Deserialize)]
struct ElectionStats {
    #[serde(default)]
    brokers: std::collections::HashMap<String, BrokerState>,
}

#[derive(serde::Deserialize)]
struct BrokerState {
    state: String,
}

impl ElectionContext {
    fn holds_control(&self, tpl: &TopicPartitionList) -> bool {
        tpl.elements()
            .iter()
            .any(|e| e.topic() == self.control_topic && e.partition() == 0)
    }
}

impl ClientContext for ElectionContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::pipeline::librdkafka_log("election", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.unreachable.store(true, Ordering::Release);
        }
        crate::pipeline::kafka_client_error("election", &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(stats) = serde_json::from_slice::<ElectionStats>(statistics) {
            if stats.brokers.values().any(|b| b.state == "UP") {
                self.unreachable.store(false, Ordering::Release);
            }
        }
    }
}

impl ConsumerContext for ElectionContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let suspended = self.suspended.swap(false, Ordering::AcqRel);
                if self.holds_control(tpl) {
                    if suspended {
                        events::re_elected(&self.instance_id);
                    } else {
                        events::elected(&self.instance_id);
                        self.role.send_replace(Role::Active);
                    }
                } else if suspended {
                    // Another member holds the role now: stop publishing.
                    events::role_lost(&self.instance_id, true);
                    self.role.send_replace(Role::Standby);
                } else if *self.role.borrow() == Role::Standby {
                    events::standing_by(&self.instance_id, tpl.count());
                }
                let _ = if cooperative {
                    consumer.incremental_assign(tpl).map(|_| ())
                } else {
                    consumer.assign(tpl)
                };
            }
            _ => {
                let revoked = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    self.holds_control(tpl)
                } else {
                    true // a failed rebalance drops the whole assignment
                };
                if revoked && *self.role.borrow() == Role::Active {
                    let lost = consumer.assignment_lost();
                    if lost && self.unreachable.load(Ordering::Acquire) {
                        // No broker answers: nobody can publish, a split brain is impossible
                        // until they answer again, and then the election decides.
                        events::role_suspended(&self.instance_id);
                        self.suspended.store(true, Ordering::Release);
                    } else {
                        events::role_lost(&self.instance_id, lost);
                        self.role.send_replace(Role::Standby);
                    }
                }
                let _ =
                    if cooperative && err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                        consumer.incremental_unassign(tpl).map(|_| ())
                    } else {
                        consumer.unassign()
                    };
            }
        }
    }
}
