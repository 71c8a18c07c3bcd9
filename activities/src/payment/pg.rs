//! A client of a Toss-Payments-shaped PG:
//! `POST /v1/payments/confirm {paymentKey, orderId, amount}`,
//! `POST /v1/payments/{paymentKey}/cancel {cancelReason, cancelAmount?}` and the look-ups
//! `GET /v1/payments/orders/{orderId}` and `GET /v1/payments/{paymentKey}`; basic auth with the
//! secret key, and an `Idempotency-Key` on every write so a retry is the same request.
//!
//! The base URL is configuration: the sandbox in development and tests, the real PG in
//! production.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Decline codes: the card or wallet said no. Final, and the customer may pay another way.
pub const DECLINE_CODES: [&str; 4] = [
    "INSUFFICIENT_FUNDS",
    "CARD_LIMIT_EXCEEDED",
    "INVALID_CARD",
    "EXPIRED_CARD",
];

/// PG settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// e.g. `https://api.tosspayments.com` or the sandbox's address.
    pub base_url: String,
    /// The merchant secret key (basic auth user, empty password).
    pub secret_key: Secret,
    /// Per-request timeout; kept below the activity's start-to-close timeout so a hung PG
    /// surfaces as a retryable error.
    pub timeout: Duration,
}

/// What went wrong talking to the PG.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The PG declined the payment (one of [`DECLINE_CODES`]).
    #[error("{code}: {message}")]
    Declined {
        /// The PG's code.
        code: String,
        /// The PG's message.
        message: String,
    },
    /// The PG refused the request (another 4xx): retrying the same request cannot help, and
    /// nothing was charged by it.
    #[error("PG rejected the request ({status}) {code}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The PG's code.
        code: String,
        /// The PG's message.
        message: String,
    },
    /// 5xx, 408, 409 (the same idempotency key still in progress), 429, a timeout or a broken
    /// connection: the outcome is unknown, worth retrying with the same key.
    #[error("PG unavailable: {0}")]
    Unavailable(String),
}

impl PgError {
    /// The PG's code for a 4xx answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Declined { code, .. } | PgError::Rejected { code, .. } => Some(code),
            PgError::Unavailable(_) => None,
        }
    }
}

/// The PG's payment object (the fields payflow reads).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PgPayment {
    /// The payment key.
    pub payment_key: String,
    /// The order id.
    pub order_id: String,
    /// `DONE`, `CANCELED`, ...
    pub status: String,
    /// Amount in won.
    pub total_amount: i64,
    /// RFC 3339 time of approval.
    pub approved_at: Option<String>,
    /// Card details; holds the approval number for card payments.
    #[serde(default)]
    pub card: Option<PgCard>,
    /// The last transaction's key (the approval reference for non-card methods).
    #[serde(default)]
    pub last_transaction_key: Option<String>,
    /// Cancellations so far.
    #[serde(default)]
    pub cancels: Vec<PgCancel>,
}

impl PgPayment {
    /// The approval number: the card approval number, else the transaction key.
    pub fn approval_number(&self) -> Option<&str> {
        self.card
            .as_ref()
            .and_then(|c| c.approve_no.as_deref())
            .or(self.last_transaction_key.as_deref())
    }
}

/// Card details.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PgCard {
    /// The card approval number.
    pub approve_no: Option<String>,
}

/// One cancellation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PgCancel {
    /// The cancellation's transaction key.
    pub transaction_key: String,
    /// Amount cancelled.
    pub cancel_amount: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmBody<'a> {
    payment_key: &'a str,
    order_id: &'a str,
    amount: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CancelBody<'a> {
    cancel_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_amount: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// The PG client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgClient {
    http: reqwest::Client,
    config: PgConfig,
}

impl PgClient {
    /// Builds a client with a connection pool kept warm between payments.
    pub fn new(config: PgConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, config })
    }

    /// Confirms (approves) a payment. Same `idempotency_key`, same answer, one charge.
    pub async fn confirm(
        &self,
        idempotency_key: &str,
        payment_key: &str,
        order_id: &str,
        amount: i64,
    ) -> Result<PgPayment, PgError> {
        let url = format!("{}/v1/payments/confirm", self.config.base_url);
        let body = ConfirmBody {
            payment_key,
            order_id,
            amount,
        };
        self.post(&url, idempotency_key, &body).await
    }

    /// The payment the PG holds for an order, if any (`GET /v1/payments/orders/{orderId}`).
    pub async fn payment_of_order(&self, order_id: &str) -> Result<Option<PgPayment>, PgError> {
        let url = format!(
            "{}/v1/payments/orders/{}",
            self.config.base_url,
            urlencode(order_id)
        );
        self.get(&url).await
    }

    /// The payment the PG holds under a payment key, if any (`GET /v1/payments/{paymentKey}`).
    pub async fn payment_by_key(&self, payment_key: &str) -> Result<Option<PgPayment>, PgError> {
        let url = format!(
            "{}/v1/payments/{}",
            self.config.base_url,
            urlencode(payment_key)
        );
        self.get(&url).await
    }

    /// Cancels (voids or refunds) a payment; `amount` `None` cancels it in full.
    pub async fn cancel(
        &self,
        idempotency_key: &str,
        payment_key: &str,
        reason: &str,
        amount: Option<i64>,
    ) -> Result<PgPayment, PgError> {
        let url = format!(
            "{}/v1/payments/{}/cancel",
            self.config.base_url,
            urlencode(payment_key)
        );
        let body = CancelBody {
            cancel_reason: reason,
            cancel_amount: amount,
        };
        self.post(&url, idempotency_key, &body).await
    }

    async fn get(&self, url: &str) -> Result<Option<PgPayment>, PgError> {
        let request = self
            .http
            .get(url)
            .basic_auth(self.config.secret_key.expose(), Some(""));
        match Self::send(request).await {
            Ok(payment) => Ok(Some(payment)),
            Err(e) if e.code() == Some("NOT_FOUND_PAYMENT") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn post<B: Serialize>(
        &self,
        url: &str,
        idempotency_key: &str,
        body: &B,
    ) -> Result<PgPayment, PgError> {
        let request = self
            .http
            .post(url)
            .basic_auth(self.config.secret_key.expose(), Some(""))
            .header("Idempotency-Key", idempotency_key)
            .json(body);
        Self::send(request).await
    }

    async fn send(request: reqwest::RequestBuilder) -> Result<PgPayment, PgError> {
        let response = request
            .send()
            .await
            // Without the URL: reqwest's error would print it, and it holds the payment key.
            .map_err(|e| PgError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<PgPayment>()
                .await
                .map_err(|e| PgError::Unavailable(format!("unreadable answer: {}", describe(&e))));
        }
        if status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 429) {
            return Err(PgError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        let error = response.json::<ErrorBody>().await.unwrap_or(ErrorBody {
            code: "UNKNOWN".into(),
            message: format!("HTTP {}", status.as_u16()),
        });
        if DECLINE_CODES.contains(&error.code.as_str()) {
            Err(PgError::Declined {
                code: error.code,
                message: error.message,
            })
        } else {
            Err(PgError::Rejected {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            })
        }
    }
}

/// A reqwest error without its URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "decode failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// RFC 3339 to epoch milliseconds.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}
