//! What the payment service recorded of a payment (`payment.payments`): how a payment is
//! answered once Temporal no longer holds its finished workflow (after the namespace's
//! retention), so a payment can be looked up, and a request repeated, for as long as the
//! databases keep it.

use crate::order::OrderRow;
use payflow_workflows::types::{OrderStatus, PaymentStage, PaymentStatus};
use sqlx::PgPool;

/// The payment rows.
#[derive(Debug, Clone)]
pub struct PaymentRecords {
    db: PgPool,
}

/// A `payment.payments` row, as far as a status needs it.
#[derive(sqlx::FromRow)]
struct Recorded {
    payment_id: String,
    user_id: String,
    amount: i64,
    method: String,
    pg_approval_number: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    refund_reference: Option<String>,
    refunded_by: Option<String>,
}

impl PaymentRecords {
    /// Wraps the database pool.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// The recorded status of the payment of `order`, which must be final (completed or
    /// cancelled: nothing more will change); `None` if it is not, or has no payment.
    pub async fn status(&self, order: &OrderRow) -> sqlx::Result<Option<PaymentStatus>> {
        let stage = match order.status {
            OrderStatus::OrderCompleted => PaymentStage::OrderCompleted,
            OrderStatus::OrderCancelled => PaymentStage::OrderCancelled,
            _ => return Ok(None),
        };
        let Some(row) = sqlx::query_as::<_, Recorded>(
            "SELECT payment_id, user_id, amount, method, pg_approval_number, failure_code,
                    failure_message, refund_reference, refunded_by
               FROM payment.payments WHERE order_id = $1",
        )
        .bind(&order.order_id)
        .fetch_optional(&self.db)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(PaymentStatus {
            order_id: order.order_id.clone(),
            payment_id: row.payment_id,
            user_id: row.user_id,
            payment_method: row
                .method
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            amount: row.amount,
            stage,
            approval_number: row.pg_approval_number,
            failure_code: row.failure_code,
            failure_reason: order.cancel_reason.clone(),
            failure_message: row.failure_message,
            needs_attention: false,
            attention_reason: None,
            attention_reasons: Vec::new(),
            unpublished_events: 0,
            publish_error: None,
            refund_reference: row.refund_reference,
            refunded_by: row.refunded_by,
            late_charge_voided: false,
            refund_waiting: false,
            stage_times: Default::default(),
        }))
    }
}
