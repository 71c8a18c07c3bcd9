//! Types shared by the workflow, its activities and its starters.
//!
//! Everything here crosses a process boundary as JSON (Temporal payloads), so field names are
//! part of the workflow's history format: rename nothing without a patch.
//!
//! This file: the payment as the API and operators see it (request, stage, decision, status,
//! outcome). [`events`]: the platform's events and their contract symbols. [`states`]: the states
//! the services keep in their tables. [`steps`]: each activity's input and output.

mod events;
mod states;
mod steps;

pub use crate::symbols::UnknownSymbol;
pub use events::*;
pub use states::*;
pub use steps::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

crate::symbols! {
    /// How the customer pays. The symbols are the Avro contract's `PaymentMethod` enum.
    pub enum PaymentMethod("payment method") {
        /// Credit or debit card.
        Card = "CARD",
        /// Bank transfer.
        BankTransfer = "BANK_TRANSFER",
        /// KakaoPay wallet.
        KakaoPay = "KAKAO_PAY",
        /// NaverPay wallet.
        NaverPay = "NAVER_PAY",
        /// Toss wallet.
        Toss = "TOSS",
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
    /// After a void that found nothing at the PG, how long to wait before looking once more
    /// for a charge the PG completed late ([`crate::workflow::LATE_CHARGE_PATCH`]).
    #[serde(default = "default_late_charge_secs")]
    pub late_charge_secs: u64,
    /// A compensation step (a stock release, an order's cancellation, a void, ...) that has
    /// not succeeded after this many seconds is listed for operators while it goes on trying
    /// ([`crate::workflow::COMPENSATION_WATCHED_PATCH`]).
    #[serde(default = "default_stuck_step_secs")]
    pub stuck_step_secs: u64,
}

fn default_late_charge_secs() -> u64 {
    120
}

fn default_stuck_step_secs() -> u64 {
    120
}

impl Default for SagaTimings {
    fn default() -> Self {
        Self {
            deadline_secs: 600,
            pg_timeout_secs: 30,
            stock_retry_secs: 30,
            refund_retry_secs: 120,
            late_charge_secs: default_late_charge_secs(),
            stuck_step_secs: default_stuck_step_secs(),
        }
    }
}

crate::symbols! {
    /// Where a payment is. Operators see these names in the `PaymentStage` search attribute.
    pub enum PaymentStage("payment stage") {
        /// Waiting for the PG's decision.
        PaymentWait = "PAYMENT_WAIT",
        /// The PG approved and the payment is recorded.
        PaymentCompleted = "PAYMENT_COMPLETED",
        /// The reserved stock is permanent in the product database.
        StockConfirmed = "STOCK_CONFIRMED",
        /// Final: the order is complete.
        OrderCompleted = "ORDER_COMPLETED",
        /// Something failed; compensations are running.
        Compensating = "COMPENSATING",
        /// Final: the order is cancelled (see the failure reason).
        OrderCancelled = "ORDER_CANCELLED",
    }
}

impl PaymentStage {
    /// True once the workflow has nothing left to do.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStage::OrderCompleted | PaymentStage::OrderCancelled
        )
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
    /// Whether paying again with other means could succeed (a decline) or not; false once the
    /// PG refused to cancel a charge of this payment ([`PaymentStatus::charge_held`]).
    pub retryable: bool,
}

/// The largest amount the platform's events can carry: their amounts are Avro `decimal(10,2)`,
/// at most 99,999,999.99, and payflow's are whole won.
pub const MAX_AMOUNT: i64 = 99_999_999;

/// An amount that cannot be paid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amount must be positive")]
pub struct NonPositiveAmount;

/// The amount rule, for every way in (API, CLI, library): whole won (KRW has no minor unit, so
/// an `i64` of won) and positive. (An order's total is also at most [`MAX_AMOUNT`], checked when
/// it is created; an amount is then checked against its order's total.)
pub fn check_amount(won: i64) -> Result<i64, NonPositiveAmount> {
    if won > 0 {
        Ok(won)
    } else {
        Err(NonPositiveAmount)
    }
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
    /// What the customer was told of the failure (the PG's decline message, say): a repeated
    /// request answers it again.
    #[serde(default)]
    pub failure_message: Option<String>,
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
    /// The PG completed a charge after the void had looked (a confirm the approval step gave
    /// up on), and the workflow's second look cancelled it.
    #[serde(default)]
    pub late_charge_voided: bool,
    /// The PG refused for good to cancel a charge of this payment (its outcome was unknown, or
    /// it charged late): listed for operators, who cancel it at the PG. The customer is not
    /// told to pay again (`retryable` is false). It stays: the workflow does not learn of a
    /// cancel made at the PG by hand.
    #[serde(default)]
    pub charge_held: bool,
    /// The refund failed every try and waits for an operator's `retry_refund` or
    /// `refund_completed_manually`; only while it does are those signals taken.
    #[serde(default)]
    pub refund_waiting: bool,
    /// When each stage was reached (workflow time), keyed by stage name.
    pub stage_times: BTreeMap<String, EpochMillis>,
}

impl PaymentStatus {
    /// The status of `order_id`'s payment at `stage`, with nothing else known yet.
    pub fn new(
        order_id: &str,
        user_id: &str,
        payment_method: PaymentMethod,
        amount: i64,
        stage: PaymentStage,
    ) -> Self {
        Self {
            order_id: order_id.to_owned(),
            payment_id: crate::ids::payment_id(order_id),
            user_id: user_id.to_owned(),
            payment_method,
            amount,
            stage,
            approval_number: None,
            failure_code: None,
            failure_reason: None,
            failure_message: None,
            needs_attention: false,
            attention_reason: None,
            attention_reasons: Vec::new(),
            unpublished_events: 0,
            publish_error: None,
            refund_reference: None,
            refunded_by: None,
            late_charge_voided: false,
            charge_held: false,
            refund_waiting: false,
            stage_times: Default::default(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_method_round_trips_through_contract_symbols() {
        for &m in PaymentMethod::ALL {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(m.as_str().parse::<PaymentMethod>().unwrap(), m);
        }
        assert_eq!(
            "PAYPAL".parse::<PaymentMethod>().unwrap_err().to_string(),
            r#"unknown payment method "PAYPAL": expected one of CARD, BANK_TRANSFER, KAKAO_PAY, NAVER_PAY, TOSS"#
        );
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
