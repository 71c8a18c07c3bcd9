//! payflow's payment workflow: deterministic code only.
//!
//! This crate holds what both sides of Temporal need to agree on, and nothing that does IO:
//!
//! - [`workflow`]: `PaymentWorkflow`, the saga (SPEC §3), with its `status` query, the
//!   `payment_decision` update and the operator signals.
//! - [`activities`]: the activity *declarations* (names and types); `payflow-activities`
//!   implements them.
//! - [`types`]: inputs, outputs and the event shapes shared with starters and activities.
//! - [`ids`]: the workflow id, payment id and event ids, all derived from the order id.
//! - [`queues`]: task queue names.
//! - [`search`]: search attribute keys.
//! - [`symbols`]: every closed set of names (contract enum symbols, stages, table states) is an
//!   enum declared with [`symbols!`].
//! - [`errors`]: failure type names activities raise and the workflow matches.

pub mod activities;
pub mod errors;
pub mod ids;
pub mod queues;
pub mod search;
pub mod symbols;
pub mod types;
pub mod workflow;

pub use ids::payment_workflow_id;
pub use workflow::PaymentWorkflow;
