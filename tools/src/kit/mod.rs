//! Workloads and probes shared by the criterion benches (`tools/benches/`) and `veto-bench`, so
//! both measure exactly the same thing.
//!
//! | module | what |
//! |--------|------|
//! | [`timers`] | timer lateness series (service, wheel ticker, tokio interval, sleep loop) under busy cores |
//! | [`swap`]   | the 1,000-rule hot-swap set and an event-deciding loop that timestamps every event |
//! | [`process`] | this process's RSS and CPU time from `/proc` |
//!
//! Nothing here runs in the engine's hot paths; it only drives the public APIs.

pub mod process;
pub mod swap;
pub mod timers;
