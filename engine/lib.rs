//! Veto: a real-time risk-control rule engine for payments.
//!
//! # Layout
//!
//! Dependencies point one way: `pipeline` → `rules` / `store` / `timer` → `event`.
//!
//! | module     | role |
//! |------------|------|
//! | [`event`]  | payment event model, wire codecs (protobuf, JSON), validation |
//! | [`rules`]  | the `.veto` rule language: parser, checker, compiler, evaluator |
//! | [`proto`]  | prost types generated from `schemas/veto/v1` |

pub mod event;
pub mod rules;

pub mod proto {
    //! Prost types generated from `schemas/veto/v1` (the wire contract).
    include!(concat!(env!("OUT_DIR"), "/veto.v1.rs"));
}
