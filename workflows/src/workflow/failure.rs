//! Where every failure is decided: why the forward path stopped ([`Failure`], classified from
//! the failed activity), and what undoing it means ([`Compensation`]): what happens to the money,
//! the order's cancel reason, the contract's reason symbols, which events the path publishes and
//! what the customer is told. Pure functions of the failure: no workflow context, so every
//! failure kind is unit-tested below.

use crate::{
    errors::{self, codes},
    types::{OrderCancellationReason, PaymentCancellationReason},
};
use temporalio_common::error::IncomingError;
use temporalio_workflow::ActivityExecutionError;

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

/// Why the forward path stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
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

/// A failed activity as the classification reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StepError {
    /// The activity ran out of time (its outcome is unknown).
    pub(super) timeout: bool,
    /// The application failure's type name (see [`errors`]), if it raised one.
    pub(super) kind: Option<String>,
    /// The application failure's message, or the error's text.
    pub(super) message: String,
}

impl StepError {
    pub(super) fn of(err: &ActivityExecutionError) -> Self {
        let (kind, message) = match err.reason() {
            Some(IncomingError::Application(app)) => (
                Some(app.type_name().unwrap_or_default().to_owned()),
                app.failure()
                    .map(|f| f.message.clone())
                    .unwrap_or_else(|| app.to_string()),
            ),
            _ => (None, err.to_string()),
        };
        Self {
            timeout: err.as_timeout().is_some(),
            kind,
            message,
        }
    }

    fn is(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

/// The text of an activity's failure, for the status and the attention reasons.
pub(super) fn failure_message(err: &ActivityExecutionError) -> String {
    StepError::of(err).message
}

impl Failure {
    /// The failure code (e.g. `INSUFFICIENT_FUNDS`, `SAGA_DEADLINE`).
    pub(super) fn code(&self) -> &str {
        match self {
            Failure::Payment { code, .. } | Failure::Stock { code, .. } => code,
            Failure::Interrupted { code } => code,
        }
    }

    /// The PG (or payflow, for a key of another order) refused the approval: nothing was
    /// charged.
    pub(super) fn is_pg_rejection(error: &StepError) -> bool {
        error.is(errors::PG_REJECTED)
    }

    /// A definite PG failure (`CODE: message`, as a decline): nothing to void.
    pub(super) fn definite_pg(error: &StepError) -> Failure {
        let (code, message) = split_code(&error.message);
        Failure::Payment {
            code,
            message,
            unknown: false,
        }
    }

    /// The PG step failed: a decline carries `CODE: message`; a timeout or any other error means
    /// the PG's outcome is unknown.
    pub(super) fn pg(error: &StepError) -> Failure {
        if error.timeout {
            return Failure::Payment {
                code: codes::PG_TIMEOUT.to_owned(),
                message: "the PG did not answer in time".to_owned(),
                unknown: true,
            };
        }
        if error.is(errors::PAYMENT_DECLINED) {
            return Failure::definite_pg(error);
        }
        Failure::Payment {
            code: codes::PG_ERROR.to_owned(),
            message: error.message.clone(),
            unknown: true,
        }
    }

    /// The stock confirmation failed for good.
    pub(super) fn stock(error: &StepError) -> Failure {
        let code = [
            (errors::RESERVATION_EXPIRED, "RESERVATION_EXPIRED"),
            (errors::RESERVATION_MISSING, "RESERVATION_MISSING"),
            (errors::RESERVATION_RELEASED, "RESERVATION_RELEASED"),
            (errors::INSUFFICIENT_STOCK, "INSUFFICIENT_STOCK"),
        ]
        .into_iter()
        .find(|(kind, _)| error.is(kind))
        .map_or("STOCK_CONFIRMATION_ERROR", |(_, code)| code);
        Failure::Stock {
            code: code.to_owned(),
            message: error.message.clone(),
        }
    }
}

/// `CODE: message` into its parts; a message without a code is its own code.
fn split_code(message: &str) -> (String, String) {
    message
        .split_once(": ")
        .map(|(c, t)| (c.to_owned(), t.to_owned()))
        .unwrap_or_else(|| (message.to_owned(), message.to_owned()))
}

/// What happens to the customer's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Money {
    /// The PG definitely charged nothing.
    Untouched,
    /// The PG may have charged (its outcome is unknown): void with the approval's key.
    Void,
    /// The PG approved: refund, with this reason in `payment.cancelled`.
    Refund(PaymentCancellationReason),
}

/// A message to the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Notice {
    /// Part of the notification id: one push of each kind per payment.
    pub(super) kind: &'static str,
    pub(super) title: &'static str,
    pub(super) body: String,
}

/// Everything the compensation of one failure needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Compensation {
    /// The failure code: the status, the decision and every event's failure reason.
    pub(super) code: String,
    /// What the API tells the client about a payment that was not approved.
    pub(super) message: String,
    pub(super) money: Money,
    /// Why the order was cancelled, as people read it (the order row, the status).
    pub(super) order_reason: &'static str,
    /// The contract's reason in `order.cancelled` (published only before an approval).
    pub(super) order_event_reason: OrderCancellationReason,
    /// `stock.confirmation-failed` is published (the stock step failed after an approval).
    pub(super) stock_event: bool,
    pub(super) notice: Notice,
}

impl Compensation {
    /// The compensation of `failure` for `order_id`; `paid` when the PG had approved.
    pub(super) fn new(failure: Failure, paid: bool, order_id: &str) -> Self {
        if paid {
            Self::paid(failure, order_id)
        } else {
            Self::unpaid(failure, order_id)
        }
    }

    /// The PG never approved: nothing to refund; void when its outcome is unknown.
    fn unpaid(failure: Failure, order_id: &str) -> Self {
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
        let order_event_reason = match code.as_str() {
            codes::OPERATOR_CANCELLED => OrderCancellationReason::UserRequested,
            codes::PG_TIMEOUT | codes::SAGA_DEADLINE => OrderCancellationReason::PaymentTimeout,
            // The contract has no "payment declined" symbol; see the README.
            _ => OrderCancellationReason::SystemError,
        };
        Self {
            code,
            message,
            money: if unknown {
                Money::Void
            } else {
                Money::Untouched
            },
            order_reason,
            order_event_reason,
            stock_event: false,
            notice: Notice {
                kind: "payment-failed",
                title: "결제에 실패했습니다",
                body: format!("주문번호 {order_id}의 결제가 실패하여 주문이 취소되었습니다."),
            },
        }
    }

    /// The PG approved: refund, with the reasons of what stopped the saga.
    fn paid(failure: Failure, order_id: &str) -> Self {
        use OrderCancellationReason as Order;
        use PaymentCancellationReason as Payment;
        let (order_reason, payment_reason, order_event_reason) = match &failure {
            Failure::Stock { .. } => (
                cancel_reasons::STOCK_FAILED,
                Payment::StockUnavailable,
                Order::StockUnavailable,
            ),
            Failure::Interrupted { code } if *code == codes::OPERATOR_CANCELLED => (
                cancel_reasons::OPERATOR,
                Payment::AdminCancel,
                Order::UserRequested,
            ),
            Failure::Interrupted { code } if *code == codes::SAGA_DEADLINE => (
                cancel_reasons::DEADLINE,
                Payment::SystemError,
                Order::SystemError,
            ),
            Failure::Interrupted { .. } => (
                cancel_reasons::SYSTEM,
                Payment::SystemError,
                Order::SystemError,
            ),
            Failure::Payment { .. } => (
                cancel_reasons::PAYMENT_FAILED,
                Payment::SystemError,
                Order::SystemError,
            ),
        };
        let stock_event = matches!(failure, Failure::Stock { .. });
        let (code, message) = match failure {
            Failure::Payment { code, message, .. } | Failure::Stock { code, message } => {
                (code, message)
            }
            Failure::Interrupted { code } => (code.to_owned(), String::new()),
        };
        Self {
            stock_event,
            code,
            message,
            money: Money::Refund(payment_reason),
            order_reason,
            order_event_reason,
            notice: Notice {
                kind: "order-refunded",
                title: "주문이 취소되었습니다",
                body: format!(
                    "주문번호 {order_id}의 주문이 취소되어 결제가 환불됩니다. 환불은 영업일 기준 3~5일 소요됩니다."
                ),
            },
        }
    }

    /// The reason sent to the PG with a void or a refund.
    pub(super) fn pg_reason(&self) -> String {
        match self.money {
            Money::Refund(_) => format!("order cancelled: {}", self.code),
            Money::Void | Money::Untouched => format!("payment not completed: {}", self.code),
        }
    }
}

#[cfg(test)]
mod tests;
