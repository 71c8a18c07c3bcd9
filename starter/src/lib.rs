//! Starting and following payments.
//!
//! - [`client`]: `PaymentClient`, the typed Rust client library (pay, status, result, cancel,
//!   operator signals) over `temporalio-client`.
//! - [`service`]: `Payflow`, the validation and order creation the API and the CLI share.
//! - [`replay`]: replaying histories (files in the Web UI / CLI format, or fetched) against the
//!   current workflow code.
//! - [`api`]: the HTTP API (axum) and its OpenAPI document; `api::codec`, the payload codec
//!   server.
//! - [`admin`]: cluster set-up (search attributes).
//! - [`bench`]: the load generator (`payflow bench`); [`bench_report`]: what `make bench`
//!   writes into BENCHMARKS.md.
//! - [`cli`]: the `payflow` command line.

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod bench;
pub mod bench_report;
pub mod cli;
pub mod client;
pub mod replay;
pub mod service;

pub use client::PaymentClient;
pub use service::Payflow;
