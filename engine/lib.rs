//! Veto: a real-time risk-control rule engine for payments.
//!
//! # Layout
//!
//! Dependencies point one way: `pipeline` → `rules` / `store` / `timer` → `event`.
//!
//! | module     | role |
//! |------------|------|
//! | [`config`] | `veto.toml` + `VETO_*` environment overrides, validated |
//! | [`event`]  | payment event model, wire codecs (protobuf, JSON), validation |
//! | [`pipeline`] | Kafka source, partition workers, decision sink, dead letters, offsets, drain |
//! | [`proto`]  | prost types generated from `schemas/veto/v1` |

pub mod config;
pub mod event;
pub mod pipeline;

pub mod proto {
    //! Prost types generated from `schemas/veto/v1` (the wire contract).
    include!(concat!(env!("OUT_DIR"), "/veto.v1.rs"));
}
