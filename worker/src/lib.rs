//! The payflow worker: one process hosting any subset of the payment workflow and the three
//! services' activities, each on its own task queue.
//!
//! - [`config`]: the worker's configuration (clap + environment); what it shares with the
//!   `payflow` CLI (Temporal, databases, Kafka, the codec, health) is in `payflow-common`.
//! - [`PayflowWorker`]: starts what the configuration asks for; [`run_worker`] runs it until a
//!   shutdown future resolves (tests pass their own).
//!
//! A process hosting `payment` holds only the PG key and the database; `product` only Redis
//! and the database; `workflow` only Kafka. Scale any of them alone by starting more processes
//! with the same `--services`.

pub mod config;
pub mod noop;

use anyhow::Context;
use config::{Service, WorkerConfig};
use payflow_activities::{
    EventActivities, OrderActivities, PaymentActivities, ProductActivities, db,
    events::{KafkaConfig, registry::SchemaRegistry},
    metrics::Metrics,
    order::PushClient,
    payment::{self, pg::PgClient},
    product::reservation::Reservations,
};
use payflow_common::{config::until_available_reported, health};
use payflow_workflows::{PaymentWorkflow, queues::TaskQueues};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, metrics::CoreMeter,
    start_prometheus_metric_exporter,
};
use temporalio_sdk::{
    Runtime, Worker, WorkerOptions,
    runtime::{
        PollerBehavior, RuntimeOptions,
        worker_tuner::{FixedSizeSlotSupplier, TunerHolder},
    },
};

/// A started worker process: Temporal workers for the hosted services, plus the product
/// service's expiry sweeper and the checks of the stores they need.
pub struct PayflowWorker {
    workers: Vec<Worker>,
    /// The sweeper and the store checks: stopped with the workers.
    background: Vec<tokio::task::JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    _runtime: Runtime,
}

impl std::fmt::Debug for PayflowWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayflowWorker")
            .field("workers", &self.workers.len())
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl PayflowWorker {
    /// Connects to everything the hosted services need, applies migrations if asked, and
    /// registers the workers. A dependency that is away (Temporal, PostgreSQL, Redis; Kafka,
    /// the registry and the PG are waited for in the background) is waited for, logged, never a
    /// reason to exit; a configuration error (a bad URL or key) fails at once, and a PG or
    /// registry that refuses payflow's key is asked again for [`REFUSED_FOR`] first.
    pub async fn start(config: &WorkerConfig) -> anyhow::Result<Self> {
        let (runtime, metrics_addr, metrics) = runtime(config)?;
        db::check_url(&config.database.url).context("DATABASE_URL")?;
        Reservations::check_url(&config.redis.url).context("REDIS_URL")?;
        let pg_config = if config.hosts(Service::Payment) {
            Some(config.pg.config()?)
        } else {
            None
        };
        let push_config = if config.hosts(Service::Order) {
            Some(config.push.config()?)
        } else {
            None
        };
        let kafka_config = config.kafka.config()?;
        // The registry's settings too (its URL, a password without a user), before waiting
        // for anything.
        config.kafka.registry()?;
        let health = {
            let metrics = metrics.clone();
            health::Health::observed(Arc::new(move |dependency, up| {
                metrics.dependency(dependency, up)
            }))
        };
        if !config.health_listen.is_empty() {
            let listener = tokio::net::TcpListener::bind(&config.health_listen)
                .await
                .with_context(|| format!("PAYFLOW_HEALTH_LISTEN {}", config.health_listen))?;
            tracing::info!(addr = %listener.local_addr()?, "health endpoint listening");
            tokio::spawn(health::serve(listener, health.clone()));
        }
        let client = config
            .temporal
            .connect_patiently(&health)
            .await
            .context("connect to Temporal")?;
        let queues = TaskQueues::with_prefix(&config.temporal.task_queue_prefix);
        if config.noop {
            let worker = Self::start_noop(config, runtime, metrics_addr, client, &queues)?;
            health.started();
            return Ok(worker);
        }

        let needs_db = [Service::Payment, Service::Product, Service::Order]
            .iter()
            .any(|s| config.hosts(*s));
        let pool = if needs_db {
            let url = &config.database.url;
            let pool = until_available_reported(
                "PostgreSQL",
                &health,
                || db::prepare(url, config.database.max_connections, config.migrate),
                db::PrepareError::permanent,
            )
            .await
            .context("DATABASE_URL")?;
            Some(pool)
        } else {
            None
        };

        let mut workers = Vec::new();
        let mut background = Vec::new();
        let mut redis_checked = None;
        if config.hosts(Service::Workflow) {
            let kafka = kafka_config.clone();
            let events = EventActivities::new(kafka.clone(), config.kafka.registry()?)
                .context("Kafka producer")?
                .with_metrics(metrics.clone());
            check_registry(&events, &config.kafka.registry_url, &health).await?;
            // Kafka and the registry may be down while the worker starts: the workflows and
            // the other services run regardless, and publishing retries until they are back.
            tokio::spawn(prepare_events(
                kafka,
                config.kafka.registry()?,
                events.clone(),
                health.clone(),
            ));
            let mut options = worker_options(&queues.workflow, config, true);
            options
                .register_workflow::<PaymentWorkflow>()?
                .register_activities(events);
            workers.push(Worker::new(&runtime, client.clone(), options)?);
        }
        if config.hosts(Service::Payment) {
            let pool = pool.clone().expect("database pool");
            let pg_health = PgHealth::new(health.clone());
            let pg = PgClient::new(pg_config.clone().expect("checked above"))?
                .observe_credentials(pg_health.observer());
            check_pg(&pg, &pg_health).await?;
            background.push(spawn_pg_checks(pg.clone(), pg_health));
            let mut options = worker_options(&queues.payment, config, false);
            options.register_activities(
                PaymentActivities::new(pg, pool).with_metrics(metrics.clone()),
            );
            workers.push(Worker::new(&runtime, client.clone(), options)?);
        }
        if config.hosts(Service::Product) {
            let pool = pool.clone().expect("database pool");
            let url = &config.redis.url;
            let redis = until_available_reported(
                "Redis",
                &health,
                || Reservations::connect(url),
                Reservations::misconfigured,
            )
            .await
            .context("REDIS_URL")?;
            redis_checked = Some(redis.clone());
            let product = ProductActivities::new(redis, pool).with_metrics(metrics.clone());
            background.push(spawn_sweeper(
                product.clone(),
                Duration::from_millis(config.sweep_interval_ms),
            ));
            let mut options = worker_options(&queues.product, config, false);
            options.register_activities(product);
            workers.push(Worker::new(&runtime, client.clone(), options)?);
        }
        if config.hosts(Service::Order) {
            let pool = pool.clone().expect("database pool");
            let push = PushClient::new(push_config.clone().expect("checked above"))?;
            let mut options = worker_options(&queues.order, config, false);
            options.register_activities(
                OrderActivities::new(pool, push).with_metrics(metrics.clone()),
            );
            workers.push(Worker::new(&runtime, client.clone(), options)?);
        }
        anyhow::ensure!(!workers.is_empty(), "no services to host");
        let pool_checked = pool
            .as_ref()
            .map(|_| db::checker(&config.database.url))
            .transpose()
            .context("DATABASE_URL")?;
        background.push(spawn_store_checks(
            (client.clone(), config.temporal.clone()),
            pool_checked,
            redis_checked,
            health.clone(),
        ));
        health.started();
        tracing::info!(
            services = ?config.services,
            prefix = %config.temporal.task_queue_prefix,
            metrics = ?metrics_addr,
            "worker started"
        );
        Ok(Self {
            workers,
            background,
            metrics_addr,
            _runtime: runtime,
        })
    }

    fn start_noop(
        config: &WorkerConfig,
        runtime: Runtime,
        metrics_addr: Option<SocketAddr>,
        client: temporalio_client::Client,
        queues: &TaskQueues,
    ) -> anyhow::Result<Self> {
        let mut workers = Vec::new();
        for (service, queue) in [
            (Service::Workflow, &queues.workflow),
            (Service::Payment, &queues.payment),
            (Service::Product, &queues.product),
            (Service::Order, &queues.order),
        ] {
            if !config.hosts(service) {
                continue;
            }
            let mut options = worker_options(queue, config, service == Service::Workflow);
            if service == Service::Workflow {
                options.register_workflow::<PaymentWorkflow>()?;
            }
            options.register_activities(noop::NoopActivities);
            workers.push(Worker::new(&runtime, client.clone(), options)?);
        }
        tracing::info!(prefix = %config.temporal.task_queue_prefix, "worker started (no-op activities)");
        Ok(Self {
            workers,
            background: Vec::new(),
            metrics_addr,
            _runtime: runtime,
        })
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Polls until `shutdown` resolves, then drains in-flight tasks and stops. A worker that
    /// stops on its own (a fatal poll error) stops the others too and the process exits with
    /// its error: a process that kept serving some task queues and not others would look
    /// healthy while payments stall, and its supervisor would not restart it.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        use futures::StreamExt;
        let handles: Vec<_> = self.workers.iter().map(|w| w.shutdown_handle()).collect();
        let stop_all = || handles.iter().for_each(|h| h());
        let mut runs: futures::stream::FuturesUnordered<_> =
            self.workers.iter_mut().map(|w| w.run()).collect();
        let mut shutdown = std::pin::pin!(shutdown);
        let (mut stopping, mut failed) = (false, None);
        while !runs.is_empty() {
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    tracing::info!("shutting down");
                    stopping = true;
                    stop_all();
                }
                Some(result) = runs.next() => {
                    let result = match result {
                        Ok(()) if !stopping => Err(anyhow::anyhow!("a worker stopped unasked")),
                        other => other.map_err(anyhow::Error::from),
                    };
                    if let Err(e) = result {
                        if !stopping {
                            tracing::error!(error = %format!("{e:#}"), "a worker stopped; stopping the others");
                            stopping = true;
                            stop_all();
                        }
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        drop(runs);
        for task in self.background.drain(..) {
            task.abort();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Starts and runs a worker until `shutdown` resolves.
pub async fn run_worker(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    PayflowWorker::start(&config).await?.run(shutdown).await
}

fn runtime(config: &WorkerConfig) -> anyhow::Result<(Runtime, Option<SocketAddr>, Metrics)> {
    let mut bound = None;
    let mut metrics = Metrics::default();
    let telemetry = match config.metrics_addr()? {
        Some(addr) => {
            let server = start_prometheus_metric_exporter(
                PrometheusExporterOptions::builder()
                    .socket_addr(addr)
                    .build(),
            )
            .context("start the metrics exporter")?;
            bound = Some(server.bound_addr);
            let meter: Arc<dyn CoreMeter> = server.meter;
            metrics = Metrics::new(meter.clone());
            TelemetryOptions::builder().metrics(meter).build()
        }
        None => TelemetryOptions::builder().build(),
    };
    let options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok((Runtime::from_current_tokio(options)?, bound, metrics))
}

fn worker_options(queue: &str, config: &WorkerConfig, workflows: bool) -> WorkerOptions {
    let t = &config.tuning;
    let tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(t.workflow_task_slots))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(t.activity_slots))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(t.activity_slots))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
        .build();
    let builder = WorkerOptions::new(queue)
        .tuner(tuner)
        .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(t.activity_pollers))
        .graceful_shutdown_period(Duration::from_secs(10));
    if workflows {
        builder
            .max_cached_workflows(t.max_cached_workflows)
            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(t.workflow_pollers.max(2)))
            .build()
    } else {
        builder.max_cached_workflows(0).build()
    }
}

fn spawn_sweeper(product: ProductActivities, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = product.store().sweep_expired().await {
                tracing::warn!(error = %format!("{e:#}"), "expiry sweep failed");
            }
        }
    })
}

/// Creates the topics and, where it may (`SCHEMA_REGISTRY_AUTO_REGISTER`), registers the
/// schemas (retrying with backoff while Kafka or the registry is unavailable), then warms the
/// producer and looks the schema ids up: the first payment does not pay for
/// connecting. Then, for as long as the worker runs, asks the brokers and the registry every
/// few seconds whether they answer, so `/readyz` says `degraded` while either is away after
/// start too (the workflows run on; their events follow, and ids already known need no
/// registry).
async fn prepare_events(
    kafka: KafkaConfig,
    registry: Option<SchemaRegistry>,
    events: EventActivities,
    health: health::Health,
) {
    let mut wait = Duration::from_millis(500);
    loop {
        // Registering is `payflow admin setup`'s; the worker registers only where it may
        // (SCHEMA_REGISTRY_AUTO_REGISTER): credentials that may only read must not keep it
        // waiting. Either way the ids are looked up (and cached) by the warm-up below.
        let registering = registry.as_ref().filter(|r| r.auto_registers());
        match EventActivities::ensure_topics(&kafka, registering).await {
            Ok(()) => {
                health.up("Kafka and schema registry");
                break;
            }
            Err(e) => {
                health.waiting("Kafka and schema registry", format!("{e:#}"));
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "Kafka topics or schemas not ready; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    events.warm_up().await;
    let mut tick = tokio::time::interval(KAFKA_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Side by side: a registry that hangs does not delay the brokers' check.
        let (brokers, registry_answers) =
            tokio::join!(events.brokers(KAFKA_CHECK_EVERY), events.registry_answers());
        match brokers {
            Ok(_) => health.up("Kafka"),
            Err(e) => {
                health.waiting("Kafka", e.clone());
                tracing::warn!(error = %e, "Kafka brokers not answering; events wait in the workflows");
            }
        }
        match registry_answers {
            Some(Ok(())) => health.up(REGISTRY),
            Some(Err(e)) => {
                health.waiting(REGISTRY, e.to_string());
                tracing::warn!(error = %e, "schema registry not answering; known schema ids keep publishing");
            }
            None => {}
        }
    }
}

/// The PG's part of `/readyz` and `payflow_dependency_up`: `waiting` while the PG refuses
/// payflow's secret key (every answer tells, [`PgClient::observe_credentials`]) or is away (the
/// checks of [`spawn_pg_checks`]), `up` otherwise. The two are kept apart, so that a payment's
/// answer does not clear an outage the checks found, nor a check's answer a refused key.
#[derive(Clone)]
struct PgHealth {
    health: health::Health,
    state: Arc<std::sync::Mutex<PgState>>,
}

#[derive(Default)]
struct PgState {
    refused: Option<String>,
    away: Option<String>,
}

impl PgHealth {
    fn new(health: health::Health) -> Self {
        Self {
            health,
            state: Arc::default(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut PgState)) {
        let mut state = self.state.lock().expect("PG health lock");
        change(&mut state);
        match state.refused.as_ref().or(state.away.as_ref()) {
            Some(why) => self.health.waiting(PG, why.clone()),
            None => self.health.up(PG),
        }
    }

    /// What the PG's answers say of the key; logged when it changes, not on every payment.
    fn observer(&self) -> payment::pg::CredentialsObserver {
        let this = self.clone();
        Arc::new(move |credentials| {
            this.update(|state| match credentials {
                Ok(()) => {
                    if state.refused.take().is_some() {
                        tracing::info!("the PG takes payflow's secret key again");
                    }
                }
                Err(refused) => {
                    if state.refused.is_none() {
                        tracing::error!(
                            error = %refused,
                            "the PG refuses payflow's secret key: payments fail until PG_SECRET_KEY is right"
                        );
                    }
                    state.refused = Some(refused);
                }
            })
        })
    }

    /// The PG is away (`Some`, why) or answers (`None`).
    fn away(&self, why: Option<String>) {
        if let Some(why) = &why {
            tracing::warn!(dependency = PG, error = %why, "dependency not answering");
        }
        self.update(|state| state.away = why);
    }
}

/// Asks the PG at start whether it takes payflow's configuration (its secret key, and that a
/// PG answers at the base URL), so that a wrong key stops the worker instead of failing every
/// customer's payment; a refusal is asked again for [`REFUSED_FOR`] first. A PG that is away,
/// or answers that it cannot serve yet, is waited for in the background ([`spawn_pg_checks`]);
/// the payments it holds up retry on their own.
async fn check_pg(pg: &PgClient, health: &PgHealth) -> anyhow::Result<()> {
    use payment::pg::PgCheckError;
    let answer = unless_refused_throughout(PG, &health.health, || async {
        match tokio::time::timeout(STORE_CHECK_EVERY, pg.check()).await {
            Ok(Ok(())) => Ok(None),
            Ok(Err(PgCheckError::KeyRefused(e) | PgCheckError::NotAPg(e))) => Err(e),
            Ok(Err(PgCheckError::Away(e))) => Ok(Some(e)),
            Err(_) => Ok(Some(format!("no answer in {STORE_CHECK_EVERY:?}"))),
        }
    })
    .await;
    match answer {
        Ok(away) => {
            health.away(away);
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "the PG at {} refuses payflow's configuration: {e} (check PG_SECRET_KEY and PG_BASE_URL)",
            pg.shown_base_url()
        ),
    }
}

/// Asks the PG every [`PG_CHECK_EVERY`] whether it answers (the same look-up, within the PG
/// client's own timeout), so `/readyz` says `degraded` while it is away: twice without an
/// answer is an outage, as for Temporal. Whether it takes the key, every answer tells.
fn spawn_pg_checks(pg: PgClient, health: PgHealth) -> tokio::task::JoinHandle<()> {
    use payment::pg::PgCheckError;
    tokio::spawn(async move {
        let mut misses = 0u32;
        let mut tick = tokio::time::interval(PG_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pg.check().await {
                // A refusal of the key is an answer: the observer has it.
                Ok(()) | Err(PgCheckError::KeyRefused(_)) => {
                    misses = 0;
                    health.away(None);
                }
                Err(PgCheckError::Away(e) | PgCheckError::NotAPg(e)) => {
                    misses += 1;
                    if misses >= 2 {
                        health.away(Some(e));
                    }
                }
            }
        }
    })
}

/// The PG's name on `/readyz` and in `payflow_dependency_up`.
const PG: &str = "PG";

/// How often the worker asks whether the PG answers: a real PG meters its API, so less often
/// than the stores.
const PG_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Asks the schema registry at start whether it takes payflow's configuration (the look-up
/// it will make, [`EventActivities::registry_answers`]), so that credentials it refuses, or a
/// URL where no registry answers, stop the worker: the workflows would run on, but no event
/// would ever go out. A refusal is asked again for [`REFUSED_FOR`] first; a registry that is
/// away is waited for in the background ([`prepare_events`]).
async fn check_registry(
    events: &EventActivities,
    url: &str,
    health: &health::Health,
) -> anyhow::Result<()> {
    use payflow_activities::events::registry::RegistryError;
    let refused = std::cell::Cell::new(false);
    let answer = unless_refused_throughout(REGISTRY, health, || async {
        match tokio::time::timeout(STORE_CHECK_EVERY, events.registry_answers()).await {
            Ok(Some(Err(
                e @ RegistryError::Refused {
                    status: 401 | 403 | 404,
                    ..
                },
            ))) => {
                refused.set(true);
                Err(e.to_string())
            }
            Ok(Some(Ok(()))) => Ok(true),
            _ => Ok(false),
        }
    })
    .await;
    // A refusal that cleared is not left on `/readyz` until the background checks begin (which
    // report the registry once the topics and schemas are ready).
    if refused.get() && answer == Ok(true) {
        health.up(REGISTRY);
    }
    answer.map(|_| ()).map_err(|e| {
        anyhow::anyhow!(
            "the schema registry at {} refuses payflow's configuration: {e} (check \
             SCHEMA_REGISTRY_URL, SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD, and that \
             they may read payflow's subjects)",
            payflow_common::config::without_password(url)
        )
    })
}

/// Asks `ask` again while it answers that `dependency` refuses payflow's configuration (`Err`,
/// in the dependency's words), for up to [`REFUSED_FOR`]: a key still propagating, a proxy
/// without a route for a moment. The refusal if it lasted throughout; else the other answer.
async fn unless_refused_throughout<T, F, Fut>(
    dependency: &'static str,
    health: &health::Health,
    mut ask: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let since = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let refused = match ask().await {
            Ok(answer) => return Ok(answer),
            Err(refused) => refused,
        };
        if since.elapsed() >= REFUSED_FOR {
            return Err(refused);
        }
        health.waiting(dependency, refused.clone());
        tracing::warn!(
            dependency,
            error = %refused,
            retry_in_ms = pause.as_millis() as u64,
            "refused; asking again before giving up"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(8));
    }
}

/// How long a dependency may refuse payflow's configuration at start before the worker stops.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// The registry's name on `/readyz` and in `payflow_dependency_up`.
const REGISTRY: &str = "schema registry";

/// Asks Temporal, PostgreSQL and Redis (those the hosted services use) every
/// [`STORE_CHECK_EVERY`] whether they answer, so `/readyz` (`degraded`) and
/// `payflow_dependency_up` show an outage after start, as they do Kafka's; the workers and the
/// activities meanwhile retry on their own.
fn spawn_store_checks(
    temporal: (
        temporalio_client::Client,
        payflow_common::config::TemporalArgs,
    ),
    pool: Option<db::PgPool>,
    redis: Option<Reservations>,
    health: health::Health,
) -> tokio::task::JoinHandle<()> {
    async fn answers<T, E: std::fmt::Display>(
        check: impl Future<Output = Result<T, E>>,
    ) -> Result<(), String> {
        match tokio::time::timeout(STORE_CHECK_EVERY, check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {STORE_CHECK_EVERY:?}")),
        }
    }
    tokio::spawn(async move {
        let mut temporal_misses = 0u32;
        let mut tick = tokio::time::interval(STORE_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let postgres = async {
                match &pool {
                    Some(pool) => Some(answers(db::ping(pool)).await),
                    None => None,
                }
            };
            let redis = async {
                match &redis {
                    Some(redis) => Some(answers(redis.ping()).await),
                    None => None,
                }
            };
            let (client, args) = &temporal;
            let temporal = async { Some(answers(args.answers(client)).await) };
            let (temporal, postgres, redis) = tokio::join!(temporal, postgres, redis);
            // One slow answer from a busy server is not an outage: twice in a row is.
            let temporal = match temporal {
                Some(Err(e)) => {
                    temporal_misses += 1;
                    (temporal_misses >= 2).then_some(Err(e))
                }
                answer => {
                    temporal_misses = 0;
                    answer
                }
            };
            for (dependency, answer) in [
                ("Temporal", temporal),
                ("PostgreSQL", postgres),
                ("Redis", redis),
            ] {
                match answer {
                    Some(Ok(())) => health.up(dependency),
                    Some(Err(e)) => {
                        tracing::warn!(dependency, error = %e, "dependency not answering");
                        health.waiting(dependency, e);
                    }
                    None => {}
                }
            }
        }
    })
}

/// How often the worker asks whether Temporal, PostgreSQL and Redis answer.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(3);

/// How often a workflow worker asks whether the Kafka brokers and the registry answer.
const KAFKA_CHECK_EVERY: Duration = Duration::from_secs(3);
