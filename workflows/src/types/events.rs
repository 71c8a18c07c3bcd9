//! The platform's events in the shape of the Avro contract, and the contract's enum symbols.

use super::{EpochMillis, OrderItem, PaymentMethod};
use serde::{Deserialize, Serialize};

/// A domain event for Kafka, in the shape of the Avro contract. Timestamps are workflow time,
/// so a retried publish carries exactly the same record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainEvent {
    /// Deterministic event id (see [`crate::ids::event_id`]).
    pub event_id: String,
    /// When the event was produced (workflow time).
    pub event_timestamp: EpochMillis,
    /// The order: the partition key.
    pub order_id: String,
    /// What happened.
    pub body: EventBody,
}

/// The per-type part of a [`DomainEvent`]; field names follow the Avro contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum EventBody {
    /// `payment.completed`
    PaymentCompleted {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Amount in won.
        total_amount: i64,
        /// How the customer paid.
        payment_method: PaymentMethod,
        /// The PG approval number.
        pg_approval_number: String,
        /// When the PG approved.
        completed_at: EpochMillis,
    },
    /// `stock.confirmed`
    StockConfirmed {
        /// The payment.
        payment_id: String,
        /// What was confirmed.
        confirmed_items: Vec<OrderItem>,
        /// When the stock was confirmed.
        confirmed_at: EpochMillis,
    },
    /// `payment.failed`
    PaymentFailed {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Why, e.g. `INSUFFICIENT_FUNDS` or `PG_TIMEOUT`.
        failure_reason: String,
        /// When it was declared failed.
        failed_at: EpochMillis,
    },
    /// `payment.cancelled`
    PaymentCancelled {
        /// The payment.
        payment_id: String,
        /// The customer.
        user_id: String,
        /// Contract enum `PaymentCancellationReason`.
        cancellation_reason: PaymentCancellationReason,
        /// When it was cancelled.
        cancelled_at: EpochMillis,
    },
    /// `stock.confirmation.failed`
    StockConfirmationFailed {
        /// The payment.
        payment_id: String,
        /// Why, e.g. `RESERVATION_EXPIRED`.
        failure_reason: String,
        /// When it failed.
        failed_at: EpochMillis,
    },
    /// `order.cancelled`
    OrderCancelled {
        /// The customer.
        user_id: String,
        /// The stock to restore.
        items: Vec<OrderItem>,
        /// Contract enum `CancellationReason`.
        cancellation_reason: OrderCancellationReason,
        /// When it was cancelled.
        cancelled_at: EpochMillis,
    },
    /// `saga.tracker`: one step of the saga, its start, end or compensation (the platform's
    /// saga tracking; `sagaId` and `orderId` are the order id).
    SagaTracker {
        /// Contract enum `SagaType` (always `PAYMENT_COMPLETION` here).
        saga_type: SagaType,
        /// The step, e.g. `PAYMENT_COMPLETION` or `COMPENSATION_STOCK`.
        step: String,
        /// Contract enum `SagaStatus`.
        status: SagaStatus,
        /// JSON: workflow id, run id, amount, failure reason.
        metadata: Option<String>,
        /// When the step reached this status (workflow time).
        recorded_at: EpochMillis,
    },
}

crate::symbols! {
    /// The contract's `SagaType` symbols.
    pub enum SagaType("saga type") {
        /// The order-creation saga (not payflow's).
        OrderCreation = "ORDER_CREATION",
        /// The payment-completion saga: payflow's.
        PaymentCompletion = "PAYMENT_COMPLETION",
    }
}

crate::symbols! {
    /// The contract's `SagaStatus` symbols.
    pub enum SagaStatus("saga status") {
        /// The step began.
        Started = "STARTED",
        /// The step is under way.
        InProgress = "IN_PROGRESS",
        /// The step succeeded.
        Completed = "COMPLETED",
        /// The step failed.
        Failed = "FAILED",
        /// A compensation undid what a step did.
        Compensated = "COMPENSATED",
    }
}

/// The saga's steps as the tracker names them.
pub mod saga_steps {
    /// The PG approval and its record.
    pub const PAYMENT_COMPLETION: &str = "PAYMENT_COMPLETION";
    /// Reserved stock made permanent.
    pub const STOCK_CONFIRMATION: &str = "STOCK_CONFIRMATION";
    /// The order completed and the customer told.
    pub const ORDER_COMPLETION: &str = "ORDER_COMPLETION";
    /// The PG payment voided or refunded.
    pub const COMPENSATION_PAYMENT: &str = "COMPENSATION_PAYMENT";
    /// The reserved or confirmed stock returned.
    pub const COMPENSATION_STOCK: &str = "COMPENSATION_STOCK";
    /// The order cancelled.
    pub const COMPENSATION_ORDER: &str = "COMPENSATION_ORDER";
}

impl DomainEvent {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }
}

impl EventBody {
    /// The event type of this body.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::PaymentCompleted { .. } => EventType::PaymentCompleted,
            EventBody::StockConfirmed { .. } => EventType::StockConfirmed,
            EventBody::PaymentFailed { .. } => EventType::PaymentFailed,
            EventBody::PaymentCancelled { .. } => EventType::PaymentCancelled,
            EventBody::StockConfirmationFailed { .. } => EventType::StockConfirmationFailed,
            EventBody::OrderCancelled { .. } => EventType::OrderCancelled,
            EventBody::SagaTracker { .. } => EventType::SagaTracker,
        }
    }
}

crate::symbols! {
    /// The contract's `PaymentCancellationReason` symbols.
    pub enum PaymentCancellationReason("payment cancellation reason") {
        /// The stock could not be confirmed.
        StockUnavailable = "STOCK_UNAVAILABLE",
        /// An operator cancelled.
        AdminCancel = "ADMIN_CANCEL",
        /// The customer cancelled.
        UserCancel = "USER_CANCEL",
        /// Anything else (e.g. the saga deadline).
        SystemError = "SYSTEM_ERROR",
    }
}

crate::symbols! {
    /// The contract's `CancellationReason` symbols (order cancelled).
    pub enum OrderCancellationReason("order cancellation reason") {
        /// The payment did not succeed in time.
        PaymentTimeout = "PAYMENT_TIMEOUT",
        /// The customer asked.
        UserRequested = "USER_REQUESTED",
        /// The stock could not be confirmed.
        StockUnavailable = "STOCK_UNAVAILABLE",
        /// Anything else.
        SystemError = "SYSTEM_ERROR",
    }
}

/// The kinds of event payflow publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// `payment.completed`
    PaymentCompleted,
    /// `stock.confirmed`
    StockConfirmed,
    /// `payment.failed`
    PaymentFailed,
    /// `payment.cancelled`
    PaymentCancelled,
    /// `stock.confirmation.failed`
    StockConfirmationFailed,
    /// `order.cancelled`
    OrderCancelled,
    /// `saga.tracker`
    SagaTracker,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 7] = [
        EventType::PaymentCompleted,
        EventType::StockConfirmed,
        EventType::PaymentFailed,
        EventType::PaymentCancelled,
        EventType::StockConfirmationFailed,
        EventType::OrderCancelled,
        EventType::SagaTracker,
    ];

    /// The default topic name (before any prefix), which is also the event type header.
    pub fn name(self) -> &'static str {
        match self {
            EventType::PaymentCompleted => "payment.completed",
            EventType::StockConfirmed => "stock.confirmed",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentCancelled => "payment.cancelled",
            EventType::StockConfirmationFailed => "stock.confirmation.failed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::SagaTracker => "saga.tracker",
        }
    }
}
