//! Payment service (`payment-activities`): the PG and the `payment` schema.
//!
//! The payment id is the PG's `Idempotency-Key`: every attempt for one order is the same
//! request at the PG, which answers it once and charges once. The database row is keyed by it
//! too, and every write is a conditional upsert, so running any activity twice leaves the same
//! row.
//!
//! Money only ever moves back for a payment the PG says is this order's: a payment key is the
//! client's word ([`keys`] binds it to one order), so a void looks the order's payment up at the
//! PG first, and a refund cancels the payment this order's own confirmation recorded.

pub mod keys;
pub mod pg;
pub mod records;

use crate::span::activity_span;
use crate::{
    failure::{Transient, non_retryable, retryable},
    metrics::Metrics,
};
use keys::KeyBinding;
use payflow_workflows::{
    activities::markers,
    errors::{self, codes},
    ids,
    types::{
        ApprovePayment, PaymentRecordStatus, PgApproval, PgCancellation, RecordPayment,
        RecordPaymentCancellation, RecordPaymentFailure, RefundPayment, VoidPayment,
    },
};
use pg::{PgClient, PgError, PgPayment, parse_rfc3339_millis};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

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
        // already finished (then the PG is not asked again). A key that belongs to another
        // order is never sent to the PG for this one (payments started without the API meet
        // this check here): the same statement binds the key, and records nothing if it is
        // another order's.
        let row = match record_attempt(&self.db, p).await.map_err(|e| {
            match unique_violation(&e) {
                true => non_retryable(
                    errors::PG_REJECTED,
                    format!("order {} already has another payment", p.order_id),
                ),
                false => retryable("record payment attempt", e),
            }
        })? {
            Attempt::Recorded(row) => row,
            Attempt::KeyInUse => {
                tracing::warn!(order_id = %p.order_id, payment_id = %p.payment_id, "payment key belongs to another order");
                return Err(non_retryable(
                    errors::PG_REJECTED,
                    format!(
                        "{}: the payment key belongs to another order",
                        codes::PAYMENT_KEY_IN_USE
                    ),
                ));
            }
        };
        let status: PaymentRecordStatus = row.status.parse().transient("payment status")?;
        match (status, row.approval_number, row.approved_at) {
            (status, Some(number), Some(at)) if status.was_approved() => {
                return Ok(PgApproval {
                    approval_number: number,
                    approved_at: at.timestamp_millis(),
                });
            }
            (PaymentRecordStatus::Failed, ..) => {
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
            Ok(payment) if payment.order_id != p.order_id => {
                // The PG confirmed a payment of another order: nothing of this order's was
                // charged, and that payment is not ours to touch.
                tracing::error!(order_id = %p.order_id, payment_id = %p.payment_id, "the PG answered with another order's payment");
                Err(non_retryable(
                    errors::PG_REJECTED,
                    format!(
                        "{}: the PG answered with another order's payment",
                        codes::PG_ORDER_MISMATCH
                    ),
                ))
            }
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
                let recorded = self
                    .record_completed(&RecordPayment {
                        payment: p.clone(),
                        approval: approval.clone(),
                    })
                    .await;
                if recorded.is_err() && self.has_failed(&p.payment_id).await {
                    self.void_late_approval(p, &payment.payment_key).await;
                }
                recorded.map(|()| approval)
            }
            Err(err @ PgError::Declined { .. }) => {
                tracing::info!(order_id = %p.order_id, payment_id = %p.payment_id, reason = %err, "PG declined");
                Err(non_retryable(errors::PAYMENT_DECLINED, err.to_string()))
            }
            Err(err @ PgError::Rejected { .. }) => {
                tracing::warn!(order_id = %p.order_id, payment_id = %p.payment_id, reason = %err, first_attempt = row.first, "PG rejected");
                let PgError::Rejected { code, message, .. } = err else {
                    unreachable!("matched above")
                };
                // `CODE: message`, as for declines: the workflow reports the PG's code. The
                // refusal speaks for this request only (a rotated secret key, a gateway's error
                // page): after an earlier attempt that may have reached the PG and charged, the
                // outcome is unknown, and the workflow voids, asking the PG what it holds. The
                // customer hears no more of it than the code.
                Err(if row.first {
                    non_retryable(errors::PG_REJECTED, format!("{code}: {message}"))
                } else {
                    non_retryable(
                        errors::PG_OUTCOME_UNKNOWN,
                        format!(
                            "no answer from the PG to this payment (its retry was refused: {code})"
                        ),
                    )
                })
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
        self.settle(
            &p.payment_id,
            changed.is_some(),
            PaymentRecordStatus::Completed,
            "completed",
        )
        .await
    }

    /// Cancels at the PG a payment whose outcome is unknown, if the PG holds one for this
    /// order. The client's payment key alone decides nothing: a key of another order finds
    /// that order's payment, which is left alone.
    ///
    /// The payment is marked `FAILED` first, so the approval attempt that may still be waiting
    /// for the PG cannot record it afterwards: an approval that lands after this mark is taken
    /// back by that attempt ([`Self::void_late_approval`]), and one that landed before it is at
    /// the PG for the look-up below.
    pub async fn void_payment(&self, v: &VoidPayment) -> Result<PgCancellation, ActivityError> {
        let order_id = ids::order_id_from_payment_id(&v.payment_id).ok_or_else(|| {
            non_retryable(
                errors::INVALID_STATE,
                format!("{} is not a payment id", v.payment_id),
            )
        })?;
        // `failure_code` stays empty: the failure's record (`record_failed`) fills it.
        sqlx::query(
            "UPDATE payment.payments SET status = 'FAILED', failure_message = $2, updated_at = now()
              WHERE payment_id = $1 AND status IN ('IN_PROGRESS', 'COMPLETED')",
        )
        .bind(&v.payment_id)
        .bind(&v.reason)
        .execute(&self.db)
        .await
        .transient("mark the payment failed before the void")?;
        let found = self
            .payment_of_order(order_id, &v.payment_key)
            .await
            .map_err(|e| retryable("PG look-up", e))?;
        let Some(payment) = found else {
            tracing::info!(order_id, payment_id = %v.payment_id, "the PG holds no payment of this order: nothing to void");
            return Ok(PgCancellation {
                cancelled: false,
                reference: None,
            });
        };
        match payment.status.as_str() {
            // The late look always asks the PG under its own key, so its answer says whether
            // it cancelled (a reference: its own cancel, or the same cancel replayed) or found
            // the payment cancelled by someone else (`ALREADY_CANCELED_PAYMENT`: none).
            "CANCELED" if !v.late => {
                return Ok(PgCancellation {
                    cancelled: true,
                    reference: payment.cancels.last().map(|c| c.transaction_key.clone()),
                });
            }
            // `READY` and `IN_PROGRESS` (the customer authenticated, the PG not approved yet)
            // are not charged yet and cannot be cancelled, but a confirm still in the PG's
            // hands may yet approve them. The first look leaves that to the workflow's second
            // look ([`VoidPayment::late`]); the second look, the last one, goes on looking until
            // the PG has decided (the workflow lists it for operators while it does).
            "READY" | "IN_PROGRESS" if v.late => {
                return Err(retryable(
                    "PG void",
                    anyhow::anyhow!(
                        "the PG has not decided the payment yet ({})",
                        payment.status
                    ),
                ));
            }
            // Never completed at the PG: nothing was charged (yet).
            "ABORTED" | "EXPIRED" | "READY" | "IN_PROGRESS" => {
                return Ok(PgCancellation {
                    cancelled: false,
                    reference: None,
                });
            }
            _ => {}
        }
        // The second look has a key of its own: the first void's answer is stored under its key.
        let key = if v.late { "void-late" } else { "void" };
        let voided = self
            .cancel_at_pg(
                &format!("{}-{key}", v.payment_id),
                &payment.payment_key,
                &v.reason,
                None,
            )
            .await
            .map_err(|e| match e {
                // The PG says this payment cannot be cancelled: asking again cannot help. The
                // workflow lists it for operators (the customer is charged).
                PgError::Rejected { ref code, .. } if code.starts_with("NOT_CANCELABLE_") => {
                    non_retryable(errors::PG_REJECTED, e.to_string())
                }
                // payflow's credentials refused (a rotated key): tried again, as the look-up is,
                // until they are right; the workflow lists a void that keeps failing.
                PgError::Rejected {
                    status: 401 | 403, ..
                } => retryable("PG void", e),
                // Nothing the PG would accept can be cancelled: record it and let the operator see.
                PgError::Rejected { .. } => non_retryable(errors::PG_REJECTED, e.to_string()),
                other => retryable("PG void", other),
            })?;
        if v.late && voided.cancelled {
            tracing::warn!(order_id, payment_id = %v.payment_id, "the PG completed a charge after the void had looked: cancelled");
        }
        Ok(voided)
    }

    /// This order's payment at the PG: looked up by order id, else by the key if the PG says
    /// that key's payment is this order's.
    async fn payment_of_order(
        &self,
        order_id: &str,
        payment_key: &str,
    ) -> Result<Option<PgPayment>, PgError> {
        let started = std::time::Instant::now();
        let by_order = self.pg.payment_of_order(order_id).await;
        self.metrics.pg("lookup", started.elapsed(), &by_order);
        if let Some(payment) = by_order?.filter(|p| p.order_id == order_id) {
            return Ok(Some(payment));
        }
        let started = std::time::Instant::now();
        let by_key = self.pg.payment_by_key(payment_key).await;
        self.metrics.pg("lookup", started.elapsed(), &by_key);
        Ok(match by_key? {
            Some(p) if p.order_id == order_id => Some(p),
            Some(_) => {
                tracing::warn!(
                    order_id,
                    "the payment key belongs to another order's payment at the PG: left alone"
                );
                None
            }
            None => None,
        })
    }

    /// Refunds an approved payment in full: the payment this order's own confirmation
    /// recorded (its key and approval number), after the PG confirms it is this order's.
    pub async fn refund_payment(&self, r: &RefundPayment) -> Result<PgCancellation, ActivityError> {
        let order_id = ids::order_id_from_payment_id(&r.payment_id).unwrap_or_default();
        let recorded: Option<(String, Option<String>, String)> = sqlx::query_as(
            "SELECT status, pg_approval_number, payment_key FROM payment.payments
              WHERE payment_id = $1",
        )
        .bind(&r.payment_id)
        .fetch_optional(&self.db)
        .await
        .transient("read payment")?;
        let refuse = |why: String| Err(non_retryable(errors::REFUND_REJECTED, why));
        let payment_key = match recorded {
            Some((status, Some(number), key))
                if number == r.approval_number
                    && status.parse().is_ok_and(PaymentRecordStatus::was_approved) =>
            {
                key
            }
            _ => {
                return refuse(format!(
                    "payment {} has no recorded approval {}",
                    r.payment_id, r.approval_number
                ));
            }
        };
        let started = std::time::Instant::now();
        let at_pg = self.pg.payment_by_key(&payment_key).await;
        self.metrics.pg("lookup", started.elapsed(), &at_pg);
        match at_pg.map_err(|e| retryable("PG look-up", e))? {
            Some(p) if p.order_id == order_id => {}
            Some(_) => {
                tracing::error!(order_id, payment_id = %r.payment_id, "the recorded payment key holds another order's payment at the PG");
                return refuse(format!(
                    "the PG holds payment {} for another order",
                    r.payment_id
                ));
            }
            None => {
                return refuse(format!("the PG has no payment {} to refund", r.payment_id));
            }
        }
        let result = self
            .cancel_at_pg(
                &format!("{}-refund", r.payment_id),
                &payment_key,
                &r.reason,
                None,
            )
            .await;
        match result {
            Ok(done) if done.cancelled => {
                tracing::info!(payment_id = %r.payment_id, "refunded at the PG");
                Ok(done)
            }
            Ok(_) => refuse(format!("the PG has no payment {} to refund", r.payment_id)),
            Err(e @ PgError::Rejected { .. }) | Err(e @ PgError::Declined { .. }) => {
                refuse(e.to_string())
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

    /// Whether the payment is recorded `FAILED` (`false` when that cannot be read).
    async fn has_failed(&self, payment_id: &str) -> bool {
        self.status_of(payment_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s == PaymentRecordStatus::Failed.as_str())
    }

    /// The payment's recorded status, if it has a row.
    async fn status_of(&self, payment_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT status FROM payment.payments WHERE payment_id = $1")
            .bind(payment_id)
            .fetch_optional(&self.db)
            .await
    }

    /// The PG approved after the payment had been declared failed: the approval step timed
    /// out or was cancelled while this attempt waited for the PG, and the void found nothing
    /// at the PG yet. Nobody else will take this charge back, so this attempt cancels it, under
    /// the void's idempotency key (a void running at the same time is the same cancel). It
    /// retries for about a minute while the PG is unavailable; what it cannot cancel is logged
    /// as an error for an operator.
    async fn void_late_approval(&self, p: &ApprovePayment, pg_payment_key: &str) {
        const TRIES: u32 = 10;
        let mut wait = std::time::Duration::from_millis(200);
        for attempt in 1..=TRIES {
            match self
                .cancel_at_pg(
                    &format!("{}-void", p.payment_id),
                    pg_payment_key,
                    "payment not completed: approved after the payment had failed",
                    None,
                )
                .await
            {
                Ok(done) if done.cancelled => {
                    tracing::warn!(order_id = %p.order_id, payment_id = %p.payment_id, "the PG approved after the payment had failed: voided");
                    return;
                }
                // The void's key holds an earlier "no such payment": the workflow's second look
                // (its own key) cancels this charge.
                Ok(_) => {
                    tracing::warn!(order_id = %p.order_id, payment_id = %p.payment_id, "the PG approved after the payment had failed; the void's key was answered before the charge, so the workflow's second look cancels it");
                    return;
                }
                Err(PgError::Unavailable(_)) if attempt < TRIES => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(order_id = %p.order_id, payment_id = %p.payment_id, error = %e, "the PG approved after the payment had failed and the void did not go through: cancel it at the PG by hand");
                    return;
                }
            }
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
                 OR (payment.payments.status = 'FAILED' AND payment.payments.failure_code IS NULL)
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
        self.settle(
            &p.payment_id,
            changed.is_some(),
            PaymentRecordStatus::Failed,
            "failed",
        )
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
        self.settle(
            &p.payment_id,
            changed.is_some(),
            PaymentRecordStatus::Cancelled,
            "cancelled",
        )
        .await
    }

    /// After a conditional write: a change is counted; no change is fine when the row already
    /// holds the target status (a retry), and a conflict otherwise.
    async fn settle(
        &self,
        payment_id: &str,
        changed: bool,
        target: PaymentRecordStatus,
        outcome: &'static str,
    ) -> Result<(), ActivityError> {
        if changed {
            self.metrics.payment(outcome);
            return Ok(());
        }
        let status = self.status_of(payment_id).await.transient("read payment")?;
        match status {
            Some(s) if s == target.as_str() => Ok(()),
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

/// The attempt's row, as [`record_attempt`] found or wrote it.
struct AttemptRow {
    status: String,
    approval_number: Option<String>,
    approved_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Written by this attempt: no earlier attempt of the payment can have reached the PG.
    first: bool,
}

/// [`record_attempt`]'s statement's answer: the key's owner and, if the key is this order's,
/// the attempt's row.
#[derive(sqlx::FromRow)]
struct AttemptAnswer {
    owner: Option<String>,
    status: Option<String>,
    approval_number: Option<String>,
    approved_at: Option<chrono::DateTime<chrono::Utc>>,
    first: Option<bool>,
}

/// What [`record_attempt`] found.
enum Attempt {
    /// The key is this order's; the attempt's row (new or left by an earlier attempt).
    Recorded(AttemptRow),
    /// The key is another order's: nothing was recorded.
    KeyInUse,
}

/// Binds the payment key to the order unless another order owns it, and in the same round trip
/// records the attempt as `IN_PROGRESS` (or finds the row an earlier attempt left). Records
/// nothing when the key is another order's.
async fn record_attempt(db: &PgPool, p: &ApprovePayment) -> Result<Attempt, sqlx::Error> {
    keys::until_settled(|| async {
        let answer: AttemptAnswer = sqlx::query_as(
            "WITH bound AS (
                 INSERT INTO payment.payment_keys (payment_key, order_id) VALUES ($6, $2)
                 ON CONFLICT (payment_key) DO NOTHING
                 RETURNING order_id),
             owner AS (
                 SELECT order_id FROM bound
                 UNION ALL
                 SELECT order_id FROM payment.payment_keys WHERE payment_key = $6
                 LIMIT 1),
             attempt AS (
                 INSERT INTO payment.payments
                     (payment_id, order_id, user_id, status, amount, method, payment_key)
                 SELECT $1, $2, $3, 'IN_PROGRESS', $4, $5, $6 FROM owner WHERE order_id = $2
                 ON CONFLICT (payment_id) DO UPDATE SET updated_at = payment.payments.updated_at
                 RETURNING status, pg_approval_number, approved_at, xmax = 0 AS first)
             SELECT (SELECT order_id FROM owner) AS owner, a.status,
                    a.pg_approval_number AS approval_number, a.approved_at, a.first
               FROM (SELECT 1) AS one LEFT JOIN attempt AS a ON true",
        )
        .bind(&p.payment_id)
        .bind(&p.order_id)
        .bind(&p.user_id)
        .bind(p.amount)
        .bind(p.payment_method.as_str())
        .bind(&p.payment_key)
        .fetch_one(db)
        .await?;
        let Some(owner) = answer.owner else {
            return Ok(None);
        };
        Ok(Some(
            match (keys::binding(&owner, &p.order_id), answer.status) {
                // `xmax = 0`: the row was inserted by this statement, not updated in place.
                (KeyBinding::Bound, Some(status)) => Attempt::Recorded(AttemptRow {
                    status,
                    approval_number: answer.approval_number,
                    approved_at: answer.approved_at,
                    first: answer.first.unwrap_or(false),
                }),
                // The insert is conditional on the key being this order's only.
                (KeyBinding::Bound, None) => {
                    return Err(sqlx::Error::Protocol(
                        "the payment attempt row was not written".into(),
                    ));
                }
                (KeyBinding::InUse, _) => Attempt::KeyInUse,
            },
        ))
    })
    .await
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
        ctx: ActivityContext,
        input: ApprovePayment,
    ) -> Result<PgApproval, ActivityError> {
        self.approve_payment(&input)
            .instrument(activity_span(&ctx, &input.order_id))
            .await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record`].
    #[activity(definition = markers::RecordPayment)]
    pub async fn record(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RecordPayment,
    ) -> Result<(), ActivityError> {
        self.record_completed(&input)
            .instrument(activity_span(&ctx, &input.payment.order_id))
            .await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::void`].
    #[activity(definition = markers::VoidPayment)]
    pub async fn void(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: VoidPayment,
    ) -> Result<PgCancellation, ActivityError> {
        self.void_payment(&input)
            .instrument(activity_span(&ctx, order_of(&input.payment_id)))
            .await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::refund`].
    #[activity(definition = markers::RefundPayment)]
    pub async fn refund(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RefundPayment,
    ) -> Result<PgCancellation, ActivityError> {
        self.refund_payment(&input)
            .instrument(activity_span(&ctx, order_of(&input.payment_id)))
            .await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record_failure`].
    #[activity(definition = markers::RecordPaymentFailure)]
    pub async fn record_failure(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RecordPaymentFailure,
    ) -> Result<(), ActivityError> {
        self.record_failed(&input)
            .instrument(activity_span(&ctx, &input.payment.order_id))
            .await
    }

    /// See [`payflow_workflows::activities::PaymentActivities::record_cancellation`].
    #[activity(definition = markers::RecordPaymentCancellation)]
    pub async fn record_cancellation(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RecordPaymentCancellation,
    ) -> Result<(), ActivityError> {
        self.record_cancelled(&input)
            .instrument(activity_span(&ctx, &input.payment.order_id))
            .await
    }
}

/// The order a payment id belongs to, for the activity's span.
fn order_of(payment_id: &str) -> &str {
    ids::order_id_from_payment_id(payment_id).unwrap_or_default()
}
