//! Each activity's input and output.

use super::{EpochMillis, OrderItem, PaymentCancellationReason, PaymentMethod};
use serde::{Deserialize, Serialize};

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
    /// The second look, after the PG's processing window ([`crate::workflow::LATE_CHARGE_PATCH`]):
    /// cancels under an idempotency key of its own, so the first void's stored answer ("nothing
    /// to cancel") is not replayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
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
    /// The PG's reference of the cancellation: of this cancel (or the same one replayed), or,
    /// for a void that found the payment cancelled, its last cancel; `None` when the PG
    /// answered that the payment was cancelled already.
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
