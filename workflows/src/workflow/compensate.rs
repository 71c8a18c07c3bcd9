//! The failure paths: undo what the forward path did, newest first (the refund beside the
//! stock's return under [`super::COMPENSATION_WATCHED_PATCH`]), and end `ORDER_CANCELLED`.
//! What each failure means (reasons, events, push) is decided in [`super::failure`]; this is the
//! order in which it is done. Compensation steps are idempotent, retried without limit and
//! immune to the deadline and to cancellation; a refund that keeps failing waits for an operator.

use super::{
    COMPENSATION_FAILURE_TRACKED_PATCH, COMPENSATION_WATCHED_PATCH, LATE_CHARGE_PATCH,
    REFUND_SIGNALS_WHILE_WAITING_PATCH, VOID_ATTENTION_PATCH,
    failure::{Compensation, Failure, Money, Notice, failure_message},
    saga::{Saga, attention_keys},
};
use crate::{
    activities::{OrderActivities, PaymentActivities, ProductActivities},
    ids,
    types::*,
};
use futures_util::FutureExt;
use std::{future::Future, pin::pin, time::Duration};
use temporalio_common::error::RetryState;
use temporalio_workflow::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, TimerOptions, WaitConditionOptions,
    WorkflowCancellationToken, join, select,
};

/// Whether a step failed because its tries or its time ran out (its last try failing or timing
/// out, or its schedule-to-close time passing), rather than for good.
fn tries_ran_out(err: &ActivityExecutionError) -> bool {
    matches!(err, ActivityExecutionError::Failed(failed)
        if matches!(failed.retry_state(), RetryState::MaximumAttemptsReached | RetryState::Timeout))
}

/// Tries of a void before it is listed for operators (about 3 s of quick failures, or longer
/// while each try waits for the PG to time out).
const VOID_TRIES_UNLISTED: u32 = 5;

impl Saga {
    /// Compensates `failure`: before an approval, void if needed and fail the payment; after
    /// one, refund and cancel the payment. Either way the stock returns and the order is
    /// cancelled. Answers the void if it found nothing at the PG (see [`Saga::void_late_charge`]).
    pub(super) async fn compensate(&self, failure: Failure) -> Option<VoidPayment> {
        self.enter(PaymentStage::Compensating);
        self.watched
            .set(self.outbox && self.ctx.patched(COMPENSATION_WATCHED_PATCH));
        if let Some(step) = self.current_step.get() {
            self.track(step, SagaStatus::Failed, Some(failure.code()));
        }
        let approved = self.ctx.state(|s| s.status.approval_number.clone());
        let plan = Compensation::new(failure, approved.is_some(), &self.payment.order_id);
        let found_nothing = match approved {
            None => self.compensate_unpaid(plan).await,
            Some(approval_number) => {
                self.compensate_paid(plan, approval_number).await;
                None
            }
        };
        self.enter(PaymentStage::OrderCancelled);
        found_nothing
    }

    /// The PG never approved: void when its outcome is unknown, then fail the payment, return
    /// the stock and cancel the order. Answers the void if it found nothing at the PG.
    async fn compensate_unpaid(&self, plan: Compensation) -> Option<VoidPayment> {
        let code = &plan.code;
        let mut found_nothing = None;
        let mut charge_held = false;
        if plan.money == Money::Void {
            // Same key as the approval: whatever the PG did for it is undone.
            let void = VoidPayment {
                payment_id: self.payment.payment_id.clone(),
                payment_key: self.payment.payment_key.clone(),
                reason: plan.pg_reason(),
                late: false,
            };
            let voided = self.void(void.clone(), "void at PG").await;
            charge_held = voided.is_none();
            let status = self.compensation_status(voided.is_some());
            if voided.is_some_and(|v| !v.cancelled) {
                found_nothing = Some(void);
            }
            self.track(saga_steps::COMPENSATION_PAYMENT, status, Some(code));
        }
        self.ctx.state_mut(|s| {
            s.status.failure_code = Some(code.clone());
            s.status.failure_reason = Some(plan.order_reason.to_owned());
            s.status.failure_message = Some(plan.message.clone());
            s.status.charge_held = charge_held;
            s.decision = Some(PaymentDecision {
                order_id: self.payment.order_id.clone(),
                payment_id: self.payment.payment_id.clone(),
                approved: false,
                approval_number: None,
                failure_code: Some(code.clone()),
                failure_message: Some(plan.message.clone()),
                // A decline can be paid again with other means; a timeout is worth retrying,
                // unless the PG may still hold its charge (state only: no command changes).
                retryable: !charge_held,
            });
        });
        self.must(
            || PaymentActivities::record_failure,
            RecordPaymentFailure {
                payment: self.payment.clone(),
                code: code.clone(),
                message: plan.message.clone(),
            },
            &self.queues.payment,
            "payment failed",
        )
        .await;
        let failed_at = self.now_millis();
        let (_, released) = join!(
            self.publish(EventBody::PaymentFailed {
                payment_id: self.payment.payment_id.clone(),
                user_id: self.payment.user_id.clone(),
                failure_reason: code.clone(),
                failed_at,
            }),
            self.release_stock(),
        );
        self.stock_returned(released, code);
        self.cancel_order(plan.order_reason, plan.order_event_reason)
            .await;
        self.notify(plan.notice).await;
        found_nothing
    }

    /// The void found nothing at the PG, but a confirm the approval step gave up on may still
    /// be in the PG's hands: after the PG's processing window, look once more and cancel what
    /// it charged ([`LATE_CHARGE_PATCH`]). The order is final by now and its events are on their
    /// way; only the workflow stays open.
    pub(super) async fn void_late_charge(&self, void: VoidPayment) {
        if !self.ctx.patched(LATE_CHARGE_PATCH) {
            return;
        }
        // Immune to cancellation, as every compensation: an operator's cancel must not turn the
        // wait into a look before the PG has charged.
        let wait = Duration::from_secs(self.timings.late_charge_secs);
        let _ = self
            .ctx
            .timer(
                TimerOptions::builder(wait)
                    .summary("look for a late charge".to_owned())
                    .cancellation_token(WorkflowCancellationToken::new())
                    .build(),
            )
            .await;
        let late = VoidPayment { late: true, ..void };
        let voided = self.void(late, "void late charge").await;
        // A reference is the PG's answer to this look's own cancel; a payment someone else
        // cancelled (the approval attempt that heard the late approval) is answered without one.
        match voided {
            Some(v) if v.cancelled && v.reference.is_some() => {
                self.ctx.state_mut(|s| s.status.late_charge_voided = true);
            }
            Some(_) => {}
            // Refused for good: listed for operators; a repeated request is no longer told to
            // pay again.
            None => self.ctx.state_mut(|s| s.status.charge_held = true),
        }
    }

    /// The PG approved: return the stock and refund (waiting for an operator if the refund
    /// keeps failing; both at once under [`COMPENSATION_WATCHED_PATCH`], the refund recorded as
    /// soon as it is done), cancel the payment and the order.
    async fn compensate_paid(&self, plan: Compensation, approval_number: String) {
        let code = &plan.code;
        let Money::Refund(payment_reason) = plan.money else {
            unreachable!("an approved payment is refunded")
        };
        self.ctx.state_mut(|s| {
            s.status.failure_code = Some(code.clone());
            s.status.failure_reason = Some(plan.order_reason.to_owned());
            s.status.failure_message = Some(plan.message.clone());
        });
        if plan.stock_event {
            self.publish(EventBody::StockConfirmationFailed {
                payment_id: self.payment.payment_id.clone(),
                failure_reason: code.clone(),
                failed_at: self.now_millis(),
            })
            .await;
        }
        if self.watched.get() {
            // The money does not wait for the product service (see the patch), and the refund
            // is recorded as soon as it is done. The tracker's order stays stock, then payment.
            let returned = async { self.stock_returned(self.release_stock().await, code) };
            let refunded = async {
                let (reference, refunded_by) = self.refund(approval_number, &plan).await;
                self.record_refund(reference, refunded_by, payment_reason)
                    .await;
            };
            join!(returned, refunded);
            self.track(
                saga_steps::COMPENSATION_PAYMENT,
                SagaStatus::Compensated,
                Some(code),
            );
        } else {
            self.stock_returned(self.release_stock().await, code);
            let (reference, refunded_by) = self.refund(approval_number, &plan).await;
            self.track(
                saga_steps::COMPENSATION_PAYMENT,
                SagaStatus::Compensated,
                Some(code),
            );
            self.record_refund(reference, refunded_by, payment_reason)
                .await;
        }
        let cancelled = EventBody::PaymentCancelled {
            payment_id: self.payment.payment_id.clone(),
            user_id: self.payment.user_id.clone(),
            cancellation_reason: payment_reason,
            cancelled_at: self.now_millis(),
        };
        if self.platform {
            // No order.cancelled after an approval: the stock is back already, and the
            // platform's product service would restore it again on that event.
            self.cancel_order_only(plan.order_reason).await;
            self.publish(cancelled).await;
        } else {
            self.publish(cancelled).await;
            self.cancel_order(plan.order_reason, plan.order_event_reason)
                .await;
        }
        self.notify(plan.notice).await;
    }

    /// Refund at the PG (see [`Saga::refund_options`]); when every try fails, flag the workflow
    /// for attention and wait for an operator's `retry_refund` or `refund_completed_manually`.
    /// Answers the refund reference and who refunded.
    async fn refund(
        &self,
        approval_number: String,
        plan: &Compensation,
    ) -> (Option<String>, String) {
        loop {
            let refund = RefundPayment {
                payment_id: self.payment.payment_id.clone(),
                payment_key: self.payment.payment_key.clone(),
                approval_number: approval_number.clone(),
                amount: self.payment.amount,
                reason: plan.pg_reason(),
            };
            let refunded =
                self.ctx
                    .execute_activity(PaymentActivities::refund, refund, self.refund_options());
            let refunded = if self.watched.get() {
                // Its tries do not start while no payment worker polls: watched by a timer.
                self.watched_beside(refunded, attention_keys::REFUND_TRIES, "refund")
                    .await
            } else {
                refunded.await
            };
            let error = match refunded {
                Ok(done) => return (done.reference, "pg".to_owned()),
                Err(err) => failure_message(&err),
            };

            self.attention(
                attention_keys::REFUND,
                Some(format!("refund failed: {error}")),
            );
            let drop_stale = self.outbox && self.ctx.patched(REFUND_SIGNALS_WHILE_WAITING_PATCH);
            self.ctx.state_mut(|s| {
                s.status.refund_waiting = true;
                if drop_stale {
                    // Sent before anyone could see this refund wait: not meant for it.
                    s.refund_retry_requested = false;
                    s.manual_refund = None;
                }
            });
            let options = WaitConditionOptions::builder()
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            let _ = self
                .ctx
                .wait_condition_with_options(
                    |s| s.refund_retry_requested || s.manual_refund.is_some(),
                    options,
                )
                .await;
            self.attention(attention_keys::REFUND, None);
            let manual = self.ctx.state_mut(|s| {
                s.status.refund_waiting = false;
                s.refund_retry_requested = false;
                s.manual_refund.clone()
            });
            if let Some(manual) = manual {
                return (Some(manual.reference), manual.operator);
            }
        }
    }

    /// Awaits `step`; once it has run `stuck_step_secs` without finishing, it is listed for
    /// operators under `key` until it finishes ([`COMPENSATION_WATCHED_PATCH`]).
    async fn watched_beside<T>(
        &self,
        step: impl Future<Output = T>,
        key: &str,
        summary: &str,
    ) -> T {
        let stuck = self.timings.stuck_step_secs.max(1);
        let mut step = pin!(step);
        let mut watch = pin!(
            self.ctx.timer(
                TimerOptions::builder(Duration::from_secs(stuck))
                    .summary(format!("watch {summary}"))
                    .cancellation_token(WorkflowCancellationToken::new())
                    .build(),
            )
        );
        let first = {
            // Fused by reference, so the step stays usable if the watch fires first.
            let mut step = (&mut step).fuse();
            select! {
                done = step => Some(done),
                _ = watch => None,
            }
        };
        if let Some(done) = first {
            watch.cancel();
            return done;
        }
        self.attention(
            key,
            Some(format!(
                "{summary} has not finished after {stuck} s, still trying"
            )),
        );
        let done = step.await;
        self.attention(key, None);
        done
    }

    /// Records a refund: in the status, and the payment cancelled in the payment service.
    async fn record_refund(
        &self,
        reference: Option<String>,
        refunded_by: String,
        reason: PaymentCancellationReason,
    ) {
        self.ctx.state_mut(|s| {
            s.status.refund_reference = reference.clone();
            s.status.refunded_by = Some(refunded_by.clone());
        });
        self.must(
            || PaymentActivities::record_cancellation,
            RecordPaymentCancellation {
                payment: self.payment.clone(),
                reason,
                refund_reference: reference,
                refunded_by,
            },
            &self.queues.payment,
            "payment cancelled",
        )
        .await;
    }

    /// Returns the stock; answers whether it did (`false`: it failed for good and is listed).
    async fn release_stock(&self) -> bool {
        self.must(
            || ProductActivities::release,
            ReleaseStock {
                order_id: self.payment.order_id.clone(),
            },
            &self.queues.product,
            "release stock",
        )
        .await
        .is_some()
    }

    /// Records the stock's return on the saga tracker (`FAILED` if it failed for good).
    fn stock_returned(&self, released: bool, code: &str) {
        let status = self.compensation_status(released);
        self.track(saga_steps::COMPENSATION_STOCK, status, Some(code));
    }

    /// The tracker's status of a void or a stock release: `FAILED` when it failed for good
    /// ([`COMPENSATION_FAILURE_TRACKED_PATCH`]), `COMPENSATED` otherwise.
    fn compensation_status(&self, done: bool) -> SagaStatus {
        if !done && self.outbox && self.ctx.patched(COMPENSATION_FAILURE_TRACKED_PATCH) {
            SagaStatus::Failed
        } else {
            SagaStatus::Compensated
        }
    }

    async fn cancel_order(&self, reason: &str, event_reason: OrderCancellationReason) {
        let items = match self.cancel_order_only(reason).await {
            Some(cancelled) => cancelled.items,
            // Not cancelled: no event claims it was (the failure is listed for operators).
            None if self.outbox => return,
            None => Vec::new(),
        };
        self.publish(EventBody::OrderCancelled {
            user_id: self.payment.user_id.clone(),
            items,
            cancellation_reason: event_reason,
            cancelled_at: self.now_millis(),
        })
        .await;
    }

    /// Cancels the order (no event); answers what was cancelled (`None`: it failed for good).
    async fn cancel_order_only(&self, reason: &str) -> Option<CancelledOrder> {
        let cancelled = self
            .must(
                || OrderActivities::cancel,
                CancelOrder {
                    order_id: self.payment.order_id.clone(),
                    reason: reason.to_owned(),
                },
                &self.queues.order,
                "cancel order",
            )
            .await;
        let status = if cancelled.is_none() && self.outbox {
            SagaStatus::Failed
        } else {
            SagaStatus::Compensated
        };
        self.track(saga_steps::COMPENSATION_ORDER, status, Some(reason));
        cancelled
    }

    /// Voids at the PG until it answers. The customer may be charged until then, so a void that
    /// keeps failing (the PG away, or refusing payflow's secret key) is listed for operators
    /// while it lasts and goes on trying; the try that gets through takes it off the list
    /// ([`VOID_ATTENTION_PATCH`]; before it, the void retried without a word).
    /// Under [`COMPENSATION_WATCHED_PATCH`] the first run also ends when `stuck_step_secs`
    /// pass without an answer (no payment worker polling, say).
    async fn void(&self, void: VoidPayment, summary: &'static str) -> Option<PgCancellation> {
        let queue = &self.queues.payment;
        let first = if self.watched.get() {
            self.watched_options(queue, summary, Some(VOID_TRIES_UNLISTED))
        } else if self.outbox && self.ctx.patched(VOID_ATTENTION_PATCH) {
            self.bounded_service_options(queue, summary, VOID_TRIES_UNLISTED)
        } else {
            return self
                .until_failed(PaymentActivities::void, void, queue, summary)
                .await;
        };
        self.watch(
            || PaymentActivities::void,
            void,
            first,
            attention_keys::VOID,
            summary,
        )
        .await
    }

    /// Runs a compensation step: its `first` run, then, listed for operators under `key` while
    /// it lasts, until it succeeds (the list is cleared then). `None` when it failed for good;
    /// that failure stays listed under `summary`.
    async fn watch<A>(
        &self,
        activity: impl Fn() -> A,
        input: A::Input,
        first: ActivityOptions,
        key: &str,
        summary: &'static str,
    ) -> Option<A::Output>
    where
        A: temporalio_common::ActivityDefinition,
        A::Input: Clone,
        A::Output: temporalio_common::data_converters::TemporalDeserializable,
    {
        let queue = first.task_queue.clone().unwrap_or_default();
        match self
            .ctx
            .execute_activity(activity(), input.clone(), first)
            .await
        {
            Ok(output) => return Some(output),
            Err(err) if !tries_ran_out(&err) => return self.failed_for_good(summary, &err),
            Err(err) => self.attention(
                key,
                Some(format!(
                    "{summary} keeps failing, still trying: {}",
                    failure_message(&err)
                )),
            ),
        }
        let done = self.until_failed(activity(), input, &queue, summary).await;
        // A step that failed for good is listed under its own reason (`summary`); when that
        // is the key too, the failure replaces the "still trying".
        if done.is_some() || key != summary {
            self.attention(key, None);
        }
        done
    }

    /// Runs a compensation step until it succeeds, listed for operators while it has not
    /// after `stuck_step_secs` ([`COMPENSATION_WATCHED_PATCH`]). `None` when it failed for
    /// good; the failure stays listed for operators.
    async fn must<A>(
        &self,
        activity: impl Fn() -> A,
        input: A::Input,
        queue: &str,
        summary: &'static str,
    ) -> Option<A::Output>
    where
        A: temporalio_common::ActivityDefinition,
        A::Input: Clone,
        A::Output: temporalio_common::data_converters::TemporalDeserializable,
    {
        if self.watched.get() {
            let first = self.watched_options(queue, summary, None);
            return self.watch(activity, input, first, summary, summary).await;
        }
        self.until_failed(activity(), input, queue, summary).await
    }

    /// Runs a compensation step without limit: `None` only when it failed for good, which is
    /// listed for operators.
    async fn until_failed<A>(
        &self,
        activity: A,
        input: A::Input,
        queue: &str,
        summary: &'static str,
    ) -> Option<A::Output>
    where
        A: temporalio_common::ActivityDefinition,
        A::Output: temporalio_common::data_converters::TemporalDeserializable,
    {
        let options = self.service_options(queue, summary, None);
        match self.ctx.execute_activity(activity, input, options).await {
            Ok(output) => Some(output),
            // Only a non-retryable failure ends an unlimited retry; the step's input was
            // wrong for its state (e.g. the order no longer exists). Record it and go on.
            Err(err) => self.failed_for_good(summary, &err),
        }
    }

    /// Lists a compensation step that failed for good for operators.
    fn failed_for_good<T>(&self, summary: &'static str, err: &ActivityExecutionError) -> Option<T> {
        self.attention(
            summary,
            Some(format!("{summary} failed: {}", failure_message(err))),
        );
        None
    }

    async fn notify(&self, notice: Notice) {
        self.push(notice.kind, notice.title, notice.body).await;
    }

    /// Sends a push; a push that cannot be delivered after a few tries is given up: the order's
    /// state does not depend on it.
    pub(super) async fn push(&self, kind: &str, title: &str, body: String) {
        let push = PushNotification {
            notification_id: ids::notification_id(&self.workflow_id, kind),
            user_id: self.payment.user_id.clone(),
            order_id: self.payment.order_id.clone(),
            title: title.to_owned(),
            body,
        };
        let _ = self
            .ctx
            .execute_activity(OrderActivities::push, push, self.push_options(title))
            .await;
    }
}
