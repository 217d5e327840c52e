//! Drift-corrected millisecond timers for sequence (absence) rules: wheel, ticker, service, snapshots.
//!
//! [`TimerService`] runs a dedicated thread that ticks at absolute deadlines (t0 + k·period) on
//! the monotonic clock and fires keyed timers from a hierarchical [`TimingWheel`]; workers arm
//! and cancel by (sequence rule, correlation value). Armed timers serialise to an opaque,
//! versioned and checksummed blob for the store's checkpoint. Design and figures: `docs/timers.md`.

mod clock;
mod error;
mod keyed;
mod model;
mod persist;
mod service;
mod telemetry;
mod ticker;
mod wheel;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::TimerError;
pub use keyed::TimerCore;
pub use model::{Fired, TimerConfig, TimerIds, TimerPayload};
#[cfg(test)]
pub(crate) use service::recv_within;
pub use service::{FiredReceiver, TimerService};
pub use telemetry::LATENESS_BUCKETS;
pub use ticker::{raise_to_realtime, TickBatch, Ticker};
pub use wheel::{Expired, TimerHandle, TimingWheel};
