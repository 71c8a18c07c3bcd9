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

/// Told, after each answer from the PG that says so, whether it took payflow's secret key:
/// `Err` with the PG's words for a `401` (or the PG's codes for a wrong key), `Ok` for a 2xx or
/// another 4xx with the PG's error object. A 5xx, 408, 409 or 429, or a 4xx whose body is not
/// the PG's, says nothing of the key.
pub type CredentialsObserver = std::sync::Arc<dyn Fn(Result<(), String>) + Send + Sync>;

/// The PG client. Cheap to clone.
#[derive(Clone)]
pub struct PgClient {
    http: reqwest::Client,
    config: PgConfig,
    credentials: Option<CredentialsObserver>,
}

impl std::fmt::Debug for PgClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the base URL: it could hold credentials of its own.
        f.debug_struct("PgClient").finish_non_exhaustive()
    }
}

/// The order the credentials check looks up: no order of payflow's has this id (theirs start
/// with `ORD-`), so the PG answers `404 NOT_FOUND_PAYMENT` when it takes the key.
pub const CREDENTIALS_CHECK_ORDER: &str = "payflow-credentials-check";

impl PgClient {
    /// Builds a client with a connection pool kept warm between payments.
    pub fn new(config: PgConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            config,
            credentials: None,
        })
    }

    /// Tells `observer` whether the PG takes the secret key, after each answer that says so.
    pub fn observe_credentials(mut self, observer: CredentialsObserver) -> Self {
        self.credentials = Some(observer);
        self
    }

    /// The PG's base URL as it may be shown: without any user or password in it (the basic
    /// auth user is the secret key).
    pub fn shown_base_url(&self) -> String {
        match reqwest::Url::parse(&self.config.base_url) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.as_str().trim_end_matches('/').to_owned()
            }
            Err(_) => "(not a URL)".to_owned(),
        }
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
        match self.send(request).await {
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
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<PgPayment, PgError> {
        let response = request
            .send()
            .await
            // Without the URL: reqwest's error would print it, and it holds the payment key.
            .map_err(|e| PgError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            self.observe(Ok(()));
            return response
                .json::<PgPayment>()
                .await
                .map_err(|e| PgError::Unavailable(format!("unreadable answer: {}", describe(&e))));
        }
        if says_nothing(status) {
            return Err(PgError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        let error = self
            .error_of(status, response)
            .await
            .unwrap_or_else(|| ErrorBody {
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

    /// Whether the PG answers and takes payflow's configuration, asked without touching any
    /// payment: a look-up of [`CREDENTIALS_CHECK_ORDER`], which the PG answers "no such
    /// payment" when it takes the key.
    pub async fn check(&self) -> Result<(), PgCheckError> {
        let url = format!(
            "{}/v1/payments/orders/{CREDENTIALS_CHECK_ORDER}",
            self.config.base_url
        );
        let response = self
            .http
            .get(&url)
            .basic_auth(self.config.secret_key.expose(), Some(""))
            .send()
            .await
            .map_err(|e| PgCheckError::Away(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            self.observe(Ok(()));
            return Ok(());
        }
        if says_nothing(status) {
            return Err(PgCheckError::Away(format!("HTTP {}", status.as_u16())));
        }
        let error = self.error_of(status, response).await;
        match error {
            _ if refuses_key(status, error.as_ref()) => {
                Err(PgCheckError::KeyRefused(refusal(status, error.as_ref())))
            }
            None => Err(PgCheckError::NotAPg(format!(
                "HTTP {} to a payment look-up, with no PG error in its body",
                status.as_u16()
            ))),
            // The PG's "no such payment", whatever its code, or its refusal of something else
            // (`PROVIDER_ERROR`, too many requests in a row): the PG answers, and took the key.
            Some(_) => Ok(()),
        }
    }

    /// The PG's error object of a 4xx answer (`None`: the body is not one, so no PG may have
    /// written it), after telling the observer what it says of the key.
    async fn error_of(
        &self,
        status: reqwest::StatusCode,
        response: reqwest::Response,
    ) -> Option<ErrorBody> {
        let error = response.json::<ErrorBody>().await.ok();
        if refuses_key(status, error.as_ref()) {
            self.observe(Err(refusal(status, error.as_ref())));
        } else if error.is_some() {
            self.observe(Ok(()));
        }
        error
    }

    fn observe(&self, credentials: Result<(), String>) {
        if let Some(observer) = &self.credentials {
            observer(credentials);
        }
    }
}

/// What [`PgClient::check`] found wrong.
#[derive(Debug, thiserror::Error)]
pub enum PgCheckError {
    /// The PG refuses payflow's secret key.
    #[error("{0}")]
    KeyRefused(String),
    /// What answers at the base URL is no PG: a 4xx without a PG's error object.
    #[error("{0}")]
    NotAPg(String),
    /// The PG does not answer, or not yet.
    #[error("{0}")]
    Away(String),
}

/// 5xx, 408, 409 (the same idempotency key still in progress) and 429: the PG (or what stands
/// before it) did not take the request up, and says nothing of the key.
fn says_nothing(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 429)
}

/// Whether an answer refuses payflow's secret key: `401`, or the PG's codes for a wrong key.
fn refuses_key(status: reqwest::StatusCode, error: Option<&ErrorBody>) -> bool {
    status == reqwest::StatusCode::UNAUTHORIZED
        || error.is_some_and(|e| matches!(e.code.as_str(), "UNAUTHORIZED_KEY" | "INVALID_API_KEY"))
}

/// A refusal of the key, in the PG's words (never the key's).
fn refusal(status: reqwest::StatusCode, error: Option<&ErrorBody>) -> String {
    match error {
        Some(e) => format!(
            "the PG refuses payflow's secret key (HTTP {} {}: {})",
            status.as_u16(),
            e.code,
            e.message
        ),
        None => format!(
            "the PG refuses payflow's secret key (HTTP {})",
            status.as_u16()
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::serve;
    use std::sync::{Arc, Mutex};

    /// What a PG, or what stands before it, may answer the credentials check, and what payflow
    /// makes of it: the key taken (any answer in the PG's words that does not refuse it), the
    /// key refused or no PG at all (stop at start, after asking again), or nothing from the PG
    /// yet (wait); and what the answer tells the observer.
    #[tokio::test]
    async fn the_check_tells_a_refused_key_from_no_pg_and_from_a_pg_that_cannot_serve_yet() {
        const JSON: &str = "application/json";
        let cases: [(&str, &str, &str, &str, Option<bool>); 9] = [
            (
                "404 Not Found",
                JSON,
                r#"{"code":"NOT_FOUND_PAYMENT","message":"no payment"}"#,
                "ok",
                Some(true),
            ),
            (
                "404 Not Found",
                JSON,
                r#"{"code":"NOT_FOUND","message":"no such order"}"#,
                "ok",
                Some(true),
            ),
            (
                "401 Unauthorized",
                JSON,
                r#"{"code":"UNAUTHORIZED_KEY","message":"invalid key"}"#,
                "refused",
                Some(false),
            ),
            (
                "400 Bad Request",
                JSON,
                r#"{"code":"INVALID_API_KEY","message":"wrong key"}"#,
                "refused",
                Some(false),
            ),
            (
                "401 Unauthorized",
                "text/html",
                "<html>401</html>",
                "refused",
                Some(false),
            ),
            (
                "400 Bad Request",
                JSON,
                r#"{"code":"PROVIDER_ERROR","message":"try again"}"#,
                "ok",
                Some(true),
            ),
            (
                "404 Not Found",
                "text/html",
                "<html>no such page</html>",
                "no PG",
                None,
            ),
            (
                "503 Service Unavailable",
                "text/html",
                "<html>down</html>",
                "away",
                None,
            ),
            (
                "429 Too Many Requests",
                JSON,
                r#"{"code":"TOO_MANY","message":"slow down"}"#,
                "away",
                None,
            ),
        ];
        for (status, content_type, body, found, tells) in cases {
            let url = serve(status, content_type, body);
            let told = Arc::new(Mutex::new(Vec::new()));
            let pg = PgClient::new(PgConfig {
                base_url: url,
                secret_key: "live_sk_x".parse().unwrap(),
                timeout: Duration::from_secs(5),
            })
            .unwrap()
            .observe_credentials({
                let told = told.clone();
                Arc::new(move |c: Result<(), String>| told.lock().unwrap().push(c.is_ok()))
            });
            let answer = match pg.check().await {
                Ok(()) => "ok",
                Err(PgCheckError::KeyRefused(why)) => {
                    assert!(why.contains("refuses payflow's secret key"), "{why}");
                    assert!(!why.contains("live_sk_x"), "{why}");
                    "refused"
                }
                Err(PgCheckError::NotAPg(_)) => "no PG",
                Err(PgCheckError::Away(_)) => "away",
            };
            assert_eq!(answer, found, "{status} {body}");
            assert_eq!(
                told.lock().unwrap().clone(),
                tells.into_iter().collect::<Vec<_>>(),
                "what {status} {body} tells of the key"
            );
        }
    }
}
