//! Activities that do no IO, under the real activity names: `payflow-worker --noop` runs the
//! real `PaymentWorkflow` on them, so `payflow bench --noop` measures what Temporal itself costs
//! on this machine (the engine's ceiling) with the same workflow shape.

use payflow_workflows::{activities::markers, types::*};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Every payflow activity, answering at once.
#[derive(Debug, Default)]
pub struct NoopActivities;

#[activities]
impl NoopActivities {
    /// Approves.
    #[activity(definition = markers::ApprovePayment)]
    pub async fn approve(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: ApprovePayment,
    ) -> Result<PgApproval, ActivityError> {
        Ok(PgApproval {
            approval_number: "NOOP".into(),
            approved_at: 0,
        })
    }

    /// Nothing to record.
    #[activity(definition = markers::RecordPayment)]
    pub async fn record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: RecordPayment,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Nothing to void.
    #[activity(definition = markers::VoidPayment)]
    pub async fn void(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: VoidPayment,
    ) -> Result<PgCancellation, ActivityError> {
        Ok(PgCancellation::default())
    }

    /// Nothing to refund.
    #[activity(definition = markers::RefundPayment)]
    pub async fn refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: RefundPayment,
    ) -> Result<PgCancellation, ActivityError> {
        Ok(PgCancellation {
            cancelled: true,
            reference: None,
        })
    }

    /// Nothing to record.
    #[activity(definition = markers::RecordPaymentFailure)]
    pub async fn record_failure(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: RecordPaymentFailure,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Nothing to record.
    #[activity(definition = markers::RecordPaymentCancellation)]
    pub async fn record_cancellation(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: RecordPaymentCancellation,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Confirms nothing.
    #[activity(definition = markers::ConfirmStock)]
    pub async fn confirm(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: ConfirmStock,
    ) -> Result<StockConfirmation, ActivityError> {
        Ok(StockConfirmation { items: Vec::new() })
    }

    /// Releases nothing.
    #[activity(definition = markers::ReleaseStock)]
    pub async fn release(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: ReleaseStock,
    ) -> Result<StockRelease, ActivityError> {
        Ok(StockRelease::default())
    }

    /// Nothing to mark.
    #[activity(definition = markers::MarkOrderPaid)]
    pub async fn mark_paid(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Nothing to complete.
    #[activity(definition = markers::CompleteOrder)]
    pub async fn complete(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Nothing to complete; told no one.
    #[activity(definition = markers::CompleteOrderAndNotify)]
    pub async fn complete_and_notify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: CompleteAndNotify,
    ) -> Result<OrderCompletion, ActivityError> {
        Ok(OrderCompletion { pushed: true })
    }

    /// Nothing to cancel.
    #[activity(definition = markers::CancelOrder)]
    pub async fn cancel(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: CancelOrder,
    ) -> Result<CancelledOrder, ActivityError> {
        Ok(CancelledOrder::default())
    }

    /// Sends nothing.
    #[activity(definition = markers::SendPush)]
    pub async fn push(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: PushNotification,
    ) -> Result<(), ActivityError> {
        Ok(())
    }

    /// Publishes nothing.
    #[activity(definition = markers::PublishEvent)]
    pub async fn publish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: DomainEvent,
    ) -> Result<PublishedEvent, ActivityError> {
        Ok(PublishedEvent {
            topic: "noop".into(),
            partition: 0,
            offset: 0,
        })
    }

    /// Publishes nothing (a batch).
    #[activity(definition = markers::PublishEvents)]
    pub async fn publish_all(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: Vec<DomainEvent>,
    ) -> Result<Vec<PublishedEvent>, ActivityError> {
        Ok(input
            .iter()
            .map(|_| PublishedEvent {
                topic: "noop".into(),
                partition: 0,
                offset: 0,
            })
            .collect())
    }
}
