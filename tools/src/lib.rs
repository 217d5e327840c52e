//! Shared code of the `veto-loadgen` and `veto-bench` tools.
//!
//! | module | role |
//! |--------|------|
//! | [`wire`] | event encoding (protobuf, JSON) and decision decoding |
//! | [`pace`] | fixed-rate pacing |
//! | [`loadgen`] | the load generator (Kafka or file) |
//! | [`topics`] | topic creation (Veto never creates topics) |
//! | [`bench`] | the benchmark harness: scenarios, report, machine info, plots |

pub mod bench;
pub mod loadgen;
pub mod pace;
pub mod topics;
pub mod wire;
