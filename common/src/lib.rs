//! What every payflow process shares, below the worker and the `payflow` CLI/API (both depend
//! on this crate; neither depends on the other):
//!
//! - [`config`]: Temporal, PostgreSQL, Redis and Kafka settings (clap + environment), the local
//!   stack's default addresses, and the patient connect loop.
//! - [`codec`]: AES-256-GCM payload encryption (client, worker, replay and the codec server).
//! - [`health`]: what a process knows of its dependencies, served as `/healthz` and `/readyz`.
//! - [`telemetry`]: log set-up.

#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod health;
pub mod telemetry;
