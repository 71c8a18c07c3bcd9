//! Types shared by the workflow, its activities and its starters.
//!
//! Everything here crosses a process boundary as JSON (Temporal payloads), so field names are
//! part of the workflow's history format: rename nothing without a patch.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, str::FromStr};

/// How the customer pays. The symbols are the Avro contract's `PaymentMethod` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethod {
    /// Credit or debit card.
    Card,
    /// Bank transfer.
    BankTransfer,
    /// KakaoPay wallet.
    KakaoPay,
    /// NaverPay wallet.
    NaverPay,
    /// Toss wallet.
    Toss,
}

impl PaymentMethod {
    /// Every method, in contract order.
    pub const ALL: [PaymentMethod; 5] = [
        PaymentMethod::Card,
        PaymentMethod::BankTransfer,
        PaymentMethod::KakaoPay,
        PaymentMethod::NaverPay,
        PaymentMethod::Toss,
    ];

    /// The contract symbol, e.g. `KAKAO_PAY`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "CARD",
            PaymentMethod::BankTransfer => "BANK_TRANSFER",
            PaymentMethod::KakaoPay => "KAKAO_PAY",
            PaymentMethod::NaverPay => "NAVER_PAY",
            PaymentMethod::Toss => "TOSS",
        }
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the contract's payment method symbols.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown payment method {0:?}: expected one of CARD, BANK_TRANSFER, KAKAO_PAY, NAVER_PAY, TOSS"
)]
pub struct UnknownPaymentMethod(pub String);

impl FromStr for PaymentMethod {
    type Err = UnknownPaymentMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownPaymentMethod(s.to_owned()))
    }
}

/// Input of the payment workflow: one order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    /// The order being paid; the workflow id is derived from it.
    pub order_id: String,
    /// The customer.
    pub user_id: String,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
    /// Amount in won (KRW has no minor unit); must equal the order's total.
    pub amount: i64,
    /// The key the PG's checkout widget handed the client, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_key: Option<String>,
    /// Timeouts and retry spacing; `None` means the production defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<SagaTimings>,
}

/// The saga's clocks. Production uses the defaults; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaTimings {
    /// The whole payment must be final within this many seconds (compensating otherwise).
    pub deadline_secs: u64,
    /// The PG must decide within this many seconds, retries included (then `PG_TIMEOUT`).
    pub pg_timeout_secs: u64,
    /// Spacing of the stock confirmation's retries on transient errors.
    pub stock_retry_secs: u64,
    /// Spacing of refund attempts.
    pub refund_retry_secs: u64,
}

impl Default for SagaTimings {
    fn default() -> Self {
        Self {
            deadline_secs: 600,
            pg_timeout_secs: 30,
            stock_retry_secs: 30,
            refund_retry_secs: 120,
        }
    }
}

/// Where a payment is. Operators see these names in the `PaymentStage` search attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStage {
    /// Waiting for the PG's decision.
    PaymentWait,
    /// The PG approved and the payment is recorded.
    PaymentCompleted,
    /// The reserved stock is permanent in the product database.
    StockConfirmed,
    /// Final: the order is complete.
    OrderCompleted,
    /// Something failed; compensations are running.
    Compensating,
    /// Final: the order is cancelled (see the failure reason).
    OrderCancelled,
}

impl PaymentStage {
    /// The operator-facing name, e.g. `ORDER_COMPLETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStage::PaymentWait => "PAYMENT_WAIT",
            PaymentStage::PaymentCompleted => "PAYMENT_COMPLETED",
            PaymentStage::StockConfirmed => "STOCK_CONFIRMED",
            PaymentStage::OrderCompleted => "ORDER_COMPLETED",
            PaymentStage::Compensating => "COMPENSATING",
            PaymentStage::OrderCancelled => "ORDER_CANCELLED",
        }
    }

    /// True once the workflow has nothing left to do.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStage::OrderCompleted | PaymentStage::OrderCancelled
        )
    }
}

impl fmt::Display for PaymentStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PG's decision on a payment: what `POST /api/v1/payments` answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDecision {
    /// The order.
    pub order_id: String,
    /// The payment id (also the PG idempotency key).
    pub payment_id: String,
    /// True when the PG approved.
    pub approved: bool,
    /// The PG's approval number, when approved.
    pub approval_number: Option<String>,
    /// Why the payment failed, e.g. `INSUFFICIENT_FUNDS` or `PG_TIMEOUT`.
    pub failure_code: Option<String>,
    /// Human-readable failure message.
    pub failure_message: Option<String>,
    /// Whether paying again with other means could succeed (a decline) or not.
    pub retryable: bool,
}

/// Milliseconds since the Unix epoch.
pub type EpochMillis = i64;

/// What the `status` query answers: everything an operator needs to see at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStatus {
    /// The order.
    pub order_id: String,
    /// The payment id.
    pub payment_id: String,
    /// The customer.
    pub user_id: String,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
    /// Amount in won.
    pub amount: i64,
    /// Current stage.
    pub stage: PaymentStage,
    /// The PG's approval number, once approved.
    pub approval_number: Option<String>,
    /// Machine-readable reason of a failure or cancellation.
    pub failure_code: Option<String>,
    /// Human-readable reason of a failure or cancellation (the order's cancel reason).
    pub failure_reason: Option<String>,
    /// True when the workflow waits for an operator.
    pub needs_attention: bool,
    /// Why it waits for an operator: every unresolved problem, joined with `; `.
    pub attention_reason: Option<String>,
    /// Every problem still waiting for an operator, oldest first.
    #[serde(default)]
    pub attention_reasons: Vec<String>,
    /// Events of this payment not yet taken by Kafka (the workflow closes once it is 0).
    #[serde(default)]
    pub unpublished_events: u32,
    /// Why the last try to publish them failed, while they wait.
    #[serde(default)]
    pub publish_error: Option<String>,
    /// The refund's reference, once refunded.
    pub refund_reference: Option<String>,
    /// Who refunded: `pg` or an operator.
    pub refunded_by: Option<String>,
    /// When each stage was reached (workflow time), keyed by stage name.
    pub stage_times: BTreeMap<String, EpochMillis>,
}

/// The workflow's result once it is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentOutcome {
    /// The order.
    pub order_id: String,
    /// The payment id.
    pub payment_id: String,
    /// `ORDER_COMPLETED` or `ORDER_CANCELLED`.
    pub stage: PaymentStage,
    /// The PG's approval number, if the PG approved.
    pub approval_number: Option<String>,
    /// Machine-readable reason, when cancelled.
    pub failure_code: Option<String>,
    /// Human-readable reason, when cancelled.
    pub failure_reason: Option<String>,
}

/// One line of an order: a product and how many.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    /// The product.
    pub product_id: String,
    /// How many units.
    pub quantity: i32,
}

// ---- activity inputs and outputs -------------------------------------------------------------

/// Input of the PG approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovePayment {
    /// The payment id: the PG `Idempotency-Key`.
    pub payment_id: String,
    /// The order.
    pub order_id: String,
    /// The customer.
    pub user_id: String,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
    /// Amount in won.
    pub amount: i64,
    /// The PG payment key.
    pub payment_key: String,
}

/// The PG approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgApproval {
    /// The PG's approval number (needed for refunds).
    pub approval_number: String,
    /// When the PG approved, as the PG reports it.
    pub approved_at: EpochMillis,
}

/// Input of recording an approved payment in the payment database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPayment {
    /// The payment being recorded.
    pub payment: ApprovePayment,
    /// The PG's approval.
    pub approval: PgApproval,
}

/// Input of the stock confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmStock {
    /// The order whose reservation becomes permanent.
    pub order_id: String,
    /// The payment that paid for it.
    pub payment_id: String,
}

/// The stock was confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockConfirmation {
    /// What was confirmed.
    pub items: Vec<OrderItem>,
}

/// Input of an order status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderUpdate {
    /// The order.
    pub order_id: String,
    /// The payment.
    pub payment_id: String,
}

/// Input of completing an order and telling the customer in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteAndNotify {
    /// The order to complete.
    pub order: OrderUpdate,
    /// The push to send once it is complete.
    pub push: PushNotification,
}

/// The order is complete; was the customer told?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrderCompletion {
    /// False when the push gateway did not take the push at once: the workflow then sends it
    /// with retries (`SendPush`).
    pub pushed: bool,
}

/// A push notification to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushNotification {
    /// Deduplication key at the push gateway: a retried push is delivered once.
    pub notification_id: String,
    /// The recipient.
    pub user_id: String,
    /// The order it is about.
    pub order_id: String,
    /// Title line.
    pub title: String,
    /// Body text.
    pub body: String,
}

/// A domain event for Kafka, in the shape of the Avro contract. Timestamps are workflow time,
/// so a retried publish carries exactly the same record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainEvent {
    /// Deterministic event id (see [`crate::ids::event_id`]).
    pub event_id: String,
    /// When the event was produced (workflow time).
    pub event_timestamp: EpochMillis,
    /// The order: the partition key.
    pub order_id: String,
    /// What happened.
    pub body: EventBody,
}

/// The per-type part of a [`DomainEvent`]; field names follow the Avro contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum EventBody {
    /// `payment.completed`
    PaymentCompleted {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Amount in won.
        total_amount: i64,
        /// How the customer paid.
        payment_method: PaymentMethod,
        /// The PG approval number.
        pg_approval_number: String,
        /// When the PG approved.
        completed_at: EpochMillis,
    },
    /// `stock.confirmed`
    StockConfirmed {
        /// The payment.
        payment_id: String,
        /// What was confirmed.
        confirmed_items: Vec<OrderItem>,
        /// When the stock was confirmed.
        confirmed_at: EpochMillis,
    },
    /// `payment.failed`
    PaymentFailed {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Why, e.g. `INSUFFICIENT_FUNDS` or `PG_TIMEOUT`.
        failure_reason: String,
        /// When it was declared failed.
        failed_at: EpochMillis,
    },
    /// `payment.cancelled`
    PaymentCancelled {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Contract enum `PaymentCancellationReason`.
        cancellation_reason: PaymentCancellationReason,
        /// When it was cancelled.
        cancelled_at: EpochMillis,
    },
    /// `stock.confirmation.failed`
    StockConfirmationFailed {
        /// The payment.
        payment_id: String,
        /// Why, e.g. `RESERVATION_EXPIRED`.
        failure_reason: String,
        /// When it failed.
        failed_at: EpochMillis,
    },
    /// `order.cancelled`
    OrderCancelled {
        /// The customer.
        user_id: String,
        /// The stock to restore.
        items: Vec<OrderItem>,
        /// Contract enum `CancellationReason`.
        cancellation_reason: OrderCancellationReason,
        /// When it was cancelled.
        cancelled_at: EpochMillis,
    },
    /// `saga.tracker`: one step of the saga, its start, end or compensation (the platform's
    /// saga tracking; `sagaId` and `orderId` are the order id).
    SagaTracker {
        /// Contract enum `SagaType` (always `PAYMENT_COMPLETION` here).
        saga_type: SagaType,
        /// The step, e.g. `PAYMENT_COMPLETION` or `COMPENSATION_STOCK`.
        step: String,
        /// Contract enum `SagaStatus`.
        status: SagaStatus,
        /// JSON: workflow id, run id, amount, failure reason.
        metadata: Option<String>,
        /// When the step reached this status (workflow time).
        recorded_at: EpochMillis,
    },
}

/// The contract's `SagaType` symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaType {
    /// The order-creation saga (not payflow's).
    OrderCreation,
    /// The payment-completion saga: payflow's.
    PaymentCompletion,
}

impl SagaType {
    /// The contract symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreation => "ORDER_CREATION",
            Self::PaymentCompletion => "PAYMENT_COMPLETION",
        }
    }
}

/// The contract's `SagaStatus` symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// The step began.
    Started,
    /// The step is under way.
    InProgress,
    /// The step succeeded.
    Completed,
    /// The step failed.
    Failed,
    /// A compensation undid what a step did.
    Compensated,
}

impl SagaStatus {
    /// The contract symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Compensated => "COMPENSATED",
        }
    }
}

/// The saga's steps as the tracker names them.
pub mod saga_steps {
    /// The PG approval and its record.
    pub const PAYMENT_COMPLETION: &str = "PAYMENT_COMPLETION";
    /// Reserved stock made permanent.
    pub const STOCK_CONFIRMATION: &str = "STOCK_CONFIRMATION";
    /// The order completed and the customer told.
    pub const ORDER_COMPLETION: &str = "ORDER_COMPLETION";
    /// The PG payment voided or refunded.
    pub const COMPENSATION_PAYMENT: &str = "COMPENSATION_PAYMENT";
    /// The reserved or confirmed stock returned.
    pub const COMPENSATION_STOCK: &str = "COMPENSATION_STOCK";
    /// The order cancelled.
    pub const COMPENSATION_ORDER: &str = "COMPENSATION_ORDER";
}

impl DomainEvent {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }
}

impl EventBody {
    /// The event type of this body.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::PaymentCompleted { .. } => EventType::PaymentCompleted,
            EventBody::StockConfirmed { .. } => EventType::StockConfirmed,
            EventBody::PaymentFailed { .. } => EventType::PaymentFailed,
            EventBody::PaymentCancelled { .. } => EventType::PaymentCancelled,
            EventBody::StockConfirmationFailed { .. } => EventType::StockConfirmationFailed,
            EventBody::OrderCancelled { .. } => EventType::OrderCancelled,
            EventBody::SagaTracker { .. } => EventType::SagaTracker,
        }
    }
}

/// The contract's `PaymentCancellationReason` symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentCancellationReason {
    /// The stock could not be confirmed.
    StockUnavailable,
    /// An operator cancelled.
    AdminCancel,
    /// The customer cancelled.
    UserCancel,
    /// Anything else (e.g. the saga deadline).
    SystemError,
}

impl PaymentCancellationReason {
    /// The contract symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StockUnavailable => "STOCK_UNAVAILABLE",
            Self::AdminCancel => "ADMIN_CANCEL",
            Self::UserCancel => "USER_CANCEL",
            Self::SystemError => "SYSTEM_ERROR",
        }
    }
}

/// The contract's `CancellationReason` symbols (order cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderCancellationReason {
    /// The payment did not succeed in time.
    PaymentTimeout,
    /// The customer asked.
    UserRequested,
    /// The stock could not be confirmed.
    StockUnavailable,
    /// Anything else.
    SystemError,
}

impl OrderCancellationReason {
    /// The contract symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentTimeout => "PAYMENT_TIMEOUT",
            Self::UserRequested => "USER_REQUESTED",
            Self::StockUnavailable => "STOCK_UNAVAILABLE",
            Self::SystemError => "SYSTEM_ERROR",
        }
    }
}

/// The kinds of event payflow publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// `payment.completed`
    PaymentCompleted,
    /// `stock.confirmed`
    StockConfirmed,
    /// `payment.failed`
    PaymentFailed,
    /// `payment.cancelled`
    PaymentCancelled,
    /// `stock.confirmation.failed`
    StockConfirmationFailed,
    /// `order.cancelled`
    OrderCancelled,
    /// `saga.tracker`
    SagaTracker,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 7] = [
        EventType::PaymentCompleted,
        EventType::StockConfirmed,
        EventType::PaymentFailed,
        EventType::PaymentCancelled,
        EventType::StockConfirmationFailed,
        EventType::OrderCancelled,
        EventType::SagaTracker,
    ];

    /// The default topic name (before any prefix), which is also the event type header.
    pub fn name(self) -> &'static str {
        match self {
            EventType::PaymentCompleted => "payment.completed",
            EventType::StockConfirmed => "stock.confirmed",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentCancelled => "payment.cancelled",
            EventType::StockConfirmationFailed => "stock.confirmation.failed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::SagaTracker => "saga.tracker",
        }
    }
}

/// Input of voiding a payment whose outcome at the PG is unknown (after a timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoidPayment {
    /// The payment (and PG idempotency key).
    pub payment_id: String,
    /// The PG payment key.
    pub payment_key: String,
    /// Why, sent to the PG as the cancel reason.
    pub reason: String,
}

/// Input of refunding an approved payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundPayment {
    /// The payment.
    pub payment_id: String,
    /// The PG payment key.
    pub payment_key: String,
    /// The PG approval number being refunded.
    pub approval_number: String,
    /// Amount in won.
    pub amount: i64,
    /// Why, sent to the PG as the cancel reason.
    pub reason: String,
}

/// What the PG said to a cancel or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PgCancellation {
    /// False when there was nothing to cancel (the PG never charged).
    pub cancelled: bool,
    /// The PG's reference of the cancellation, if any.
    pub reference: Option<String>,
}

/// Input of recording a failed payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPaymentFailure {
    /// The payment that failed.
    pub payment: ApprovePayment,
    /// Machine-readable reason, e.g. `INSUFFICIENT_FUNDS`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

/// Input of recording a cancelled (refunded) payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPaymentCancellation {
    /// The payment that was refunded.
    pub payment: ApprovePayment,
    /// The contract reason.
    pub reason: PaymentCancellationReason,
    /// The refund's reference at the PG (or the operator's, for a manual refund).
    pub refund_reference: Option<String>,
    /// Who refunded: `pg` or the operator's name.
    pub refunded_by: String,
}

/// Input of releasing an order's stock (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStock {
    /// The order.
    pub order_id: String,
}

/// What releasing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StockRelease {
    /// The order's items.
    pub items: Vec<OrderItem>,
    /// `RELEASED` (reservation returned), `RESTOCKED` (confirmed stock returned) or `NOTHING`.
    pub action: String,
}

/// Input of cancelling an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrder {
    /// The order.
    pub order_id: String,
    /// The cancel reason shown to people, e.g. `결제 실패`.
    pub reason: String,
}

/// The order as it was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CancelledOrder {
    /// The order's items.
    pub items: Vec<OrderItem>,
}

/// Signal: try the refund again (after an operator fixed its cause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetryRefund {
    /// Who asked.
    pub operator: String,
}

/// Signal: an operator refunded by hand; the workflow records it and finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManualRefund {
    /// Who refunded.
    pub operator: String,
    /// The refund's reference (e.g. the PG console's transaction id).
    pub reference: String,
}

/// Where an event went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedEvent {
    /// The topic written to.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset of the record.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_method_round_trips_through_contract_symbols() {
        for m in PaymentMethod::ALL {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(m.as_str().parse::<PaymentMethod>().unwrap(), m);
        }
        assert!("PAYPAL".parse::<PaymentMethod>().is_err());
    }

    #[test]
    fn payment_request_reads_the_api_shape() {
        let req: PaymentRequest = serde_json::from_str(
            r#"{"orderId":"ORD-1","userId":"USR-1","paymentMethod":"KAKAO_PAY","amount":30000}"#,
        )
        .unwrap();
        assert_eq!(req.payment_method, PaymentMethod::KakaoPay);
        assert_eq!(req.payment_key, None);
    }
}
