//! `PaymentWorkflow`: one order's payment, from the PG's approval to a final order state.
//!
//! Forward path (SPEC §3): PG approval -> payment recorded -> [payment.completed,
//! order paid, stock confirmed] -> [stock.confirmed, order completed] -> push. Steps that do not
//! depend on each other run concurrently, so a payment costs as few round trips as its data
//! dependencies allow.
//!
//! Failure paths compensate what the forward path did, newest first (the refund beside the
//! stock's return since [`COMPENSATION_WATCHED_PATCH`]): a declined or timed-out
//! payment cancels the order and returns its stock; a payment the PG approved but whose stock
//! could not be confirmed is refunded. A refund that keeps failing waits for an operator instead
//! of failing the workflow. The whole saga has a deadline, kept with a durable timer (a workflow
//! execution timeout would kill the workflow without compensating).
//!
//! Where each part lives:
//!
//! | question | module |
//! | --- | --- |
//! | the handlers: `status`, `events`, `payment_decision`, the operator signals | this file |
//! | the deadline, the run's shape, stage and attention bookkeeping | [`saga`] |
//! | the success path: approve, confirm, complete | [`forward`] |
//! | what a failure means: codes, reasons, contract symbols, push text | [`failure`] |
//! | the order in which a failure is undone; refunds waiting for an operator | [`compensate`] |
//! | events, saga tracker records, the outbox | [`publish`] |
//! | timeouts and retry policies of every step | [`options`] |
//!
//! Every change to the commands a run issues goes behind a patch (the constants below); the
//! golden histories in `tests/histories/` replay every generation.

mod compensate;
mod failure;
mod forward;
mod options;
mod publish;
mod saga;

pub use failure::cancel_reasons;

use crate::types::*;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_workflow::{
    SyncWorkflowContext, WaitConditionOptions, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult,
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

/// A publication only a person can unblock (the registry refusing payflow's credentials or an
/// incompatible schema, an event that does not fit its schema, and since `KafkaRefused`
/// brokers refusing payflow's records) raises the attention flag while
/// it lasts, and the publication that gets through lowers it; before this patch such a batch
/// retried on its timer with only `publish_error` in the status to show for it. Checked only
/// when such a refusal happens, so no other run records it. Only with [`EVENT_OUTBOX_PATCH`].
pub const PUBLISH_ATTENTION_PATCH: &str = "publish-attention-v5";

/// A charge the PG completes after the void looked is taken back. When the PG's outcome was
/// unknown (the approval timed out) and the void found nothing to cancel, the PG may still be
/// working on a confirm the approval step gave up on; once the order is cancelled and the
/// customer told, the workflow waits `late_charge_secs` on a durable timer and voids once more,
/// under a key of its own. Before this patch the first look was the only one. Checked only when
/// a void found nothing, so no other run records it.
pub const LATE_CHARGE_PATCH: &str = "late-charge-check-v6";

/// The deadline no longer undoes an order that is only waiting to be completed. Once the PG
/// approved, the payment is recorded and the stock is confirmed, the order's completion is all
/// that is left; undoing it would need the same order service the completion waits for, and
/// would take back a charge and stock that are both done (and could cross the customer's
/// "completed" push with a "refunded" one). So when the deadline fires in that step, the step
/// runs on to completion, with the attention flag raised until it is done (the customer is
/// charged and the order is not complete); an operator's cancel still stops it. Before this
/// patch the deadline cancelled the completion and refunded (the refund did not wait for the
/// order service; only the order's cancellation did). Checked only when the deadline fires
/// during the completion, so no other run records it.
pub const COMPLETION_OUTLIVES_DEADLINE_PATCH: &str = "completion-outlives-deadline-v7";

/// A void at the PG that keeps failing (the PG away, or refusing payflow's secret key after a
/// rotation) raises the attention flag after a few tries while it goes on trying, and lowers it
/// once the void gets through: until then the customer may be charged for an order that is
/// being cancelled. Before this patch the void retried without limit and without a word. A void
/// that fails for good (not for want of tries) is listed as before. Checked only when a void
/// runs in a run without [`COMPENSATION_WATCHED_PATCH`] (which lists voids itself), so no
/// other run records it. Only with [`EVENT_OUTBOX_PATCH`] (attention kept per
/// problem).
pub const VOID_ATTENTION_PATCH: &str = "void-attention-v8";

/// A pause between publish tries outlives an operator's cancel. Before this patch the pause ran
/// on the workflow's cancellation token, so once a payment was cancelled every pause ended at
/// once: while Kafka or the registry was away, the publisher tried again without rest, growing
/// the history toward the size at which Temporal terminates a workflow (and its unpublished
/// events with it). Checked only when a cancelled run pauses, so no other run records it.
pub const PUBLISH_PAUSE_OUTLIVES_CANCEL_PATCH: &str = "publish-pause-outlives-cancel-v9";

/// The saga tracker records `FAILED`, not `COMPENSATED`, for a void or a stock release that
/// failed for good (the PG refusing to cancel a charge, say), as it already did for an order
/// cancellation: the platform's saga dashboards then show the compensation that did not happen,
/// as the attention flag does. Before this patch such a step was recorded `COMPENSATED`. Checked
/// only when a compensation step failed for good, so no other run records it. Only with
/// [`EVENT_OUTBOX_PATCH`].
pub const COMPENSATION_FAILURE_TRACKED_PATCH: &str = "compensation-failure-tracked-v10";

/// A payment the PG approved is refunded beside the stock's release, not after it: the
/// release needs the product service, whose trouble (Redis or its database away, or no product
/// worker at all) is often what failed the payment, and the customer's money must not wait for
/// it. And a compensation step that must succeed (a stock release, an order's cancellation, the
/// payment's record, a void) and has not after `stuck_step_secs` is listed for operators while
/// it goes on trying, whether its tries fail or none runs because no worker polls its queue;
/// it is taken off the list when it succeeds; so is a refund whose tries have not finished
/// then (a timer beside it). Before this patch the refund waited for the
/// release, and such a step retried without a word. Checked when a compensation starts, so
/// no successful payment records it. Only with [`EVENT_OUTBOX_PATCH`].
pub const COMPENSATION_WATCHED_PATCH: &str = "compensation-watched-v11";

/// An operator's `retry_refund` or `refund_completed_manually` counts only while a refund
/// waits for one: what was sent before (to the wrong order, or before the refund had failed)
/// is dropped when the wait begins, so a stale "refunded by hand" can never stand in for a
/// refund nobody made. Before this patch such a signal was kept and ended the wait at once.
/// Checked only when a refund starts waiting, so no other run records it. Only with
/// [`EVENT_OUTBOX_PATCH`].
pub const REFUND_SIGNALS_WHILE_WAITING_PATCH: &str = "refund-signals-while-waiting-v12";

/// While Kafka or the registry stays away, the pause between publish tries goes on doubling
/// past 30 s, up to 5 minutes. Each try adds about six events to the history, and Temporal
/// terminates a run whose history reaches 51,200 events, with its unpublished events (only the
/// audit finds them then) and any refund waiting for an operator: at a try every 30 s that was
/// about three days of outage; now it is about a month. Events follow within 5 minutes of
/// Kafka's return after a long outage, within 30 s after a short one. Checked only when a
/// pause reaches 30 s, so no other run records it. Only with [`EVENT_OUTBOX_PATCH`].
pub const PUBLISH_PAUSE_GROWS_PATCH: &str = "publish-pause-grows-v13";

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
    /// Events not handed to Kafka yet, in order, the batch being published first
    /// ([`EVENT_OUTBOX_PATCH`]).
    outbox: Vec<DomainEvent>,
    /// The business steps are over: nothing more goes into the outbox.
    outbox_closed: bool,
    /// Saga tracker records waiting for the next event (they go out with it).
    tracked: Vec<DomainEvent>,
    /// Every event and tracker record Kafka took, in order (the `events` query).
    published: Vec<DomainEvent>,
}

#[workflow_methods]
impl PaymentWorkflow {
    /// Builds the initial state from the request.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: PaymentRequest) -> Self {
        let status = PaymentStatus::new(
            &request.order_id,
            &request.user_id,
            request.payment_method,
            request.amount,
            PaymentStage::PaymentWait,
        );
        Self {
            request,
            status,
            decision: None,
            refund_retry_requested: false,
            manual_refund: None,
            attention: Vec::new(),
            outbox: Vec::new(),
            outbox_closed: false,
            tracked: Vec::new(),
            published: Vec::new(),
        }
    }

    /// Runs the saga to a final state: `ORDER_COMPLETED` or `ORDER_CANCELLED`.
    #[run(name = "PaymentWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentOutcome> {
        saga::Saga::new(ctx).run().await
    }

    /// Everything an operator needs: stage, ids, approval number, failure reason, step times.
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> PaymentStatus {
        let mut status = self.status.clone();
        status.unpublished_events = (self.outbox.len() + self.tracked.len()) as u32;
        status
    }

    /// Every event and saga tracker record Kafka took for this payment, in order, as published
    /// (same ids, same content): what the reconciliation compares the topics with, and
    /// republishes from. State only, so every generation of the workflow answers it.
    #[query(name = "events")]
    pub fn events(&self, _ctx: &WorkflowContextView) -> Vec<DomainEvent> {
        self.published.clone()
    }

    /// The events and tracker records not handed to Kafka yet, in order: empty once a run closed
    /// normally; what a run that was terminated never published (the reconciliation publishes
    /// them). State only, so every generation of the workflow answers it.
    #[query(name = "unpublished")]
    pub fn unpublished(&self, _ctx: &WorkflowContextView) -> Vec<DomainEvent> {
        [&self.outbox[..], &self.tracked[..]].concat()
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

    /// Operator: try the failed refund again (taken only while a refund waits for an operator,
    /// [`REFUND_SIGNALS_WHILE_WAITING_PATCH`]).
    #[signal(name = "retry_refund")]
    pub fn retry_refund(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: RetryRefund) {
        self.refund_retry_requested = true;
    }

    /// Operator: the refund was done by hand; record who did it and its reference (taken only
    /// while a refund waits for an operator, [`REFUND_SIGNALS_WHILE_WAITING_PATCH`]).
    #[signal(name = "refund_completed_manually")]
    pub fn refund_completed_manually(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        input: ManualRefund,
    ) {
        self.manual_refund = Some(input);
    }
}
