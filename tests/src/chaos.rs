//! The fault suite: payments paid through the real API by a client that retries (network
//! errors and 5xx, same order id), while the parts payflow runs on are killed, paused and
//! refused one after another, then checks from the outside that nothing was lost.
//!
//! Every part runs here as a process of its own on ports of its own, so SIGKILL is real and
//! other runs on the machine are not touched: a Temporal dev server (SQLite file), Tansu
//! (SQLite storage), Redis (append-only file), the schema registry, the PG/push sandbox (books
//! journal), the worker (all services) and `payflow serve`. PostgreSQL is the machine's, reached
//! through a [`TcpGate`] that can refuse connections and cut the open ones.
//!
//! After the load: every payment must be final; `payflow events audit --republish` finds (and
//! republishes) events a broker acknowledged and lost; then the checks: payment rows agree with
//! orders, net charge per order at the PG 1 if completed and 0 otherwise, no double refund,
//! stock conserved in the database and Redis, one push per order, every event and saga
//! tracker record of every order on its topic with repeats only of the same event id.
//!
//! `make chaos` runs [`Plan::full`] and writes RELIABILITY.md; `make test` runs
//! [`Plan::short`] (tests/tests/chaos.rs).

use crate::free_port;
use crate::{
    DECLINED_STEPS, Ledger, Record, SUCCESS_STEPS, TcpGate, VOIDED_STEPS, binary, database_url,
    distinct, event_path, read_ledger, read_records, sandbox_books, sandbox_pushes, steps,
};
use anyhow::Context;
use futures::StreamExt;
use payflow_activities::{
    ProductStore, db,
    events::{Encoding, KafkaConfig},
    product::Product,
    product::reservation::Reservations,
};
use payflow_common::config::{KafkaArgs, TemporalArgs};
use payflow_starter::client::PaymentClient;
use payflow_workflows::types::PaymentStage;
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// One fault, applied while payments are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the worker (every service), start it again at once.
    KillWorker,
    /// SIGKILL `payflow serve`, start it again after a second.
    KillApi,
    /// SIGKILL the Temporal dev server, start it again after a second.
    KillTemporal,
    /// SIGKILL the Kafka broker, start it again after a second.
    KillBroker,
    /// SIGKILL the PG/push sandbox, start it again after a second (its books are a journal).
    KillSandbox,
    /// Redis stopped (SIGSTOP) for the hold time: connections hang, then SIGCONT.
    PauseRedis,
    /// PostgreSQL refuses connections, and the open ones are cut, for the hold time.
    RefusePostgres,
    /// The PG answers 30 % of its calls with 503 for the hold time.
    PgErrors,
    /// The PG charges 30 % of new payments and answers only after 4 s (the worker gives up
    /// after 2 s and asks again), for the hold time.
    PgTimeouts,
    /// The PG takes 40 s to charge 30 % of new payments and charges them even after payflow
    /// gave up (30 s): the payment fails with `PG_TIMEOUT`, the void finds nothing, and the
    /// workflow's second look, 120 s later, must cancel the charge. For the hold time.
    PgLateCharges,
    /// The schema registry is down (SIGKILL) for the hold time.
    RegistryAway,
}

impl Fault {
    /// Every fault, in the order a run applies them.
    pub const ALL: [Fault; 11] = [
        Fault::KillWorker,
        Fault::PgErrors,
        Fault::KillApi,
        Fault::PauseRedis,
        Fault::KillTemporal,
        Fault::RefusePostgres,
        Fault::KillBroker,
        Fault::PgTimeouts,
        Fault::RegistryAway,
        Fault::KillSandbox,
        Fault::PgLateCharges,
    ];

    /// What it does, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::KillWorker => "worker SIGKILL + restart",
            Fault::KillApi => "API SIGKILL + restart",
            Fault::KillTemporal => "Temporal dev server SIGKILL + restart",
            Fault::KillBroker => "Kafka broker (Tansu) SIGKILL + restart",
            Fault::KillSandbox => "PG/push sandbox SIGKILL + restart",
            Fault::PauseRedis => "Redis paused (SIGSTOP)",
            Fault::RefusePostgres => "PostgreSQL refusing connections",
            Fault::PgErrors => "PG answers 30 % with 503",
            Fault::PgTimeouts => "PG times out on 30 % of charges",
            Fault::PgLateCharges => "PG charges 30 % only after payflow gave up",
            Fault::RegistryAway => "schema registry down",
        }
    }

    fn held(self) -> bool {
        matches!(
            self,
            Fault::PauseRedis
                | Fault::RefusePostgres
                | Fault::PgErrors
                | Fault::PgTimeouts
                | Fault::PgLateCharges
                | Fault::RegistryAway
        )
    }
}

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Payments paid.
    pub payments: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Quiet time before each fault.
    pub gap: Duration,
    /// How long a held fault (pause, refusal, PG trouble, registry away) lasts.
    pub hold: Duration,
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Where the parts keep their state and logs.
    pub dir: PathBuf,
}

impl Plan {
    /// The run of `make test`: every fault once but the broker's, short holds, 60 payments.
    /// The broker's kill is left to `make chaos`: Tansu on SQLite can wedge after a SIGKILL
    /// under load (RELIABILITY.md), a fault of the dev broker that CI must not gamble on.
    pub fn short(dir: PathBuf) -> Self {
        Self {
            payments: 60,
            concurrency: 8,
            gap: Duration::from_secs(2),
            hold: Duration::from_secs(3),
            faults: Fault::ALL
                .into_iter()
                .filter(|f| *f != Fault::KillBroker)
                .collect(),
            dir,
        }
    }

    /// The run of `make chaos`: every fault twice, 8 s holds, a few hundred payments.
    pub fn full(dir: PathBuf) -> Self {
        Self {
            payments: 400,
            concurrency: 16,
            gap: Duration::from_secs(4),
            hold: Duration::from_secs(8),
            faults: [Fault::ALL, Fault::ALL].concat(),
            dir,
        }
    }

    /// About how long the faults take, which the load is spread over.
    fn schedule(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| {
                self.gap
                    + if f.held() {
                        self.hold
                    } else {
                        Duration::from_secs(3)
                    }
            })
            .sum()
    }
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRun {
    /// Which.
    pub fault: Fault,
    /// When it began (since the load started).
    pub began: Duration,
    /// When it was over (the part back, or the fault lifted).
    pub lifted: Duration,
    /// Requests that failed (network error or 5xx) and were retried, from its start to the
    /// next fault's.
    pub retried: usize,
    /// The longest a request sent from its start to the next fault's waited for its decision
    /// (retries included).
    pub slowest: Option<Duration>,
    /// How long the first request sent after it was lifted took to be decided.
    pub first_after: Option<Duration>,
}

/// One check from the outside.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// How many orders (or products) it looked at.
    pub looked_at: usize,
    /// What broke it (empty: held).
    pub violations: Vec<String>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The plan's size.
    pub payments: usize,
    /// Orders completed.
    pub completed: usize,
    /// Orders cancelled (declined cards, and any other cancellation).
    pub cancelled: usize,
    /// Of the cancelled, those whose card was not a declining one.
    pub cancelled_unexpectedly: usize,
    /// Of those, the ones the PG charged after payflow gave up, cancelled by the workflow's
    /// second look (`lateChargeVoided`).
    pub late_charges_voided: usize,
    /// Requests retried by the client in all.
    pub retried: usize,
    /// The faults.
    pub faults: Vec<FaultRun>,
    /// From the load's start to the last decision.
    pub load_took: Duration,
    /// From the last decision to every payment final.
    pub settle_took: Duration,
    /// Events the audit found missing (acknowledged by the broker, not on the topic).
    pub audit_missing: usize,
    /// Events the audit published again.
    pub audit_republished: usize,
    /// Times the run's broker guard restarted a broker that took no record.
    pub broker_restarts: usize,
    /// The checks.
    pub checks: Vec<Check>,
    /// Where the parts' logs are.
    pub dir: PathBuf,
}

impl Report {
    /// Every check held.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.violations.is_empty())
    }

    /// The report for people (a Markdown table, also fine in a terminal).
    pub fn table(&self) -> String {
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let mut out = format!(
            "payments {}: completed {}, cancelled {} ({} not by a declined card, {} of them \
             charged late by the PG and cancelled by the second look); \
             client retries {}; load {}; all final {} later\n\
             audit: {} events missing from their topics, {} republished; \
             broker restarts by its guard: {}\n\n",
            self.payments,
            self.completed,
            self.cancelled,
            self.cancelled_unexpectedly,
            self.late_charges_voided,
            self.retried,
            secs(self.load_took),
            secs(self.settle_took),
            self.audit_missing,
            self.audit_republished,
            self.broker_restarts,
        );
        out.push_str(
            "| # | fault | at | lasted | failed requests (retried) | slowest decision | \
             first request after it |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for (i, f) in self.faults.iter().enumerate() {
            let or_none = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                f.fault.describe(),
                secs(f.began),
                secs(f.lifted.saturating_sub(f.began)),
                f.retried,
                or_none(f.slowest),
                or_none(f.first_after),
            ));
        }
        out.push_str("\n| check | looked at | held |\n| --- | --- | --- |\n");
        for c in &self.checks {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                c.looked_at,
                if c.violations.is_empty() {
                    "yes".to_owned()
                } else {
                    format!("**NO**: {} violations", c.violations.len())
                }
            ));
        }
        for c in &self.checks {
            for v in c.violations.iter().take(10) {
                out.push_str(&format!("\n- {}: {v}", c.name));
            }
        }
        out
    }
}

/// A part of the stack as a process of its own, which can be killed and started again.
struct Part {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl Part {
    fn new(
        name: &'static str,
        program: PathBuf,
        args: &[String],
        env: &[(&str, String)],
        dir: &Path,
    ) -> Self {
        Self {
            name,
            program,
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            dir: dir.to_owned(),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = crate::bare_command(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("start {} ({})", self.name, self.program.display()))?,
        );
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// The process exited by itself.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}

/// A port free a moment ago.
/// Waits until `addr` accepts connections, or fails after `limit`.
async fn wait_port(what: &str, addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until `part` (started) listens on `addr`, starting it again when it dies first, as a
/// supervisor would: the Temporal dev server picks its internal ports itself, and has been seen
/// to pick the one its own metrics listener holds and die at start, which left the run waiting
/// for it for good. Fails after three starts that did not listen within `limit` each.
async fn keep_listening(part: &mut Part, addr: &str, limit: Duration) -> anyhow::Result<()> {
    for start in 1..=3 {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !part.exited() {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "payflow-chaos: {} did not listen on {addr} (start {start}); starting it again",
            part.name
        );
        part.kill();
        part.start()?;
    }
    anyhow::bail!("{} did not listen on {addr} after three starts", part.name)
}

/// Waits until `url` answers 200, or fails after `limit`.
async fn wait_ready(what: &str, url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} was not ready at {url} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stack of one run.
struct Parts {
    temporal: Part,
    /// Shared with its guard ([`guard_broker`]).
    broker: Arc<tokio::sync::Mutex<Part>>,
    /// How often the guard restarted a broker that took no record.
    broker_restarts: Arc<AtomicUsize>,
    broker_guard: tokio::task::JoinHandle<()>,
    redis: Part,
    registry: Part,
    sandbox: Part,
    worker: Part,
    api: Part,
    postgres: TcpGate,
    temporal_address: String,
    kafka_address: String,
    redis_url: String,
    registry_url: String,
    sandbox_url: String,
    api_url: String,
    health_url: String,
}

const API_KEY: &str = "chaos-api-key";

impl Parts {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = |_: ()| free_port();
        let temporal_address = format!("127.0.0.1:{}", port(()));
        let kafka_address = format!("127.0.0.1:{}", port(()));
        let redis_port = port(());
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let registry_address = format!("127.0.0.1:{}", port(()));
        let sandbox_address = format!("127.0.0.1:{}", port(()));
        let api_address = format!("127.0.0.1:{}", port(()));
        let health_address = format!("127.0.0.1:{}", port(()));

        // PostgreSQL through a gate: the worker and the API use it, the checks do not.
        let direct = reqwest::Url::parse(&database_url()).context("DATABASE_URL")?;
        let target = format!(
            "{}:{}",
            direct.host_str().unwrap_or("127.0.0.1"),
            direct.port().unwrap_or(5432)
        );
        let mut postgres = TcpGate::closed(&target).await;
        postgres.open().await;
        let mut gated = direct.clone();
        gated
            .set_host(Some(&postgres.addr.ip().to_string()))
            .context("gate the database URL")?;
        gated
            .set_port(Some(postgres.addr.port()))
            .map_err(|()| anyhow::anyhow!("DATABASE_URL takes no port"))?;

        let s = |v: &str| v.to_owned();
        let mut temporal_args: Vec<String> = [
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--headless",
            "--log-level",
            "warn",
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=off",
        ]
        .map(s)
        .to_vec();
        let (_, temporal_port) = temporal_address.rsplit_once(':').expect("host:port");
        temporal_args.extend([
            "--port".into(),
            temporal_port.into(),
            "--http-port".into(),
            free_port().to_string(),
            "--metrics-port".into(),
            free_port().to_string(),
            "--db-filename".into(),
            dir.join("temporal.db").display().to_string(),
        ]);
        for dc in [
            "history.transferProcessorMaxPollRPS=1000",
            "history.timerProcessorMaxPollRPS=1000",
            "matching.numTaskqueueReadPartitions=1",
            "matching.numTaskqueueWritePartitions=1",
        ] {
            temporal_args.extend([s("--dynamic-config-value"), s(dc)]);
        }
        for (name, ty) in payflow_workflows::search::ALL {
            temporal_args.extend([s("--search-attribute"), format!("{name}={ty}")]);
        }
        let temporal = Part::new("temporal", "temporal".into(), &temporal_args, &[], dir);

        let broker = Part::new(
            "tansu",
            "tansu".into(),
            &[
                s("broker"),
                s("--listener-url"),
                format!("tcp://{kafka_address}"),
                s("--advertised-listener-url"),
                format!("tcp://{kafka_address}"),
                s("--storage-engine"),
                // Relative to the part's directory: Tansu reads `sqlite:///abs` as a relative path.
                s("sqlite://tansu.db"),
            ],
            &[("RUST_LOG", "warn".into())],
            dir,
        );
        let redis = Part::new(
            "redis",
            "redis-server".into(),
            &[
                s("--bind"),
                s("127.0.0.1"),
                s("--port"),
                redis_port.to_string(),
                s("--save"),
                s(""),
                s("--appendonly"),
                s("yes"),
                s("--appendfsync"),
                s("everysec"),
                s("--dir"),
                dir.display().to_string(),
            ],
            &[],
            dir,
        );
        let registry = Part::new(
            "registry",
            binary("payflow-registry"),
            &[],
            &[
                ("REGISTRY_LISTEN", registry_address.clone()),
                (
                    "REGISTRY_STATE",
                    dir.join("registry.json").display().to_string(),
                ),
            ],
            dir,
        );
        let sandbox = Part::new(
            "sandbox",
            binary("payflow-sandbox"),
            &[],
            &[
                ("SANDBOX_LISTEN", sandbox_address.clone()),
                (
                    "SANDBOX_BOOKS",
                    dir.join("books.jsonl").display().to_string(),
                ),
                ("SANDBOX_TIMEOUT_HOLD_SECS", "4".into()),
                ("SANDBOX_LATE_HOLD_SECS", "40".into()),
            ],
            dir,
        );
        let sandbox_url = format!("http://{sandbox_address}");
        let registry_url = format!("http://{registry_address}");
        let worker = Part::new(
            "worker",
            binary("payflow-worker"),
            &[],
            &[
                ("TEMPORAL_ADDRESS", temporal_address.clone()),
                ("DATABASE_URL", gated.to_string()),
                ("REDIS_URL", redis_url.clone()),
                ("KAFKA_BOOTSTRAP_SERVERS", kafka_address.clone()),
                ("SCHEMA_REGISTRY_URL", registry_url.clone()),
                ("PG_BASE_URL", sandbox_url.clone()),
                ("PG_SECRET_KEY", "test_sk_payflow".into()),
                ("PUSH_BASE_URL", sandbox_url.clone()),
                ("PG_TIMEOUT_MS", "2000".into()),
                ("PAYFLOW_SWEEP_INTERVAL_MS", "500".into()),
                ("PAYFLOW_HEALTH_LISTEN", health_address.clone()),
            ],
            dir,
        );
        let api = Part::new(
            "api",
            binary("payflow"),
            &[s("serve")],
            &[
                ("TEMPORAL_ADDRESS", temporal_address.clone()),
                ("DATABASE_URL", gated.to_string()),
                ("REDIS_URL", redis_url.clone()),
                ("PAYFLOW_API_LISTEN", api_address.clone()),
                ("PAYFLOW_API_KEYS", API_KEY.into()),
            ],
            dir,
        );
        let mut broker = broker;
        broker.start()?;
        let broker = Arc::new(tokio::sync::Mutex::new(broker));
        let broker_restarts = Arc::new(AtomicUsize::new(0));
        let mut parts = Self {
            temporal,
            broker_guard: guard_broker(
                broker.clone(),
                kafka_address.clone(),
                broker_restarts.clone(),
            ),
            broker,
            broker_restarts,
            redis,
            registry,
            sandbox,
            worker,
            api,
            postgres,
            temporal_address,
            kafka_address,
            redis_url,
            registry_url,
            sandbox_url,
            api_url: format!("http://{api_address}"),
            health_url: format!("http://{health_address}/readyz"),
        };
        for part in [
            &mut parts.temporal,
            &mut parts.redis,
            &mut parts.registry,
            &mut parts.sandbox,
            &mut parts.worker,
            &mut parts.api,
        ] {
            part.start()?;
        }
        let limit = Duration::from_secs(60);
        let temporal_address = parts.temporal_address.clone();
        keep_listening(&mut parts.temporal, &temporal_address, limit).await?;
        wait_port("Tansu", &parts.kafka_address, limit).await?;
        wait_port("Redis", &format!("127.0.0.1:{redis_port}"), limit).await?;
        wait_ready("the worker", &parts.health_url, Duration::from_secs(120)).await?;
        wait_ready("the API", &format!("{}/readyz", parts.api_url), limit).await?;
        Ok(parts)
    }

    fn kafka(&self) -> KafkaConfig {
        KafkaArgs {
            bootstrap_servers: self.kafka_address.clone(),
            topic_prefix: String::new(),
            topics: Vec::new(),
            partitions: 3,
            replication: 1,
            encoding: Encoding::Confluent,
            registry_url: self.registry_url.clone(),
            registry_user: None,
            registry_password: None,
            auto_register: true,
        }
        .config()
        .expect("topics of their own")
    }

    /// Configures the sandbox, asking again for a while if it does not answer (it may be coming
    /// back from a kill): a fault that was never switched on must not count as applied.
    async fn configure_sandbox(&self, settings: serde_json::Value) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let mut last = String::new();
        for _ in 0..20 {
            match http
                .post(format!("{}/sandbox/config", self.sandbox_url))
                .json(&settings)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("the sandbox refused {settings}: {last}")
    }

    /// Sets the sandbox's `setting` (a share of PG calls) to 30 % for `hold`, then back to 0.
    async fn sandbox_rate_for(&self, setting: &str, hold: Duration) -> anyhow::Result<()> {
        self.configure_sandbox(serde_json::json!({ setting: 0.3 }))
            .await?;
        tokio::time::sleep(hold).await;
        self.configure_sandbox(serde_json::json!({ setting: 0.0 }))
            .await
    }

    /// Applies a fault and lifts it.
    async fn apply(&mut self, fault: Fault, hold: Duration) -> anyhow::Result<()> {
        let down = Duration::from_secs(1);
        match fault {
            Fault::KillWorker => {
                self.worker.kill();
                self.worker.start()?;
            }
            Fault::KillApi => restart(&mut self.api, down).await?,
            Fault::KillTemporal => {
                restart(&mut self.temporal, down).await?;
                let address = self.temporal_address.clone();
                keep_listening(&mut self.temporal, &address, Duration::from_secs(60)).await?;
            }
            Fault::KillBroker => restart(&mut *self.broker.lock().await, down).await?,
            Fault::KillSandbox => restart(&mut self.sandbox, down).await?,
            Fault::RegistryAway => {
                self.registry.kill();
                // A worker started while the registry is away knows no schema id (a running one
                // has them all cached, and would not notice): its events wait for the registry.
                self.worker.kill();
                self.worker.start()?;
                tokio::time::sleep(hold).await;
                self.registry.start()?;
            }
            Fault::PauseRedis => {
                self.redis.signal("STOP");
                tokio::time::sleep(hold).await;
                self.redis.signal("CONT");
            }
            Fault::RefusePostgres => {
                self.postgres.close();
                tokio::time::sleep(hold).await;
                self.postgres.open().await;
            }
            Fault::PgErrors => {
                self.sandbox_rate_for("errorRate", hold).await?;
            }
            Fault::PgTimeouts => {
                self.sandbox_rate_for("timeoutRate", hold).await?;
            }
            Fault::PgLateCharges => {
                self.sandbox_rate_for("lateRate", hold).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.broker_guard.abort();
        // The aborted guard's clone of the broker goes only when the runtime drops the task:
        // stop the broker now, not at some later moment (or never, on `process::exit`).
        if let Ok(mut broker) = self.broker.try_lock() {
            broker.kill();
        }
    }
}

/// The dev stack's broker guard (`scripts/broker-guard.sh`) for the run's own broker: every
/// [`GUARD_EVERY`] it asks the broker to take a probe record, and when the broker has exited or
/// took none in three probes in a row, it stops it (SIGTERM, SIGKILL after 15 s) and starts it
/// again. Tansu on SQLite can wedge after a SIGKILL under load (RELIABILITY.md); the dev stack
/// heals that without a person, and so does the run, which counts the restarts.
fn guard_broker(
    broker: Arc<tokio::sync::Mutex<Part>>,
    address: String,
    restarts: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut misses = 0u32;
        loop {
            tokio::time::sleep(GUARD_EVERY).await;
            let took = payflow_activities::events::probe::probe(&address, GUARD_EVERY)
                .await
                .is_ok();
            misses = if took { 0 } else { misses + 1 };
            let mut part = broker.lock().await;
            if misses < 3 && !part.exited() {
                continue;
            }
            eprintln!(
                "payflow-chaos: the broker took no probe record {misses} times in a row (or \
                 exited); restarting it, as the dev stack's guard does"
            );
            // Only a broker still running is signalled: an exited one's pid may be another's.
            if part.child.is_some() && !part.exited() {
                part.signal("TERM");
                part.signal("CONT");
                let deadline = Instant::now() + Duration::from_secs(15);
                while !part.exited() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            part.kill();
            match part.start() {
                Ok(()) => {
                    restarts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => eprintln!("payflow-chaos: the broker did not start again: {e:#}"),
            }
            misses = 0;
        }
    })
}

/// How often the run's broker guard probes, and how long a probe may take (as the dev stack's).
const GUARD_EVERY: Duration = Duration::from_secs(5);

async fn restart(part: &mut Part, down: Duration) -> anyhow::Result<()> {
    part.kill();
    tokio::time::sleep(down).await;
    part.start()
}

/// What the client saw of one request.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    order: usize,
    sent: Duration,
    answered: Duration,
    /// A decision (approved, or declined for good).
    decided: bool,
}

/// An order the run pays.
#[derive(Debug, Clone)]
struct Paid {
    order_id: String,
    user_id: String,
    amount: i64,
    declines: bool,
}

/// The client: pays one order until it has a decision, retrying network errors and 5xx with
/// the same order id. Answers whether it was approved.
async fn pay(
    http: &reqwest::Client,
    api: &str,
    index: usize,
    order: &Paid,
    key: Option<String>,
    t0: Instant,
    log: &Mutex<Vec<Attempt>>,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let sent = t0.elapsed();
        let answer = http
            .post(format!("{api}/api/v1/payments"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({
                "orderId": order.order_id,
                "paymentMethod": "CARD",
                "amount": order.amount,
                "paymentKey": key,
            }))
            .send()
            .await;
        let status = answer.as_ref().map(|r| r.status().as_u16()).ok();
        let decided = matches!(status, Some(200) | Some(400));
        log.lock().expect("log").push(Attempt {
            order: index,
            sent,
            answered: t0.elapsed(),
            decided,
        });
        match status {
            Some(200) => return Ok(true),
            Some(400) => {
                let body: serde_json::Value = answer?.json().await?;
                anyhow::ensure!(
                    body["error"] == "PAYMENT_FAILED",
                    "{}: refused: {body}",
                    order.order_id
                );
                return Ok(false);
            }
            Some(s) if s < 500 && s != 429 => {
                anyhow::bail!("{}: answered {s}", order.order_id)
            }
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: no decision in 10 minutes",
            order.order_id
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Creates the run's orders through the API (before any fault).
async fn create_orders(
    http: &reqwest::Client,
    api: &str,
    products: &[Product],
    n: usize,
    run: &str,
) -> anyhow::Result<Vec<Paid>> {
    let mut orders = Vec::with_capacity(n);
    for i in 0..n {
        let user_id = format!("USR-{run}-{i}");
        let product = &products[i % products.len()];
        let quantity = 1 + (i % 3) as i32;
        let created: serde_json::Value = http
            .post(format!("{api}/api/v1/orders"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({
                "userId": user_id,
                "items": [{ "productId": product.product_id, "quantity": quantity }],
                "reservationTtlSecs": 3600,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        orders.push(Paid {
            order_id: created["orderId"]
                .as_str()
                .context("an order id")?
                .to_owned(),
            user_id,
            amount: created["totalAmount"].as_i64().context("a total")?,
            // Every sixth card is declined.
            declines: i % 6 == 5,
        });
    }
    Ok(orders)
}

/// Runs the plan: starts the parts, pays under faults, settles, audits and checks.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&plan.dir)?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let mut parts = Parts::start(&plan.dir).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?;

    // The checks read PostgreSQL directly and Redis themselves.
    let pool = db::connect(&database_url(), 4).await?;
    let redis = Reservations::connect(&parts.redis_url).await?;
    let products: Vec<Product> = (1..=3)
        .map(|i| Product {
            product_id: format!("CHAOS-{run}-P{i}"),
            name: format!("chaos product {i}"),
            price: 1_000 * i64::from(i),
            stock: 10_000,
        })
        .collect();
    ProductStore::new(redis.clone(), pool.clone())
        .seed(&products)
        .await?;
    let orders = create_orders(&http, &parts.api_url, &products, plan.payments, &run).await?;

    // The load, spread over the fault schedule, and the faults beside it.
    let t0 = Instant::now();
    let log = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let spacing = plan.schedule() / plan.payments.max(1) as u32;
    let api_url = parts.api_url.clone();
    let load = futures::stream::iter(orders.iter().enumerate())
        .map(|(i, order)| {
            let (http, api, log) = (http.clone(), api_url.clone(), log.clone());
            async move {
                tokio::time::sleep_until((t0 + spacing * i as u32).into()).await;
                let key = order
                    .declines
                    .then(|| format!("tpk_decline_INSUFFICIENT_FUNDS.{}", order.order_id));
                (order, pay(&http, &api, i, order, key, t0, &log).await)
            }
        })
        .buffer_unordered(plan.concurrency)
        .collect::<Vec<_>>();
    let faults = async {
        let mut runs = Vec::new();
        for &fault in &plan.faults {
            tokio::time::sleep(plan.gap).await;
            let began = t0.elapsed();
            parts.apply(fault, plan.hold).await?;
            runs.push((fault, began, t0.elapsed()));
        }
        anyhow::Ok(runs)
    };
    let (decisions, fault_runs) = futures::join!(load, faults);
    let fault_runs = fault_runs?;
    let load_took = t0.elapsed();

    let attempts = log.lock().expect("log").clone();
    // Each order's requests, first sent to decision (retries included).
    let mut by_request: Vec<(Duration, Duration)> = Vec::new();
    {
        let mut open: Option<Duration> = None;
        let mut sorted = attempts.clone();
        sorted.sort_by_key(|a| (a.order, a.sent));
        let mut current = usize::MAX;
        for a in sorted {
            if a.order != current {
                current = a.order;
                open = None;
            }
            let first = *open.get_or_insert(a.sent);
            if a.decided {
                by_request.push((first, a.answered));
            }
        }
    }
    let faults: Vec<FaultRun> = fault_runs
        .iter()
        .enumerate()
        .map(|(i, &(fault, began, lifted))| {
            let until = fault_runs
                .get(i + 1)
                .map_or(Duration::MAX, |&(_, next, _)| next);
            FaultRun {
                fault,
                began,
                lifted,
                retried: attempts
                    .iter()
                    .filter(|a| !a.decided && a.answered >= began && a.answered < until)
                    .count(),
                slowest: by_request
                    .iter()
                    .filter(|(sent, _)| *sent >= began && *sent < until)
                    .map(|(sent, decided)| *decided - *sent)
                    .max(),
                first_after: by_request
                    .iter()
                    .filter(|(sent, _)| *sent >= lifted)
                    .min_by_key(|(sent, _)| *sent)
                    .map(|(sent, decided)| *decided - *sent),
            }
        })
        .collect();

    // Every payment final.
    let settle = Instant::now();
    let mut checks = Vec::new();
    let mut client_errors = Vec::new();
    for (order, decision) in &decisions {
        if let Err(e) = decision {
            client_errors.push(format!("{}: {e:#}", order.order_id));
        }
    }
    checks.push(Check {
        name: "every payment decided (client)",
        looked_at: decisions.len(),
        violations: client_errors,
    });
    let temporal = TemporalArgs::local(&parts.temporal_address, "");
    let payments = PaymentClient::connect(&temporal).await?;
    let mut outcomes = Vec::new();
    let mut not_final = Vec::new();
    // One deadline for all: a stuck run fails in minutes, not minutes per order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for order in &orders {
        match tokio::time::timeout_at(deadline, payments.result(&order.order_id)).await {
            Ok(Ok(outcome)) => outcomes.push((order, outcome.stage)),
            Ok(Err(e)) => not_final.push(format!("{}: {e}", order.order_id)),
            Err(_) => not_final.push(format!(
                "{}: not final 5 minutes after the load",
                order.order_id
            )),
        }
    }
    let settle_took = settle.elapsed();
    checks.push(Check {
        name: "every payment final",
        looked_at: orders.len(),
        violations: not_final,
    });
    // Nothing the faults did needs a person: every flag raised on the way is down again.
    let flagged = payments
        .temporal()
        .count_workflows("NeedsAttention = true".to_owned(), Default::default())
        .await?
        .count();
    checks.push(Check {
        name: "no payment waiting for a person (NeedsAttention)",
        looked_at: orders.len(),
        violations: (flagged > 0)
            .then(|| format!("{flagged} payments with NeedsAttention = true"))
            .into_iter()
            .collect(),
    });

    // The audit lists payments through Temporal's visibility, which follows the closes a
    // little behind: wait until it lists them all.
    let closed = format!(
        "TaskQueue = '{}' AND ExecutionStatus != 'Running'",
        payments.queues().workflow
    );
    for _ in 0..60 {
        let listed = payments
            .temporal()
            .count_workflows(closed.clone(), Default::default())
            .await?
            .count();
        if listed as usize >= outcomes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Events a broker acknowledged and lost are found and published again.
    let audit = std::process::Command::new(binary("payflow"))
        .args(["events", "audit", "--since", "1h", "--republish", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEMPORAL_ADDRESS", &parts.temporal_address)
        .env("KAFKA_BOOTSTRAP_SERVERS", &parts.kafka_address)
        .env("SCHEMA_REGISTRY_URL", &parts.registry_url)
        .env("DATABASE_URL", database_url())
        .env("REDIS_URL", &parts.redis_url)
        .output()?;
    let audit_report: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap_or_default();
    let audit_missing = audit_report["missing"].as_array().map_or(0, Vec::len);
    let audit_republished = audit_report["republished"].as_u64().unwrap_or(0) as usize;
    let mut audit_violations = Vec::new();
    if !audit.status.success() {
        audit_violations.push(format!(
            "exit {}: {}",
            audit.status,
            String::from_utf8_lossy(&audit.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    let audited = audit_report["payments"].as_u64().unwrap_or(0) as usize;
    if audited < outcomes.len() {
        audit_violations.push(format!(
            "audited {audited} payments of the {} final ones",
            outcomes.len()
        ));
    }
    // Only a broker that was killed (by the plan or by its guard) may have lost what it
    // acknowledged: without such a kill, a missing event is payflow's own loss, which the
    // republishing must not hide.
    let broker_restarts = parts.broker_restarts.load(Ordering::Relaxed);
    if audit_missing > 0 && !plan.faults.contains(&Fault::KillBroker) && broker_restarts == 0 {
        audit_violations.push(format!(
            "{audit_missing} events missing though the broker was never killed: {}",
            audit_report["missing"]
        ));
    }
    checks.push(Check {
        name: "event audit ran (missing events republished)",
        looked_at: audit_report["expected"].as_u64().unwrap_or(0) as usize,
        violations: audit_violations,
    });

    // Orders the audit repaired: their republished records sit after the ones the broker kept.
    let repaired: std::collections::BTreeSet<String> = audit_report["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m[0].as_str().map(str::to_owned))
        .collect();
    let report_checks = check(&parts, &pool, &redis, &products, &outcomes, &repaired).await?;
    checks.extend(report_checks);

    let completed = outcomes
        .iter()
        .filter(|(_, s)| *s == PaymentStage::OrderCompleted)
        .count();
    let cancelled = outcomes
        .iter()
        .filter(|(_, s)| *s == PaymentStage::OrderCancelled)
        .count();
    let unexpected: Vec<&Paid> = outcomes
        .iter()
        .filter(|(o, s)| *s == PaymentStage::OrderCancelled && !o.declines)
        .map(|(o, _)| *o)
        .collect();
    // A run that cancels every payment, and gives every charge back cleanly, would pass every
    // check above: most payments that were not declined on purpose must complete.
    let declined = outcomes.iter().filter(|(o, _)| o.declines).count();
    checks.push(Check {
        name: "most payments not declined on purpose completed",
        looked_at: outcomes.len() - declined,
        violations: (completed == 0 || unexpected.len() * 2 > outcomes.len() - declined)
            .then(|| {
                format!(
                    "{completed} completed, {} cancelled though not declined",
                    unexpected.len()
                )
            })
            .into_iter()
            .collect(),
    });
    let mut late_charges_voided = 0;
    for order in &unexpected {
        if payments
            .status(&order.order_id)
            .await
            .is_ok_and(|s| s.late_charge_voided)
        {
            late_charges_voided += 1;
        }
    }
    Ok(Report {
        payments: plan.payments,
        completed,
        cancelled,
        cancelled_unexpectedly: unexpected.len(),
        late_charges_voided,
        retried: attempts.iter().filter(|a| !a.decided).count(),
        faults,
        load_took,
        settle_took,
        audit_missing,
        audit_republished,
        broker_restarts,
        checks,
        dir: plan.dir.clone(),
    })
}

/// The checks from the outside, over the final orders.
async fn check(
    parts: &Parts,
    pool: &sqlx::PgPool,
    redis: &Reservations,
    products: &[Product],
    outcomes: &[(&Paid, PaymentStage)],
    repaired: &std::collections::BTreeSet<String>,
) -> anyhow::Result<Vec<Check>> {
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut money = Vec::new();
    let mut refunds = Vec::new();
    let mut pushes = Vec::new();
    let mut events = Vec::new();
    let mut order_stock = Vec::new();
    let records: Vec<Record> = read_records(&parts.kafka(), &parts.registry_url).await;
    for (order, stage) in outcomes {
        let id = &order.order_id;
        let completed = *stage == PaymentStage::OrderCompleted;
        let (order_status, payment_status): (String, Option<String>) = sqlx::query_as(
            "SELECT o.status, p.status FROM orders.orders o
               LEFT JOIN payment.payments p ON p.order_id = o.order_id WHERE o.order_id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        let agree = if completed {
            order_status == "ORDER_COMPLETED" && payment_status.as_deref() == Some("COMPLETED")
        } else {
            order_status == "ORDER_CANCELLED"
                && matches!(payment_status.as_deref(), Some("FAILED" | "CANCELLED"))
        };
        if !agree {
            rows.push(format!(
                "{id}: workflow {stage:?}, order {order_status}, payment {payment_status:?}"
            ));
        }
        let lines: Vec<String> =
            sqlx::query_scalar("SELECT status FROM product.stock_reservations WHERE order_id = $1")
                .bind(id)
                .fetch_all(pool)
                .await?;
        let stock_right = if completed {
            !lines.is_empty() && lines.iter().all(|s| s == "CONFIRMED")
        } else {
            lines.iter().all(|s| s == "RELEASED" || s == "EXPIRED")
        };
        if !stock_right {
            order_stock.push(format!("{id}: {stage:?} with reservation lines {lines:?}"));
        }
        let books = sandbox_books(&http, &parts.sandbox_url, id).await?;
        let net = i64::from(books.charges) - i64::from(books.cancels);
        if net != i64::from(completed) {
            money.push(format!(
                "{id}: {stage:?} but charged {} and cancelled {} at the PG",
                books.charges, books.cancels
            ));
        }
        if books.cancels > 1 || books.charges > 1 {
            refunds.push(format!(
                "{id}: charged {} times, cancelled {} times",
                books.charges, books.cancels
            ));
        }
        let delivered = sandbox_pushes(&http, &parts.sandbox_url, &order.user_id)
            .await?
            .len();
        if delivered != 1 {
            pushes.push(format!("{id}: {delivered} pushes"));
        }
        let mine: Vec<Record> = records.iter().filter(|r| &r.key == id).cloned().collect();
        match distinct(mine) {
            Err(e) => events.push(format!("{id}: {e}")),
            Ok(mine) => {
                let (types, mut saga) = event_path(&mine);
                let in_order = |mut want: Vec<(String, String)>| {
                    if repaired.contains(id) {
                        // Republished records land after the kept ones: compare as sets.
                        want.sort();
                    }
                    want
                };
                if repaired.contains(id) {
                    saga.sort();
                }
                // The paths a payment of this run can take, each exactly as the platform's
                // flows list it: paid; declined; failed otherwise (PG errors or no decision in
                // time), voided at the PG when its outcome was unknown; approved, then undone
                // (a refund: no `order.cancelled`, which would return the stock twice).
                let right = if completed {
                    types == ["payment.completed", "stock.confirmed"]
                        && saga == in_order(steps(&SUCCESS_STEPS))
                } else if payment_status.as_deref() == Some("CANCELLED") {
                    types.iter().any(|t| t == "payment.completed")
                        && types.iter().any(|t| t == "payment.cancelled")
                        && !types
                            .iter()
                            .any(|t| t == "order.cancelled" || t == "stock.confirmed")
                        && saga.iter().any(|(_, status)| status == "COMPENSATED")
                } else {
                    types == ["order.cancelled", "payment.failed"]
                        // A declined card too, when its approval outlived the PG step
                        // (a worker or Temporal restart): voided first.
                        && (saga == in_order(steps(&DECLINED_STEPS))
                            || saga == in_order(steps(&VOIDED_STEPS)))
                };
                if !right {
                    events.push(format!(
                        "{id}: {stage:?} (payment {payment_status:?}, declines {}) with events \
                         {types:?}, saga {saga:?}",
                        order.declines
                    ));
                }
            }
        }
    }
    let mut stock = Vec::new();
    for p in products {
        let ledger: Ledger = read_ledger(pool, redis, &parts.redis_url, &p.product_id).await;
        if ledger.total() != i64::from(p.stock)
            || ledger.db_stock != i64::from(p.stock) - ledger.confirmed
            || ledger.held != 0
        {
            stock.push(format!("{}: {ledger:?} (seeded {})", p.product_id, p.stock));
        }
    }
    let n = outcomes.len();
    Ok(vec![
        Check {
            name: "payment rows agree with orders",
            looked_at: n,
            violations: rows,
        },
        Check {
            name: "net charge 1 if completed, 0 otherwise (PG books)",
            looked_at: n,
            violations: money,
        },
        Check {
            name: "no double charge or refund",
            looked_at: n,
            violations: refunds,
        },
        Check {
            name: "stock conserved (DB and Redis), nothing left held",
            looked_at: products.len(),
            violations: stock,
        },
        Check {
            name: "each order's stock sold if completed, given back otherwise",
            looked_at: n,
            violations: order_stock,
        },
        Check {
            name: "one push per order",
            looked_at: n,
            violations: pushes,
        },
        Check {
            name: "every event on its topic, repeats only of the same id",
            looked_at: n,
            violations: events,
        },
    ])
}
