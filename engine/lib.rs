//! Veto: a real-time risk-control rule engine for payments.
//!
//! # Layout
//!
//! Dependencies point one way: `pipeline` → `rules` / `store` / `timer` → `event`.
//!
//! | module     | role |
//! |------------|------|
//! | [`event`]  | payment event model, wire codecs (protobuf, JSON), validation |
//! | [`proto`]  | prost types generated from `schemas/veto/v1` |
//! | [`synth`]  | synthetic payment workload (demo, load generator, benches) |
//! | [`telemetry`] | logging, Prometheus recorder, `/metrics` `/healthz` `/readyz` |

pub mod event;
pub mod synth;
pub mod telemetry;

pub mod proto {
    //! Prost types generated from `schemas/veto/v1` (the wire contract).
    include!(concat!(env!("OUT_DIR"), "/veto.v1.rs"));
}
