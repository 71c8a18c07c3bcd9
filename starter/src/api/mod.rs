//! The HTTP API (axum): backend services create orders, pay them and follow payments.
//!
//! | route | |
//! | --- | --- |
//! | `POST /api/v1/orders` | the preceding step: an order in `PAYMENT_WAIT`, stock reserved |
//! | `POST /api/v1/payments` | pay an order; answers once the PG has decided (update-with-start) |
//! | `GET /api/v1/payments/{paymentId}` | a payment's state |
//! | `GET /api/v1/orders/{orderId}` | an order and its payment's state |
//! | `GET /api/v1/openapi.json` | this API's OpenAPI document |
//! | `GET /healthz`, `GET /readyz` | process up; Temporal, PostgreSQL and Redis reachable |
//!
//! Every `/api` route wants `Authorization: Bearer <key>`. Bad input gets a JSON error with a
//! stable `error` code and a `message`, and changes nothing: no workflow, no PG call, no row.
//! The payload codec server for the Web UI is in [`codec`].

mod codec;

use crate::service::{DEFAULT_RESERVATION_TTL_MS, Pay, Payflow, PayflowError};
use axum::{
    Json, Router,
    extract::{
        FromRequest, Path, Request, State,
        rejection::{JsonRejection, PathRejection},
    },
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use payflow_activities::Secret;
use payflow_common::codec::CodecKeys;
use payflow_workflows::{
    ids,
    types::{
        ApiPaymentStatus, OrderItem, OrderStatus, PaymentMethod, PaymentStage, PaymentStatus,
        check_amount,
    },
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

/// The API's dependencies and settings.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    payflow: Payflow,
    api_keys: Vec<Secret>,
    codec: Option<Arc<CodecKeys>>,
    codec_tokens: Vec<Secret>,
    codec_origins: Vec<String>,
}

impl ApiState {
    /// The API over a `Payflow`, accepting these bearer keys; no payload codec.
    pub fn new(payflow: Payflow, api_keys: Vec<Secret>) -> Self {
        Self::with_codec(payflow, api_keys, None, Vec::new(), Vec::new())
    }

    /// The API with the codec server: `keys` decode and encode payloads for bearers of an API
    /// key; the Web UI, calling from `origins` (CORS), decodes with a capability URL holding one
    /// of `codec_tokens` (decode only; never an API key, so UI users learn nothing that pays).
    pub fn with_codec(
        payflow: Payflow,
        api_keys: Vec<Secret>,
        codec: Option<Arc<CodecKeys>>,
        codec_tokens: Vec<Secret>,
        origins: Vec<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                payflow,
                api_keys,
                codec,
                codec_tokens,
                codec_origins: origins,
            }),
        }
    }

    fn key_ok(&self, presented: &str) -> bool {
        any_matches(&self.inner.api_keys, presented)
    }

    fn codec_token_ok(&self, presented: &str) -> bool {
        any_matches(&self.inner.codec_tokens, presented)
    }

    fn payflow(&self) -> &Payflow {
        &self.inner.payflow
    }
}

/// Compares against every secret, always, in constant time: timing reveals nothing.
fn any_matches(secrets: &[Secret], presented: &str) -> bool {
    let mut ok = false;
    for secret in secrets {
        ok |= !secret.is_empty()
            && constant_time_eq(presented.as_bytes(), secret.expose().as_bytes());
    }
    ok
}

/// The body limit's own 413 (a `Content-Length` over the limit) as the API's JSON error.
async fn json_too_large(response: Response) -> Response {
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|t| !t.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && plain {
        return ApiError::TooLarge.into_response();
    }
    response
}

/// A request's path as logs may show it: a codec capability URL's token is masked.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/codec/") {
        Some(rest) if rest.contains('/') => {
            let action = rest.rsplit('/').next().unwrap_or_default();
            format!("/codec/***/{action}")
        }
        // A token with no action after it is still a token.
        Some(_) => "/codec/***".to_owned(),
        None => path.to_owned(),
    }
}

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// The API's routes; the seam tests drive.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/orders", post(create_order))
        .route("/api/v1/orders/{order_id}", get(get_order))
        .route("/api/v1/payments", post(pay))
        .route("/api/v1/payments/{payment_id}", get(get_payment))
        .merge(codec::with_api_key())
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            state
                .inner
                .codec_origins
                .iter()
                .filter_map(|o| o.parse::<HeaderValue>().ok()),
        ))
        .allow_methods([Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-namespace"),
        ]);
    Router::new()
        .merge(api)
        .merge(codec::for_web_ui())
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(cors)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        // The limit answers a declared oversized body itself, in plain text: in the API's JSON.
        .layer(axum::middleware::map_response(json_too_large))
        .layer(
            // Method, path, status and latency of every request; never headers (API keys), query
            // strings or a codec token.
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %loggable_path(request.uri().path()),
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

// ---- errors ------------------------------------------------------------------------------------

/// Every error the API answers with, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown fields, bad values.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// Missing or wrong API key.
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// Unknown order, payment or route.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{1}")]
    Conflict(&'static str, String, Value),
    /// The body is over the size limit.
    #[error("the request body is larger than {BODY_LIMIT_BYTES} bytes")]
    TooLarge,
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The request cannot be served as sent (an idempotency key reused for another request).
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// The route exists, the method does not.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// A dependency failed; details go to the log, not to the caller.
    #[error("the service is unavailable, try again")]
    Unavailable(#[source] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code, extra) = match self {
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code, Value::Null),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", Value::Null),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND", Value::Null),
            ApiError::Conflict(code, _, extra) => (StatusCode::CONFLICT, code, extra),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                Value::Null,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                Value::Null,
            ),
            ApiError::Unprocessable(code, _) => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, Value::Null)
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                Value::Null,
            ),
            ApiError::Unavailable(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "request failed");
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", Value::Null)
            }
        };
        let mut body = json!({ "error": code, "message": message });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
        }
        response
    }
}

/// A path segment that is not an id at all (bytes that are not UTF-8, say).
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest("INVALID_REQUEST", e.body_text())
    }
}

impl From<PayflowError> for ApiError {
    fn from(e: PayflowError) -> Self {
        match e {
            PayflowError::Invalid(m) => ApiError::BadRequest("INVALID_REQUEST", m),
            e @ PayflowError::AmountMismatch { .. } => {
                ApiError::BadRequest("AMOUNT_MISMATCH", e.to_string())
            }
            e @ (PayflowError::OrderNotFound(_) | PayflowError::PaymentNotFound(_)) => {
                ApiError::NotFound(e.to_string())
            }
            e @ PayflowError::OrderNotPayable { .. } => {
                ApiError::Conflict("ORDER_NOT_PAYABLE", e.to_string(), Value::Null)
            }
            e @ PayflowError::PaymentKeyInUse => {
                ApiError::Conflict("PAYMENT_KEY_IN_USE", e.to_string(), Value::Null)
            }
            e @ PayflowError::IdempotencyKeyInUse => {
                ApiError::Conflict("IDEMPOTENCY_KEY_IN_USE", e.to_string(), Value::Null)
            }
            e @ PayflowError::IdempotencyKeyReused => {
                ApiError::Unprocessable("IDEMPOTENCY_KEY_REUSED", e.to_string())
            }
            PayflowError::ReservationExpired {
                ref order_id,
                ref expired_at,
            } => ApiError::Conflict(
                "RESERVATION_EXPIRED",
                e.to_string(),
                json!({ "orderId": order_id, "expiredAt": expired_at }),
            ),
            PayflowError::UnknownProducts(p) => ApiError::BadRequest(
                "UNKNOWN_PRODUCTS",
                format!("unknown products: {}", p.join(", ")),
            ),
            PayflowError::InsufficientStock(short) => ApiError::Conflict(
                "INSUFFICIENT_STOCK",
                format!(
                    "not enough stock for {}",
                    short
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                json!({ "items": short.iter().map(|(p, a)| json!({"productId": p, "available": a})).collect::<Vec<_>>() }),
            ),
            PayflowError::Unavailable(e) => ApiError::Unavailable(e),
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: 400 for malformed JSON, wrong types and unknown
/// fields; 413 over the size limit; 415 without a JSON content type.
struct ApiJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::TooLarge
                }
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::BadRequest("MALFORMED_JSON", e.body_text())
                }
                other => ApiError::BadRequest("INVALID_REQUEST", other.body_text()),
            }),
        }
    }
}

// ---- authentication ----------------------------------------------------------------------------

async fn authenticate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.key_ok(presented) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of where (or whether) lengths differ.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    subtle::ConstantTimeEq::ct_eq(a.as_slice(), b.as_slice()).into()
}

// ---- orders ------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateOrderBody {
    user_id: String,
    items: Vec<ItemBody>,
    /// Reservation time in seconds (tests and demos shorten it).
    #[serde(default)]
    reservation_ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemBody {
    product_id: String,
    quantity: i32,
}

async fn create_order(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOrderBody>,
) -> Result<impl IntoResponse, ApiError> {
    let items: Vec<OrderItem> = body
        .items
        .into_iter()
        .map(|i| OrderItem {
            product_id: i.product_id,
            quantity: i.quantity,
        })
        .collect();
    let ttl = body
        .reservation_ttl_secs
        .map(|s| s.saturating_mul(1000))
        .unwrap_or(DEFAULT_RESERVATION_TTL_MS);
    // With an Idempotency-Key, a retried request answers the order the first one created.
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest(
                "INVALID_REQUEST",
                "Idempotency-Key must be visible ASCII".into(),
            )
        })?),
    };
    let payflow = state.payflow();
    let (order, created) = match key {
        None => (
            payflow.create_order(&body.user_id, &items, ttl).await?,
            true,
        ),
        Some(key) => {
            payflow
                .create_order_once(&body.user_id, &items, ttl, key)
                .await?
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(order)))
}

/// An order and its payment.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderView {
    order_id: String,
    user_id: String,
    status: OrderStatus,
    total_amount: i64,
    cancel_reason: Option<String>,
    created_at: String,
    updated_at: String,
    reservation_expires_at: Option<String>,
    payment: Option<PaymentView>,
}

async fn get_order(
    State(state): State<ApiState>,
    order_id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let Path(order_id) = order_id?;
    let (order, payment) = state.payflow().order(&order_id).await?;
    Ok(Json(OrderView {
        order_id: order.order_id,
        user_id: order.user_id,
        status: order.status,
        total_amount: order.total_amount,
        cancel_reason: order.cancel_reason,
        created_at: order.created_at.to_rfc3339(),
        updated_at: order.updated_at.to_rfc3339(),
        reservation_expires_at: order.reservation_expires_at.map(|t| t.to_rfc3339()),
        payment: payment.map(PaymentView::from),
    }))
}

// ---- payments ----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PayBody {
    order_id: String,
    payment_method: String,
    amount: serde_json::Number,
    #[serde(default)]
    payment_key: Option<String>,
}

async fn pay(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<PayBody>,
) -> Result<Response, ApiError> {
    let method: PaymentMethod =
        body.payment_method
            .parse()
            .map_err(|e: payflow_workflows::types::UnknownSymbol| {
                ApiError::BadRequest("UNKNOWN_PAYMENT_METHOD", e.to_string())
            })?;
    let amount = whole_won(&body.amount)?;
    if body.order_id.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "INVALID_REQUEST",
            "orderId must not be empty".into(),
        ));
    }
    let workflow_id = ids::payment_workflow_id(&body.order_id);
    let started = std::time::Instant::now();
    let decision = state
        .payflow()
        .pay(Pay {
            order_id: body.order_id.clone(),
            payment_method: method,
            amount,
            payment_key: body.payment_key,
        })
        .await?;
    tracing::info!(
        order_id = %body.order_id,
        workflow_id = %workflow_id,
        approved = decision.approved,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "payment decided"
    );
    Ok(if decision.approved {
        (
            StatusCode::OK,
            Json(json!({
                "paymentId": decision.payment_id,
                "orderId": decision.order_id,
                "status": "COMPLETED",
                "approvalNumber": decision.approval_number,
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "PAYMENT_FAILED",
                "message": decision.failure_message.unwrap_or_else(|| "the payment failed".into()),
                "reason": decision.failure_code,
                "orderId": decision.order_id,
                "paymentId": decision.payment_id,
                "retryable": decision.retryable,
            })),
        )
            .into_response()
    })
}

/// Amounts are whole won (KRW has no minor unit) and positive.
fn whole_won(n: &serde_json::Number) -> Result<i64, ApiError> {
    let won = n
        .as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| {
            ApiError::BadRequest(
                "INVALID_AMOUNT",
                "amount must be a whole number of won".into(),
            )
        })?;
    check_amount(won).map_err(|e| ApiError::BadRequest("INVALID_AMOUNT", e.to_string()))
}

/// A payment as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentView {
    payment_id: String,
    order_id: String,
    user_id: String,
    payment_method: PaymentMethod,
    amount: i64,
    status: ApiPaymentStatus,
    stage: PaymentStage,
    approval_number: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
    needs_attention: bool,
    /// Every problem still waiting for an operator, oldest first.
    attention_reasons: Vec<String>,
    /// Events not yet taken by Kafka (they follow the order; 0 once all are out).
    unpublished_events: u32,
    /// The PG may still hold a charge of this payment that it refused to cancel.
    charge_held: bool,
    stage_times: std::collections::BTreeMap<String, i64>,
}

impl From<PaymentStatus> for PaymentView {
    fn from(s: PaymentStatus) -> Self {
        let status = ApiPaymentStatus::of(&s);
        Self {
            payment_id: s.payment_id,
            order_id: s.order_id,
            user_id: s.user_id,
            payment_method: s.payment_method,
            amount: s.amount,
            status,
            stage: s.stage,
            approval_number: s.approval_number,
            failure_code: s.failure_code,
            failure_reason: s.failure_reason,
            needs_attention: s.needs_attention,
            attention_reasons: s.attention_reasons,
            unpublished_events: s.unpublished_events,
            charge_held: s.charge_held,
            stage_times: s.stage_times,
        }
    }
}

async fn get_payment(
    State(state): State<ApiState>,
    payment_id: Result<Path<String>, PathRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    let Path(payment_id) = payment_id?;
    crate::service::check_id("paymentId", &payment_id)?;
    let order_id = ids::order_id_from_payment_id(&payment_id)
        .ok_or_else(|| ApiError::NotFound(format!("payment {payment_id} not found")))?;
    Ok(Json(state.payflow().payment(order_id).await?.into()))
}

// ---- health and docs ---------------------------------------------------------------------------

async fn ready(State(state): State<ApiState>) -> Response {
    async fn up<E>(check: impl Future<Output = Result<(), E>>) -> &'static str {
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(())) => "up",
            _ => "down",
        }
    }
    let payflow = state.payflow();
    let (temporal, postgres, redis) = tokio::join!(
        up(payflow.payments.ping()),
        up(payflow.orders.ping()),
        up(payflow.products.reservations().ping()),
    );
    let ready = [temporal, postgres, redis].iter().all(|s| *s == "up");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": { "temporal": temporal, "postgres": postgres, "redis": redis },
    });
    (status, Json(body)).into_response()
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"k-123", b"k-123"));
        assert!(!constant_time_eq(b"k-123", b"k-124"));
        assert!(!constant_time_eq(b"", b"k"));
    }

    #[test]
    fn amounts_are_whole_positive_won() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(whole_won(&n("50000")).unwrap(), 50_000);
        assert_eq!(whole_won(&n("50000.0")).unwrap(), 50_000);
        assert!(whole_won(&n("50000.5")).is_err());
        assert!(whole_won(&n("0")).is_err());
        assert!(whole_won(&n("-1")).is_err());
    }

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        for path in [
            "/api/v1/orders",
            "/api/v1/orders/{orderId}",
            "/api/v1/payments",
            "/api/v1/payments/{paymentId}",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }
}
