//! Shared code of the `veto-loadgen` and `veto-bench` tools and the criterion benches.
//!
//! | module | role |
//! |--------|------|
//! | [`wire`] | event encoding (protobuf, JSON) and decision decoding |
//! | [`pace`] | fixed-rate pacing |
//! | [`loadgen`] | the load generator (Kafka or file) |
//! | [`topics`] | topic creation (Veto never creates topics) |
//! | [`bench`] | the benchmark harness: scenarios, report, machine info, plots |
//! | [`kit`] | workloads and probes shared by the harness and the criterion benches (`tools/benches/`) |

pub mod bench;
pub mod kit;
pub mod loadgen;
pub mod pace;
pub mod topics;
pub mod wire;
