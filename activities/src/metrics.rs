//! The seed's monitoring points as Prometheus metrics, exported on the worker's `/metrics`
//! beside the Temporal SDK's own worker metrics (same registry, through the SDK's meter).
//!
//! - `payflow_payments_total{outcome}`: completed / failed / cancelled (success rate)
//! - `payflow_pg_request_duration{operation, outcome}`: PG response time (ms histogram)
//! - `payflow_stock_confirmation_duration{outcome}`: stock confirmation time (ms histogram)
//! - `payflow_orders_total{outcome}`: completed / cancelled
//!
//! Counters move only on a real state change, so a retried activity is not counted twice.
//! Until [`install`] is called (e.g. in tests without an exporter) every call is a no-op.

use crate::payment::pg::PgError;
use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, HistogramDuration, MetricKeyValue, MetricParameters, NewAttributes,
};

struct AppMetrics {
    meter: Arc<dyn CoreMeter>,
    payments: Counter,
    orders: Counter,
    pg_latency: HistogramDuration,
    stock_latency: HistogramDuration,
}

static METRICS: OnceLock<AppMetrics> = OnceLock::new();

/// Registers payflow's metrics on the SDK's meter. Later calls are ignored.
pub fn install(meter: Arc<dyn CoreMeter>) {
    let params = |name: &'static str, description: &'static str, unit: &'static str| {
        MetricParameters::builder()
            .name(name)
            .description(description)
            .unit(unit)
            .build()
    };
    let _ = METRICS.set(AppMetrics {
        payments: meter.counter(params(
            "payflow_payments_total",
            "Payments that reached a final payment state, by outcome",
            "",
        )),
        orders: meter.counter(params(
            "payflow_orders_total",
            "Orders that reached a final state, by outcome",
            "",
        )),
        pg_latency: meter.histogram_duration(params(
            "payflow_pg_request_duration",
            "PG response time by operation and outcome",
            "ms",
        )),
        stock_latency: meter.histogram_duration(params(
            "payflow_stock_confirmation_duration",
            "Stock confirmation time (Redis claim + product DB) by outcome",
            "ms",
        )),
        meter,
    });
}

fn with(f: impl FnOnce(&AppMetrics)) {
    if let Some(m) = METRICS.get() {
        f(m);
    }
}

fn attrs(
    m: &AppMetrics,
    pairs: &[(&'static str, &'static str)],
) -> temporalio_common::telemetry::metrics::MetricAttributes {
    m.meter.new_attributes(NewAttributes::from(
        pairs
            .iter()
            .map(|(k, v)| MetricKeyValue::new(*k, *v))
            .collect::<Vec<_>>(),
    ))
}

/// A PG call finished.
pub fn pg_observe<T>(operation: &'static str, elapsed: Duration, result: &Result<T, PgError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(PgError::Declined { .. }) => "declined",
        Err(PgError::Rejected { .. }) => "rejected",
        Err(PgError::Unavailable(_)) => "unavailable",
    };
    with(|m| {
        m.pg_latency.record(
            elapsed,
            &attrs(m, &[("operation", operation), ("outcome", outcome)]),
        )
    });
}

/// A stock confirmation finished (`confirmed`, or the failure kind).
pub fn stock_observe(elapsed: Duration, outcome: &'static str) {
    with(|m| {
        m.stock_latency
            .record(elapsed, &attrs(m, &[("outcome", outcome)]))
    });
}

/// A payment changed to a final state: `completed`, `failed` or `cancelled`.
pub fn payment_outcome(outcome: &'static str) {
    with(|m| m.payments.add(1, &attrs(m, &[("outcome", outcome)])));
}

/// An order changed to a final state: `completed` or `cancelled`.
pub fn order_outcome(outcome: &'static str) {
    with(|m| m.orders.add(1, &attrs(m, &[("outcome", outcome)])));
}
