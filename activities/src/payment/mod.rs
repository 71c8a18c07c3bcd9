//! Payment service (`payment-activities`): the PG and the `payment` schema.
//!
//! The payment id is the PG's `Idempotency-Key`: every attempt for one order is the same
//! request at the PG, which answers it once and charges once. The database row is keyed by it
//! too, and every write is a conditional upsert, so running any activity twice leaves the same
//! row.

pub mod pg;

use crate::{
    failure::{Transient, non_retryable, retryable},
    metrics::Metrics,
};
use payflow_workflows::{
    activities::markers,
    errors,
    types::{
        ApprovePayment, PgApproval, PgCancellation, RecordPayment, RecordPaymentCancellation,
        RecordPaymentFailure, RefundPayment, VoidPayment,
    },
};
use pg::{PgClient, PgError, parse_rfc3339_millis};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// The payment service's activities.
#[derive(Debug, Clone)]
pub struct PaymentActivities {
    pg: PgClient,
    db: PgPool,
    metrics: Metrics,
}

impl PaymentActivities {
    /// Wires the PG client and the database pool.
    pub fn new(pg: PgClient, db: PgPool) -> Self {
        Self {
            pg,
            db,
            metrics: Metrics::default(),
        }
    }

    /// Records the seed's monitoring points on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The PG approval, recorded as `COMPLETED` (see
    /// [`payflow_workflows::activities::PaymentActivities::approve`]).
    pub async fn approve_payment(&self, p: &ApprovePayment) -> Result<PgApproval, ActivityError> {
        // Record the attempt before the PG hears of it, and learn whether an earlier attempt
        // already finished (then the PG is not asked again).
        let row: (
            String,
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(
            "INSERT INTO payment.payments
                 (payment_id, order_id, user_id, status, amount, method, payment_key)
             VALUES ($1, $2, $3, 'IN_PROGRESS', $4, $5, $6)
             ON CONFLICT (payment_id) DO UPDATE SET updated_at = payment.payments.updated_at
             RETURNING status, pg_approval_number, approved_at",
        )
        .bind(&p.payment_id)
        .bind(&p.order_id)
        .bind(&p.user_id)
        .bind(p.amount)
        .bind(p.payment_method.as_str())
        .bind(&p.payment_key)
        .fetch_one(&self.db)
        .await
        .map_err(|e| match unique_violation(&e) {
            true => non_retryable(
                errors::PG_REJECTED,
                format!("order {} already has another payment", p.order_id),
            ),
            false => retryable("record payment attempt", e),
        })?;
        match row {
            (status, Some(number), Some(at)) if status == "COMPLETED" || status == "CANCELLED" => {
                return Ok(PgApproval {
                    approval_number: number,
                    approved_at: at.timestamp_millis(),
                });
            }
            (status, ..) if status == "FAILED" => {
                return Err(non_retryable(
                    errors::PG_REJECTED,
                    format!("payment {} already failed", p.payment_id),
                ));
            }
            _ => {}
        }

        let started = std::time::Instant::now();
        let result = self
            .pg
            .confirm(&p.payment_id, &p.payment_key, &p.order_id, p.amount)
            .await;
        self.metrics.pg("confirm", started.elapsed(), &result);
        match result {
            Ok(payment) => {
                let approval_number = payment.approval_number().ok_or_else(|| {
                    retryable(
                        "PG approval",
                        anyhow::anyhow!("the PG approved without an approval number"),
                    )
                })?;
                let approved_at = payment
                    .approved_at
                    .as_deref()
                    .and_then(parse_rfc3339_millis)
                    .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                tracing::info!(order_id = %p.order_id, payment_id = %p.payment_id, "PG approved");
                let approval = PgApproval {
                    approval_number: approval_number.to_owned(),
                    approved_at,
                };
                // Step 2 in the same activity: the payment is COMPLETED with its approval
                // number before anyone hears of it. A retry finds it recorded and skips the PG.
                self.record_completed(&RecordPayment {
                    payment: p.clone(),
                    approval: approval.clone(),
                })
                .await?;
                Ok(approval)
            }
            Err(err @ PgError::Declined { .. }) => {
                tracing::info!(order_id = %p.order_id, payment_id = %p.payment_id, reason = %err, "PG declined");
                Err(non_retryable(errors::PAYMENT_DECLINED, err.to_string()))
            }
            Err(err @ PgError::Rejected { .. }) => {
                tracing::warn!(order_id = %p.order_id, payment_id = %p.payment_id, reason = %err, "PG rejected");
                Err(non_retryable(errors::PG_REJECTED, err.to_string()))
            }
            Err(err @ PgError::Unavailable(_)) => Err(retryable("PG approval", err)),
        }
    }

    /// Payment -> `COMPLETED` with its approval number.
    pub async fn record_completed(&self, r: &RecordPayment) -> Result<(), ActivityError> {
        let p = &r.payment;
        let approved_at = chrono::DateTime::from_timestamp_millis(r.approval.approved_at);
        let changed = sqlx::query(
            "INSERT INTO payment.payments
                 (payment_id, order_id, user_id, status, amount, method, payment_key,
                  pg_approval_number, approved_at)
             VALUES ($1, $2, $3, 'COMPLETED', $4, $5, $6, $7, $8)
             ON CONFLICT (payment_id) DO UPDATE
                SET status = 'COMPLETED', pg_approval_number = $7, approved_at = $8,
                    updated_at = now()
              WHERE payment.payments.status = 'IN_PROGRESS'
             RETURNING 1",
        )
        .bind(&p.payment_id)
        .bind(&p.order_id)
        .bind(&p.user_id)
        .bind(p.amount)
        .bind(p.payment_method.as_str())
        .bind(&p.payment_key)
        .bind(&r.approval.approval_number)
        .bind(approved_at)
        .fetch_optional(&self.db)
        .await
        .transient("record payment")?;
        self.settle(&p.payment_id, changed.is_some(), "COMPLETED", "completed")
            .await
    }

    /// Cancels at the PG a payment whose outcome is unknown.
    pub async fn void_payment(&self, v: &VoidPayment) -> Result<PgCancellation, ActivityError> {
        self.cancel_at_pg(
            &format!("{}-void", v.payment_id),
            &v.payment_key,
            &v.reason,
            None,
        )
        .await
        .map_err(|e| match e {
            // Nothing the PG would accept can be cancelled: record it and let the operator see.
            PgError::Rejected { .. } => non_retryable(errors::PG_REJECTED, e.to_string()),
            other => retryable("PG void", other),
        })
    }

    /// Refunds an approved payment in full.
    pub async fn refund_payment(&self, r: &RefundPayment) -> Result<PgCancellation, ActivityError> {
        let result = self
            .cancel_at_pg(
                &format!("{}-refund", r.payment_id),
                &r.payment_key,
                &r.reason,
                Some(r.amount),
            )
            .await;
        match result {
            Ok(done) if done.cancelled => {
                tracing::info!(payment_id = %r.payment_id, "refunded at the PG");
                Ok(done)
            }
            Ok(_) => Err(non_retryable(
                errors::REFUND_REJECTED,
                format!("the PG has no payment {} to refund", r.payment_id),
            )),
            Err(e @ PgError::Rejected { .. }) | Err(e @ PgError::Declined { .. }) => {
                Err(non_retryable(errors::REFUND_REJECTED, e.to_string()))
            }
            Err(e) => Err(retryable("PG refund", e)),
        }
    }

    /// A cancel at the PG, where "already cancelled" is success and "no such payment" means
    /// there was nothing to cancel.
    async fn cancel_at_pg(
        &self,
        key: &str,
        payment_key: &str,
        reason: &str,
        amount: Option<i64>,
    ) -> Result<PgCancellation, PgError> {
        let started = std::time::Instant::now();
        let result = self.pg.cancel(key, payment_key, reason, amount).await;
        self.metrics.pg("cancel", started.elapsed(), &result);
        match result {
            Ok(payment) => Ok(PgCancellation {
                cancelled: true,
                reference: payment.cancels.last().map(|c| c.transaction_key.clone()),
            }),
            Err(e) if e.code() == Some("ALREADY_CANCELED_PAYMENT") => Ok(PgCancellation {
                cancelled: true,
                reference: None,
            }),
            Err(e) if e.code() == Some("NOT_FOUND_PAYMENT") => Ok(PgCancellation {
                cancelled: false,
                reference: None,
            }),
            Err(e) => Err(e),
        }
    }

    /// Payment -> `FAILED` (from `IN_PROGRESS`, or a new row if the PG was never asked).
    pub async fn record_failed(&self, f: &RecordPaymentFailure) -> Result<(), ActivityError> {
        let p = &f.payment;
        let changed = sqlx::query(
            "INSERT INTO payment.payments
                 (payment_id, order_id, user_id, status, amount, method, payment_key,
                  failure_code, failure_message)
             VALUES ($1, $2, $3, 'FAILED', $4, $5, $6, $7, $8)
             ON CONFLICT (payment_id) DO UPDATE
                SET status = 'FAILED', failure_code = $7, failure_message = $8, updated_at = now()
              WHERE payment.payments.status = 'IN_PROGRESS'
             RETURNING 1",
        )
        .bind(&p.payment_id)
        .bind(&p.order_id)
        .bind(&p.user_id)
        .bind(p.amount)
        .bind(p.payment_method.as_str())
        .bind(&p.payment_key)
        .bind(&f.code)
        .bind(&f.message)
        .fetch_optional(&self.db)
        .await
        .transient("record payment failure")?;
        self.settle(&p.payment_id, changed.is_some(), "FAILED", "failed")
            .await
    }

    /// Payment -> `CANCELLED` (refunded), with who refunded and the reference.
    pub async fn record_cancelled(
        &self,
        c: &RecordPaymentCancellation,
    ) -> Result<(), ActivityError> {
        let p = &c.payment;
        let changed = sqlx::query(
            "INSERT INTO payment.payments
                 (payment_id, order_id, user_id, status, amount, method, payment_key,
                  cancel_reason, refund_reference, refunded_by)
             VALUES ($1, $2, $3, 'CANCELLED', $4, $5, $6, $7, $8, $9)
             ON CONFLICT (payment_id) DO UPDATE
                SET status = 'CANCELLED', cancel_reason = $7, refund_reference = $8,
                    refunded_by = $9, updated_at = now()
              WHERE payment.payments.status IN ('IN_PROGRESS', 'COMPLETED')
             RETURNING 1",
        )
        .bind(&p.payment_id)
        .bind(&p.order_id)
        .bind(&p.user_id)
        .bind(p.amount)
        .bind(p.payment_method.as_str())
        .bind(&p.payment_key)
        .bind(c.reason.as_str())
        .bind(&c.refund_reference)
        .bind(&c.refunded_by)
        .fetch_optional(&self.db)
        .await
        .transient("record payment cancellation")?;
        self.settle(&p.payment_id, changed.is_some(), "CANCELLED", "cancelled")
            .await
    }

    /// After a conditional write: a change is counted; no change is fine when the row already
    /// holds the target status (a retry), and a conflict otherwise.
    async fn settle(
        &self,
        payment_id: &str,
        changed: bool,
        target: &str,
        outcome: &'static str,
    ) -> Result<(), ActivityError> {
        if changed {
            self.metrics.payment(outcome);
            return Ok(());
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM payment.payments WHERE payment_id = $1")
                .bind(payment_id)
                .fetch_optional(&self.db)
                .await
                .transient("read payment")?;
        match status {
            Some(s) if s == target => Ok(()),
            Some(s) => Err(non_retryable(
                errors::INVALID_STATE,
                format!("payment {payment_id} is {s}, cannot become {target}"),
            )),
            None => Err(retryable(
                "settle payment",
                anyhow::anyhow!("payment {payment_id} vanished"),
            )),
        }
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[activities]
impl PaymentActivities {
    /// See [`payflow_workflows::activities::PaymentActivities::approve`].
    #[activity(definition = markers::ApprovePayment)]
    pub async fn approve(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ApprovePayment,
    ) -> Result<PgApproval, ActivityError> {
        self.approve_payment(&input).await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record`].
    #[activity(definition = markers::RecordPayment)]
    pub async fn record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordPayment,
    ) -> Result<(), ActivityError> {
        self.record_completed(&input).await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::void`].
    #[activity(definition = markers::VoidPayment)]
    pub async fn void(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: VoidPayment,
    ) -> Result<PgCancellation, ActivityError> {
        self.void_payment(&input).await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::refund`].
    #[activity(definition = markers::RefundPayment)]
    pub async fn refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RefundPayment,
    ) -> Result<PgCancellation, ActivityError> {
        self.refund_payment(&input).await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record_failure`].
    #[activity(definition = markers::RecordPaymentFailure)]
    pub async fn record_failure(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordPaymentFailure,
    ) -> Result<(), ActivityError> {
        self.record_failed(&input).await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record_cancellation`].
    #[activity(definition = markers::RecordPaymentCancellation)]
    pub async fn record_cancellation(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordPaymentCancellation,
    ) -> Result<(), ActivityError> {
        self.record_cancelled(&input).await
    }
}
