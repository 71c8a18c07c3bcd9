//! Order service (`order-activities`): the activities over the `orders` schema ([`store`])
//! and the push gateway ([`push`]).

mod push;
mod store;

pub use push::{PushClient, PushConfig};
pub use store::{OrderRow, OrderStore, RESERVATION_LAPSE_GRACE_SECS};

use crate::{
    failure::{Transient, retryable},
    metrics::Metrics,
    span::activity_span,
};
use payflow_workflows::{
    activities::markers,
    types::{
        CancelOrder, CancelledOrder, CompleteAndNotify, OrderCompletion, OrderStatus, OrderUpdate,
        PushNotification,
    },
};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

/// The order service's activities.
#[derive(Debug, Clone)]
pub struct OrderActivities {
    store: OrderStore,
    push: PushClient,
    metrics: Metrics,
}

impl OrderActivities {
    /// Wires the database pool and the push client.
    pub fn new(db: PgPool, push: PushClient) -> Self {
        Self {
            store: OrderStore::new(db),
            push,
            metrics: Metrics::default(),
        }
    }

    /// Records the seed's monitoring points on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One prompt attempt at a push: true if it went out (now or before). A slow or failing
    /// gateway answers false, and the workflow sends the push with retries instead.
    ///
    /// `first_completion` says this attempt's update completed the order: no push of it can
    /// have gone out yet (it follows the completion), so the notifications table is not asked.
    pub async fn try_push(&self, n: &PushNotification, first_completion: bool) -> bool {
        let push = self.push_once(n, !first_completion);
        match tokio::time::timeout(std::time::Duration::from_secs(2), push).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(order_id = %n.order_id, error = ?e, "push not sent; retrying it apart");
                false
            }
            Err(_) => {
                tracing::warn!(order_id = %n.order_id, "push gateway slow; retrying it apart");
                false
            }
        }
    }

    /// Sends a push once: the gateway deduplicates by id, and the notifications table keeps
    /// a retried activity from asking twice.
    pub async fn send_push(&self, n: &PushNotification) -> Result<(), ActivityError> {
        self.push_once(n, true).await
    }

    /// [`Self::send_push`]; `check` false skips the look-up when nothing can have been sent.
    async fn push_once(&self, n: &PushNotification, check: bool) -> Result<(), ActivityError> {
        if check
            && self
                .store
                .notified(&n.notification_id)
                .await
                .transient("read notifications")?
        {
            return Ok(());
        }
        self.push
            .send(n)
            .await
            .map_err(|e| retryable("push gateway", e))?;
        self.store
            .record_notification(n)
            .await
            .transient("record notification")?;
        tracing::info!(order_id = %n.order_id, user_id = %n.user_id, "push sent");
        Ok(())
    }

    /// The order paid (before the lean saga, a step of its own).
    async fn mark_order_paid(&self, input: &OrderUpdate) -> Result<(), ActivityError> {
        self.store
            .transition(
                &input.order_id,
                &input.payment_id,
                OrderStatus::PaymentCompleted,
                None,
            )
            .await
            .map(|_| ())
    }

    /// The order completed; counted once. True if this call completed it.
    async fn complete_order(&self, input: &OrderUpdate) -> Result<bool, ActivityError> {
        let changed = self
            .store
            .transition(
                &input.order_id,
                &input.payment_id,
                OrderStatus::OrderCompleted,
                None,
            )
            .await?;
        if changed {
            self.metrics.order("completed");
        }
        Ok(changed)
    }

    /// The order completed, then one prompt try at the customer's push.
    async fn complete_and_push(
        &self,
        input: &CompleteAndNotify,
    ) -> Result<OrderCompletion, ActivityError> {
        let first_completion = self.complete_order(&input.order).await?;
        Ok(OrderCompletion {
            pushed: self.try_push(&input.push, first_completion).await,
        })
    }

    /// The order cancelled (a compensation wins over everything: even a completed order is
    /// cancelled when its payment is being refunded); answers its lines.
    async fn cancel_order(&self, input: &CancelOrder) -> Result<CancelledOrder, ActivityError> {
        let changed = self
            .store
            .transition(
                &input.order_id,
                "",
                OrderStatus::OrderCancelled,
                Some(&input.reason),
            )
            .await?;
        if changed {
            self.metrics.order("cancelled");
        }
        let items = self
            .store
            .items(&input.order_id)
            .await
            .transient("read order items")?;
        Ok(CancelledOrder { items })
    }
}

#[activities]
impl OrderActivities {
    /// See [`payflow_workflows::activities::OrderActivities::mark_paid`].
    #[activity(definition = markers::MarkOrderPaid)]
    pub async fn mark_paid(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        let span = activity_span(&ctx, &input.order_id);
        self.mark_order_paid(&input).instrument(span).await
    }

    /// See [`payflow_workflows::activities::OrderActivities::complete`].
    #[activity(definition = markers::CompleteOrder)]
    pub async fn complete(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        let span = activity_span(&ctx, &input.order_id);
        self.complete_order(&input)
            .instrument(span)
            .await
            .map(|_| ())
    }

    /// See [`payflow_workflows::activities::OrderActivities::complete_and_notify`].
    #[activity(definition = markers::CompleteOrderAndNotify)]
    pub async fn complete_and_notify(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CompleteAndNotify,
    ) -> Result<OrderCompletion, ActivityError> {
        let span = activity_span(&ctx, &input.order.order_id);
        self.complete_and_push(&input).instrument(span).await
    }

    /// See [`payflow_workflows::activities::OrderActivities::cancel`].
    #[activity(definition = markers::CancelOrder)]
    pub async fn cancel(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CancelOrder,
    ) -> Result<CancelledOrder, ActivityError> {
        let span = activity_span(&ctx, &input.order_id);
        self.cancel_order(&input).instrument(span).await
    }

    /// See [`payflow_workflows::activities::OrderActivities::push`].
    #[activity(definition = markers::SendPush)]
    pub async fn push(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: PushNotification,
    ) -> Result<(), ActivityError> {
        let span = activity_span(&ctx, &input.order_id);
        self.send_push(&input).instrument(span).await
    }
}
