//! Failure type names. Activities raise them (`ApplicationFailure` type names); the workflow
//! matches on them. A name here is the contract between the two, so it never changes.

/// The PG declined (insufficient funds, card limit, invalid or expired card). Not retryable.
/// The failure's message is the PG's code, e.g. `INSUFFICIENT_FUNDS`.
pub const PAYMENT_DECLINED: &str = "PaymentDeclined";
/// The PG refused the request for another reason (4xx) on the payment's first attempt, or
/// payflow refused to send it (the payment key belongs to another order). Not retryable, and
/// nothing was charged: a definite failure. The failure's message is `CODE: message`.
pub const PG_REJECTED: &str = "PgRejected";
/// The PG refused a retried approval (4xx) after an earlier attempt of the same payment may
/// have reached it: the refusal does not say what became of that attempt (a rotated secret key,
/// a gateway's error page), so the outcome is unknown and the workflow voids. Not retryable.
/// The failure's message names the PG's code only (the customer reads it).
pub const PG_OUTCOME_UNKNOWN: &str = "PgOutcomeUnknown";
/// The PG refused a refund (4xx other than "already cancelled"). Not retryable.
pub const REFUND_REJECTED: &str = "RefundRejected";
/// The order's stock reservation expired before it was confirmed. Not retryable.
pub const RESERVATION_EXPIRED: &str = "ReservationExpired";
/// The order has no stock reservation. Not retryable.
pub const RESERVATION_MISSING: &str = "ReservationMissing";
/// The reservation was already released (e.g. by a compensation). Not retryable.
pub const RESERVATION_RELEASED: &str = "ReservationReleased";
/// The product database holds less stock than the reservation. Not retryable.
pub const INSUFFICIENT_STOCK: &str = "InsufficientStock";
/// The order or payment is not in a state that allows the change (e.g. completing a
/// cancelled order).
pub const INVALID_STATE: &str = "InvalidState";
/// The order or payment does not exist.
pub const NOT_FOUND: &str = "NotFound";
/// Kafka's brokers refuse payflow's records (no permission to write the topic, or to produce
/// at all). Retryable: the events wait, and the outbox raises the attention flag while it
/// lasts.
pub const KAFKA_REFUSED: &str = "KafkaRefused";

/// Failure codes the workflow reports (in `PaymentDecision::failure_code` and the status query).
pub mod codes {
    /// The PG did not decide within the PG timeout.
    pub const PG_TIMEOUT: &str = "PG_TIMEOUT";
    /// The saga deadline passed before the payment was final.
    pub const SAGA_DEADLINE: &str = "SAGA_DEADLINE";
    /// An operator cancelled the workflow.
    pub const OPERATOR_CANCELLED: &str = "OPERATOR_CANCELLED";
    /// A forward step failed for good (non-retryable) after the PG step.
    pub const STEP_FAILED: &str = "STEP_FAILED";
    /// The PG failed in a way that is neither a decline nor a timeout.
    pub const PG_ERROR: &str = "PG_ERROR";
    /// The payment key belongs to another order (`payment.payment_keys`).
    pub const PAYMENT_KEY_IN_USE: &str = "PAYMENT_KEY_IN_USE";
    /// The PG answered a confirmation with another order's payment.
    pub const PG_ORDER_MISMATCH: &str = "PG_ORDER_MISMATCH";
}
