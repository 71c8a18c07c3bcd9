//! `PaymentWorkflow`: one order's payment, from the PG's approval to a final order state.
//!
//! Forward path (SPEC §3): PG approval -> payment recorded -> [payment.completed,
//! order paid, stock confirmed] -> [stock.confirmed, order completed] -> push. Steps that do not
//! depend on each other run concurrently, so a payment costs as few round trips as its data
//! dependencies allow.
//!
//! Failure paths compensate what the forward path did, newest first: a declined or timed-out
//! payment cancels the order and returns its stock; a payment the PG approved but whose stock
//! could not be confirmed is refunded. A refund that keeps failing waits for an operator instead
//! of failing the workflow. The whole saga has a deadline, kept with a durable timer (a workflow
//! execution timeout would kill the workflow without compensating).

use crate::{
    activities::{EventActivities, OrderActivities, PaymentActivities, ProductActivities},
    errors::{self, codes},
    ids,
    queues::TaskQueues,
    search,
    types::*,
};
use futures_util::{
    FutureExt,
    future::{Either, ready},
};
use std::{
    cell::{Cell, RefCell},
    pin::pin,
    time::{Duration, UNIX_EPOCH},
};
use temporalio_common::error::IncomingError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_workflow::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, LocalActivityOptions,
    RetryPolicy, SyncWorkflowContext, TimerOptions, WaitConditionOptions,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult, join, select,
};

/// The lean saga (measured in BENCHMARKS.md): the PG approval records the payment itself,
/// the order goes straight from `PAYMENT_WAIT` to `ORDER_COMPLETED` and its completion sends the
/// push (retried apart only if that attempt fails), events are published by local activities,
/// and the stage search attribute is not re-set to the value the starter gave it. Payments started before this patch keep the original steps (their histories replay).
pub const LEAN_SAGA_PATCH: &str = "lean-saga-v2";

/// A definite rejection by the PG (`PgRejected`: e.g. `ALREADY_PROCESSED_PAYMENT`, or a payment
/// key that belongs to another order) is a definite failure: nothing was charged for this order,
/// so there is nothing to void. Before this patch it was treated as an unknown outcome and
/// voided with the client's payment key, which could cancel another order's payment.
pub const PG_REJECTION_FINAL_PATCH: &str = "pg-rejection-final";

/// The platform's events (PLATFORM.md): every step's start, end and compensation recorded on
/// the saga tracker, published in one batch with the domain event of the step (no extra
/// workflow task); `stock.confirmed` published once the order is complete; no `order.cancelled`
/// after the PG approved (payflow returned the stock itself, and the platform's product service
/// would restore it again on that event). Payments started before this patch publish as before.
pub const PLATFORM_EVENTS_PATCH: &str = "platform-events-v3";

/// Kafka never holds up the customer: events (with their tracker records) go into an outbox in
/// the workflow's state and a publisher beside the business steps drains it in order, so no
/// step waits for Kafka; while Kafka or the registry is away the publisher retries on a durable
/// timer, and the workflow closes only once every event of its path is out. Also: every
/// unresolved problem stays listed for operators until it is resolved (before, the newest
/// replaced the others and any resolution cleared them all), and a compensation step that
/// failed for good publishes nothing it has no data for (before, a failed order cancellation
/// published an `order.cancelled` with no items). Only with [`PLATFORM_EVENTS_PATCH`].
pub const EVENT_OUTBOX_PATCH: &str = "event-outbox-v4";

/// Order cancel reasons as people read them (SPEC §3).
pub mod cancel_reasons {
    /// The payment failed (declined or timed out).
    pub const PAYMENT_FAILED: &str = "결제 실패";
    /// The stock could not be confirmed; the payment was refunded.
    pub const STOCK_FAILED: &str = "재고 확정 실패";
    /// The saga deadline passed.
    pub const DEADLINE: &str = "결제 처리 시간 초과";
    /// An operator cancelled the payment.
    pub const OPERATOR: &str = "운영자 취소";
    /// A step failed for good (see the workflow's attention reason).
    pub const SYSTEM: &str = "시스템 오류";
}

/// The payment workflow. Its state is what the `status` query shows.
#[workflow]
pub struct PaymentWorkflow {
    request: PaymentRequest,
    status: PaymentStatus,
    decision: Option<PaymentDecision>,
    refund_retry_requested: bool,
    manual_refund: Option<ManualRefund>,
    /// Problems waiting for an operator, keyed by what failed, oldest first.
    attention: Vec<(String, String)>,
    /// Events not handed to Kafka yet, in order ([`EVENT_OUTBOX_PATCH`]).
    outbox: Vec<DomainEvent>,
    /// The business steps are over: nothing more goes into the outbox.
    outbox_closed: bool,
    /// Events of the batch being published.
    publishing: usize,
    /// Every event and tracker record Kafka took, in order (the `events` query).
    published: Vec<DomainEvent>,
}

#[workflow_methods]
impl PaymentWorkflow {
    /// Builds the initial state from the request.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: PaymentRequest) -> Self {
        let status = PaymentStatus {
            order_id: request.order_id.clone(),
            payment_id: ids::payment_id(&request.order_id),
            user_id: request.user_id.clone(),
            payment_method: request.payment_method,
            amount: request.amount,
            stage: PaymentStage::PaymentWait,
            approval_number: None,
            failure_code: None,
            failure_reason: None,
            needs_attention: false,
            attention_reason: None,
            attention_reasons: Vec::new(),
            unpublished_events: 0,
            publish_error: None,
            refund_reference: None,
            refunded_by: None,
            stage_times: Default::default(),
        };
        Self {
            request,
            status,
            decision: None,
            refund_retry_requested: false,
            manual_refund: None,
            attention: Vec::new(),
            outbox: Vec::new(),
            outbox_closed: false,
            publishing: 0,
            published: Vec::new(),
        }
    }

    /// Runs the saga to a final state: `ORDER_COMPLETED` or `ORDER_CANCELLED`.
    #[run(name = "PaymentWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentOutcome> {
        Saga::new(ctx).run().await
    }

    /// Everything an operator needs: stage, ids, approval number, failure reason, step times.
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> PaymentStatus {
        let mut status = self.status.clone();
        status.unpublished_events = (self.outbox.len() + self.publishing) as u32;
        status
    }

    /// Every event and saga tracker record Kafka took for this payment, in order, as published
    /// (same ids, same content): what the reconciliation compares the topics with, and
    /// republishes from. State only, so every generation of the workflow answers it.
    #[query(name = "events")]
    pub fn events(&self, _ctx: &WorkflowContextView) -> Vec<DomainEvent> {
        self.published.clone()
    }

    /// Waits until the PG step is decided and answers the decision. The API sends it with the
    /// start (update-with-start), so one round trip starts the payment and learns its outcome.
    #[update(name = "payment_decision")]
    pub async fn payment_decision(ctx: &mut WorkflowContext<Self>) -> PaymentDecision {
        // Every path decides, even a cancelled workflow (while compensating), so wait on a
        // token of our own rather than the workflow's.
        let options = WaitConditionOptions::builder()
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let _ = ctx
            .wait_condition_with_options(|s| s.decision.is_some(), options)
            .await;
        ctx.state(|s| s.decision.clone())
            .expect("the wait ends only once a decision exists")
    }

    /// Operator: try the failed refund again.
    #[signal(name = "retry_refund")]
    pub fn retry_refund(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: RetryRefund) {
        self.refund_retry_requested = true;
    }

    /// Operator: the refund was done by hand; record who did it and its reference.
    #[signal(name = "refund_completed_manually")]
    pub fn refund_completed_manually(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        input: ManualRefund,
    ) {
        self.manual_refund = Some(input);
    }
}

/// Why the forward path stopped.
#[derive(Debug, Clone)]
enum Failure {
    /// The PG did not approve. `unknown` means it may have charged (timeout): void first.
    Payment {
        code: String,
        message: String,
        unknown: bool,
    },
    /// The stock could not be confirmed.
    Stock { code: String, message: String },
    /// The deadline passed or an operator cancelled while a step was running.
    Interrupted { code: &'static str },
}

impl Failure {
    /// The failure code (e.g. `INSUFFICIENT_FUNDS`, `SAGA_DEADLINE`).
    fn code(&self) -> &str {
        match self {
            Failure::Payment { code, .. } | Failure::Stock { code, .. } => code,
            Failure::Interrupted { code } => code,
        }
    }
}

/// One run of the saga: the workflow context plus what every step needs.
struct Saga {
    ctx: WorkflowContext<PaymentWorkflow>,
    /// [`LEAN_SAGA_PATCH`] applies.
    lean: bool,
    /// [`PLATFORM_EVENTS_PATCH`] applies (only ever with `lean`).
    platform: bool,
    /// [`EVENT_OUTBOX_PATCH`] applies (only ever with `platform`).
    outbox: bool,
    /// Saga tracker records not published yet; they go out with the next event.
    tracked: RefCell<Vec<DomainEvent>>,
    /// The forward step started and not yet ended.
    current_step: Cell<Option<&'static str>>,
    workflow_id: String,
    payment: ApprovePayment,
    queues: TaskQueues,
    timings: SagaTimings,
}

impl Saga {
    fn new(ctx: &WorkflowContext<PaymentWorkflow>) -> Self {
        let request = ctx.state(|s| s.request.clone());
        let payment_id = ids::payment_id(&request.order_id);
        // Without a key from the PG's checkout widget, one derived from the order stands in.
        let payment_key = request
            .payment_key
            .clone()
            .unwrap_or_else(|| ids::default_payment_key(&request.order_id));
        let lean = ctx.patched(LEAN_SAGA_PATCH);
        let platform = lean && ctx.patched(PLATFORM_EVENTS_PATCH);
        Self {
            platform,
            outbox: platform && ctx.patched(EVENT_OUTBOX_PATCH),
            tracked: RefCell::default(),
            current_step: Cell::default(),
            lean,
            workflow_id: ctx.workflow_id().to_owned(),
            queues: TaskQueues::for_workflow_queue(ctx.task_queue()),
            timings: request.timings.unwrap_or_default(),
            payment: ApprovePayment {
                payment_id,
                order_id: request.order_id,
                user_id: request.user_id,
                payment_method: request.payment_method,
                amount: request.amount,
                payment_key,
            },
            ctx: ctx.clone(),
        }
    }

    async fn run(self) -> WorkflowResult<PaymentOutcome> {
        if self.outbox {
            join!(self.business(), self.drain_outbox());
        } else {
            self.business().await;
        }
        Ok(self.outcome())
    }

    /// The saga's steps, forward and (on failure) compensating, to a final stage.
    async fn business(&self) {
        self.ensure_search_attributes();
        self.enter(PaymentStage::PaymentWait);

        // The forward steps run under a token of their own: the deadline (or an operator's
        // cancel) cancels them, then they report back and compensation starts from what they
        // actually did.
        let forward_token = self.ctx.cancellation_token().child_token();
        let mut forward = pin!(self.forward(forward_token.clone()));
        let mut deadline = pin!(
            self.ctx.timer(
                TimerOptions::builder(Duration::from_secs(self.timings.deadline_secs))
                    .summary("saga deadline".to_owned())
                    .build(),
            )
        );
        let first = {
            // Fused by reference, so the forward future stays usable if the deadline wins.
            let mut forward = (&mut forward).fuse();
            select! {
                result = forward => Some(result),
                _ = deadline => None,
            }
        };
        let result = match first {
            Some(result) => result,
            None => {
                forward_token.cancel_with_reason("saga deadline");
                // The cancelled steps report back; a step that finished just as the deadline
                // fired still counts.
                forward.await
            }
        };

        match result {
            Ok(pushed) => {
                if !pushed {
                    self.notify_completed().await;
                }
            }
            Err(failure) => self.compensate(failure).await,
        }
        self.flush().await;
        if self.outbox {
            self.ctx.state_mut(|s| s.outbox_closed = true);
        }
    }

    /// The outbox's publisher ([`EVENT_OUTBOX_PATCH`]): hands what the steps put in the outbox
    /// to Kafka, oldest first, a batch per pass, until the steps are over and nothing is left.
    async fn drain_outbox(&self) {
        loop {
            let options = WaitConditionOptions::builder()
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            let _ = self
                .ctx
                .wait_condition_with_options(|s| !s.outbox.is_empty() || s.outbox_closed, options)
                .await;
            let batch = self.ctx.state_mut(|s| {
                s.publishing = s.outbox.len();
                std::mem::take(&mut s.outbox)
            });
            if batch.is_empty() {
                return;
            }
            self.deliver(batch).await;
            self.ctx.state_mut(|s| {
                s.publishing = 0;
                s.status.publish_error = None;
            });
        }
    }

    /// Publishes one batch, trying again on a durable timer (1 s, doubling to 30 s) while Kafka
    /// or the registry refuses it: a retry never holds a workflow task, so the business steps
    /// go on. Same records, same event ids on every try. The status shows the last error while
    /// it lasts; no operator is needed, so the attention flag stays as it is.
    async fn deliver(&self, batch: Vec<DomainEvent>) {
        let summary = batch_summary(&batch);
        let mut pause = Duration::from_secs(1);
        loop {
            let published = self
                .ctx
                .execute_local_activity(
                    EventActivities::publish_all,
                    batch.clone(),
                    outbox_options(summary),
                )
                .await;
            match published {
                Ok(_) => {
                    self.ctx.state_mut(|s| s.published.extend(batch));
                    return;
                }
                Err(err) => {
                    let error = format!("publish {summary}: {}", failure_message(&err));
                    self.ctx.state_mut(|s| s.status.publish_error = Some(error));
                    self.ctx
                        .timer(
                            TimerOptions::builder(pause)
                                .summary(format!("publish {summary} again"))
                                .build(),
                        )
                        .await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The success path; answers whether the customer has been told. Every step runs under
    /// `token`; events run under their own token, so a deadline never cuts an event
    /// publication short.
    async fn forward(&self, token: WorkflowCancellationToken) -> Result<bool, Failure> {
        // 1. PG approval.
        self.track(saga_steps::PAYMENT_COMPLETION, SagaStatus::Started, None);
        let approval = match self
            .ctx
            .execute_activity(
                PaymentActivities::approve,
                self.payment.clone(),
                self.pg_options(&token),
            )
            .await
        {
            Ok(approval) => approval,
            Err(err) => {
                return Err(if token.is_cancelled() {
                    self.interruption(&token)
                } else if is_pg_rejection(&err) && self.ctx.patched(PG_REJECTION_FINAL_PATCH) {
                    definite_pg_failure(&err)
                } else {
                    classify_pg_failure(&err)
                });
            }
        };
        self.ctx.state_mut(|s| {
            s.status.approval_number = Some(approval.approval_number.clone());
            s.decision = Some(PaymentDecision {
                order_id: self.payment.order_id.clone(),
                payment_id: self.payment.payment_id.clone(),
                approved: true,
                approval_number: Some(approval.approval_number.clone()),
                failure_code: None,
                failure_message: None,
                retryable: false,
            });
        });
        self.track(saga_steps::PAYMENT_COMPLETION, SagaStatus::Completed, None);
        self.track(saga_steps::STOCK_CONFIRMATION, SagaStatus::Started, None);

        // 2. Payment database: COMPLETED with the approval number. The lean saga's approval
        // has recorded it already.
        if !self.lean {
            self.ctx
                .execute_activity(
                    PaymentActivities::record,
                    RecordPayment {
                        payment: self.payment.clone(),
                        approval: approval.clone(),
                    },
                    self.service_options(&self.queues.payment, "record payment", Some(&token)),
                )
                .await
                .map_err(|_| self.interruption(&token))?;
        }
        self.enter(PaymentStage::PaymentCompleted);

        // 3 + 4. payment.completed, the order marked paid and the stock confirmed, together.
        let order = OrderUpdate {
            order_id: self.payment.order_id.clone(),
            payment_id: self.payment.payment_id.clone(),
        };
        // Built here, before the join: an activity future schedules its command when it is
        // created, and the original saga scheduled MarkOrderPaid, ConfirmStock, then the event.
        let mark_paid = if self.lean {
            Either::Left(ready(Ok(())))
        } else {
            Either::Right(self.ctx.execute_activity(
                OrderActivities::mark_paid,
                order.clone(),
                self.service_options(&self.queues.order, "order paid", Some(&token)),
            ))
        };
        let ((), paid, stock) = join!(
            self.publish(EventBody::PaymentCompleted {
                payment_id: self.payment.payment_id.clone(),
                user_id: self.payment.user_id.clone(),
                total_amount: self.payment.amount,
                payment_method: self.payment.payment_method,
                pg_approval_number: approval.approval_number.clone(),
                completed_at: approval.approved_at,
            }),
            mark_paid,
            self.ctx.execute_activity(
                ProductActivities::confirm,
                ConfirmStock {
                    order_id: self.payment.order_id.clone(),
                    payment_id: self.payment.payment_id.clone(),
                },
                self.stock_options(&token),
            ),
        );
        let confirmation = match stock {
            Ok(confirmation) => confirmation,
            Err(_) if token.is_cancelled() => return Err(self.interruption(&token)),
            Err(err) => return Err(classify_stock_failure(&err)),
        };
        paid.map_err(|_| self.interruption(&token))?;
        self.enter(PaymentStage::StockConfirmed);
        self.track(saga_steps::STOCK_CONFIRMATION, SagaStatus::Completed, None);
        self.track(saga_steps::ORDER_COMPLETION, SagaStatus::Started, None);

        // 5 + 6. stock.confirmed and the order completed, together. The lean saga completes
        // the order and sends the push (7) in one step of the order service.
        let confirmed = EventBody::StockConfirmed {
            payment_id: self.payment.payment_id.clone(),
            confirmed_items: confirmation.items.clone(),
            confirmed_at: self.now_millis(),
        };
        let pushed = if self.platform {
            // The order completes first; `stock.confirmed` follows with the step's tracker
            // records in one batch, so the success path publishes twice in all.
            let notify = CompleteAndNotify {
                order,
                push: self.completed_push(),
            };
            let completed = self
                .ctx
                .execute_activity(
                    OrderActivities::complete_and_notify,
                    notify,
                    self.service_options(&self.queues.order, "complete order, push", Some(&token)),
                )
                .await
                .map_err(|_| self.interruption(&token))?;
            self.track(saga_steps::ORDER_COMPLETION, SagaStatus::Completed, None);
            self.publish(confirmed).await;
            completed.pushed
        } else if self.lean {
            let notify = CompleteAndNotify {
                order,
                push: self.completed_push(),
            };
            let ((), completed) = join!(
                self.publish(confirmed),
                self.ctx.execute_activity(
                    OrderActivities::complete_and_notify,
                    notify,
                    self.service_options(&self.queues.order, "complete order, push", Some(&token)),
                ),
            );
            completed.map_err(|_| self.interruption(&token))?.pushed
        } else {
            let ((), completed) = join!(
                self.publish(confirmed),
                self.ctx.execute_activity(
                    OrderActivities::complete,
                    order,
                    self.service_options(&self.queues.order, "order completed", Some(&token)),
                ),
            );
            completed.map_err(|_| self.interruption(&token))?;
            false
        };
        self.enter(PaymentStage::OrderCompleted);
        Ok(pushed)
    }

    /// The push that tells the customer the order is complete.
    fn completed_push(&self) -> PushNotification {
        let order_id = &self.payment.order_id;
        PushNotification {
            notification_id: ids::notification_id(&self.workflow_id, "order-completed"),
            user_id: self.payment.user_id.clone(),
            order_id: order_id.clone(),
            title: "주문이 완료되었습니다".to_owned(),
            body: format!("주문번호 {order_id}의 결제가 완료되었습니다. 배송 준비 중입니다."),
        }
    }

    /// 7. The customer learns the order is complete (when the completion did not push it).
    async fn notify_completed(&self) {
        let push = self.completed_push();
        self.push("order-completed", push.title, push.body).await;
    }

    /// Undo what the forward path did, newest first, and end `ORDER_CANCELLED`.
    async fn compensate(&self, failure: Failure) {
        self.enter(PaymentStage::Compensating);
        if let Some(step) = self.current_step.get() {
            self.track(step, SagaStatus::Failed, Some(failure.code()));
        }
        let approved = self.ctx.state(|s| s.status.approval_number.clone());
        match approved {
            None => self.compensate_unpaid(failure).await,
            Some(approval_number) => self.compensate_paid(failure, approval_number).await,
        }
        self.enter(PaymentStage::OrderCancelled);
    }

    /// The PG never approved: nothing to refund. Void when the PG's outcome is unknown, then
    /// fail the payment, return the stock and cancel the order.
    async fn compensate_unpaid(&self, failure: Failure) {
        let (code, message, unknown) = match failure {
            Failure::Payment {
                code,
                message,
                unknown,
            } => (code, message, unknown),
            Failure::Interrupted { code } => {
                (code.to_owned(), "no decision from the PG".to_owned(), true)
            }
            Failure::Stock { code, message } => (code, message, true),
        };
        let order_reason = match code.as_str() {
            codes::SAGA_DEADLINE => cancel_reasons::DEADLINE,
            codes::OPERATOR_CANCELLED => cancel_reasons::OPERATOR,
            codes::STEP_FAILED => cancel_reasons::SYSTEM,
            _ => cancel_reasons::PAYMENT_FAILED,
        };
        if unknown {
            // Same key as the approval: whatever the PG did for it is undone.
            self.must(
                PaymentActivities::void,
                VoidPayment {
                    payment_id: self.payment.payment_id.clone(),
                    payment_key: self.payment.payment_key.clone(),
                    reason: format!("payment not completed: {code}"),
                },
                &self.queues.payment,
                "void at PG",
            )
            .await;
            self.track(
                saga_steps::COMPENSATION_PAYMENT,
                SagaStatus::Compensated,
                Some(&code),
            );
        }
        self.ctx.state_mut(|s| {
            s.status.failure_code = Some(code.clone());
            s.status.failure_reason = Some(order_reason.to_owned());
            s.decision = Some(PaymentDecision {
                order_id: self.payment.order_id.clone(),
                payment_id: self.payment.payment_id.clone(),
                approved: false,
                approval_number: None,
                failure_code: Some(code.clone()),
                failure_message: Some(message.clone()),
                // A decline can be paid again with other means; a timeout is worth retrying.
                retryable: true,
            });
        });
        self.must(
            PaymentActivities::record_failure,
            RecordPaymentFailure {
                payment: self.payment.clone(),
                code: code.clone(),
                message,
            },
            &self.queues.payment,
            "payment failed",
        )
        .await;
        let failed_at = self.now_millis();
        let (_, _) = join!(
            self.publish(EventBody::PaymentFailed {
                payment_id: self.payment.payment_id.clone(),
                user_id: self.payment.user_id.clone(),
                failure_reason: code.clone(),
                failed_at,
            }),
            self.release_stock(),
        );
        self.track(
            saga_steps::COMPENSATION_STOCK,
            SagaStatus::Compensated,
            Some(&code),
        );
        let order_event_reason = match code.as_str() {
            codes::OPERATOR_CANCELLED => OrderCancellationReason::UserRequested,
            codes::PG_TIMEOUT | codes::SAGA_DEADLINE => OrderCancellationReason::PaymentTimeout,
            // The contract has no "payment declined" symbol; see the README.
            _ => OrderCancellationReason::SystemError,
        };
        self.cancel_order(order_reason, order_event_reason).await;
        let order_id = &self.payment.order_id;
        self.push(
            "payment-failed",
            "결제에 실패했습니다".to_owned(),
            format!("주문번호 {order_id}의 결제가 실패하여 주문이 취소되었습니다."),
        )
        .await;
    }

    /// The PG approved: return the stock, refund (waiting for an operator if the refund keeps
    /// failing), cancel the payment and the order.
    async fn compensate_paid(&self, failure: Failure, approval_number: String) {
        let (code, order_reason, payment_reason, order_event_reason) = match &failure {
            Failure::Stock { code, .. } => (
                code.clone(),
                cancel_reasons::STOCK_FAILED,
                PaymentCancellationReason::StockUnavailable,
                OrderCancellationReason::StockUnavailable,
            ),
            Failure::Interrupted { code } if *code == codes::OPERATOR_CANCELLED => (
                code.to_string(),
                cancel_reasons::OPERATOR,
                PaymentCancellationReason::AdminCancel,
                OrderCancellationReason::UserRequested,
            ),
            Failure::Interrupted { code } => (
                code.to_string(),
                if *code == codes::SAGA_DEADLINE {
                    cancel_reasons::DEADLINE
                } else {
                    cancel_reasons::SYSTEM
                },
                PaymentCancellationReason::SystemError,
                OrderCancellationReason::SystemError,
            ),
            Failure::Payment { code, .. } => (
                code.clone(),
                cancel_reasons::PAYMENT_FAILED,
                PaymentCancellationReason::SystemError,
                OrderCancellationReason::SystemError,
            ),
        };
        self.ctx.state_mut(|s| {
            s.status.failure_code = Some(code.clone());
            s.status.failure_reason = Some(order_reason.to_owned());
        });
        let failed_at = self.now_millis();
        if let Failure::Stock { .. } = failure {
            self.publish(EventBody::StockConfirmationFailed {
                payment_id: self.payment.payment_id.clone(),
                failure_reason: code.clone(),
                failed_at,
            })
            .await;
        }
        self.release_stock().await;
        self.track(
            saga_steps::COMPENSATION_STOCK,
            SagaStatus::Compensated,
            Some(&code),
        );
        let (reference, refunded_by) = self.refund(approval_number, &code).await;
        self.track(
            saga_steps::COMPENSATION_PAYMENT,
            SagaStatus::Compensated,
            Some(&code),
        );
        self.ctx.state_mut(|s| {
            s.status.refund_reference = reference.clone();
            s.status.refunded_by = Some(refunded_by.clone());
        });
        self.must(
            PaymentActivities::record_cancellation,
            RecordPaymentCancellation {
                payment: self.payment.clone(),
                reason: payment_reason,
                refund_reference: reference,
                refunded_by,
            },
            &self.queues.payment,
            "payment cancelled",
        )
        .await;
        let cancelled = EventBody::PaymentCancelled {
            payment_id: self.payment.payment_id.clone(),
            user_id: self.payment.user_id.clone(),
            cancellation_reason: payment_reason,
            cancelled_at: self.now_millis(),
        };
        if self.platform {
            // No order.cancelled after an approval: the stock is back already, and the
            // platform's product service would restore it again on that event.
            self.cancel_order_only(order_reason).await;
            self.publish(cancelled).await;
        } else {
            self.publish(cancelled).await;
            self.cancel_order(order_reason, order_event_reason).await;
        }
        let order_id = &self.payment.order_id;
        self.push(
            "order-refunded",
            "주문이 취소되었습니다".to_owned(),
            format!(
                "주문번호 {order_id}의 주문이 취소되어 결제가 환불됩니다. 환불은 영업일 기준 3~5일 소요됩니다."
            ),
        )
        .await;
    }

    /// Refund at the PG, 5 tries spaced `refund_retry_secs`; when they all fail, flag the
    /// workflow for attention and wait for an operator's `retry_refund` or
    /// `refund_completed_manually`. Answers the refund reference and who refunded.
    async fn refund(&self, approval_number: String, code: &str) -> (Option<String>, String) {
        let interval = Duration::from_secs(self.timings.refund_retry_secs);
        loop {
            let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                .task_queue(self.queues.payment.clone())
                .summary("refund at the PG".to_owned())
                .retry_policy(
                    RetryPolicy::builder()
                        .initial_interval(interval)
                        .backoff_coefficient(1.0)
                        .maximum_attempts(5)
                        .non_retryable_error_types([errors::REFUND_REJECTED])
                        .build(),
                )
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            let refund = RefundPayment {
                payment_id: self.payment.payment_id.clone(),
                payment_key: self.payment.payment_key.clone(),
                approval_number: approval_number.clone(),
                amount: self.payment.amount,
                reason: format!("order cancelled: {code}"),
            };
            let error = match self
                .ctx
                .execute_activity(PaymentActivities::refund, refund, options)
                .await
            {
                Ok(done) => return (done.reference, "pg".to_owned()),
                Err(err) => failure_message(&err),
            };

            self.attention(
                attention_keys::REFUND,
                Some(format!("refund failed: {error}")),
            );
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
                s.refund_retry_requested = false;
                s.manual_refund.clone()
            });
            if let Some(manual) = manual {
                return (Some(manual.reference), manual.operator);
            }
        }
    }

    async fn release_stock(&self) {
        self.must(
            ProductActivities::release,
            ReleaseStock {
                order_id: self.payment.order_id.clone(),
            },
            &self.queues.product,
            "release stock",
        )
        .await;
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
                OrderActivities::cancel,
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

    /// Records a saga step's status for the saga tracker; it is published with the next
    /// event (or at the end of the run).
    fn track(&self, step: &'static str, status: SagaStatus, reason: Option<&str>) {
        if !self.platform {
            return;
        }
        match status {
            SagaStatus::Started => self.current_step.set(Some(step)),
            _ if self.current_step.get() == Some(step) => self.current_step.set(None),
            _ => {}
        }
        let metadata = serde_json::json!({
            "workflowId": self.workflow_id,
            "runId": self.ctx.run_id(),
            "paymentId": self.payment.payment_id,
            "amount": self.payment.amount,
            "failureReason": reason,
        });
        let now = self.now_millis();
        self.tracked.borrow_mut().push(DomainEvent {
            event_id: ids::saga_record_id(&self.workflow_id, step, status.as_str()),
            event_timestamp: now,
            order_id: self.payment.order_id.clone(),
            body: EventBody::SagaTracker {
                saga_type: SagaType::PaymentCompletion,
                step: step.to_owned(),
                status,
                metadata: Some(metadata.to_string()),
                recorded_at: now,
            },
        });
    }

    /// Publishes the tracker records still waiting, if any.
    async fn flush(&self) {
        let batch = self.tracked.take();
        if batch.is_empty() {
        } else if self.outbox {
            self.ctx.state_mut(|s| s.outbox.extend(batch));
        } else {
            self.publish_batch(batch).await;
        }
    }

    /// Runs a compensation step until it succeeds: compensations are idempotent, retried
    /// without limit, and immune to the deadline and to cancellation. `None` when it failed
    /// for good; the failure stays listed for operators.
    async fn must<A>(
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
            Err(err) => {
                self.attention(
                    summary,
                    Some(format!("{summary} failed: {}", failure_message(&err))),
                );
                None
            }
        }
    }

    /// Publishes a batch of events in order with one local activity, retried until Kafka
    /// takes it.
    async fn publish_batch(&self, batch: Vec<DomainEvent>) {
        let summary = batch_summary(&batch);
        let options = publish_options(summary);
        let published = self
            .ctx
            .execute_local_activity(EventActivities::publish_all, batch.clone(), options)
            .await;
        self.settle(published, batch, summary);
    }

    /// Records what Kafka took (the `events` query), or flags a publication that failed for
    /// good (only a non-retryable failure, a schema bug, ends its retries): the events' absence
    /// is then visible in the history and the attention flag.
    fn settle<T>(
        &self,
        published: Result<T, ActivityExecutionError>,
        events: Vec<DomainEvent>,
        summary: &str,
    ) {
        match published {
            Ok(_) => self.ctx.state_mut(|s| s.published.extend(events)),
            Err(err) => self.attention(
                attention_keys::PUBLISH,
                Some(format!(
                    "publish {summary} failed: {}",
                    failure_message(&err)
                )),
            ),
        }
    }

    /// Publishes an event; retried until Kafka takes it. Awaited with the step it runs beside.
    /// Under the platform patch the tracker records waiting go out with it; under the outbox
    /// patch they go into the outbox and nothing waits.
    async fn publish(&self, body: EventBody) {
        let event = DomainEvent {
            event_id: ids::event_id(&self.workflow_id, body.event_type()),
            event_timestamp: self.now_millis(),
            order_id: self.payment.order_id.clone(),
            body,
        };
        if self.platform {
            let mut batch = self.tracked.take();
            batch.push(event);
            if self.outbox {
                self.ctx.state_mut(|s| s.outbox.extend(batch));
                return;
            }
            return self.publish_batch(batch).await;
        }
        let summary = event.event_type().name();
        let published = if self.lean {
            // A local activity on the workflow worker: no task to dispatch, one marker event.
            let options = publish_options(summary);
            self.ctx
                .execute_local_activity(EventActivities::publish, event.clone(), options)
                .await
        } else {
            let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
                .task_queue(self.queues.workflow.clone())
                .summary(format!("publish {summary}"))
                .retry_policy(steady_retry())
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            self.ctx
                .execute_activity(EventActivities::publish, event.clone(), options)
                .await
        };
        self.settle(published, vec![event], summary);
    }

    /// Sends a push; a push that cannot be delivered after a few tries is given up: the order's
    /// state does not depend on it.
    async fn push(&self, kind: &str, title: String, body: String) {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(self.queues.order.clone())
            .summary(format!("push: {title}"))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(500))
                    .backoff_coefficient(2.0)
                    .maximum_interval(Duration::from_secs(30))
                    .maximum_attempts(8)
                    .build(),
            )
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let push = PushNotification {
            notification_id: ids::notification_id(&self.workflow_id, kind),
            user_id: self.payment.user_id.clone(),
            order_id: self.payment.order_id.clone(),
            title,
            body,
        };
        let _ = self
            .ctx
            .execute_activity(OrderActivities::push, push, options)
            .await;
    }

    // ---- options ---------------------------------------------------------------------------

    /// The PG step: bounded by the PG timeout in total, retrying transient errors quickly; a
    /// decline or another 4xx is final at once.
    fn pg_options(&self, token: &WorkflowCancellationToken) -> ActivityOptions {
        let total = Duration::from_secs(self.timings.pg_timeout_secs);
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: total,
            start_to_close: total.min(Duration::from_secs(10)),
        })
        .task_queue(self.queues.payment.clone())
        // Summaries are stored unencrypted: no amounts or approval numbers in them.
        .summary(format!("PG approval ({})", self.payment.payment_method))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(2))
                .non_retryable_error_types([errors::PAYMENT_DECLINED, errors::PG_REJECTED])
                .build(),
        )
        .cancellation_token(token.clone())
        .build()
    }

    /// Stock confirmation: a missing, expired or short reservation is final; anything else is
    /// retried twice, `stock_retry_secs` apart.
    fn stock_options(&self, token: &WorkflowCancellationToken) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(self.queues.product.clone())
            .summary("confirm reserved stock".to_owned())
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(self.timings.stock_retry_secs))
                    .backoff_coefficient(1.0)
                    .maximum_attempts(3)
                    .non_retryable_error_types([
                        errors::RESERVATION_EXPIRED,
                        errors::RESERVATION_MISSING,
                        errors::RESERVATION_RELEASED,
                        errors::INSUFFICIENT_STOCK,
                    ])
                    .build(),
            )
            .cancellation_token(token.clone())
            .build()
    }

    /// A database step of a service: retried until it succeeds (or the token is cancelled).
    fn service_options(
        &self,
        queue: &str,
        summary: &str,
        token: Option<&WorkflowCancellationToken>,
    ) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(queue.to_owned())
            .summary(summary.to_owned())
            .retry_policy(steady_retry())
            .cancellation_token(token.cloned().unwrap_or_default())
            .build()
    }

    // ---- state -----------------------------------------------------------------------------

    fn enter(&self, stage: PaymentStage) {
        let now = self.now_millis();
        self.ctx.state_mut(|s| {
            s.status.stage = stage;
            s.status.stage_times.insert(stage.as_str().to_owned(), now);
        });
        let current = self.ctx.search_attributes().get(&search::PAYMENT_STAGE);
        if self.lean && current.as_deref() == Some(stage.as_str()) {
            return;
        }
        self.ctx
            .upsert_search_attributes([search::PAYMENT_STAGE.value_set(stage.as_str().to_owned())]);
    }

    /// Raises (`Some`) or resolves (`None`) the problem `key` for operators. Under the outbox
    /// patch every unresolved problem stays listed until it is resolved; before it the workflow
    /// held one reason, which the newest raise or any resolution replaced (kept for replay).
    fn attention(&self, key: &str, reason: Option<String>) {
        let keep_all = self.outbox;
        let (needs, changed) = self.ctx.state_mut(|s| {
            let before = s.status.needs_attention;
            if keep_all {
                s.attention.retain(|(k, _)| k != key);
            } else {
                s.attention.clear();
            }
            if let Some(reason) = reason {
                s.attention.push((key.to_owned(), reason));
            }
            let reasons: Vec<String> = s.attention.iter().map(|(_, r)| r.clone()).collect();
            let needs = !reasons.is_empty();
            s.status.needs_attention = needs;
            s.status.attention_reason = needs.then(|| reasons.join("; "));
            s.status.attention_reasons = reasons;
            (needs, before != needs)
        });
        if changed {
            self.ctx
                .upsert_search_attributes([search::NEEDS_ATTENTION.value_set(needs)]);
        }
    }

    /// A workflow started without payflow's search attributes (e.g. from the Temporal CLI)
    /// gets them here, so operators can find every payment.
    fn ensure_search_attributes(&self) {
        if self
            .ctx
            .search_attributes()
            .get(&search::ORDER_ID)
            .is_some()
        {
            return;
        }
        self.ctx.upsert_search_attributes([
            search::ORDER_ID.value_set(self.payment.order_id.clone()),
            search::USER_ID.value_set(self.payment.user_id.clone()),
            search::PAYMENT_METHOD.value_set(self.payment.payment_method.as_str().to_owned()),
            search::AMOUNT.value_set(self.payment.amount),
            search::NEEDS_ATTENTION.value_set(false),
        ]);
    }

    /// Why a forward step stopped without a result of its own: an operator's cancel, the
    /// deadline, or (with unlimited retries) a non-retryable failure such as an order that was
    /// changed behind the workflow's back.
    fn interruption(&self, token: &WorkflowCancellationToken) -> Failure {
        let code = if self.ctx.cancellation_token().is_cancelled() {
            codes::OPERATOR_CANCELLED
        } else if token.is_cancelled() {
            codes::SAGA_DEADLINE
        } else {
            codes::STEP_FAILED
        };
        Failure::Interrupted { code }
    }

    fn outcome(&self) -> PaymentOutcome {
        self.ctx.state(|s| PaymentOutcome {
            order_id: s.status.order_id.clone(),
            payment_id: s.status.payment_id.clone(),
            stage: s.status.stage,
            approval_number: s.status.approval_number.clone(),
            failure_code: s.status.failure_code.clone(),
            failure_reason: s.status.failure_reason.clone(),
        })
    }

    /// Workflow time in epoch milliseconds: deterministic, the same on replay.
    fn now_millis(&self) -> EpochMillis {
        self.ctx
            .workflow_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as EpochMillis)
            .unwrap_or_default()
    }
}

/// A publication: a local activity on the workflow worker (no task to dispatch, one marker
/// event), retried until Kafka takes it, immune to the deadline and to cancellation.
/// What a problem listed for operators is about.
mod attention_keys {
    /// The refund at the PG.
    pub const REFUND: &str = "refund";
    /// Publishing events.
    pub const PUBLISH: &str = "publish";
}

/// The non-tracker event a batch carries, for summaries.
fn batch_summary(batch: &[DomainEvent]) -> &'static str {
    batch
        .iter()
        .map(|e| e.event_type().name())
        .find(|n| *n != EventType::SagaTracker.name())
        .unwrap_or(EventType::SagaTracker.name())
}

/// One try of an outbox batch (two attempts, a few seconds at most, so a workflow task is never
/// held long); the outbox retries on a timer after it.
fn outbox_options(summary: &str) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(4))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(100))
                .maximum_attempts(2)
                .build(),
        )
        .summary(format!("publish {summary}"))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

fn publish_options(summary: &str) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(steady_retry())
        .timer_backoff_threshold(Duration::from_secs(5))
        .summary(format!("publish {summary}"))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Retries at a steady pace without limit: for steps that must eventually succeed.
fn steady_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .build()
}

/// The application failure behind an activity error, if there is one.
fn application_failure(err: &ActivityExecutionError) -> Option<(&str, String)> {
    match err.reason() {
        Some(IncomingError::Application(app)) => Some((
            app.type_name().unwrap_or_default(),
            app.failure()
                .map(|f| f.message.clone())
                .unwrap_or_else(|| app.to_string()),
        )),
        _ => None,
    }
}

fn failure_message(err: &ActivityExecutionError) -> String {
    application_failure(err)
        .map(|(_, message)| message)
        .unwrap_or_else(|| err.to_string())
}

/// The PG (or payflow, for a key of another order) refused the approval: nothing was charged.
fn is_pg_rejection(err: &ActivityExecutionError) -> bool {
    matches!(application_failure(err), Some((errors::PG_REJECTED, _)))
}

/// A definite failure (`CODE: message`, as a decline): nothing to void.
fn definite_pg_failure(err: &ActivityExecutionError) -> Failure {
    let message = failure_message(err);
    let (code, text) = split_code(&message);
    Failure::Payment {
        code,
        message: text,
        unknown: false,
    }
}

/// `CODE: message` into its parts; a message without a code is its own code.
fn split_code(message: &str) -> (String, String) {
    message
        .split_once(": ")
        .map(|(c, t)| (c.to_owned(), t.to_owned()))
        .unwrap_or_else(|| (message.to_owned(), message.to_owned()))
}

/// A decline carries `CODE: message`; a timeout means the PG's outcome is unknown.
fn classify_pg_failure(err: &ActivityExecutionError) -> Failure {
    if err.as_timeout().is_some() {
        return Failure::Payment {
            code: codes::PG_TIMEOUT.to_owned(),
            message: "the PG did not answer in time".to_owned(),
            unknown: true,
        };
    }
    match application_failure(err) {
        Some((errors::PAYMENT_DECLINED, message)) => {
            let (code, text) = split_code(&message);
            Failure::Payment {
                code,
                message: text,
                unknown: false,
            }
        }
        Some((_, message)) => Failure::Payment {
            code: codes::PG_ERROR.to_owned(),
            message,
            unknown: true,
        },
        None => Failure::Payment {
            code: codes::PG_ERROR.to_owned(),
            message: err.to_string(),
            unknown: true,
        },
    }
}

fn classify_stock_failure(err: &ActivityExecutionError) -> Failure {
    let (code, message) = match application_failure(err) {
        Some((errors::RESERVATION_EXPIRED, m)) => ("RESERVATION_EXPIRED", m),
        Some((errors::RESERVATION_MISSING, m)) => ("RESERVATION_MISSING", m),
        Some((errors::RESERVATION_RELEASED, m)) => ("RESERVATION_RELEASED", m),
        Some((errors::INSUFFICIENT_STOCK, m)) => ("INSUFFICIENT_STOCK", m),
        Some((_, m)) => ("STOCK_CONFIRMATION_ERROR", m),
        None => ("STOCK_CONFIRMATION_ERROR", err.to_string()),
    };
    Failure::Stock {
        code: code.to_owned(),
        message,
    }
}
