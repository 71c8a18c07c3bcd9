//! The seed's monitoring points as Prometheus metrics, exported on the worker's `/metrics`
//! beside the Temporal SDK's own worker metrics (same registry, through the SDK's meter).
//!
//! - `payflow_payments_total{outcome}`: completed / failed / cancelled (success rate)
//! - `payflow_pg_request_duration{operation, outcome}`: PG response time (ms histogram)
//! - `payflow_stock_confirmation_duration{outcome}`: stock confirmation time (ms histogram)
//! - `payflow_orders_total{outcome}`: completed / cancelled
//! - `payflow_events_total{outcome}`: records Kafka took (`published`), and records a publish
//!   attempt could not hand over (`failed`: Kafka or the registry away; the outbox retries)
//! - `payflow_dependency_up{dependency}`: 1 while a dependency the worker needs answers, 0 while
//!   it is waited for (what `/readyz` names as degraded)
//!
//! Counters move only on a real state change, so a retried activity is not counted twice.
//! `Metrics::default()` (e.g. in tests without an exporter) records nothing.

use crate::payment::pg::PgError;
use std::{sync::Arc, time::Duration};
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, HistogramDuration, MetricAttributes, MetricKeyValue,
    MetricParameters, NewAttributes,
};

struct AppMetrics {
    meter: Arc<dyn CoreMeter>,
    payments: Counter,
    orders: Counter,
    events: Counter,
    producer_rebuilds: Counter,
    pg_latency: HistogramDuration,
    stock_latency: HistogramDuration,
    dependencies: Gauge,
}

/// payflow's instruments, registered on one worker's meter. The default records nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<AppMetrics>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metrics(on)"
        } else {
            "Metrics(off)"
        })
    }
}

impl Metrics {
    /// Registers payflow's metrics on the SDK's meter (the worker's `/metrics`).
    pub fn new(meter: Arc<dyn CoreMeter>) -> Self {
        let params = |name: &'static str, description: &'static str, unit: &'static str| {
            MetricParameters::builder()
                .name(name)
                .description(description)
                .unit(unit)
                .build()
        };
        Self(Some(Arc::new(AppMetrics {
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
            events: meter.counter(params(
                "payflow_events_total",
                "Event and saga tracker records: published, or failed to publish (retried)",
                "",
            )),
            producer_rebuilds: meter.counter(params(
                "payflow_kafka_producer_rebuilds_total",
                "Kafka producers built anew after librdkafka declared the last one failed for good",
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
            dependencies: meter.gauge(params(
                "payflow_dependency_up",
                "1 while a dependency answers, 0 while the worker waits for it",
                "",
            )),
            meter,
        })))
    }

    fn attrs(m: &AppMetrics, pairs: &[(&'static str, &'static str)]) -> MetricAttributes {
        m.meter.new_attributes(NewAttributes::from(
            pairs
                .iter()
                .map(|(k, v)| MetricKeyValue::new(*k, *v))
                .collect::<Vec<_>>(),
        ))
    }

    /// A PG call finished.
    pub fn pg<T>(&self, operation: &'static str, elapsed: Duration, result: &Result<T, PgError>) {
        let Some(m) = &self.0 else { return };
        let outcome = match result {
            Ok(_) => "ok",
            Err(PgError::Declined { .. }) => "declined",
            Err(PgError::Rejected { .. }) => "rejected",
            Err(PgError::Unavailable(_)) => "unavailable",
        };
        m.pg_latency.record(
            elapsed,
            &Self::attrs(m, &[("operation", operation), ("outcome", outcome)]),
        );
    }

    /// A stock confirmation finished (`confirmed`, `refused` or `error`).
    pub fn stock(&self, elapsed: Duration, outcome: &'static str) {
        let Some(m) = &self.0 else { return };
        m.stock_latency
            .record(elapsed, &Self::attrs(m, &[("outcome", outcome)]));
    }

    /// A payment changed to a final state: `completed`, `failed` or `cancelled`.
    pub fn payment(&self, outcome: &'static str) {
        let Some(m) = &self.0 else { return };
        m.payments.add(1, &Self::attrs(m, &[("outcome", outcome)]));
    }

    /// `n` records published (`published`) or not handed over (`failed`).
    pub fn events(&self, outcome: &'static str, n: usize) {
        let Some(m) = &self.0 else { return };
        m.events
            .add(n as u64, &Self::attrs(m, &[("outcome", outcome)]));
    }

    /// The Kafka producer was built anew after a fatal error.
    pub fn producer_rebuilt(&self) {
        let Some(m) = &self.0 else { return };
        m.producer_rebuilds.add(1, &Self::attrs(m, &[]));
    }

    /// A dependency answers (`up`) or is waited for.
    pub fn dependency(&self, dependency: &'static str, up: bool) {
        let Some(m) = &self.0 else { return };
        m.dependencies.record(
            u64::from(up),
            &Self::attrs(m, &[("dependency", dependency)]),
        );
    }

    /// An order changed to a final state: `completed` or `cancelled`.
    pub fn order(&self, outcome: &'static str) {
        let Some(m) = &self.0 else { return };
        m.orders.add(1, &Self::attrs(m, &[("outcome", outcome)]));
    }
}
