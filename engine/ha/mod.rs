//! High availability: an election through Kafka's group coordinator picks the one active instance; the others replay the input as warm standbys.
//!
//! ```text
//! every `veto run` ──► election consumer (group `<group_id>.leader`, one-partition control topic)
//!                        owner of partition 0 ─► active: the normal pipeline (main group)
//!                        everyone else        ─► standby: replays payments and entity-tags up to
//!                                                the main group's committed offsets, publishes
//!                                                nothing, timers held, reads delivered timeouts
//! ```
//!
//! See `docs/operations.md` (running it) and `docs/decisions.md` (why replay, what it costs).

mod delivered;
mod election;
mod error;
mod events;
mod standby;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

pub use delivered::DeliveredTimeouts;
pub use election::{ensure_control_topic, Election, ElectionSettings};
pub use error::HaError;
pub use events::{standby_checkpoint_failed, timeout_already_delivered};
pub use standby::{fence, Replica, Standby, StandbyEnd, StandbySettings};

/// What an instance does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Replays the input, publishes nothing; takes over when elected.
    Standby,
    /// Won the election: consumes in the main group, decides, publishes, commits.
    Active,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

/// The instance's role and standby lag, shared with `/readyz` and the metrics.
#[derive(Debug)]
pub struct HaStatus {
    pub instance_id: String,
    active: AtomicBool,
    /// Messages the standby's state is behind the main group's committed offsets (-1: unknown).
    standby_lag: AtomicI64,
    /// Whether the standby reaches the broker (its consumer got metadata).
    standby_reachable: AtomicBool,
}

impl HaStatus {
    pub fn new(instance_id: String) -> HaStatus {
        events::role_is(Role::Standby);
        HaStatus {
            instance_id,
            active: AtomicBool::new(false),
            standby_lag: AtomicI64::new(-1),
            standby_reachable: AtomicBool::new(false),
        }
    }

    pub fn role(&self) -> Role {
        if self.active.load(Ordering::Acquire) {
            Role::Active
        } else {
            Role::Standby
        }
    }

    /// The instance is active from now on (it never goes back: losing the role stops it).
    pub fn set_active(&self) {
        self.active.store(true, Ordering::Release);
        events::role_is(Role::Active);
    }

    pub fn standby_lag(&self) -> i64 {
        self.standby_lag.load(Ordering::Acquire)
    }

    pub(crate) fn set_standby_lag(&self, lag: i64) {
        self.standby_lag.store(lag, Ordering::Release);
        events::standby_lag(lag);
    }

    pub fn standby_reachable(&self) -> bool {
        self.standby_reachable.load(Ordering::Acquire)
    }

    pub(crate) fn set_standby_reachable(&self) {
        self.standby_reachable.store(true, Ordering::Release);
    }
}
