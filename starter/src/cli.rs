//! The `payflow` command line: products, orders, payments, the demo, and the API server.
//! Human output by default; `--json` prints one JSON document for scripts.

use crate::{
    client::PaymentClient,
    service::{DEFAULT_RESERVATION_TTL_MS, Pay, Payflow, demo_catalogue},
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use payflow_activities::{
    OrderStore, ProductStore, db, payment::keys::PaymentKeys, product::reservation::Reservations,
};
use payflow_common::config::{DatabaseArgs, KafkaArgs, RedisArgs, TemporalArgs, until_available};
use payflow_workflows::queues::TaskQueues;
use payflow_workflows::types::{
    ManualRefund, OrderItem, PaymentDecision, PaymentMethod, PaymentOutcome, PaymentStage,
};
use serde::Serialize;
use std::time::Instant;

/// payflow: order payments as durable Temporal workflows.
#[derive(Debug, Parser)]
#[command(name = "payflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: CommonArgs,
}

/// Connections every command may need.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub temporal: TemporalArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: RedisArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub kafka: KafkaArgs,
    /// Base URL of the Temporal Web UI, for links.
    #[arg(
        long,
        global = true,
        env = "PAYFLOW_UI_URL",
        default_value = "http://localhost:8233"
    )]
    pub ui_url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Products (the catalogue the orders draw on).
    Products {
        #[command(subcommand)]
        command: ProductsCommand,
    },
    /// Orders (the preceding step: an order in PAYMENT_WAIT with its stock reserved).
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Pay an order and wait for the PG's decision (and, with --wait, the final state).
    Pay(PayArgs),
    /// Show a payment's state (the workflow's status query).
    Status {
        /// The order.
        #[arg(long = "order")]
        order_id: String,
    },
    /// Operator actions on a payment.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Run the seed's scenarios end to end and print each order's outcome.
    Demo,
    /// Replay workflow histories against the current workflow code; exits 1 if any diverges.
    Replay(ReplayArgs),
    /// Serve the HTTP API and the payload codec server.
    Serve(ServeArgs),
    /// Load-test payments: throughput, latency percentiles, history events per payment.
    Bench(crate::bench::BenchArgs),
    /// Print saved `payflow bench --json` reports as a table (or markdown), or write them into
    /// BENCHMARKS.md (what `make bench` does).
    BenchReport {
        /// Report files.
        files: Vec<std::path::PathBuf>,
        /// Markdown instead of text.
        #[arg(long)]
        markdown: bool,
        /// Write the reports (with the CPU each component used while paying) and the machine
        /// into FILE, between its bench markers.
        #[arg(long, value_name = "FILE")]
        write: Option<std::path::PathBuf>,
    },
    /// Set-up tasks for a Temporal cluster.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The events on Kafka.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Check that every event of the payments that ended since a moment, and every event the
    /// running ones published so far, is on its topic; exits 1 if any is missing (and was not republished) or a payment cannot say what it
    /// published.
    Audit {
        /// RFC 3339 time (`2026-11-24T09:00:00Z`) or an age (`90s`, `30m`, `6h`, `2d`).
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// Publish the missing ones again, with their original event ids.
        #[arg(long)]
        republish: bool,
    },
}

/// `--since`: an RFC 3339 time or an age before now.
fn parse_since(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{value:?}: give a unit (s, m, h, d) or an RFC 3339 time"))?;
    let (number, unit) = value.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{value:?} is neither an RFC 3339 time nor an age like 30m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("{value:?}: the unit is one of s, m, h, d")),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(seconds))
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PAYFLOW_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Accepted API keys (`Authorization: Bearer <key>`), comma-separated.
    #[arg(
        long,
        env = "PAYFLOW_API_KEYS",
        value_delimiter = ',',
        required = true,
        hide_env_values = true
    )]
    api_keys: Vec<payflow_activities::Secret>,
    /// Decode-only credentials of the Web UI's codec capability URL
    /// (`/codec/<token>/decode`), comma-separated: separate from API keys; list the new one
    /// first and keep the old one until the UI uses the new one to rotate.
    #[arg(
        long,
        env = "PAYFLOW_CODEC_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    codec_tokens: Vec<payflow_activities::Secret>,
    /// Web UI origins allowed to call the codec server (CORS), comma-separated.
    #[arg(
        long,
        env = "PAYFLOW_CODEC_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:8233,http://127.0.0.1:8233"
    )]
    codec_cors_origins: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set a deployment up (idempotent): payflow's search attributes on the Temporal namespace,
    /// the Kafka topics with the platform's settings and the event schemas in the registry.
    Setup,
    /// Only the search attributes (what the dev scripts run once they have built payflow).
    SearchAttributes,
    /// Exit 0 if the Kafka broker acknowledges one record on `payflow.broker-check` within the
    /// deadline, 1 if not (the dev stack's broker guard asks this).
    BrokerCheck {
        /// How long the broker has, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline_ms: u64,
    },
    /// Print a fresh payload encryption key (`id:base64`) for PAYFLOW_CODEC_KEYS.
    NewCodecKey {
        /// The key's id (kept in each payload's metadata).
        #[arg(long, default_value = "k1")]
        id: String,
    },
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// History files: Web UI download / `temporal workflow show -o json`, SDK JSON, or binary.
    files: Vec<std::path::PathBuf>,
    /// Fetch this workflow's history from the server (repeatable).
    #[arg(long = "workflow-id")]
    workflow_ids: Vec<String>,
    /// Fetch the histories a visibility query finds, e.g.
    /// `WorkflowType='PaymentWorkflow' AND ExecutionStatus='Running'`.
    #[arg(long)]
    query: Option<String>,
    /// At most this many histories from --query.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
enum ProductsCommand {
    /// Seed the demo catalogue (PRD-001..003); existing products keep their stock.
    Seed,
}

#[derive(Debug, Subcommand)]
enum OrdersCommand {
    /// Create an order: `--item PRD-001:2 --item PRD-002:1`.
    Create {
        /// The customer.
        #[arg(long = "user")]
        user_id: String,
        /// `PRODUCT:QUANTITY`, repeatable.
        #[arg(long = "item", value_parser = parse_item, required = true)]
        items: Vec<OrderItem>,
        /// How long the stock stays reserved, in seconds (1 to 86400).
        #[arg(long, default_value_t = DEFAULT_RESERVATION_TTL_MS / 1000)]
        ttl_secs: u64,
    },
    /// Show an order and its payment.
    Show {
        /// The order.
        #[arg(long = "order")]
        order_id: String,
    },
}

#[derive(Debug, Args)]
struct PayArgs {
    /// The order.
    #[arg(long = "order")]
    order_id: String,
    /// CARD, BANK_TRANSFER, KAKAO_PAY, NAVER_PAY or TOSS.
    #[arg(long = "method")]
    method: PaymentMethod,
    /// Amount in won (must be the order's total).
    #[arg(long)]
    amount: i64,
    /// The PG payment key (sandbox test keys drive failure paths, see the README).
    #[arg(long)]
    payment_key: Option<String>,
    /// Also wait for the final state.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Try a failed refund again (signal `retry_refund`).
    RetryRefund {
        /// The order.
        #[arg(long = "order")]
        order_id: String,
        /// Who asks.
        #[arg(long)]
        operator: String,
    },
    /// Record a refund done by hand (signal `refund_completed_manually`).
    RefundDone {
        /// The order.
        #[arg(long = "order")]
        order_id: String,
        /// Who refunded.
        #[arg(long)]
        operator: String,
        /// The refund's reference.
        #[arg(long)]
        reference: String,
    },
    /// Cancel a payment: compensate what it did (refund, stock, order).
    Cancel {
        /// The order.
        #[arg(long = "order")]
        order_id: String,
        /// Why.
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
}

fn parse_item(s: &str) -> Result<OrderItem, String> {
    let (id, qty) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected PRODUCT:QUANTITY"))?;
    Ok(OrderItem {
        product_id: id.to_owned(),
        quantity: qty
            .parse()
            .map_err(|_| format!("{qty:?} is not a quantity"))?,
    })
}

impl CommonArgs {
    /// Connects to Temporal, PostgreSQL and Redis.
    pub async fn payflow(&self) -> anyhow::Result<Payflow> {
        let payments = PaymentClient::connect(&self.temporal)
            .await
            .context("connect to Temporal")?;
        let pool = db::connect(&self.database.url, self.database.max_connections)
            .await
            .context("connect to PostgreSQL")?;
        db::migrate(&pool).await.context("apply migrations")?;
        let redis = Reservations::connect(&self.redis.url)
            .await
            .context("connect to Redis")?;
        Ok(self.assemble(payments, pool, redis))
    }

    /// The same for a long-running server: a dependency that is away is waited for (logged),
    /// never a reason to exit; a malformed URL still fails at once.
    pub async fn payflow_patiently(&self) -> anyhow::Result<Payflow> {
        db::check_url(&self.database.url).context("DATABASE_URL")?;
        Reservations::check_url(&self.redis.url).context("REDIS_URL")?;
        let temporal = self
            .temporal
            .connect_patiently(&Default::default())
            .await
            .context("connect to Temporal")?;
        let payments = PaymentClient::new(
            temporal,
            TaskQueues::with_prefix(&self.temporal.task_queue_prefix),
            self.temporal.namespace(),
        );
        let url = &self.database.url;
        let max = self.database.max_connections;
        let pool = until_available(
            "PostgreSQL",
            || db::prepare(url, max, true),
            db::PrepareError::permanent,
        )
        .await
        .context("DATABASE_URL")?;
        let redis = until_available(
            "Redis",
            || Reservations::connect(&self.redis.url),
            Reservations::misconfigured,
        )
        .await
        .context("REDIS_URL")?;
        Ok(self.assemble(payments, pool, redis))
    }

    fn assemble(
        &self,
        payments: PaymentClient,
        pool: sqlx::PgPool,
        redis: Reservations,
    ) -> Payflow {
        Payflow {
            payments,
            orders: OrderStore::new(pool.clone()),
            payment_keys: PaymentKeys::new(pool.clone()),
            payment_records: payflow_activities::payment::records::PaymentRecords::new(
                pool.clone(),
            ),
            products: ProductStore::new(redis, pool),
            timings: None,
        }
    }
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializable")
        );
    } else {
        println!("{}", human(value));
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = cli.common;
    let json = common.json;
    match cli.command {
        Command::Products {
            command: ProductsCommand::Seed,
        } => {
            let payflow = common.payflow().await?;
            let catalogue = demo_catalogue();
            payflow.products.seed(&catalogue).await?;
            print(json, &catalogue, |c| {
                c.iter()
                    .map(|p| format!("{}  {}  {} won", p.product_id, p.name, p.price))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Orders {
            command:
                OrdersCommand::Create {
                    user_id,
                    items,
                    ttl_secs,
                },
        } => {
            let payflow = common.payflow().await?;
            let order = payflow
                .create_order(&user_id, &items, ttl_secs.saturating_mul(1000))
                .await?;
            print(json, &order, |o| {
                format!(
                    "order {}  total {} won  {}  (stock reserved until {})",
                    o.order_id, o.total_amount, o.status, o.reservation_expires_at
                )
            });
        }
        Command::Orders {
            command: OrdersCommand::Show { order_id },
        } => {
            let payflow = common.payflow().await?;
            let (order, payment) = payflow.order(&order_id).await?;
            #[derive(Serialize)]
            struct Shown<'a> {
                order: &'a payflow_activities::order::OrderRow,
                payment: &'a Option<payflow_workflows::types::PaymentStatus>,
            }
            print(
                json,
                &Shown {
                    order: &order,
                    payment: &payment,
                },
                |s| format!("{:#?}\n{:#?}", s.order, s.payment),
            );
        }
        Command::Pay(args) => {
            let payflow = common.payflow().await?;
            let started = Instant::now();
            let decision = payflow
                .pay(Pay {
                    order_id: args.order_id.clone(),
                    payment_method: args.method,
                    amount: args.amount,
                    payment_key: args.payment_key,
                })
                .await?;
            let decided = started.elapsed();
            if args.wait {
                let outcome = payflow.payments.result(&args.order_id).await?;
                let report = Report::new(&decision, &outcome, started.elapsed(), &common, &payflow);
                print(json, &report, Report::human);
            } else {
                print(json, &decision, |d| {
                    format!("{}  ({} ms)", describe_decision(d), decided.as_millis())
                });
            }
        }
        Command::Status { order_id } => {
            let payflow = PaymentClient::connect(&common.temporal).await?;
            let status = payflow.status(&order_id).await?;
            print(json, &status, |s| format!("{s:#?}"));
        }
        Command::Operator { command } => {
            let payments = PaymentClient::connect(&common.temporal).await?;
            // The workflow takes these only while a refund waits for an operator; said here,
            // before anything is sent, rather than dropped there without a word.
            let refund_waiting = |order_id: &str| {
                let payments = payments.clone();
                let order_id = order_id.to_owned();
                async move {
                    let status = payments.status(&order_id).await?;
                    anyhow::ensure!(
                        status.refund_waiting,
                        "no refund of order {order_id} is waiting for an operator (stage {}); \
                         nothing was sent",
                        status.stage
                    );
                    anyhow::Ok(())
                }
            };
            match command {
                OperatorCommand::RetryRefund { order_id, operator } => {
                    refund_waiting(&order_id).await?;
                    payments.retry_refund(&order_id, &operator).await?;
                    println!("asked payment of {order_id} to retry its refund");
                }
                OperatorCommand::RefundDone {
                    order_id,
                    operator,
                    reference,
                } => {
                    refund_waiting(&order_id).await?;
                    payments
                        .refund_completed_manually(
                            &order_id,
                            ManualRefund {
                                operator,
                                reference,
                            },
                        )
                        .await?;
                    println!("recorded the manual refund of {order_id}");
                }
                OperatorCommand::Cancel { order_id, reason } => {
                    payments.cancel(&order_id, &reason).await?;
                    println!(
                        "cancelling payment of {order_id}; it compensates and ends ORDER_CANCELLED"
                    );
                }
            }
        }
        Command::Demo => demo(&common).await?,
        Command::Replay(args) => replay(&common, args).await?,
        Command::Serve(args) => serve(&common, args).await?,
        Command::BenchReport {
            files,
            write: Some(doc),
            ..
        } => crate::bench_report::write(&doc, &files)?,
        Command::BenchReport {
            files, markdown, ..
        } => {
            let mut reports = Vec::new();
            for f in &files {
                let text =
                    std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
                reports.push(serde_json::from_str::<crate::bench::BenchReport>(&text)?);
            }
            if markdown {
                print!("{}", crate::bench::markdown(&reports));
            } else {
                for r in &reports {
                    println!("{}", r.table());
                }
            }
        }
        Command::Bench(args) => {
            let payflow = common.payflow().await?;
            let report = crate::bench::run(&payflow, &args).await?;
            print(json, &report, crate::bench::BenchReport::table);
        }
        Command::Admin {
            command: AdminCommand::SearchAttributes,
        } => search_attributes(&common).await?,
        Command::Admin {
            command: AdminCommand::BrokerCheck { deadline_ms },
        } => {
            let deadline = std::time::Duration::from_millis(deadline_ms);
            let offset =
                payflow_activities::events::probe::probe(&common.kafka.bootstrap_servers, deadline)
                    .await
                    .with_context(|| format!("broker {}", common.kafka.bootstrap_servers))?;
            println!("broker took the probe record (offset {offset})");
        }
        Command::Admin {
            command: AdminCommand::Setup,
        } => {
            search_attributes(&common).await?;
            let kafka = common.kafka.config()?;
            let registry = common.kafka.registry()?;
            payflow_activities::EventActivities::ensure_topics(&kafka, registry.as_ref())
                .await
                .context("Kafka topics and schemas")?;
            for ty in payflow_workflows::types::EventType::ALL {
                println!("topic {} ready", kafka.topic(ty));
            }
            if registry.is_some() {
                println!(
                    "schemas registered in {}",
                    payflow_common::config::without_password(&common.kafka.registry_url)
                );
            }
        }
        Command::Admin {
            command: AdminCommand::NewCodecKey { id },
        } => println!("{}", payflow_common::codec::CodecKeys::generate(&id)),
        Command::Events {
            command: EventsCommand::Audit { since, republish },
        } => {
            let payments = PaymentClient::connect(&common.temporal).await?;
            let kafka = common.kafka.config()?;
            let producer = if republish {
                Some(payflow_activities::EventActivities::new(
                    kafka.clone(),
                    common.kafka.registry()?,
                )?)
            } else {
                None
            };
            let report = crate::audit::audit(&payments, &kafka, producer.as_ref(), since).await?;
            print(json, &report, crate::audit::AuditReport::text);
            if report.missing.len() > report.republished || !report.unreadable.is_empty() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn describe_decision(d: &PaymentDecision) -> String {
    if d.approved {
        format!(
            "payment {} COMPLETED, approval {}",
            d.payment_id,
            d.approval_number.as_deref().unwrap_or("-")
        )
    } else {
        format!(
            "payment {} FAILED: {} {}",
            d.payment_id,
            d.failure_code.as_deref().unwrap_or("-"),
            d.failure_message.as_deref().unwrap_or("")
        )
    }
}

/// One order's end-to-end result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    order_id: String,
    payment_id: String,
    approval_number: Option<String>,
    status: PaymentStage,
    failure_reason: Option<String>,
    elapsed_ms: u128,
    web_ui: String,
}

impl Report {
    fn new(
        decision: &PaymentDecision,
        outcome: &PaymentOutcome,
        elapsed: std::time::Duration,
        common: &CommonArgs,
        payflow: &Payflow,
    ) -> Self {
        Self {
            order_id: outcome.order_id.clone(),
            payment_id: decision.payment_id.clone(),
            approval_number: outcome.approval_number.clone(),
            status: outcome.stage,
            failure_reason: outcome
                .failure_reason
                .clone()
                .map(|r| format!("{r} ({})", outcome.failure_code.clone().unwrap_or_default())),
            elapsed_ms: elapsed.as_millis(),
            web_ui: payflow
                .payments
                .web_ui_link(&common.ui_url, &outcome.order_id),
        }
    }

    fn human(&self) -> String {
        let mut s = format!(
            "  order id         {}\n  payment id       {}\n  approval number  {}\n  final status     {}\n",
            self.order_id,
            self.payment_id,
            self.approval_number.as_deref().unwrap_or("-"),
            self.status,
        );
        if let Some(r) = &self.failure_reason {
            s.push_str(&format!("  reason           {r}\n"));
        }
        s.push_str(&format!(
            "  request -> final {} ms\n  web UI           {}",
            self.elapsed_ms, self.web_ui
        ));
        s
    }
}

/// The seed's two scenarios, plus a declined card.
async fn demo(common: &CommonArgs) -> anyhow::Result<()> {
    let payflow = common.payflow().await?;
    payflow.products.seed(&demo_catalogue()).await?;
    let item = |id: &str, quantity| OrderItem {
        product_id: id.into(),
        quantity,
    };
    let scenarios = [
        (
            "Scenario 1: card, 50,000 won",
            "USR-001",
            PaymentMethod::Card,
            vec![item("PRD-001", 2), item("PRD-002", 1)],
            None,
            PaymentStage::OrderCompleted,
        ),
        (
            "Scenario 2: KakaoPay, 30,000 won",
            "USR-002",
            PaymentMethod::KakaoPay,
            vec![item("PRD-003", 1)],
            None,
            PaymentStage::OrderCompleted,
        ),
        (
            "Scenario 3: card declined (insufficient funds), 50,000 won",
            "USR-003",
            PaymentMethod::Card,
            vec![item("PRD-001", 2), item("PRD-002", 1)],
            Some("tpk_decline_INSUFFICIENT_FUNDS".to_owned()),
            PaymentStage::OrderCancelled,
        ),
    ];
    let mut reports = Vec::new();
    let mut unexpected = Vec::new();
    for (title, user, method, items, key, expected) in scenarios {
        let order = payflow
            .create_order(user, &items, DEFAULT_RESERVATION_TTL_MS)
            .await?;
        let started = Instant::now();
        let decision = payflow
            .pay(Pay {
                order_id: order.order_id.clone(),
                payment_method: method,
                amount: order.total_amount,
                // A key belongs to one order: the sandbox's test key made this order's own.
                payment_key: key.map(|k| format!("{k}.{}", order.order_id)),
            })
            .await?;
        let outcome = payflow.payments.result(&order.order_id).await?;
        let report = Report::new(&decision, &outcome, started.elapsed(), common, &payflow);
        if !json_mode(common) {
            println!("{title}\n{}\n", report.human());
        }
        if outcome.stage != expected {
            unexpected.push(format!(
                "{}: {} (expected {expected})",
                order.order_id, outcome.stage
            ));
        }
        reports.push(report);
    }
    if json_mode(common) {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    anyhow::ensure!(unexpected.is_empty(), "unexpected outcomes: {unexpected:?}");
    Ok(())
}

fn json_mode(common: &CommonArgs) -> bool {
    common.json
}

async fn replay(common: &CommonArgs, args: ReplayArgs) -> anyhow::Result<()> {
    use crate::replay::{NamedHistory, Verdict, fetch, fetch_query, parse_history};
    let mut histories: Vec<NamedHistory> = Vec::new();
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        let history = parse_history(&bytes).with_context(|| format!("parse {}", file.display()))?;
        histories.push(NamedHistory {
            name: file.display().to_string(),
            history,
        });
    }
    if !args.workflow_ids.is_empty() || args.query.is_some() {
        let payments = PaymentClient::connect(&common.temporal).await?;
        for id in &args.workflow_ids {
            histories.push(fetch(payments.temporal(), id).await?);
        }
        if let Some(q) = &args.query {
            histories.extend(fetch_query(payments.temporal(), q, args.limit).await?);
        }
    }
    anyhow::ensure!(
        !histories.is_empty(),
        "nothing to replay: give files, --workflow-id or --query"
    );
    // A history whose payloads this process cannot decrypt would only fail with "failed to
    // create workflow"; say which key it needs instead.
    let keys = common.temporal.keys()?;
    let mut results = Vec::new();
    histories.retain(|h| {
        let missing: Vec<String> = crate::replay::encryption_key_ids(&h.history)
            .into_iter()
            .filter(|id| !keys.as_ref().is_some_and(|k| k.has(id)))
            .collect();
        if missing.is_empty() {
            return true;
        }
        results.push(crate::replay::ReplayResult {
            name: h.name.clone(),
            verdict: Verdict::Failed(format!(
                "its payloads are encrypted with key {}, which this process does not have: \
                 set PAYFLOW_CODEC_KEYS (or --codec-keys) to the keys the workers use",
                missing.join(", ")
            )),
        });
        false
    });
    if !histories.is_empty() {
        let data_converter = payflow_common::codec::data_converter(keys);
        results.extend(crate::replay::replay(histories, data_converter).await?);
    }
    let mut diverged = 0;
    for r in &results {
        match &r.verdict {
            Verdict::Replayed => println!("ok        {}", r.name),
            Verdict::Nondeterministic(m) => {
                diverged += 1;
                println!("DIVERGED  {}\n          {m}", r.name);
            }
            Verdict::Failed(m) => {
                diverged += 1;
                println!("FAILED    {}\n          {m}", r.name);
            }
        }
    }
    println!(
        "{} replayed, {} diverged or failed",
        results.len() - diverged,
        diverged
    );
    if diverged > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn serve(common: &CommonArgs, args: ServeArgs) -> anyhow::Result<()> {
    // Misconfiguration first: it fails at once, not after the dependencies came up.
    let keys: Vec<_> = args
        .api_keys
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "at least one API key is required (PAYFLOW_API_KEYS)"
    );
    let payflow = common.payflow_patiently().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    eprintln!("payflow API on http://{}", listener.local_addr()?);
    let state = crate::api::ApiState::with_codec(
        payflow,
        keys,
        common.temporal.keys()?,
        args.codec_tokens
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect(),
        args.codec_cors_origins,
    );
    crate::api::serve(
        listener,
        state,
        payflow_common::telemetry::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Registers payflow's search attributes the namespace lacks, and says what it did.
async fn search_attributes(common: &CommonArgs) -> anyhow::Result<()> {
    let payments = PaymentClient::connect(&common.temporal).await?;
    let added =
        crate::admin::register_search_attributes(payments.temporal(), &common.temporal.namespace())
            .await?;
    if added.is_empty() {
        println!("search attributes already registered");
    } else {
        println!("registered search attributes: {}", added.join(", "));
    }
    Ok(())
}
