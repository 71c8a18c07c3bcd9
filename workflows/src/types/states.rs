//! The states the services keep in their tables (each column's `CHECK` in the migrations lists
//! the same symbols), and the payment status the API shows.

use super::{PaymentStage, PaymentStatus};

crate::symbols! {
    /// An order's state (`orders.orders.status`).
    pub enum OrderStatus("order status") {
        /// Created, waiting for its payment.
        PaymentWait = "PAYMENT_WAIT",
        /// Paid (before the lean saga, a step of its own).
        PaymentCompleted = "PAYMENT_COMPLETED",
        /// Final: paid and the stock confirmed.
        OrderCompleted = "ORDER_COMPLETED",
        /// Final: cancelled (see its cancel reason).
        OrderCancelled = "ORDER_CANCELLED",
    }
}

impl OrderStatus {
    /// True when the order may move to `to`: forward along the path, and to cancelled from
    /// anywhere (a compensation wins over everything).
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        match to {
            PaymentWait => false,
            PaymentCompleted => self == PaymentWait,
            OrderCompleted => matches!(self, PaymentWait | PaymentCompleted),
            OrderCancelled => self != OrderCancelled,
        }
    }

    /// True when the order already holds what `to` means: the same state, or completed for
    /// paid (paid is implied by completed).
    pub fn already(self, to: OrderStatus) -> bool {
        self == to || (to == OrderStatus::PaymentCompleted && self == OrderStatus::OrderCompleted)
    }

    /// The states an order may move to `to` from.
    pub fn sources(to: OrderStatus) -> Vec<OrderStatus> {
        Self::ALL
            .iter()
            .copied()
            .filter(|from| from.can_become(to))
            .collect()
    }
}

crate::symbols! {
    /// A stock reservation row's state (`product.stock_reservations.status`).
    pub enum ReservationStatus("reservation status") {
        /// Held in Redis, not yet permanent.
        Reserved = "RESERVED",
        /// Permanent in the product database.
        Confirmed = "CONFIRMED",
        /// Given back (compensation).
        Released = "RELEASED",
        /// Its hold ran out before it was confirmed.
        Expired = "EXPIRED",
    }
}

crate::symbols! {
    /// A payment row's state (`payment.payments.status`).
    pub enum PaymentRecordStatus("payment record status") {
        /// Sent to the PG, no decision recorded yet.
        InProgress = "IN_PROGRESS",
        /// The PG approved.
        Completed = "COMPLETED",
        /// The PG did not approve.
        Failed = "FAILED",
        /// Approved, then refunded.
        Cancelled = "CANCELLED",
    }
}

impl PaymentRecordStatus {
    /// True when the PG approved the payment (it may have been refunded since).
    pub fn was_approved(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }
}

crate::symbols! {
    /// A payment's status as the API shows it (`GET /api/v1/payments/{orderId}`).
    pub enum ApiPaymentStatus("payment status") {
        /// No decision yet.
        Pending = "PENDING",
        /// The PG approved.
        Completed = "COMPLETED",
        /// The PG did not approve.
        Failed = "FAILED",
        /// Approved, then refunded.
        Cancelled = "CANCELLED",
    }
}

impl ApiPaymentStatus {
    /// Derived from the workflow's status: refunded, undecided, approved or failed.
    pub fn of(status: &PaymentStatus) -> Self {
        match (status.stage, &status.approval_number, &status.refunded_by) {
            (_, _, Some(_)) => Self::Cancelled,
            (PaymentStage::PaymentWait, None, _) => Self::Pending,
            (_, Some(_), _) => Self::Completed,
            (_, None, _) if status.failure_code.is_some() => Self::Failed,
            _ => Self::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_move_forward_and_any_unfinished_order_can_be_cancelled() {
        use OrderStatus::*;
        assert_eq!(OrderStatus::sources(PaymentCompleted), [PaymentWait]);
        assert_eq!(
            OrderStatus::sources(OrderCompleted),
            [PaymentWait, PaymentCompleted]
        );
        assert_eq!(
            OrderStatus::sources(OrderCancelled),
            [PaymentWait, PaymentCompleted, OrderCompleted]
        );
        assert!(OrderStatus::sources(PaymentWait).is_empty());
        assert!(OrderCompleted.already(PaymentCompleted));
        assert!(!PaymentCompleted.already(OrderCompleted));
    }
}
