//! `payflow bench`: the load generator. It creates orders (one product and one user each, so
//! payments do not contend unless asked), pays them at a concurrency or a target rate through
//! the HTTP API or the client library, waits for every final state, and reports throughput,
//! latency percentiles, failures by reason and Temporal history events per payment.
//!
//! `--noop` pays through a worker whose activities do no IO (`payflow-worker --noop`), with the
//! same workflow: Temporal's own ceiling on this machine.

use crate::{
    client::PaymentClient,
    service::{Pay, Payflow},
};
use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use payflow_activities::product::Product;
use payflow_workflows::{
    payment_workflow_id,
    queues::TaskQueues,
    types::{OrderItem, PaymentDecision, PaymentMethod, PaymentRequest},
};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use temporalio_client::WorkflowDescribeOptions;
use tokio::sync::Semaphore;

/// How the bench pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `POST /api/v1/payments` over HTTP.
    Api,
    /// The Rust client library in this process.
    Client,
}

/// `payflow bench` settings.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Payments to make.
    #[arg(long, default_value_t = 200)]
    pub payments: usize,
    /// Payments in flight at once (each from request to final state).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Start payments at this rate (per second) instead of as fast as the concurrency allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Pay through the HTTP API or the client library.
    #[arg(long, value_enum, default_value = "api")]
    pub via: Via,
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// API key (the first of PAYFLOW_API_KEYS).
    #[arg(
        long,
        env = "PAYFLOW_API_KEYS",
        hide_env_values = true,
        default_value = ""
    )]
    pub api_key: String,
    /// Measure the engine's ceiling: the same workflow on no-op activities
    /// (`payflow-worker --noop --task-queue-prefix <noop-prefix>`), via the client library.
    #[arg(long)]
    pub noop: bool,
    /// Task queue prefix of the no-op worker.
    #[arg(long, default_value = "noop-")]
    pub noop_prefix: String,
    /// Set the PG sandbox's latency (ms) before running.
    #[arg(long)]
    pub pg_latency_ms: Option<u64>,
    /// The PG sandbox's base URL.
    #[arg(long, env = "PG_BASE_URL", default_value = "http://127.0.0.1:8090")]
    pub sandbox_url: String,
    /// How many payments to sample for history length.
    #[arg(long, default_value_t = 20)]
    pub history_sample: usize,
    /// A label for the report.
    #[arg(long)]
    pub label: Option<String>,
    /// The stack's state directory (its pid files): report the CPU each component used while
    /// paying, without the orders' creation before it.
    #[arg(long)]
    pub cpu_state: Option<std::path::PathBuf>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of a sample (empty: all zero).
    pub fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Self {
                p50: 0.0,
                p95: 0.0,
                p99: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// The label given.
    pub label: Option<String>,
    /// Through the API or the client library.
    pub via: Via,
    /// No-op activities (the engine's ceiling).
    pub noop: bool,
    /// Payments made.
    pub payments: usize,
    /// In flight at once.
    pub concurrency: usize,
    /// Target start rate, if any.
    pub rate: Option<f64>,
    /// The PG sandbox's latency, if set.
    pub pg_latency_ms: Option<u64>,
    /// Wall time from the first request to the last final state.
    pub elapsed_secs: f64,
    /// Payments per second over that time.
    pub throughput: f64,
    /// Request to the PG's decision (the API's response).
    pub decision_ms: Percentiles,
    /// Request to `ORDER_COMPLETED` (the stage time the workflow recorded).
    pub order_completed_ms: Percentiles,
    /// Request to the workflow's end (after the push).
    pub closed_ms: Percentiles,
    /// Failures by reason.
    pub failures: BTreeMap<String, usize>,
    /// Mean Temporal history events per payment (sampled).
    pub history_events: f64,
    /// Milliseconds of CPU per payment by component while paying (with `--cpu-state`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_ms: BTreeMap<String, f64>,
}

impl BenchReport {
    /// The human table.
    pub fn table(&self) -> String {
        let row = |name: &str, p: &Percentiles| {
            format!(
                "{name:<22}{:>9.1}{:>9.1}{:>9.1}{:>9.1}{:>9.1}\n",
                p.p50, p.p95, p.p99, p.max, p.mean
            )
        };
        let mut s = format!(
            "payflow bench{}  via {:?}{}  payments {}  concurrency {}{}  PG latency {}\n",
            self.label
                .as_ref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.via,
            if self.noop { " (no-op activities)" } else { "" },
            self.payments,
            self.concurrency,
            self.rate
                .map(|r| format!("  rate {r}/s"))
                .unwrap_or_default(),
            self.pg_latency_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "as configured".into()),
        );
        s.push_str(&format!(
            "throughput            {:.1} payments/s ({:.1} s)\n",
            self.throughput, self.elapsed_secs
        ));
        s.push_str("latency (ms)               p50      p95      p99      max     mean\n");
        s.push_str(&row("  decision (API)", &self.decision_ms));
        s.push_str(&row("  -> ORDER_COMPLETED", &self.order_completed_ms));
        s.push_str(&row("  -> workflow closed", &self.closed_ms));
        if !self.cpu_ms.is_empty() {
            let parts: Vec<String> = self
                .cpu_ms
                .iter()
                .filter(|(_, ms)| **ms >= 0.05)
                .map(|(component, ms)| format!("{component} {ms:.1}"))
                .collect();
            s.push_str(&format!(
                "CPU ms per payment    {:.1}: {}\n",
                self.cpu_ms.values().sum::<f64>(),
                parts.join(", ")
            ));
        }
        s.push_str(&format!(
            "history events        {:.1} per payment\nfailures              {}\n",
            self.history_events,
            if self.failures.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", self.failures)
            }
        ));
        s
    }
}

/// A markdown table of several runs.
pub fn markdown(reports: &[BenchReport]) -> String {
    let mut s = String::from(
        "| run | via | payments | concurrency | PG latency | throughput | decision p50 / p95 / p99 | request -> ORDER_COMPLETED p50 / p95 / p99 / max | history events | failures |\n\
         | --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |\n",
    );
    for r in reports {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1}/s | {:.0} / {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} / {:.0} ms | {:.0} | {} |\n",
            r.label.as_deref().unwrap_or("-"),
            if r.noop { "client, no-op activities".to_owned() } else { format!("{:?}", r.via).to_lowercase() },
            r.payments,
            r.concurrency,
            if r.noop { "-".to_owned() } else { r.pg_latency_ms.map(|l| format!("{l} ms")).unwrap_or_else(|| "-".into()) },
            r.throughput,
            r.decision_ms.p50,
            r.decision_ms.p95,
            r.decision_ms.p99,
            r.order_completed_ms.p50,
            r.order_completed_ms.p95,
            r.order_completed_ms.p99,
            r.order_completed_ms.max,
            r.history_events,
            if r.failures.is_empty() { "none".to_owned() } else { format!("{:?}", r.failures) },
        ));
    }
    s
}

struct Sample {
    start_epoch_ms: i64,
    decision: Duration,
    closed: Duration,
    failure: Option<String>,
}

/// Runs one benchmark.
pub async fn run(payflow: &Payflow, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .tcp_nodelay(true)
        .build()?;
    if let Some(ms) = args.pg_latency_ms {
        http.post(format!("{}/sandbox/config", args.sandbox_url))
            .json(&serde_json::json!({ "latencyMs": ms }))
            .send()
            .await
            .context("set the sandbox latency")?
            .error_for_status()?;
    }
    let via = if args.noop { Via::Client } else { args.via };
    anyhow::ensure!(
        via != Via::Api || !args.api_key.is_empty(),
        "--via api needs an API key (PAYFLOW_API_KEYS)"
    );
    let payments = if args.noop {
        PaymentClient::new(
            payflow.payments.temporal().clone(),
            TaskQueues::with_prefix(&args.noop_prefix),
            "default".into(),
        )
    } else {
        payflow.payments.clone()
    };

    let orders = prepare_orders(payflow, args).await?;
    let bar = ProgressBar::new(orders.len() as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(if args.noop { "no-op" } else { "paying" });

    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let cpu_snapshot = || {
        args.cpu_state
            .as_deref()
            .map(crate::bench_report::cpu_snapshot_with_client)
    };
    let cpu_before = cpu_snapshot();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(orders.len());
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    for (i, (order_id, amount)) in orders.into_iter().enumerate() {
        if let Some(interval) = interval {
            let due = started + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await?;
        let (payflow, payments, http, bar) =
            (payflow.clone(), payments.clone(), http.clone(), bar.clone());
        let (api_url, api_key, noop) = (args.api_url.clone(), args.api_key.clone(), args.noop);
        tasks.push(tokio::spawn(async move {
            let start_epoch_ms = epoch_ms();
            let t0 = Instant::now();
            let failure = match (via, noop) {
                (_, true) => payments
                    .pay(PaymentRequest {
                        order_id: order_id.clone(),
                        user_id: format!("BENCH-{order_id}"),
                        payment_method: PaymentMethod::Card,
                        amount,
                        payment_key: None,
                        timings: None,
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(approved),
                (Via::Client, false) => payflow
                    .pay(Pay {
                        order_id: order_id.clone(),
                        payment_method: PaymentMethod::Card,
                        amount,
                        payment_key: None,
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(approved),
                (Via::Api, false) => {
                    pay_over_http(&http, &api_url, &api_key, &order_id, amount).await
                }
            }
            .err();
            let decision = t0.elapsed();
            if failure.is_none() {
                let _ = payments.result(&order_id).await;
            }
            let closed = t0.elapsed();
            drop(permit);
            bar.inc(1);
            (
                order_id,
                Sample {
                    start_epoch_ms,
                    decision,
                    closed,
                    failure,
                },
            )
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        samples.push(t.await?);
    }
    let elapsed = started.elapsed();
    let cpu_ms = match (cpu_before, cpu_snapshot()) {
        (Some(before), Some(after)) => {
            crate::bench_report::cpu_per_payment(&before, &after, samples.len())
        }
        _ => BTreeMap::new(),
    };
    bar.finish_and_clear();

    // When each payment reached ORDER_COMPLETED, from the stage times the workflow recorded.
    let completed_ms = order_completed_latencies(&payments, &samples).await;
    let history_events = history_length(&payments, &samples, args.history_sample).await;
    let mut failures = BTreeMap::new();
    for (_, s) in &samples {
        if let Some(f) = &s.failure {
            *failures.entry(f.clone()).or_insert(0) += 1;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(BenchReport {
        label: args.label.clone(),
        via,
        noop: args.noop,
        payments: samples.len(),
        concurrency: args.concurrency,
        rate: args.rate,
        pg_latency_ms: args.pg_latency_ms,
        elapsed_secs: elapsed.as_secs_f64(),
        throughput: samples.len() as f64 / elapsed.as_secs_f64(),
        decision_ms: Percentiles::of(samples.iter().map(|(_, s)| ms(s.decision)).collect()),
        order_completed_ms: Percentiles::of(completed_ms),
        closed_ms: Percentiles::of(
            samples
                .iter()
                .filter(|(_, s)| s.failure.is_none())
                .map(|(_, s)| ms(s.closed))
                .collect(),
        ),
        failures,
        history_events,
        cpu_ms,
    })
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn pay_over_http(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    order_id: &str,
    amount: i64,
) -> Result<(), String> {
    let response = http
        .post(format!("{base}/api/v1/payments"))
        .bearer_auth(key)
        .json(
            &serde_json::json!({ "orderId": order_id, "paymentMethod": "CARD", "amount": amount }),
        )
        .send()
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(body["reason"]
            .as_str()
            .or(body["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}")))
    }
}

/// Orders to pay: real ones (a product and a user each), or ids alone for the no-op worker.
async fn prepare_orders(payflow: &Payflow, args: &BenchArgs) -> anyhow::Result<Vec<(String, i64)>> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    if args.noop {
        return Ok((0..args.payments)
            .map(|i| (format!("NOOP-{run}-{i}"), 1_000))
            .collect());
    }
    let products: Vec<Product> = (0..args.payments)
        .map(|i| Product {
            product_id: format!("BENCH-{run}-{i}"),
            name: format!("bench product {i}"),
            price: 1_000,
            stock: 1,
        })
        .collect();
    let bar = ProgressBar::new(args.payments as u64).with_prefix("orders");
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut orders = Vec::with_capacity(args.payments);
    for chunk in products.chunks(16) {
        payflow.products.seed(chunk).await?;
        let created = futures::future::join_all(chunk.iter().map(|p| async move {
            let user = format!("USR-{}", p.product_id);
            let item = OrderItem {
                product_id: p.product_id.clone(),
                quantity: 1,
            };
            payflow
                .create_order(&user, std::slice::from_ref(&item), 3_600_000)
                .await
        }))
        .await;
        for order in created {
            let order = order?;
            orders.push((order.order_id, order.total_amount));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(orders)
}

/// A decision as a bench outcome: approved, or the decline's code.
fn approved(decision: PaymentDecision) -> Result<(), String> {
    if decision.approved {
        Ok(())
    } else {
        Err(decision.failure_code.unwrap_or_default())
    }
}

async fn order_completed_latencies(
    payments: &PaymentClient,
    samples: &[(String, Sample)],
) -> Vec<f64> {
    let done: Vec<&(String, Sample)> = samples
        .iter()
        .filter(|(_, s)| s.failure.is_none())
        .collect();
    let mut out = Vec::with_capacity(done.len());
    for chunk in done.chunks(32) {
        let statuses =
            futures::future::join_all(chunk.iter().map(|(order, _)| payments.status(order))).await;
        for ((_, sample), status) in chunk.iter().zip(statuses) {
            if let Ok(status) = status
                && let Some(at) = status.stage_times.get("ORDER_COMPLETED")
            {
                out.push((at - sample.start_epoch_ms) as f64);
            }
        }
    }
    out
}

async fn history_length(payments: &PaymentClient, samples: &[(String, Sample)], n: usize) -> f64 {
    let mut lengths = Vec::new();
    for (order, _) in samples.iter().filter(|(_, s)| s.failure.is_none()).take(n) {
        if let Ok(d) = payments
            .temporal()
            .get_workflow_handle::<payflow_workflows::PaymentWorkflow>(payment_workflow_id(order))
            .describe(WorkflowDescribeOptions::default())
            .await
        {
            lengths.push(d.history_length() as f64);
        }
    }
    if lengths.is_empty() {
        0.0
    } else {
        lengths.iter().sum::<f64>() / lengths.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(vec![7.0]).p99, 7.0);
        assert_eq!(Percentiles::of(vec![]).max, 0.0);
    }
}
