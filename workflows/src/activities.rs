//! Activity declarations: names and input/output types only. The `payflow-activities` crate
//! implements them (its `#[activity(definition = ...)]` attributes are checked against these at
//! compile time), so the workflow can name an activity without linking its IO.
//!
//! The names are what operators read in the Web UI and what the history records: they never
//! change.
#![allow(missing_docs)] // the macro generates marker types; each method below is documented.

use crate::types::*;
use temporalio_common::ActivityError;
use temporalio_macros::activity_definitions;

/// Payment service (`payment-activities`): the PG and the `payment` schema.
pub struct PaymentActivities;

#[activity_definitions]
impl PaymentActivities {
    /// Confirm the payment at the PG (`Idempotency-Key` = payment id) and record it
    /// `COMPLETED` with its approval number. Records the attempt as `IN_PROGRESS` first, so the
    /// payment database knows about every payment sent to the PG.
    #[activity(name = "ApprovePayment")]
    pub fn approve(input: ApprovePayment) -> Result<PgApproval, ActivityError> {
        unimplemented!()
    }

    /// Mark the payment `COMPLETED` with its approval number (payments started before
    /// `lean-saga-v2`; later ones are recorded by `approve`).
    #[activity(name = "RecordPayment")]
    pub fn record(input: RecordPayment) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Cancel at the PG a payment whose outcome is unknown (same key); a payment the PG never
    /// made is nothing to cancel.
    #[activity(name = "VoidPayment")]
    pub fn void(input: VoidPayment) -> Result<PgCancellation, ActivityError> {
        unimplemented!()
    }

    /// Refund an approved payment at the PG.
    #[activity(name = "RefundPayment")]
    pub fn refund(input: RefundPayment) -> Result<PgCancellation, ActivityError> {
        unimplemented!()
    }

    /// Mark the payment `FAILED` with its reason.
    #[activity(name = "RecordPaymentFailure")]
    pub fn record_failure(input: RecordPaymentFailure) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Mark the payment `CANCELLED` (refunded).
    #[activity(name = "RecordPaymentCancellation")]
    pub fn record_cancellation(input: RecordPaymentCancellation) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// Product service (`product-activities`): the Redis reservation and the `product` schema.
pub struct ProductActivities;

#[activity_definitions]
impl ProductActivities {
    /// Claim the order's Redis reservation atomically and make it permanent in the product
    /// database (reservations `CONFIRMED`, stock decremented), then remove it from Redis.
    #[activity(name = "ConfirmStock")]
    pub fn confirm(input: ConfirmStock) -> Result<StockConfirmation, ActivityError> {
        unimplemented!()
    }

    /// Give the order's stock back, whatever state it is in: a held reservation returns to
    /// Redis, confirmed stock returns to the database and Redis.
    #[activity(name = "ReleaseStock")]
    pub fn release(input: ReleaseStock) -> Result<StockRelease, ActivityError> {
        unimplemented!()
    }
}

/// Order service (`order-activities`): the `orders` schema and push notifications.
pub struct OrderActivities;

#[activity_definitions]
impl OrderActivities {
    /// Order `PAYMENT_WAIT` -> `PAYMENT_COMPLETED` (payments started before `lean-saga-v2`).
    #[activity(name = "MarkOrderPaid")]
    pub fn mark_paid(input: OrderUpdate) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Order -> `ORDER_COMPLETED`.
    #[activity(name = "CompleteOrder")]
    pub fn complete(input: OrderUpdate) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Order -> `ORDER_COMPLETED`, then one attempt at the push (deduplicated by its id);
    /// answers whether the push went out.
    #[activity(name = "CompleteOrderAndNotify")]
    pub fn complete_and_notify(input: CompleteAndNotify) -> Result<OrderCompletion, ActivityError> {
        unimplemented!()
    }

    /// Order -> `ORDER_CANCELLED` with a reason; answers the order's items.
    #[activity(name = "CancelOrder")]
    pub fn cancel(input: CancelOrder) -> Result<CancelledOrder, ActivityError> {
        unimplemented!()
    }

    /// Send a push notification (deduplicated by its id at the gateway).
    #[activity(name = "SendPush")]
    pub fn push(input: PushNotification) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// Event publisher (runs on the workflow's queue): Kafka.
pub struct EventActivities;

#[activity_definitions]
impl EventActivities {
    /// Publish a domain event (Avro, keyed by order id, idempotent producer).
    #[activity(name = "PublishEvent")]
    pub fn publish(input: DomainEvent) -> Result<PublishedEvent, ActivityError> {
        unimplemented!()
    }

    /// Publish events in order (domain events and saga tracker records of one payment): every
    /// one is sent, then every delivery awaited, so a batch costs one broker round trip.
    #[activity(name = "PublishEvents")]
    pub fn publish_all(input: Vec<DomainEvent>) -> Result<Vec<PublishedEvent>, ActivityError> {
        unimplemented!()
    }
}

/// The marker types of the declarations, for `#[activity(definition = ...)]` in the crate that
/// implements them.
pub mod markers {
    pub use super::event_activities::{Publish as PublishEvent, PublishAll as PublishEvents};
    pub use super::order_activities::{
        Cancel as CancelOrder, Complete as CompleteOrder,
        CompleteAndNotify as CompleteOrderAndNotify, MarkPaid as MarkOrderPaid, Push as SendPush,
    };
    pub use super::payment_activities::{
        Approve as ApprovePayment, Record as RecordPayment,
        RecordCancellation as RecordPaymentCancellation, RecordFailure as RecordPaymentFailure,
        Refund as RefundPayment, Void as VoidPayment,
    };
    pub use super::product_activities::{Confirm as ConfirmStock, Release as ReleaseStock};
}
