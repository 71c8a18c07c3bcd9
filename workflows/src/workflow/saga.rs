//! One run of the saga: the forward steps under the deadline, then compensation if they failed,
//! with the outbox's publisher beside them; and the workflow state every step writes (stage,
//! attention, search attributes).

use super::{
    COMPLETION_OUTLIVES_DEADLINE_PATCH, EVENT_OUTBOX_PATCH, LEAN_SAGA_PATCH, PLATFORM_EVENTS_PATCH,
    PaymentWorkflow, failure::Failure,
};
use crate::{errors::codes, ids, queues::TaskQueues, search, types::*};
use futures_util::FutureExt;
use std::{
    cell::Cell,
    pin::pin,
    time::{Duration, UNIX_EPOCH},
};
use temporalio_workflow::{
    TimerOptions, WorkflowCancellationToken, WorkflowContext, WorkflowResult, join, select,
};

/// The workflow context plus what every step needs.
pub(super) struct Saga {
    pub(super) ctx: WorkflowContext<PaymentWorkflow>,
    /// [`LEAN_SAGA_PATCH`] applies.
    pub(super) lean: bool,
    /// [`PLATFORM_EVENTS_PATCH`] applies (only ever with `lean`).
    pub(super) platform: bool,
    /// [`EVENT_OUTBOX_PATCH`] applies (only ever with `platform`).
    pub(super) outbox: bool,
    /// The forward step started and not yet ended.
    pub(super) current_step: Cell<Option<&'static str>>,
    /// [`super::COMPENSATION_WATCHED_PATCH`] applies (known once a compensation starts).
    pub(super) watched: Cell<bool>,
    pub(super) workflow_id: String,
    pub(super) payment: ApprovePayment,
    pub(super) queues: TaskQueues,
    pub(super) timings: SagaTimings,
}

/// What a problem listed for operators is about.
pub(super) mod attention_keys {
    /// The refund at the PG.
    pub(in crate::workflow) const REFUND: &str = "refund";
    /// Publishing events.
    pub(in crate::workflow) const PUBLISH: &str = "publish";
    /// The order's completion, still waiting after the deadline.
    pub(in crate::workflow) const COMPLETION: &str = "completion";
    /// A void at the PG that keeps failing.
    pub(in crate::workflow) const VOID: &str = "void";
    /// A refund whose tries have not finished in time (no payment worker, say).
    pub(in crate::workflow) const REFUND_TRIES: &str = "refund tries";
}

impl Saga {
    pub(super) fn new(ctx: &WorkflowContext<PaymentWorkflow>) -> Self {
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
            current_step: Cell::default(),
            watched: Cell::default(),
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

    pub(super) async fn run(self) -> WorkflowResult<PaymentOutcome> {
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
                // With the stock confirmed only the order's completion is left: it finishes
                // (see the patch) rather than being undone.
                let completing = self
                    .ctx
                    .state(|s| s.status.stage == PaymentStage::StockConfirmed);
                let outlives = completing && self.ctx.patched(COMPLETION_OUTLIVES_DEADLINE_PATCH);
                if outlives {
                    // Charged, stock taken, order not complete: operators see it until it is.
                    self.attention(
                        attention_keys::COMPLETION,
                        Some(
                            "the saga deadline passed while the order's completion waited for \
                             the order service"
                                .to_owned(),
                        ),
                    );
                } else {
                    forward_token.cancel_with_reason("saga deadline");
                }
                // The cancelled steps report back; a step that finished just as the deadline
                // fired still counts.
                let result = forward.await;
                if outlives {
                    self.attention(attention_keys::COMPLETION, None);
                }
                result
            }
        };

        let found_nothing = match result {
            Ok(pushed) => {
                if !pushed {
                    self.notify_completed().await;
                }
                None
            }
            Err(failure) => self.compensate(failure).await,
        };
        self.flush().await;
        if let Some(void) = found_nothing {
            self.void_late_charge(void).await;
        }
        if self.outbox {
            self.ctx.state_mut(|s| s.outbox_closed = true);
        }
    }

    /// Moves the payment to `stage`: the status, its step time and the search attribute.
    pub(super) fn enter(&self, stage: PaymentStage) {
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
    pub(super) fn attention(&self, key: &str, reason: Option<String>) {
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
    pub(super) fn interruption(&self, token: &WorkflowCancellationToken) -> Failure {
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
    pub(super) fn now_millis(&self) -> EpochMillis {
        self.ctx
            .workflow_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as EpochMillis)
            .unwrap_or_default()
    }
}
