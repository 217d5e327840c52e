//! Veto: a real-time risk-control rule engine for payments.
//!
//! The contract it keeps (event time and windows, tags, timers, delivery, metric names) is
//! `docs/semantics.md`; the other pages in `docs/` say how each part is built.
//!
//! # Layout
//!
//! Dependencies point one way: `pipeline` → `decider` → `rules` / `store` / `timer` → `event`
//! (the pipeline sees the engine only through its `Decider` trait and the `Decided` buffers it
//! fills). The modules that tie them together (`service`, `ha`, `demo`, `reload`) sit on top.
//!
//! | module        | role |
//! |---------------|------|
//! | [`event`]     | payment event model, wire codecs (protobuf, JSON), validation |
//! | [`proto`]     | prost types generated from `schemas/veto/v1` |
//! | [`rules`]     | the `.veto` rule language: lexer, parser, checker, compiler, evaluator |
//! | [`store`]     | sharded tag store: windows, distinct sketches, tags, RocksDB spill, checkpoint |
//! | [`timer`]     | drift-corrected millisecond clock and timing wheel for sequence rules |
//! | [`pipeline`]  | Kafka source, partition workers, decision sink, dead letters, offsets |
//! | [`decider`]   | the engine core: one event in, one decision out (features, rules, tags, timers) |
//! | [`ruletest`]  | `veto test`: in-file rule tests through the real engine core |
//! | [`backtest`]  | `veto backtest`: recorded events through a candidate and a baseline set, compared |
//! | [`explain`]   | `veto explain`: one event's decision taken apart (features, tags, condition parts, score) |
//! | [`reload`]    | signals, the atomic hot swap of the rule set (within a deadline) and rollback |
//! | [`service`]   | `veto run`: wires config, store, timers, rules, pipeline and telemetry |
//! | [`ha`]        | high availability: one active instance elected through Kafka, warm standbys |
//! | [`demo`]      | `veto demo`: the service on an embedded broker with synthetic payments |
//! | [`config`]    | `veto.toml` + environment overrides |
//! | [`telemetry`] | logging, Prometheus recorder, `/metrics` `/healthz` `/readyz` |
//! | [`synth`]     | synthetic payment workload (`veto demo`; also the load generator and benchmarks) |
//! | [`cli`]       | the `veto` subcommands |

pub mod backtest;
pub mod cli;
pub mod config;
pub mod decider;
pub mod demo;
pub mod event;
pub mod explain;
pub mod ha;
pub mod pipeline;
pub mod reload;
pub mod rules;
pub mod ruletest;
pub mod service;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod timer;

pub mod proto {
    //! Prost types generated from `schemas/veto/v1` (the wire contract).
    include!(concat!(env!("OUT_DIR"), "/veto.v1.rs"));
}

/// Cases per fuzz-style property test: `VETO_FUZZ_CASES` when set (long runs), else `default`.
#[cfg(test)]
pub(crate) fn fuzz_cases(default: u32) -> u32 {
    std::env::var("VETO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
