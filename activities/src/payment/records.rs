//! What the payment service recorded of a payment (`payment.payments`): how a payment is
//! answered once Temporal no longer holds its finished workflow (after the namespace's
//! retention), so a payment can be looked up, and a request repeated, for as long as the
//! databases keep it.

use crate::order::OrderRow;
use payflow_workflows::types::{OrderStatus, PaymentRecordStatus, PaymentStage, PaymentStatus};
use sqlx::PgPool;

/// The payment rows.
#[derive(Debug, Clone)]
pub struct PaymentRecords {
    db: PgPool,
}

/// A `payment.payments` row, as far as a status needs it.
#[derive(sqlx::FromRow)]
struct Recorded {
    user_id: String,
    #[sqlx(try_from = "String")]
    status: PaymentRecordStatus,
    amount: i64,
    method: String,
    pg_approval_number: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    cancel_reason: Option<String>,
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
            "SELECT user_id, status, amount, method, pg_approval_number, failure_code,
                    failure_message, cancel_reason, refund_reference, refunded_by
               FROM payment.payments WHERE order_id = $1",
        )
        .bind(&order.order_id)
        .fetch_optional(&self.db)
        .await?
        else {
            return Ok(None);
        };
        let method = row
            .method
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Some(PaymentStatus {
            // Kept only for a payment the PG approved: a charge voided after its approval was
            // recorded keeps the number in its row.
            approval_number: row.pg_approval_number.filter(|_| row.status.was_approved()),
            // A refund records the payment's cancellation reason, not a failure code.
            failure_code: row.failure_code.or(row.cancel_reason),
            failure_reason: order.cancel_reason.clone(),
            failure_message: row.failure_message,
            refund_reference: row.refund_reference,
            refunded_by: row.refunded_by,
            ..PaymentStatus::new(&order.order_id, &row.user_id, method, row.amount, stage)
        }))
    }
}
