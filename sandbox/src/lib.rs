//! The sandbox of the two external companies payflow talks to, speaking their HTTP shape:
//!
//! - **PG** (Toss-Payments-shaped): `POST /v1/payments/confirm`,
//!   `POST /v1/payments/{paymentKey}/cancel`, and the look-ups `GET /v1/payments/{paymentKey}`
//!   and `GET /v1/payments/orders/{orderId}`; basic auth with the secret key;
//!   `Idempotency-Key` semantics (same key, same answer, one charge). A payment key belongs to
//!   the order it was first confirmed for: confirming it for another order answers
//!   `400 ALREADY_PROCESSED_PAYMENT`.
//! - **Push gateway**: `POST /v1/push`, deduplicated by `Idempotency-Key`.
//!
//! Test keys drive every path (`paymentKey`):
//!
//! | key | behaviour |
//! | --- | --- |
//! | `tpk_decline_<CODE>` | declined with `CODE` (e.g. `INSUFFICIENT_FUNDS`), nothing charged |
//! | `tpk_timeout` | charges, then answers only after the hold time (default 120 s) |
//! | `tpk_late` | charges only after the late hold (default 60 s), even if the client has given up, then answers |
//! | `tpk_flaky_<n>` | answers 503 `n` times, then approves |
//! | `tpk_refund_fail` | approves; its cancels/refunds fail with 500 until fixed (`POST /sandbox/payments/{key}/fix-refunds`) |
//! | `*_uncancelable` (e.g. `tpk_timeout_uncancelable`) | as the key without the suffix; its cancels answer `403 NOT_CANCELABLE_PAYMENT` |
//! | anything else | approves |
//!
//! Everything from the first `.` of a key on is ignored when the behaviour is picked, so a test
//! makes a key its own with a suffix: `tpk_timeout.ORD-1`, `tpk_decline_EXPIRED_CARD.x7`.
//!
//! Inspection for tests and demos: `GET /sandbox/orders/{orderId}` (charges, cancellations,
//! payments), `GET /sandbox/pushes?userId=..`, `POST /sandbox/config` (`latencyMs`,
//! `errorRate`, `timeoutRate`, `timeoutHoldMs`, `lateRate`, `lateHoldMs`, `pushFailures`: the
//! next n pushes fail; `secretKey`: the merchant key from now on, as when the PG rotates it).
//! `timeoutRate` makes that share of new charges behave like `tpk_timeout`: charged, answered
//! only after the hold time (the network losing the PG's answer); `lateRate` makes that share
//! behave like `tpk_late` (the PG still working on the charge when payflow gives up).
//!
//! `run(listener, config, shutdown)` serves on a listener the caller bound (port 0 in tests).
//!
//! **Books that survive a restart** (`SandboxConfig::books`, `SANDBOX_BOOKS`): every change to the
//! books (a charge, a cancellation, a stored idempotent answer, a push) is appended to a journal
//! file, one JSON line, before the answer goes out, and replayed when the sandbox starts: as a
//! real PG does not forget a charge when it restarts. Without a file the books live in memory.
//!
//! The crate also holds [`registry`], the dev stack's stand-in for the Confluent Schema
//! Registry (binary `payflow-registry`).

#![warn(missing_docs)]

pub mod registry;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::Mutex};

/// Sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The merchant secret key the PG expects (basic auth user).
    pub secret_key: String,
    /// Added to every PG answer.
    pub latency: Duration,
    /// Probability (0..1) of an injected 503 on a PG call.
    pub error_rate: f64,
    /// Probability (0..1) that a new charge is answered only after `timeout_hold`.
    pub timeout_rate: f64,
    /// How long `tpk_timeout` holds its answer.
    pub timeout_hold: Duration,
    /// Probability (0..1) that a new charge behaves like `tpk_late`: charged only after
    /// `late_hold`, whether or not the client still waits.
    pub late_rate: f64,
    /// How long `tpk_late` takes to charge.
    pub late_hold: Duration,
    /// The journal file the books are kept in (`None`: in memory only).
    pub books: Option<std::path::PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            secret_key: "test_sk_payflow".into(),
            latency: Duration::ZERO,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_hold: Duration::from_secs(120),
            late_rate: 0.0,
            late_hold: Duration::from_secs(60),
            books: None,
        }
    }
}

/// A payment at the PG.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgPaymentRecord {
    payment_key: String,
    order_id: String,
    status: String,
    total_amount: i64,
    method: String,
    /// `None` until the PG approves (Toss answers `null`).
    approved_at: Option<String>,
    last_transaction_key: String,
    card: Value,
    cancels: Vec<Value>,
}

/// One push the gateway delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The idempotency key it came with.
    pub id: String,
    /// Recipient.
    pub user_id: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Extra data (the order id).
    pub data: Value,
}

/// One change to the books: a line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Entry {
    /// A payment as it now stands (charged, or cancelled).
    Payment { record: PgPaymentRecord },
    /// A charge of an order.
    Charge { order_id: String },
    /// A cancellation (void or refund) of an order's payment.
    Cancel { order_id: String },
    /// A final answer stored under an idempotency key.
    Answer {
        key: String,
        status: u16,
        body: Value,
    },
    /// How many times a flaky key has failed.
    Flaky { key: String, seen: u32 },
    /// A key whose refunds work now.
    RefundsFixed { payment_key: String },
    /// A push delivered.
    Push { delivery: Delivery },
}

/// The sequence number in a transaction key (`txn_000000000042`) or push id (`push-42`).
fn sequence_in(id: &str) -> u64 {
    id.trim_start_matches("txn_")
        .trim_start_matches("push-")
        .parse()
        .unwrap_or(0)
}

impl Books {
    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Payment { record } => {
                self.payments.insert(record.payment_key.clone(), record);
            }
            Entry::Charge { order_id } => *self.charges.entry(order_id).or_default() += 1,
            Entry::Cancel { order_id } => *self.cancels.entry(order_id).or_default() += 1,
            Entry::Answer { key, status, body } => {
                self.answers.insert(key, (status, body));
            }
            Entry::Flaky { key, seen } => {
                self.flaky_seen.insert(key, seen);
            }
            Entry::RefundsFixed { payment_key } => {
                self.refunds_fixed.insert(payment_key);
            }
            Entry::Push { delivery } => self.pushes.push(delivery),
        }
    }

    /// The highest sequence number the books hold.
    fn last_sequence(&self) -> u64 {
        let payments = self.payments.values().flat_map(|p| {
            std::iter::once(sequence_in(&p.last_transaction_key)).chain(
                p.cancels
                    .iter()
                    .map(|c| sequence_in(c["transactionKey"].as_str().unwrap_or_default())),
            )
        });
        let pushes = self.pushes.iter().map(|d| sequence_in(&d.id));
        payments.chain(pushes).max().unwrap_or(0)
    }
}

/// The books plus their journal.
struct Ledger {
    books: Books,
    journal: Option<std::fs::File>,
}

impl Ledger {
    /// Applies a change and appends it to the journal (before the caller answers anyone).
    fn record(&mut self, entry: Entry) {
        if let Some(file) = &mut self.journal {
            use std::io::Write;
            let mut line = serde_json::to_vec(&entry).expect("serializable");
            line.push(b'\n');
            // On disk before anyone hears the answer, as a PG's books would be.
            if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
                // The sandbox cannot keep its promise: stop rather than answer with amnesia.
                panic!("sandbox journal write failed: {e}");
            }
        }
        self.books.apply(entry);
    }
}

impl std::ops::Deref for Ledger {
    type Target = Books;
    fn deref(&self) -> &Books {
        &self.books
    }
}

impl std::ops::DerefMut for Ledger {
    fn deref_mut(&mut self) -> &mut Books {
        &mut self.books
    }
}

#[derive(Default)]
struct Books {
    payments: HashMap<String, PgPaymentRecord>,
    /// Stored final answers by idempotency key.
    answers: HashMap<String, (u16, Value)>,
    /// Real charges per order (approvals that moved money).
    charges: HashMap<String, u32>,
    /// Cancellations (voids and refunds) per order.
    cancels: HashMap<String, u32>,
    flaky_seen: HashMap<String, u32>,
    refunds_fixed: HashSet<String>,
    pushes: Vec<Delivery>,
    /// The next this many pushes fail with 503 (a push gateway outage).
    push_failures: u32,
}

struct Inner {
    config: std::sync::RwLock<SandboxConfig>,
    books: std::sync::Mutex<Ledger>,
    /// One lock per idempotency key: concurrent requests with one key are served one after
    /// the other, the later ones from the stored answer.
    key_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    sequence: AtomicU64,
}

/// The sandbox's shared state.
#[derive(Clone)]
pub struct Sandbox(Arc<Inner>);

impl Sandbox {
    /// A sandbox with empty books, or with the books its journal holds.
    pub fn new(config: SandboxConfig) -> std::io::Result<Self> {
        let mut books = Books::default();
        let journal = match &config.books {
            None => None,
            Some(path) => {
                // Bytes, not text: a crash can cut a line inside a multi-byte character, and
                // that line alone is lost, not the whole journal.
                let bytes = match std::fs::read(path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e),
                };
                for line in bytes.split(|b| *b == b'\n') {
                    // A line cut short by a crash is the only kind that cannot parse.
                    if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                        books.apply(entry);
                    }
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                // Whatever a crash cut short ends on its own line.
                std::io::Write::write_all(&mut file, b"\n")?;
                Some(file)
            }
        };
        let sequence = books.last_sequence() + 1;
        Ok(Self(Arc::new(Inner {
            config: std::sync::RwLock::new(config),
            books: std::sync::Mutex::new(Ledger { books, journal }),
            key_locks: Default::default(),
            sequence: AtomicU64::new(sequence),
        })))
    }

    fn config(&self) -> SandboxConfig {
        self.0.config.read().expect("config lock").clone()
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.books.lock().expect("books lock")
    }

    fn next(&self) -> u64 {
        self.0.sequence.fetch_add(1, Ordering::Relaxed)
    }

    async fn key_lock(&self, key: &str) -> Arc<Mutex<()>> {
        self.0
            .key_locks
            .lock()
            .await
            .entry(key.to_owned())
            .or_default()
            .clone()
    }
}

/// The sandbox's routes.
pub fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/payments/confirm", post(confirm))
        .route("/v1/payments/{payment_key}", get(payment_by_key))
        .route("/v1/payments/orders/{order_id}", get(payment_by_order))
        .route("/v1/payments/{payment_key}/cancel", post(cancel))
        .route("/v1/push", post(push))
        .route("/sandbox/orders/{order_id}", get(order_books))
        .route("/sandbox/pushes", get(pushes))
        .route(
            "/sandbox/payments/{payment_key}/fix-refunds",
            post(fix_refunds),
        )
        .route("/sandbox/config", post(set_config))
        .with_state(sandbox)
}

/// Serves until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: SandboxConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(Sandbox::new(config)?))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, code: &str, message: &str) -> (u16, Value) {
    (status.as_u16(), json!({ "code": code, "message": message }))
}

fn respond((status, body): (u16, Value)) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:", sandbox.config().secret_key));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn injected_error(config: &SandboxConfig) -> bool {
    config.error_rate > 0.0 && rand::random::<f64>() < config.error_rate
}

/// How a PG write let in by [`admit`] is answered: it holds the idempotency key's lock until
/// [`Reply::answer`] has stored the answer under the key.
struct Reply {
    key: Option<String>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// What every PG write does first, as the real PG: the secret key, then the body; a repeated
/// idempotency key (per `operation`) waits for the first request and gets its stored answer;
/// then the configured latency and injected failures. Answers the body, the configuration the
/// write runs under and how to reply; `Err` is the answer to give.
async fn admit<B>(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    body: Result<Json<B>, axum::extract::rejection::JsonRejection>,
    operation: &str,
) -> Result<(B, SandboxConfig, Reply), Response> {
    if !authorized(sandbox, headers) {
        return Err(respond(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_KEY",
            "invalid secret key",
        )));
    }
    let Ok(Json(body)) = body else {
        return Err(respond(error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "malformed body",
        )));
    };
    let key = idempotency_key(headers).map(|k| format!("{operation}:{k}"));
    let guard = match &key {
        Some(k) => Some(sandbox.key_lock(k).await.lock_owned().await),
        None => None,
    };
    if let Some(k) = &key
        && let Some(stored) = sandbox.books().answers.get(k).cloned()
    {
        return Err(respond(stored));
    }
    let config = sandbox.config();
    tokio::time::sleep(config.latency).await;
    if injected_error(&config) {
        return Err(respond(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "PROVIDER_ERROR",
            "injected failure",
        )));
    }
    Ok((body, config, Reply { key, _guard: guard }))
}

impl Reply {
    /// Gives `answer`, stored under the idempotency key (if the request had one) first.
    fn answer(self, sandbox: &Sandbox, answer: (u16, Value)) -> Response {
        if let Some(key) = self.key {
            sandbox.books().record(Entry::Answer {
                key,
                status: answer.0,
                body: answer.1.clone(),
            });
        }
        respond(answer)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmBody {
    payment_key: String,
    order_id: String,
    amount: i64,
}

async fn confirm(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Result<Json<ConfirmBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (body, config, reply) = match admit(&sandbox, &headers, body, "confirm").await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };

    // `lateRate` slows charges only: a card the PG declines is declined in time.
    let late = is_late_key(&body.payment_key)
        || (config.late_rate > 0.0
            && !behaviour(&body.payment_key).starts_with("tpk_decline_")
            && rand::random::<f64>() < config.late_rate
            && !sandbox.books().payments.contains_key(&body.payment_key));
    if late {
        // Meanwhile the PG holds the payment as Toss does between the customer's
        // authentication and the approval: `IN_PROGRESS`, nothing charged, not cancelable.
        in_progress(&sandbox, &body);
        // The PG finishes what it started whether or not the client still waits: a client that
        // gave up does not stop the charge. Retries under the same idempotency key wait for it.
        let pending = tokio::spawn(async move {
            tokio::time::sleep(config.late_hold).await;
            decide(&sandbox, &body, &config, reply).await
        });
        return pending.await.unwrap_or_else(|_| {
            respond(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "FAILED_INTERNAL_SYSTEM_PROCESSING",
                "the confirm did not finish",
            ))
        });
    }
    decide(&sandbox, &body, &config, reply).await
}

/// Decides a confirm and answers it (storing the answer under its idempotency key).
async fn decide(
    sandbox: &Sandbox,
    body: &ConfirmBody,
    config: &SandboxConfig,
    reply: Reply,
) -> Response {
    let Some(answer) = decide_confirm(sandbox, body, config).await else {
        return respond(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "PROVIDER_ERROR",
            "flaky PG",
        ));
    };
    reply.answer(sandbox, answer)
}

/// The PG's decision; `None` is a transient 503 (not stored under the idempotency key).
async fn decide_confirm(
    sandbox: &Sandbox,
    body: &ConfirmBody,
    config: &SandboxConfig,
) -> Option<(u16, Value)> {
    let key = body.payment_key.as_str();
    let behaviour = behaviour(key);
    if body.amount <= 0 {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "amount must be positive",
        ));
    }
    if let Some(code) = behaviour.strip_prefix("tpk_decline_") {
        let message = match code {
            "INSUFFICIENT_FUNDS" => "잔액이 부족합니다.",
            "CARD_LIMIT_EXCEEDED" => "카드 한도를 초과했습니다.",
            "INVALID_CARD" => "유효하지 않은 카드입니다.",
            "EXPIRED_CARD" => "유효기간이 만료된 카드입니다.",
            _ => "결제가 거절되었습니다.",
        };
        return Some(error(StatusCode::BAD_REQUEST, code, message));
    }
    if let Some(n) = behaviour
        .strip_prefix("tpk_flaky_")
        .and_then(|n| n.parse::<u32>().ok())
    {
        let mut books = sandbox.books();
        let seen = books.flaky_seen.get(key).copied().unwrap_or(0);
        if seen < n {
            books.record(Entry::Flaky {
                key: key.to_owned(),
                seen: seen + 1,
            });
            return None;
        }
    }
    {
        let existing = sandbox.books().payments.get(key).cloned();
        // A payment still in progress is the one this confirm approves.
        if let Some(existing) = existing.filter(|p| p.status != IN_PROGRESS) {
            if is_timeout_key(key) {
                // Every retry of a timing-out payment times out too.
                tokio::time::sleep(config.timeout_hold).await;
            }
            return Some(
                if existing.order_id == body.order_id && existing.status == "DONE" {
                    (200, serde_json::to_value(existing).expect("serializable"))
                } else {
                    error(
                        StatusCode::BAD_REQUEST,
                        "ALREADY_PROCESSED_PAYMENT",
                        "이미 처리된 결제 입니다.",
                    )
                },
            );
        }
    }

    // A real charge.
    let seq = sandbox.next();
    let record = PgPaymentRecord {
        payment_key: key.to_owned(),
        order_id: body.order_id.clone(),
        status: "DONE".into(),
        total_amount: body.amount,
        method: "카드".into(),
        approved_at: Some(
            chrono::Utc::now()
                .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("KST"))
                .to_rfc3339(),
        ),
        last_transaction_key: format!("txn_{seq:012}"),
        card: json!({ "approveNo": format!("{:08}", 30_000_000 + seq) }),
        cancels: vec![],
    };
    {
        let mut books = sandbox.books();
        books.record(Entry::Payment {
            record: record.clone(),
        });
        books.record(Entry::Charge {
            order_id: body.order_id.clone(),
        });
    }
    if is_timeout_key(key)
        || (config.timeout_rate > 0.0 && rand::random::<f64>() < config.timeout_rate)
    {
        // Charged, but the answer is lost in the network for a long while.
        tokio::time::sleep(config.timeout_hold).await;
    }
    Some((200, serde_json::to_value(record).expect("serializable")))
}

/// Toss's status of a payment the customer authenticated and the PG has not approved yet.
const IN_PROGRESS: &str = "IN_PROGRESS";

/// Records the payment a confirm is about to approve as [`IN_PROGRESS`] (unless the PG holds it
/// already).
fn in_progress(sandbox: &Sandbox, body: &ConfirmBody) {
    let mut books = sandbox.books();
    if books.payments.contains_key(&body.payment_key) {
        return;
    }
    books.record(Entry::Payment {
        record: PgPaymentRecord {
            payment_key: body.payment_key.clone(),
            order_id: body.order_id.clone(),
            status: IN_PROGRESS.into(),
            total_amount: body.amount,
            method: "카드".into(),
            approved_at: None,
            last_transaction_key: String::new(),
            card: Value::Null,
            cancels: vec![],
        },
    });
}

fn is_late_key(key: &str) -> bool {
    let key = behaviour(key);
    key == "tpk_late" || key.starts_with("tpk_late_")
}

fn is_timeout_key(key: &str) -> bool {
    let key = behaviour(key);
    key == "tpk_timeout" || key.starts_with("tpk_timeout_")
}

/// The part of a payment key that picks the sandbox's behaviour: up to the first `.`.
fn behaviour(key: &str) -> &str {
    key.split_once('.').map_or(key, |(b, _)| b)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelBody {
    cancel_reason: String,
    cancel_amount: Option<i64>,
}

async fn cancel(
    State(sandbox): State<Sandbox>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CancelBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (body, _, reply) = match admit(&sandbox, &headers, body, "cancel").await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let answer = {
        let mut books = sandbox.books();
        let fixed = books.refunds_fixed.contains(&payment_key);
        match books.payments.get(&payment_key).cloned() {
            None => Some(error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND_PAYMENT",
                "존재하지 않는 결제 정보 입니다.",
            )),
            Some(p) if p.status == "CANCELED" => Some(error(
                StatusCode::BAD_REQUEST,
                "ALREADY_CANCELED_PAYMENT",
                "이미 취소된 결제 입니다.",
            )),
            // Nothing to cancel before the approval.
            Some(p) if p.status == IN_PROGRESS => Some(error(
                StatusCode::FORBIDDEN,
                "NOT_CANCELABLE_PAYMENT",
                "취소 할 수 없는 결제 입니다.",
            )),
            Some(_) if behaviour(&payment_key).ends_with("_uncancelable") => Some(error(
                StatusCode::FORBIDDEN,
                "NOT_CANCELABLE_PAYMENT",
                "취소 할 수 없는 결제 입니다.",
            )),
            Some(_) if behaviour(&payment_key).starts_with("tpk_refund_fail") && !fixed => None,
            Some(mut p) => {
                let seq = format!("txn_{:012}", sandbox.next());
                p.status = "CANCELED".into();
                p.cancels.push(json!({
                    "transactionKey": seq,
                    "cancelAmount": body.cancel_amount.unwrap_or(p.total_amount),
                    "cancelReason": body.cancel_reason,
                    "canceledAt": chrono::Utc::now().to_rfc3339(),
                }));
                books.record(Entry::Cancel {
                    order_id: p.order_id.clone(),
                });
                books.record(Entry::Payment { record: p.clone() });
                Some((200, serde_json::to_value(p).expect("serializable")))
            }
        }
    };
    let Some(answer) = answer else {
        return respond(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FAILED_INTERNAL_SYSTEM_PROCESSING",
            "refund failed at the card company",
        ));
    };
    reply.answer(&sandbox, answer)
}

/// `GET /v1/payments/{paymentKey}`: the payment as the PG holds it.
async fn payment_by_key(
    State(sandbox): State<Sandbox>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&sandbox, &headers, |books| {
        books.payments.get(&payment_key).cloned()
    })
}

/// `GET /v1/payments/orders/{orderId}`: the payment of an order as the PG holds it.
async fn payment_by_order(
    State(sandbox): State<Sandbox>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&sandbox, &headers, |books| {
        books
            .payments
            .values()
            .find(|p| p.order_id == order_id)
            .cloned()
    })
}

fn lookup(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    find: impl FnOnce(&Books) -> Option<PgPaymentRecord>,
) -> Response {
    if !authorized(sandbox, headers) {
        return respond(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_KEY",
            "invalid secret key",
        ));
    }
    match find(&sandbox.books()) {
        Some(p) => respond((200, serde_json::to_value(p).expect("serializable"))),
        None => respond(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND_PAYMENT",
            "존재하지 않는 결제 정보 입니다.",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushBody {
    user_id: String,
    title: String,
    body: String,
    #[serde(default)]
    data: Value,
}

async fn push(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Json(body): Json<PushBody>,
) -> Response {
    let id = idempotency_key(&headers).unwrap_or_else(|| format!("push-{}", sandbox.next()));
    let mut books = sandbox.books();
    if books.push_failures > 0 {
        books.push_failures -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "code": "UNAVAILABLE", "message": "push gateway outage" })),
        )
            .into_response();
    }
    if !books.pushes.iter().any(|d| d.id == id) {
        books.record(Entry::Push {
            delivery: Delivery {
                id: id.clone(),
                user_id: body.user_id,
                title: body.title,
                body: body.body,
                data: body.data,
            },
        });
    }
    (StatusCode::OK, Json(json!({ "id": id }))).into_response()
}

/// What the PG did for one order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrderBooks {
    /// Approvals that moved money.
    pub charges: u32,
    /// Cancellations (voids and refunds) that moved money back.
    pub cancels: u32,
    /// Payments of this order, as the PG holds them.
    pub payments: Vec<Value>,
}

async fn order_books(
    State(sandbox): State<Sandbox>,
    Path(order_id): Path<String>,
) -> Json<OrderBooks> {
    let books = sandbox.books();
    Json(OrderBooks {
        charges: books.charges.get(&order_id).copied().unwrap_or(0),
        cancels: books.cancels.get(&order_id).copied().unwrap_or(0),
        payments: books
            .payments
            .values()
            .filter(|p| p.order_id == order_id)
            .map(|p| serde_json::to_value(p).expect("serializable"))
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushQuery {
    user_id: Option<String>,
}

async fn pushes(State(sandbox): State<Sandbox>, Query(q): Query<PushQuery>) -> Json<Vec<Delivery>> {
    let books = sandbox.books();
    Json(
        books
            .pushes
            .iter()
            .filter(|d| q.user_id.as_ref().is_none_or(|u| *u == d.user_id))
            .cloned()
            .collect(),
    )
}

async fn fix_refunds(
    State(sandbox): State<Sandbox>,
    Path(payment_key): Path<String>,
) -> StatusCode {
    sandbox.books().record(Entry::RefundsFixed { payment_key });
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigBody {
    latency_ms: Option<u64>,
    push_failures: Option<u32>,
    error_rate: Option<f64>,
    timeout_rate: Option<f64>,
    timeout_hold_ms: Option<u64>,
    late_rate: Option<f64>,
    late_hold_ms: Option<u64>,
    /// The merchant secret key from now on (the PG rotating it): requests with the old one are
    /// refused with `401 UNAUTHORIZED_KEY`.
    secret_key: Option<String>,
}

async fn set_config(State(sandbox): State<Sandbox>, Json(body): Json<ConfigBody>) -> StatusCode {
    if let Some(n) = body.push_failures {
        sandbox.books().push_failures = n;
    }
    let mut config = sandbox.0.config.write().expect("config lock");
    if let Some(ms) = body.latency_ms {
        config.latency = Duration::from_millis(ms);
    }
    if let Some(rate) = body.error_rate {
        config.error_rate = rate.clamp(0.0, 1.0);
    }
    if let Some(rate) = body.timeout_rate {
        config.timeout_rate = rate.clamp(0.0, 1.0);
    }
    if let Some(rate) = body.late_rate {
        config.late_rate = rate.clamp(0.0, 1.0);
    }
    if let Some(ms) = body.late_hold_ms {
        config.late_hold = Duration::from_millis(ms);
    }
    if let Some(ms) = body.timeout_hold_ms {
        config.timeout_hold = Duration::from_millis(ms);
    }
    if let Some(key) = body.secret_key {
        config.secret_key = key;
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "sandbox-books-{}-{:?}.jsonl",
            std::process::id(),
            std::thread::current().id()
        ))
    }

    #[test]
    fn the_books_and_the_sequence_come_back_from_the_journal() {
        let path = journal();
        let _ = std::fs::remove_file(&path);
        let config = SandboxConfig {
            books: Some(path.clone()),
            ..SandboxConfig::default()
        };
        let first = Sandbox::new(config.clone()).unwrap();
        let seq = first.next();
        let record = PgPaymentRecord {
            payment_key: "pk1".into(),
            order_id: "ORD-1".into(),
            status: "DONE".into(),
            total_amount: 5_000,
            method: "카드".into(),
            approved_at: Some("2026-11-24T00:00:00+09:00".into()),
            last_transaction_key: format!("txn_{seq:012}"),
            card: json!({}),
            cancels: vec![],
        };
        {
            let mut books = first.books();
            books.record(Entry::Payment { record });
            books.record(Entry::Charge {
                order_id: "ORD-1".into(),
            });
            books.record(Entry::Answer {
                key: "confirm:PAY-1".into(),
                status: 200,
                body: json!({ "paymentKey": "pk1" }),
            });
        }
        drop(first);
        // A crash cut the last line short, inside a Korean character (not valid UTF-8).
        let torn = &"{\"op\":\"payment\",\"method\":\"카드".as_bytes()[..31];
        assert!(std::str::from_utf8(torn).is_err());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, torn))
            .unwrap();

        let second = Sandbox::new(config.clone()).unwrap();
        assert!(second.next() > seq, "sequence numbers are never reused");
        {
            let books = second.books();
            assert_eq!(books.payments["pk1"].order_id, "ORD-1");
            assert_eq!(books.charges["ORD-1"], 1);
            assert_eq!(books.answers["confirm:PAY-1"].0, 200);
        }
        second.books().record(Entry::Cancel {
            order_id: "ORD-1".into(),
        });
        drop(second);
        let third = Sandbox::new(config).unwrap();
        assert_eq!(
            third.books().cancels["ORD-1"],
            1,
            "written after the torn line"
        );
        let _ = std::fs::remove_file(&path);
    }
}
