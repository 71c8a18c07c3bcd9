//! The test harness: [`Stack::start`] gives each test its own payflow worker (on task queues
//! and Kafka topics with a unique prefix), its own PG/push sandbox on port 0, and handles to
//! the real Temporal, PostgreSQL, Redis and Kafka the test asserts against. Tests run in
//! parallel and never see each other's work.
//!
//! Infrastructure addresses come from the same variables the binaries read (`TEMPORAL_ADDRESS`,
//! `DATABASE_URL`, `REDIS_URL`, `KAFKA_BOOTSTRAP_SERVERS`); `make test` brings it up.

#![warn(missing_docs)]

pub mod chaos;

use anyhow::Context;
use apache_avro::{Schema, reader::datum::GenericDatumReader, types::Value};
use base64::Engine;
use payflow_activities::{
    OrderStore, ProductStore, db,
    events::{Encoding, KafkaConfig, avro},
    product::Product,
    product::reservation::Reservations,
};
use payflow_common::config::{DatabaseArgs, KafkaArgs, RedisArgs, TemporalArgs, defaults};
use payflow_sandbox::{Delivery, OrderBooks, SandboxConfig};
use payflow_starter::{
    Payflow, PaymentClient,
    service::{CreatedOrder, DEFAULT_RESERVATION_TTL_MS, Pay},
};
use payflow_worker::{
    PayflowWorker,
    config::{PgArgs, PushArgs, Service, TuningArgs, WorkerConfig},
};
use payflow_workflows::types::{
    EventType, OrderItem, PaymentDecision, PaymentMethod, PaymentOutcome, SagaTimings,
};
use sqlx::PgPool;
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// Where the infrastructure is.
pub fn temporal_address() -> String {
    std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| defaults::TEMPORAL_ADDRESS.into())
}
/// The payflow database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| defaults::DATABASE_URL.into())
}
/// Redis.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| defaults::REDIS_URL.into())
}
/// Kafka.
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .unwrap_or_else(|_| defaults::KAFKA_BOOTSTRAP_SERVERS.into())
}

/// Short timings so failure paths finish in seconds.
pub fn fast_timings() -> SagaTimings {
    SagaTimings {
        deadline_secs: 120,
        pg_timeout_secs: 3,
        stock_retry_secs: 1,
        refund_retry_secs: 1,
        late_charge_secs: 1,
        // Longer than any compensation step takes in a test unless something is away.
        stuck_step_secs: 20,
    }
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Timings given to the workflows this stack starts.
    pub timings: Option<SagaTimings>,
    /// Services the worker hosts (`None`: no worker).
    pub services: Option<Vec<Service>>,
    /// Serve worker metrics on a free port.
    pub metrics: bool,
    /// The sandbox's settings.
    pub sandbox: SandboxConfig,
    /// Payload encryption keys (`id:base64,...`), if any.
    pub codec_keys: Option<String>,
    /// How event values are framed.
    pub encoding: Encoding,
    /// Start with the schema registry away (its port refusing connections), so the worker
    /// cannot learn any schema id until the test brings it back.
    pub registry_down: bool,
    /// Start the worker with Kafka out of its reach (a closed port), until
    /// [`Stack::restore_kafka`].
    pub kafka_away: bool,
    /// The worker's Kafka, if not the test broker (librdkafka's in-process mock cluster, to
    /// answer what Tansu cannot be made to: a refused topic, say). Not with `kafka_away`;
    /// [`Stack::restore_kafka`] points the worker at the test broker.
    pub kafka_bootstrap: Option<String>,
    /// How long the worker waits for one PG answer (`PG_TIMEOUT_MS`).
    pub pg_request_timeout_ms: u64,
}

/// Every service a worker can host: what the default stack's worker runs.
pub const EVERY_SERVICE: [Service; 4] = [
    Service::Workflow,
    Service::Payment,
    Service::Product,
    Service::Order,
];

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            timings: Some(fast_timings()),
            services: Some(EVERY_SERVICE.to_vec()),
            metrics: false,
            sandbox: SandboxConfig {
                timeout_hold: Duration::from_secs(30),
                ..SandboxConfig::default()
            },
            codec_keys: None,
            encoding: Encoding::Confluent,
            registry_down: false,
            kafka_away: false,
            kafka_bootstrap: None,
            pg_request_timeout_ms: 2_000,
        }
    }
}

/// The stack's own schema registry (the dev registry, in process), which a test can take away
/// and bring back on the same port with the same state.
pub struct TestRegistry {
    /// Base URL.
    pub url: String,
    addr: SocketAddr,
    state: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestRegistry {
    /// A registry on a free port with a fresh state file, serving or (`serving == false`)
    /// refusing connections until [`restart`](Self::restart)ed.
    pub async fn start(serving: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = std::env::temp_dir().join(format!(
            "payflow-registry-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        let mut registry = Self {
            url: format!("http://{addr}"),
            addr,
            state,
            stop: None,
        };
        if serving {
            registry.serve(listener, &[])?;
        }
        Ok(registry)
    }

    fn serve(
        &mut self,
        listener: tokio::net::TcpListener,
        seed: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let registry = payflow_sandbox::registry::Registry::open(Some(self.state.clone()))?;
        for (subject, schema) in seed {
            registry.seed(subject, schema)?;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(payflow_sandbox::registry::run(listener, registry, async {
            let _ = stopped.await;
        }));
        self.stop = Some(stop);
        Ok(())
    }

    /// Takes the registry away (its port refuses connections).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Brings it back on the same port, with the schemas it had.
    pub async fn restart(&mut self) {
        self.restart_with(&[]).await;
    }

    /// Brings it back on the same port with the schemas it had and, registered before it
    /// answers anyone, `seed`'s `(subject, schema)` pairs.
    pub async fn restart_with(&mut self, seed: &[(&str, &str)]) {
        self.stop();
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener, seed).expect("registry restarts");
    }

    /// The writer schema with registry id `id`, as a deserializer fetches it.
    pub async fn schema(&self, id: u32) -> Option<String> {
        registry_schema(&self.url, id).await
    }

    /// The subjects it holds (`GET /subjects`).
    pub async fn subjects(&self) -> Vec<String> {
        reqwest::get(format!("{}/subjects", self.url))
            .await
            .expect("registry reachable")
            .json()
            .await
            .expect("a subject list")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.state);
    }
}

/// The decode-only credential of the test API's codec capability URL.
pub const CODEC_TOKEN: &str = "codec-test-token-3f1c";

/// An address nothing listens on: a port bound and released.
async fn closed_port() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.to_string())
}

/// A running worker in its own thread and Tokio runtime (the SDK worker is not `Send`).
struct WorkerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerThread {
    async fn start(config: WorkerConfig) -> anyhow::Result<(Self, Option<SocketAddr>)> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("payflow-worker".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("worker runtime");
                rt.block_on(async move {
                    match PayflowWorker::start(&config).await {
                        Ok(worker) => {
                            let _ = ready_tx.send(Ok(worker.metrics_addr()));
                            if let Err(e) = worker
                                .run(async {
                                    let _ = stop_rx.await;
                                })
                                .await
                            {
                                eprintln!("worker stopped with an error: {e:#}");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
            })?;
        let metrics = ready_rx
            .await
            .context("the worker thread died")?
            .map_err(|e| anyhow::anyhow!("worker did not start: {e}"))?;
        Ok((
            Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            metrics,
        ))
    }

    /// Stops the worker and waits for it to drain.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        // Signal only: a panicking test should not also wait for a drain.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One test's payflow: a worker, a sandbox, and handles on the real services.
pub struct Stack {
    /// Task queue and topic prefix unique to this stack.
    pub prefix: String,
    /// Orders and payments, as the API would use them.
    pub payflow: Payflow,
    /// The payflow database.
    pub pool: PgPool,
    /// Redis reservations.
    pub redis: Reservations,
    /// The sandbox's base URL.
    pub sandbox_url: String,
    /// Kafka settings of this stack (its own topics).
    pub kafka: KafkaConfig,
    /// This stack's schema registry.
    pub registry: TestRegistry,
    /// The worker's `/metrics`, if asked for.
    pub metrics_addr: Option<SocketAddr>,
    /// The worker configuration used.
    pub worker_config: WorkerConfig,
    worker: Option<WorkerThread>,
    sandbox_stop: Option<tokio::sync::oneshot::Sender<()>>,
    sandbox_addr: SocketAddr,
    sandbox_config: SandboxConfig,
    http: reqwest::Client,
}

impl Stack {
    /// A stack with every service and short timings.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// A stack without a worker: the test drives the activities (or the client) itself.
    pub async fn without_worker() -> Self {
        Self::start_with(StackOptions {
            services: None,
            ..StackOptions::default()
        })
        .await
    }

    /// A default stack whose workflows get `timings`.
    pub async fn start_with_timings(timings: SagaTimings) -> Self {
        Self::start_with(StackOptions {
            timings: Some(timings),
            ..StackOptions::default()
        })
        .await
    }

    /// A stack as asked.
    pub async fn start_with(options: StackOptions) -> Self {
        Self::try_start(options)
            .await
            .expect("start the test stack")
    }

    async fn try_start(options: StackOptions) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,apache_avro=error".into()),
            )
            .with_test_writer()
            .try_init();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t{}", &id[..10]);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sandbox_addr = listener.local_addr()?;
        let sandbox_url = format!("http://{sandbox_addr}");
        // The sandbox keeps its books in a journal of this stack's own, as the dev stack's does.
        let mut sandbox_config = options.sandbox.clone();
        sandbox_config.books = Some(std::env::temp_dir().join(format!("payflow-books-{id}.jsonl")));
        let sandbox_stop = serve_sandbox(listener, sandbox_config.clone());

        let mut temporal = TemporalArgs::local(&temporal_address(), &format!("{prefix}-"));
        if let Some(keys) = &options.codec_keys {
            temporal.codec_keys = keys.parse().expect("infallible");
        }
        let registry = TestRegistry::start(!options.registry_down).await?;
        let kafka_args = KafkaArgs {
            bootstrap_servers: kafka_bootstrap(),
            topic_prefix: format!("{prefix}."),
            topics: Vec::new(),
            partitions: 3,
            replication: 1,
            encoding: options.encoding,
            registry_url: registry.url.clone(),
            registry_user: None,
            registry_password: None,
            auto_register: true,
        };
        let mut worker_config = WorkerConfig {
            services: options.services.clone().unwrap_or_default(),
            migrate: true,
            noop: false,
            metrics_listen: if options.metrics {
                "127.0.0.1:0".into()
            } else {
                String::new()
            },
            health_listen: String::new(),
            sweep_interval_ms: 200,
            temporal: temporal.clone(),
            database: DatabaseArgs {
                url: database_url(),
                max_connections: 8,
            },
            redis: RedisArgs { url: redis_url() },
            kafka: kafka_args.clone(),
            pg: PgArgs {
                base_url: sandbox_url.clone(),
                secret_key: Some("test_sk_payflow".parse().expect("infallible")),
                timeout_ms: options.pg_request_timeout_ms,
            },
            push: PushArgs {
                base_url: sandbox_url.clone(),
                api_key: Default::default(),
            },
            tuning: TuningArgs::default(),
        };

        if options.kafka_away {
            worker_config.kafka.bootstrap_servers = closed_port().await?;
        }
        assert!(
            !(options.kafka_away && options.kafka_bootstrap.is_some()),
            "Kafka away or elsewhere, not both"
        );
        if let Some(bootstrap) = &options.kafka_bootstrap {
            worker_config.kafka.bootstrap_servers = bootstrap.clone();
        }
        let pool = db::connect(&database_url(), 8).await?;
        db::migrate(&pool).await?;
        let redis = Reservations::connect(&redis_url()).await?;
        let (worker, metrics_addr) = match &options.services {
            Some(s) if !s.is_empty() => {
                let (w, m) = WorkerThread::start(worker_config.clone()).await?;
                (Some(w), m)
            }
            _ => (None, None),
        };
        let payments = PaymentClient::connect(&temporal).await?;
        let payflow = Payflow {
            payments,
            orders: OrderStore::new(pool.clone()),
            payment_keys: payflow_activities::payment::keys::PaymentKeys::new(pool.clone()),
            payment_records: payflow_activities::payment::records::PaymentRecords::new(
                pool.clone(),
            ),
            products: ProductStore::new(redis.clone(), pool.clone()),
            timings: options.timings,
        };
        Ok(Self {
            prefix,
            payflow,
            pool,
            redis,
            sandbox_url,
            kafka: kafka_args.config().expect("topics of their own"),
            registry,
            metrics_addr,
            worker_config,
            worker,
            sandbox_stop: Some(sandbox_stop),
            sandbox_addr,
            sandbox_config,
            http: reqwest::Client::new(),
        })
    }

    /// Stops this stack's worker (waiting for it to drain), e.g. to restart it.
    pub fn stop_worker(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }

    /// Starts this stack's worker again with its configuration.
    pub async fn restart_worker(&mut self) {
        self.stop_worker();
        let (w, m) = WorkerThread::start(self.worker_config.clone())
            .await
            .expect("restart the worker");
        self.worker = Some(w);
        self.metrics_addr = m;
    }

    /// Restarts the worker with every service (after a test started it without one).
    pub async fn restart_worker_with_every_service(&mut self) {
        self.worker_config.services = EVERY_SERVICE.to_vec();
        self.restart_worker().await;
    }

    /// A producer on the stack's topics, with the worker's registry settings (what the audit
    /// republishes with).
    pub fn producer(&self) -> payflow_activities::EventActivities {
        let registry = self
            .worker_config
            .kafka
            .registry()
            .expect("registry config");
        payflow_activities::EventActivities::new(self.kafka.clone(), registry).expect("producer")
    }

    /// Terminates the payment workflow of `order_id`, as an operator can (`temporal workflow
    /// terminate`): it ends where it is, with no compensation.
    pub async fn terminate(&self, order_id: &str) -> anyhow::Result<()> {
        self.payflow
            .payments
            .temporal()
            .get_workflow_handle::<payflow_workflows::PaymentWorkflow>(
                payflow_workflows::payment_workflow_id(order_id),
            )
            .terminate(
                temporalio_client::WorkflowTerminateOptions::builder()
                    .reason("operator: terminated by a test".to_owned())
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Restarts the PG/push sandbox on its address: what it remembers is what its journal kept.
    pub async fn restart_sandbox(&mut self) {
        if let Some(stop) = self.sandbox_stop.take() {
            let _ = stop.send(());
        }
        let listener = loop {
            match tokio::net::TcpListener::bind(self.sandbox_addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.sandbox_stop = Some(serve_sandbox(listener, self.sandbox_config.clone()));
    }

    /// Gives the worker its Kafka back (it restarts with the real broker's address).
    pub async fn restore_kafka(&mut self) {
        self.worker_config.kafka.bootstrap_servers = kafka_bootstrap();
        self.restart_worker().await;
    }

    /// Serves the HTTP API (with the codec server, whose capability URL takes
    /// [`CODEC_TOKEN`]) on a free port; answers its base URL.
    pub async fn serve_api(&self, api_key: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = payflow_starter::api::ApiState::with_codec(
            self.payflow.clone(),
            vec![api_key.parse().expect("infallible")],
            self.worker_config.temporal.keys().expect("codec keys"),
            vec![CODEC_TOKEN.parse().expect("infallible")],
            vec!["http://localhost:8233".into()],
        );
        tokio::spawn(payflow_starter::api::serve(
            listener,
            state,
            std::future::pending(),
        ));
        base
    }

    /// Seeds products unique to this test, one per stock figure, priced 1,000 won × position.
    pub async fn products(&self, stocks: &[i32]) -> Vec<Product> {
        let products: Vec<Product> = stocks
            .iter()
            .enumerate()
            .map(|(i, stock)| Product {
                product_id: format!("{}-P{}", self.prefix.to_uppercase(), i + 1),
                name: format!("test product {}", i + 1),
                price: 1_000 * (i as i64 + 1),
                stock: *stock,
            })
            .collect();
        self.payflow
            .products
            .seed(&products)
            .await
            .expect("seed products");
        products
    }

    /// Creates an order of `(product, quantity)` lines with the default reservation time.
    pub async fn order(&self, user: &str, lines: &[(&Product, i32)]) -> CreatedOrder {
        self.order_with_ttl(user, lines, DEFAULT_RESERVATION_TTL_MS)
            .await
    }

    /// Creates an order whose reservation lasts `ttl_ms`.
    pub async fn order_with_ttl(
        &self,
        user: &str,
        lines: &[(&Product, i32)],
        ttl_ms: u64,
    ) -> CreatedOrder {
        let items: Vec<OrderItem> = lines
            .iter()
            .map(|(p, q)| OrderItem {
                product_id: p.product_id.clone(),
                quantity: *q,
            })
            .collect();
        self.payflow
            .create_order(user, &items, ttl_ms)
            .await
            .expect("create order")
    }

    /// Pays an order in full.
    pub async fn pay(
        &self,
        order: &CreatedOrder,
        method: PaymentMethod,
        payment_key: Option<&str>,
    ) -> PaymentDecision {
        self.payflow
            .pay(Pay {
                order_id: order.order_id.clone(),
                payment_method: method,
                amount: order.total_amount,
                payment_key: payment_key.map(str::to_owned),
            })
            .await
            .expect("pay")
    }

    /// Waits (bounded) for the payment's final state.
    pub async fn outcome(&self, order_id: &str) -> PaymentOutcome {
        within(
            Duration::from_secs(90),
            self.payflow.payments.result(order_id),
        )
        .await
        .expect("the payment finishes in time")
        .expect("the payment has a result")
    }

    /// What the sandbox PG did for an order.
    pub async fn books(&self, order_id: &str) -> OrderBooks {
        sandbox_books(&self.http, &self.sandbox_url, order_id)
            .await
            .expect("sandbox books")
    }

    /// Pushes the sandbox delivered to a user.
    pub async fn pushes(&self, user_id: &str) -> Vec<Delivery> {
        sandbox_pushes(&self.http, &self.sandbox_url, user_id)
            .await
            .expect("sandbox pushes")
    }

    /// Makes the sandbox's push gateway fail its next `n` pushes.
    pub async fn fail_pushes(&self, n: u32) {
        self.http
            .post(format!("{}/sandbox/config", self.sandbox_url))
            .json(&serde_json::json!({ "pushFailures": n }))
            .send()
            .await
            .expect("sandbox reachable");
    }

    /// Confirms a payment at the sandbox PG directly, as a system other than payflow would:
    /// at the PG, `payment_key` then belongs to `order_id`. Answers the HTTP status.
    pub async fn charge_at_pg(&self, order_id: &str, payment_key: &str, amount: i64) -> u16 {
        self.http
            .post(format!("{}/v1/payments/confirm", self.sandbox_url))
            .basic_auth("test_sk_payflow", Some(""))
            .header("Idempotency-Key", format!("outside-{order_id}"))
            .json(&serde_json::json!({
                "paymentKey": payment_key, "orderId": order_id, "amount": amount }))
            .send()
            .await
            .expect("sandbox reachable")
            .status()
            .as_u16()
    }

    /// Changes the sandbox's settings (`latencyMs`, `errorRate`, `timeoutHoldMs`, ...).
    pub async fn configure_sandbox(&self, settings: serde_json::Value) {
        self.http
            .post(format!("{}/sandbox/config", self.sandbox_url))
            .json(&settings)
            .send()
            .await
            .expect("sandbox reachable");
    }

    /// Lets the sandbox refund a `tpk_refund_fail*` payment from now on.
    pub async fn fix_refunds(&self, payment_key: &str) {
        self.http
            .post(format!(
                "{}/sandbox/payments/{payment_key}/fix-refunds",
                self.sandbox_url
            ))
            .send()
            .await
            .expect("sandbox reachable");
    }

    /// Every record on this stack's topics, as of now (read up to the high watermarks).
    pub async fn records(&self) -> Vec<Record> {
        read_records(&self.kafka, &self.registry.url).await
    }

    /// The records decoded by Confluent's own deserializer (Python `confluent_kafka`
    /// `AvroDeserializer`), reading each writer schema from this stack's registry by the id
    /// in the value: what the platform's Java consumers do. One result per record, in order;
    /// `Err` holds the deserializer's error.
    pub async fn decode_with_confluent(
        &self,
        records: &[Record],
    ) -> Vec<Result<serde_json::Value, String>> {
        let input: String = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "topic": r.topic,
                    "value": base64::engine::general_purpose::STANDARD.encode(&r.value),
                })
                .to_string()
                    + "\n"
            })
            .collect();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/confluent_decode.py");
        let mut child = tokio::process::Command::new(python())
            .arg(script)
            .arg(&self.registry.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the Confluent deserializer (scripts/install.sh installs confluent-kafka)");
        let mut stdin = child.stdin.take().expect("stdin");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, input.as_bytes())
            .await
            .expect("write records");
        drop(stdin);
        let output = child.wait_with_output().await.expect("deserializer ran");
        assert!(
            output.status.success(),
            "the Confluent deserializer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let decoded: Vec<Result<serde_json::Value, String>> =
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                    if v["ok"] == serde_json::Value::Bool(true) {
                        Ok(v["record"].clone())
                    } else {
                        Err(v["error"].as_str().unwrap_or_default().to_owned())
                    }
                })
                .collect();
        assert_eq!(decoded.len(), records.len(), "one result per record");
        decoded
    }

    /// The domain events of one order (saga tracker records aside), in publication order per
    /// topic.
    pub async fn events_of(&self, order_id: &str) -> Vec<Record> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r.key == order_id && r.ty() != EventType::SagaTracker)
            .collect()
    }

    /// The saga tracker records of one order, in the order they were published.
    pub async fn saga_records_of(&self, order_id: &str) -> Vec<Record> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r.key == order_id && r.ty() == EventType::SagaTracker)
            .collect()
    }

    /// Where one product's stock is.
    pub async fn ledger(&self, product_id: &str) -> Ledger {
        read_ledger(&self.pool, &self.redis, &redis_url(), product_id).await
    }

    /// Waits until Temporal's visibility lists exactly `n` workflows for `query` (a list
    /// filter over search attributes, as operators write it); `what` names it in a timeout.
    pub async fn wait_until_listed(&self, query: &str, n: usize, what: &str) {
        eventually(Duration::from_secs(20), what, || async {
            let count = self
                .payflow
                .payments
                .temporal()
                .count_workflows(query.to_owned(), Default::default())
                .await
                .ok()?
                .count();
            (count == n).then_some(())
        })
        .await;
    }

    /// An order's status in the `orders` table (`PAYMENT_WAIT`, `ORDER_COMPLETED`, ...).
    pub async fn order_status(&self, order_id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM orders.orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("the status of order {order_id}: {e}"))
    }

    /// An order's payment as the `payments` table holds it: status and failure code.
    pub async fn payment_failure(&self, order_id: &str) -> (String, Option<String>) {
        sqlx::query_as("SELECT status, failure_code FROM payment.payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("the payment of order {order_id}: {e}"))
    }

    /// One row as a JSON map: `SELECT row_to_json(t) FROM (query) t` with one bind.
    pub async fn row(&self, query: &str, bind: &str) -> serde_json::Map<String, serde_json::Value> {
        let value: serde_json::Value =
            sqlx::query_scalar(&format!("SELECT row_to_json(t) FROM ({query}) t"))
                .bind(bind)
                .fetch_one(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
        match value {
            serde_json::Value::Object(m) => m,
            other => panic!("not a row: {other}"),
        }
    }

    /// All rows of a query with one bind, as JSON maps.
    pub async fn rows(
        &self,
        query: &str,
        bind: &str,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let values: Vec<serde_json::Value> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t) FROM ({query}) t"))
                .bind(bind)
                .fetch_all(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
        values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Object(m) => m,
                other => panic!("not a row: {other}"),
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.sandbox_stop.take() {
            let _ = stop.send(());
        }
        if let Some(books) = &self.sandbox_config.books {
            let _ = std::fs::remove_file(books);
        }
    }
}

/// A PG/push sandbox of a test's own (in memory), for a worker process to talk to.
pub struct OwnSandbox {
    /// Its address, `host:port`.
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OwnSandbox {
    /// Serves a sandbox with the default settings on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("an address");
        Self {
            addr,
            _stop: serve_sandbox(listener, SandboxConfig::default()),
        }
    }

    /// Changes its settings (`secretKey`, `latencyMs`, ...), as `/sandbox/config` takes them.
    pub async fn configure(&self, settings: serde_json::Value) {
        reqwest::Client::new()
            .post(format!("http://{}/sandbox/config", self.addr))
            .json(&settings)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("sandbox reachable");
    }
}

/// Serves the sandbox on `listener` until the answered sender is used or dropped.
fn serve_sandbox(
    listener: tokio::net::TcpListener,
    config: SandboxConfig,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(payflow_sandbox::run(listener, config, async {
        let _ = stopped.await;
    }));
    stop
}

/// The writer schema a registry at `url` holds under `id`, as a deserializer fetches it.
pub async fn registry_schema(url: &str, id: u32) -> Option<String> {
    let body: serde_json::Value = reqwest::get(format!("{url}/schemas/ids/{id}"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["schema"].as_str().map(str::to_owned)
}

/// Every record on the event topics of `kafka`, as of now (read up to the high watermarks),
/// each with its writer schema fetched from the registry at `registry_url` by the id in the
/// value, as a Confluent deserializer does.
pub async fn read_records(kafka: &KafkaConfig, registry_url: &str) -> Vec<Record> {
    let mut records: Vec<Record> =
        payflow_activities::events::reader::read_event_topics(kafka, None, Duration::from_secs(60))
            .await
            .expect("read Kafka")
            .into_iter()
            .map(|r| Record {
                topic: r.topic,
                key: r.key,
                headers: r.headers,
                value: r.value,
                partition: r.partition,
                writer_schema: None,
            })
            .collect();
    let mut schemas: HashMap<u32, Option<String>> = HashMap::new();
    for record in &mut records {
        if let Some((id, _)) = avro::confluent_frame(&record.value) {
            if let std::collections::hash_map::Entry::Vacant(slot) = schemas.entry(id) {
                slot.insert(registry_schema(registry_url, id).await);
            }
            record.writer_schema = schemas[&id].clone();
        }
    }
    records
}

/// Where one product's stock is: Redis (at `redis_url`, read through `redis` too) and the
/// database.
pub async fn read_ledger(
    pool: &PgPool,
    redis: &Reservations,
    redis_url: &str,
    product_id: &str,
) -> Ledger {
    let available = redis.available(product_id).await.expect("redis");
    let mut conn = redis::Client::open(redis_url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut held = 0i64;
    for pattern in ["{payflow}:resv:*", "{payflow}:claimed:*"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("redis keys");
        for key in keys {
            let q: Option<i64> = redis::cmd("HGET")
                .arg(&key)
                .arg(format!("p:{product_id}"))
                .query_async(&mut conn)
                .await
                .expect("redis hget");
            held += q.unwrap_or(0);
        }
    }
    let (confirmed, db_stock): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE((SELECT SUM(quantity)::BIGINT FROM product.stock_reservations
                           WHERE product_id = $1 AND status = 'CONFIRMED'), 0),
                (SELECT stock::BIGINT FROM product.products WHERE product_id = $1)",
    )
    .bind(product_id)
    .fetch_one(pool)
    .await
    .expect("ledger query");
    Ledger {
        available,
        held,
        confirmed,
        db_stock,
    }
}

/// What the sandbox PG at `base` did for an order.
pub async fn sandbox_books(
    http: &reqwest::Client,
    base: &str,
    order_id: &str,
) -> reqwest::Result<OrderBooks> {
    http.get(format!("{base}/sandbox/orders/{order_id}"))
        .send()
        .await?
        .json()
        .await
}

/// The pushes the sandbox at `base` delivered to a user.
pub async fn sandbox_pushes(
    http: &reqwest::Client,
    base: &str,
    user_id: &str,
) -> reqwest::Result<Vec<Delivery>> {
    http.get(format!("{base}/sandbox/pushes?userId={user_id}"))
        .send()
        .await?
        .json()
        .await
}

/// An order's records with each event id once (first occurrence, in publication order per
/// topic). A repeated id must carry the same event: the same type and fields; `Err` names the
/// first that does not. Only the moments it was built may differ: a workflow task a killed
/// worker never completed runs again at a later workflow time, and builds its events again.
pub fn distinct(records: Vec<Record>) -> Result<Vec<Record>, String> {
    let content = |r: &Record| {
        let mut fields = r.decode();
        for moment in ["eventTimestamp", "recordedAt", "confirmedAt"] {
            fields.remove(moment);
        }
        (r.ty(), format!("{fields:?}"))
    };
    let mut seen: BTreeMap<String, (EventType, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for record in records {
        let id = record.headers["eventId"].clone();
        match seen.get(&id) {
            Some(first) if *first != content(&record) => {
                return Err(format!("event id {id} repeated with another event"));
            }
            Some(_) => {}
            None => {
                seen.insert(id, content(&record));
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// The types of `records`, sorted.
pub fn types_of(records: &[Record]) -> Vec<String> {
    let mut types: Vec<String> = records.iter().map(|r| r.event_type().to_owned()).collect();
    types.sort();
    types
}

/// What an order's distinct records say: its domain event types (sorted) and its saga tracker
/// records as `(step, status)` in publication order.
pub fn event_path(records: &[Record]) -> (Vec<String>, Vec<(String, String)>) {
    let mut types: Vec<String> = records
        .iter()
        .filter(|r| r.ty() != EventType::SagaTracker)
        .map(|r| r.event_type().to_owned())
        .collect();
    types.sort();
    let saga = records
        .iter()
        .filter(|r| r.ty() == EventType::SagaTracker)
        .map(|r| {
            let fields = r.decode();
            (
                avro_str(&fields["step"]).to_owned(),
                avro_str(&fields["status"]).to_owned(),
            )
        })
        .collect();
    (types, saga)
}

/// Where a product's stock is. `available + held + confirmed` is the stock ever seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    /// Redis: free for new orders.
    pub available: i64,
    /// Redis: held by reservations (held or claimed).
    pub held: i64,
    /// Database: sold (confirmed reservation rows).
    pub confirmed: i64,
    /// Database: the product's permanent stock.
    pub db_stock: i64,
}

impl Ledger {
    /// (available, held, confirmed, database stock), for one comparison.
    pub fn counts(&self) -> (i64, i64, i64, i64) {
        (self.available, self.held, self.confirmed, self.db_stock)
    }

    /// The conservation total.
    pub fn total(&self) -> i64 {
        self.available + self.held + self.confirmed
    }
}

/// A Kafka record.
#[derive(Debug, Clone)]
pub struct Record {
    /// The topic.
    pub topic: String,
    /// The key (order id).
    pub key: String,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// The value bytes.
    pub value: Vec<u8>,
    /// The partition.
    pub partition: i32,
    /// The writer schema fetched from the registry by the value's id (Confluent framing).
    pub writer_schema: Option<String>,
}

impl Record {
    /// The `eventType` header.
    pub fn event_type(&self) -> &str {
        self.headers
            .get("eventType")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The event type named by the `eventType` header.
    pub fn ty(&self) -> EventType {
        EventType::ALL
            .into_iter()
            .find(|t| t.name() == self.event_type())
            .unwrap_or_else(|| panic!("unknown event type {:?}", self.event_type()))
    }

    /// The value decoded as a consumer would, as a field map: in the Confluent framing, with
    /// the writer schema the registry holds for the value's id (which must be the contract
    /// schema of the event type); in single-object encoding, after checking `C3 01` and the
    /// contract schema's fingerprint (pinned to Java's in payflow-activities' unit tests).
    pub fn decode(&self) -> BTreeMap<String, Value> {
        let ty = self.ty();
        let schema = contract_schema(ty);
        let mut datum = match avro::confluent_frame(&self.value) {
            Some((id, datum)) => {
                let writer = self
                    .writer_schema
                    .as_deref()
                    .unwrap_or_else(|| panic!("the registry has no schema {id}"));
                assert_eq!(
                    Schema::parse_str(writer).expect("registered schema parses"),
                    schema,
                    "schema {id} is not the contract's {ty:?}"
                );
                datum
            }
            None => {
                let header = avro::single_object_header(
                    &serde_json::from_str(&contract_schema_text(ty)).expect("schema JSON"),
                );
                self.value.strip_prefix(&header).unwrap_or_else(|| {
                    panic!("{ty:?} value is neither Confluent-framed nor single-object encoded")
                })
            }
        };
        match GenericDatumReader::builder(&schema)
            .build()
            .expect("reader")
            .read_value(&mut datum)
            .expect("decodes with the contract")
        {
            Value::Record(fields) => fields.into_iter().collect(),
            other => panic!("not a record: {other:?}"),
        }
    }
}

/// The contract schema of an event type, read from `events/avro/` (the contract's files).
pub fn contract_schema(ty: EventType) -> Schema {
    Schema::parse_str(&contract_schema_text(ty)).expect("contract schema parses")
}

/// The text of the contract schema file of an event type.
pub fn contract_schema_text(ty: EventType) -> String {
    let file = match ty {
        EventType::PaymentCompleted => "payment/PaymentCompleted.avsc",
        EventType::StockConfirmed => "order/StockConfirmed.avsc",
        EventType::PaymentFailed => "payment/PaymentFailed.avsc",
        EventType::PaymentCancelled => "payment/PaymentCancelled.avsc",
        EventType::StockConfirmationFailed => "saga/StockConfirmationFailed.avsc",
        EventType::OrderCancelled => "order/OrderCancelled.avsc",
        EventType::SagaTracker => "saga/SagaTracker.avsc",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/avro")
        .join(file);
    std::fs::read_to_string(&path).expect("contract schema file")
}

/// A sandbox test key made unique (`tpk_timeout` -> `tpk_timeout.3f9a1c0b`): a payment key
/// belongs to the first order it is presented for, and the database outlives test runs. The
/// sandbox picks its behaviour from the part before the `.`.
pub fn own_key(behaviour: &str) -> String {
    format!(
        "{behaviour}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Java's partition of a keyed record (`Utils.toPositive(Utils.murmur2(key)) % partitions`),
/// given the murmur2 hash Java computes for the key.
pub fn java_partition(java_murmur2: i32, partitions: i32) -> i32 {
    (java_murmur2 & 0x7fff_ffff) % partitions
}

/// Kafka's `Utils.murmur2` (Java), for keys whose hash no test pins.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Checks an order's records as the platform reads them, and answers its saga tracker
/// records as `(step, status)` in publication order:
/// - every record is on the contract's topic for its type (under this stack's prefix), on the
///   partition Java's murmur2 gives its key, the order id;
/// - every value decodes with Confluent's own deserializer through the registry, and with the
///   contract schema in Rust, with the `eventId` of its header and the order's id;
/// - every tracker record is a `PAYMENT_COMPLETION` saga keyed by the order, with the workflow
///   id and run id in its metadata, and no event id repeats.
pub async fn platform_view(stack: &Stack, order_id: &str) -> Vec<(String, String)> {
    let records: Vec<Record> = stack
        .records()
        .await
        .into_iter()
        .filter(|r| r.key == order_id)
        .collect();
    assert!(!records.is_empty(), "no records for {order_id}");
    let partitions = stack.kafka.partitions;
    let decoded = stack.decode_with_confluent(&records).await;
    let mut ids = std::collections::HashSet::new();
    let mut saga = Vec::new();
    for (record, confluent) in records.iter().zip(decoded) {
        let ty = record.ty();
        assert_eq!(
            record.topic,
            format!("{}{}", stack.kafka.topic_prefix, avro::kafka_topic(ty))
        );
        assert!(avro::kafka_topic(ty).starts_with("c4ang."));
        assert_eq!(
            record.partition,
            java_partition(murmur2(order_id.as_bytes()), partitions),
            "{ty:?} of {order_id} is not on Java's partition"
        );
        let confluent = confluent.unwrap_or_else(|e| {
            panic!("Confluent's deserializer refused {ty:?} of {order_id}: {e}")
        });
        let fields = record.decode();
        let event_id = &record.headers["eventId"];
        assert_eq!(confluent["eventId"], serde_json::json!(event_id));
        assert_eq!(avro_str(&fields["eventId"]), event_id);
        assert_eq!(confluent["orderId"], serde_json::json!(order_id));
        assert!(ids.insert(event_id.clone()), "event id {event_id} repeated");
        if ty == EventType::SagaTracker {
            assert_eq!(confluent["sagaId"], serde_json::json!(order_id));
            assert_eq!(confluent["sagaType"], "PAYMENT_COMPLETION");
            let metadata: serde_json::Value =
                serde_json::from_str(confluent["metadata"].as_str().expect("metadata"))
                    .expect("metadata is JSON");
            assert_eq!(
                metadata["workflowId"],
                serde_json::json!(payflow_workflows::ids::payment_workflow_id(order_id))
            );
            assert!(metadata["runId"].as_str().is_some_and(|r| !r.is_empty()));
            saga.push((
                confluent["step"].as_str().unwrap_or_default().to_owned(),
                confluent["status"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    saga
}

/// `[(step, status)]` from `&[("STEP", "STATUS")]`, to compare with [`platform_view`].
pub fn steps(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The saga tracker records of a payment that completed, in order.
pub const SUCCESS_STEPS: [(&str, &str); 6] = [
    ("PAYMENT_COMPLETION", "STARTED"),
    ("PAYMENT_COMPLETION", "COMPLETED"),
    ("STOCK_CONFIRMATION", "STARTED"),
    ("STOCK_CONFIRMATION", "COMPLETED"),
    ("ORDER_COMPLETION", "STARTED"),
    ("ORDER_COMPLETION", "COMPLETED"),
];

/// The saga tracker records of a payment the PG declined, in order.
pub const DECLINED_STEPS: [(&str, &str); 4] = [
    ("PAYMENT_COMPLETION", "STARTED"),
    ("PAYMENT_COMPLETION", "FAILED"),
    ("COMPENSATION_STOCK", "COMPENSATED"),
    ("COMPENSATION_ORDER", "COMPENSATED"),
];

/// The saga tracker records of a payment voided at the PG (no decision in time), in order.
pub const VOIDED_STEPS: [(&str, &str); 5] = [
    ("PAYMENT_COMPLETION", "STARTED"),
    ("PAYMENT_COMPLETION", "FAILED"),
    ("COMPENSATION_PAYMENT", "COMPENSATED"),
    ("COMPENSATION_STOCK", "COMPENSATED"),
    ("COMPENSATION_ORDER", "COMPENSATED"),
];

/// For every product: Redis available + held + confirmed in the DB = seeded, and the DB stock
/// is what was seeded minus what was sold.
pub async fn assert_conserved(stack: &Stack, products: &[Product]) {
    for p in products {
        let ledger = stack.ledger(&p.product_id).await;
        assert_eq!(
            ledger.total(),
            i64::from(p.stock),
            "{}: {ledger:?}",
            p.product_id
        );
        assert_eq!(
            ledger.db_stock,
            i64::from(p.stock) - ledger.confirmed,
            "{ledger:?}"
        );
    }
}

/// The Python that has Confluent's client (`scripts/install.sh` puts it in payflow's venv).
pub fn python() -> String {
    std::env::var("PAYFLOW_PYTHON").unwrap_or_else(|_| {
        let venv = format!(
            "{}/.local/share/payflow/venv/bin/python3",
            std::env::var("HOME").unwrap_or_default()
        );
        if std::path::Path::new(&venv).exists() {
            venv
        } else {
            "python3".to_owned()
        }
    })
}

/// A Kafka broker (Tansu, SQLite storage in a directory of its own) for a test that takes it
/// away; killed when dropped.
pub struct OwnBroker {
    /// `host:port` it listens and advertises on.
    pub address: String,
    child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl OwnBroker {
    /// Starts one on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let dir = std::env::temp_dir().join(format!("payflow-broker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let url = format!("tcp://{address}");
        let child = tokio::process::Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu (installed by scripts/install.sh)");
        eventually(Duration::from_secs(30), "the broker's port", || async {
            tokio::net::TcpStream::connect(&address).await.ok()
        })
        .await;
        Self {
            address,
            child,
            dir,
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the broker.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id().expect("the broker runs"), signal);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to process `pid`; panics if it cannot.
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `f` with a deadline.
pub async fn within<F: Future>(limit: Duration, f: F) -> Option<F::Output> {
    tokio::time::timeout(limit, f).await.ok()
}

/// Polls `check` until it answers `Some`, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The string in an Avro value.
pub fn avro_str(v: &Value) -> &str {
    match v {
        Value::String(s) => s,
        Value::Enum(_, s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

/// The live history of an order's payment replays against the current code. With
/// `PAYFLOW_RECORD_HISTORIES=<dir>` it is also saved there as `<name>.json`, exactly as
/// `temporal workflow show -o json` writes it (the golden histories of `tests/histories`).
pub async fn check_history(stack: &Stack, order_id: &str, name: &str) {
    let workflow_id = payflow_workflows::ids::payment_workflow_id(order_id);
    let history = payflow_starter::replay::fetch(stack.payflow.payments.temporal(), &workflow_id)
        .await
        .expect("fetch history");
    let results = payflow_starter::replay::replay(vec![history], Default::default())
        .await
        .expect("replay");
    assert_eq!(
        results[0].verdict,
        payflow_starter::replay::Verdict::Replayed,
        "the history of {workflow_id} must replay"
    );
    if let Ok(dir) = std::env::var("PAYFLOW_RECORD_HISTORIES") {
        let output = std::process::Command::new("temporal")
            .args([
                "workflow",
                "show",
                "--address",
                &temporal_address(),
                "-w",
                &workflow_id,
                "-o",
                "json",
            ])
            .output()
            .expect("run the temporal CLI");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = std::path::Path::new(&dir).join(format!("{name}.json"));
        std::fs::write(&path, output.stdout).expect("write the history");
    }
}

/// True once the saga's deadline (its timer summarised "saga deadline") has fired in the
/// history of an order's payment: the deadline's own record, not a guess from the clock.
pub async fn deadline_fired(stack: &Stack, order_id: &str) -> bool {
    timer_fates(stack, order_id, "saga deadline", TimersFrom::Start)
        .await
        .0
        > 0
}

/// Which timers [`timer_fates`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimersFrom {
    /// Every one.
    Start,
    /// Those started after the workflow was asked to cancel.
    CancelRequest,
}

/// How the timers of an order's payment whose summary contains `summary` ended, from its
/// history: (fired, cancelled).
pub async fn timer_fates(
    stack: &Stack,
    order_id: &str,
    summary: &str,
    from: TimersFrom,
) -> (usize, usize) {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let workflow_id = payflow_workflows::ids::payment_workflow_id(order_id);
    let Ok(named) =
        payflow_starter::replay::fetch(stack.payflow.payments.temporal(), &workflow_id).await
    else {
        return (0, 0);
    };
    let events = named.history.events;
    let from = match from {
        TimersFrom::Start => 0,
        TimersFrom::CancelRequest => events
            .iter()
            .position(|e| {
                matches!(
                    e.attributes,
                    Some(Attributes::WorkflowExecutionCancelRequestedEventAttributes(
                        _
                    ))
                )
            })
            .unwrap_or(events.len()),
    };
    let started: Vec<i64> = timers_started(&events[from..], summary)
        .map(|(e, _)| e.event_id)
        .collect();
    let ended = |fired: bool| {
        events
            .iter()
            .filter(|e| match &e.attributes {
                Some(Attributes::TimerFiredEventAttributes(a)) => {
                    fired && started.contains(&a.started_event_id)
                }
                Some(Attributes::TimerCanceledEventAttributes(a)) => {
                    !fired && started.contains(&a.started_event_id)
                }
                _ => false,
            })
            .count()
    };
    (ended(true), ended(false))
}

/// The durations, in whole seconds and in order, of the timers of an order's payment whose
/// summary contains `summary`, from its history.
pub async fn timer_durations(stack: &Stack, order_id: &str, summary: &str) -> Vec<i64> {
    let workflow_id = payflow_workflows::ids::payment_workflow_id(order_id);
    let Ok(named) =
        payflow_starter::replay::fetch(stack.payflow.payments.temporal(), &workflow_id).await
    else {
        return Vec::new();
    };
    timers_started(&named.history.events, summary)
        .map(|(_, started)| {
            started
                .start_to_fire_timeout
                .as_ref()
                .map_or(0, |d| d.seconds)
        })
        .collect()
}

/// The timers started among `events` whose summary contains `summary`.
fn timers_started<'a>(
    events: &'a [temporalio_common::protos::temporal::api::history::v1::HistoryEvent],
    summary: &'a str,
) -> impl Iterator<
    Item = (
        &'a temporalio_common::protos::temporal::api::history::v1::HistoryEvent,
        &'a temporalio_common::protos::temporal::api::history::v1::TimerStartedEventAttributes,
    ),
> + 'a {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    events.iter().filter_map(move |e| match &e.attributes {
        Some(Attributes::TimerStartedEventAttributes(started))
            if e.user_metadata
                .as_ref()
                .and_then(|m| m.summary.as_ref())
                .is_some_and(|s| String::from_utf8_lossy(&s.data).contains(summary)) =>
        {
            Some((e, started))
        }
        _ => None,
    })
}

/// A TCP gate in front of a service, for start-up and outage tests: open, it forwards every
/// connection to the service; closed, its port refuses connections and the connections it
/// carried are cut.
pub struct TcpGate {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TcpGate {
    /// A closed gate to `target` (`host:port`).
    pub async fn closed(target: &str) -> Self {
        let addr = closed_port()
            .await
            .expect("a free port")
            .parse()
            .expect("an address");
        Self {
            addr,
            target: target.to_owned(),
            stop: None,
        }
    }

    /// Opens the gate.
    pub async fn open(&mut self) {
        self.close();
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let target = self.target.clone();
        tokio::spawn(async move {
            let mut carried = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let target = target.clone();
                        carried.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            // Dropping the set cuts every connection the gate carried.
            carried.abort_all();
        });
        self.stop = Some(stop);
    }

    /// Closes the gate.
    pub fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.close();
    }
}

/// A payflow binary next to the running one (the workspace build makes them): beside a
/// binary in the profile directory, or one up from a test in its `deps/`.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("running binary");
    let dir = exe.parent().expect("target dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.join(name)
}

/// A command for one of the stack's programs with an environment of its own: only `PATH` and
/// `HOME` are inherited (`make test` exports the dev stack's settings, codec keys among them,
/// which are not the caller's), no metrics listener, and the tests' log filter.
pub fn bare_command(program: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_clear();
    for inherited in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(inherited) {
            command.env(inherited, value);
        }
    }
    command.env("PAYFLOW_METRICS_LISTEN", "").env(
        "RUST_LOG",
        "info,temporalio_sdk_core=warn,apache_avro=error",
    );
    command
}

/// Starts a payflow binary with `env` and nothing else of the caller's environment (no
/// metrics port, plain-text logs at info); answers the process (killed when dropped) and its
/// log lines, stdout and stderr.
pub fn spawn(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::from(bare_command(&binary(name)));
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for reader in [
        Box::pin(stdout) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
        Box::pin(stderr),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Waits (bounded) for a log line containing every one of `parts`; answers it.
pub async fn wait_for_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    parts: &[&str],
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if parts.iter().all(|p| line.contains(p)) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no log line with {parts:?}"),
    }
}

/// The sum of a Prometheus metric's samples whose line contains `labels`, in a scrape.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every log line of this test process, captured (`Logs::capture`).
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// Installs a subscriber with `filter` that keeps every line (no colours) for
    /// [`Logs::text`]. Once per test process.
    pub fn capture(filter: &str) -> Self {
        let logs = Self::default();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(logs.clone())
            .init();
        logs
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}
