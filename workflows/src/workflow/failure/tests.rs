//! Every failure kind, classified and mapped to its compensation.

use super::*;
use OrderCancellationReason as Order;
use PaymentCancellationReason as Payment;

fn app(kind: &str, message: &str) -> StepError {
    StepError {
        timeout: false,
        kind: Some(kind.to_owned()),
        message: message.to_owned(),
    }
}

fn declined() -> Failure {
    Failure::pg(&app(
        errors::PAYMENT_DECLINED,
        "INSUFFICIENT_FUNDS: 잔액이 부족합니다",
    ))
}

fn stock() -> Failure {
    Failure::stock(&app(errors::RESERVATION_EXPIRED, "reservation expired"))
}

fn interrupted(code: &'static str) -> Failure {
    Failure::Interrupted { code }
}

#[test]
fn a_decline_is_a_definite_failure_with_the_pg_code() {
    assert_eq!(
        declined(),
        Failure::Payment {
            code: "INSUFFICIENT_FUNDS".into(),
            message: "잔액이 부족합니다".into(),
            unknown: false,
        }
    );
}

#[test]
fn a_timeout_or_an_unknown_pg_error_may_have_charged() {
    let timeout = StepError {
        timeout: true,
        kind: None,
        message: "activity timed out".into(),
    };
    assert!(matches!(
        Failure::pg(&timeout),
        Failure::Payment { code, unknown: true, .. } if code == codes::PG_TIMEOUT
    ));
    for error in [
        app("SomethingElse", "boom"),
        // A retry refused after an earlier attempt that may have charged.
        app(
            errors::PG_OUTCOME_UNKNOWN,
            "no answer from the PG to this payment (its retry was refused: UNAUTHORIZED_KEY)",
        ),
        StepError {
            timeout: false,
            kind: None,
            message: "worker lost".into(),
        },
    ] {
        assert_eq!(
            Failure::pg(&error),
            Failure::Payment {
                code: codes::PG_ERROR.into(),
                message: error.message.clone(),
                unknown: true,
            }
        );
    }
}

#[test]
fn a_pg_rejection_is_definite_and_a_message_without_a_code_is_its_own_code() {
    let rejected = app(
        errors::PG_REJECTED,
        "PAYMENT_KEY_IN_USE: another order's key",
    );
    assert!(Failure::is_pg_rejection(&rejected));
    for other in [errors::PAYMENT_DECLINED, errors::PG_OUTCOME_UNKNOWN] {
        assert!(!Failure::is_pg_rejection(&app(other, "X")));
    }
    assert_eq!(
        Failure::definite_pg(&rejected).code(),
        codes::PAYMENT_KEY_IN_USE
    );
    assert_eq!(
        Failure::definite_pg(&app(errors::PG_REJECTED, "ODD")),
        Failure::Payment {
            code: "ODD".into(),
            message: "ODD".into(),
            unknown: false,
        }
    );
}

#[test]
fn every_stock_failure_kind_has_its_code() {
    for (kind, code) in [
        (errors::RESERVATION_EXPIRED, "RESERVATION_EXPIRED"),
        (errors::RESERVATION_MISSING, "RESERVATION_MISSING"),
        (errors::RESERVATION_RELEASED, "RESERVATION_RELEASED"),
        (errors::INSUFFICIENT_STOCK, "INSUFFICIENT_STOCK"),
        ("Anything", "STOCK_CONFIRMATION_ERROR"),
    ] {
        assert_eq!(Failure::stock(&app(kind, "m")).code(), code, "{kind}");
    }
}

#[test]
fn before_an_approval_the_order_is_cancelled_with_the_failure_s_reasons() {
    // (failure, money, order reason, order.cancelled reason)
    let cases = [
        (
            declined(),
            Money::Untouched,
            cancel_reasons::PAYMENT_FAILED,
            Order::SystemError,
        ),
        (
            Failure::pg(&StepError {
                timeout: true,
                kind: None,
                message: String::new(),
            }),
            Money::Void,
            cancel_reasons::PAYMENT_FAILED,
            Order::PaymentTimeout,
        ),
        (
            interrupted(codes::SAGA_DEADLINE),
            Money::Void,
            cancel_reasons::DEADLINE,
            Order::PaymentTimeout,
        ),
        (
            interrupted(codes::OPERATOR_CANCELLED),
            Money::Void,
            cancel_reasons::OPERATOR,
            Order::UserRequested,
        ),
        (
            interrupted(codes::STEP_FAILED),
            Money::Void,
            cancel_reasons::SYSTEM,
            Order::SystemError,
        ),
        (
            stock(),
            Money::Void,
            cancel_reasons::PAYMENT_FAILED,
            Order::SystemError,
        ),
    ];
    for (failure, money, order_reason, event_reason) in cases {
        let code = failure.code().to_owned();
        let plan = Compensation::new(failure, false, "ORD-1");
        assert_eq!(plan.code, code);
        assert_eq!(plan.money, money, "{code}");
        assert_eq!(plan.order_reason, order_reason, "{code}");
        assert_eq!(plan.order_event_reason, event_reason, "{code}");
        assert!(!plan.stock_event, "{code}");
        assert_eq!(plan.notice.kind, "payment-failed");
        assert_eq!(plan.notice.title, "결제에 실패했습니다");
        assert!(plan.notice.body.contains("ORD-1"), "{}", plan.notice.body);
        assert_eq!(plan.pg_reason(), format!("payment not completed: {code}"));
    }
    assert_eq!(
        Compensation::new(declined(), false, "ORD-1").message,
        "잔액이 부족합니다"
    );
    assert_eq!(
        Compensation::new(interrupted(codes::SAGA_DEADLINE), false, "ORD-1").message,
        "no decision from the PG"
    );
}

#[test]
fn after_an_approval_the_payment_is_refunded_with_the_failure_s_reasons() {
    // (failure, payment.cancelled reason, order reason, stock.confirmation-failed)
    let cases = [
        (
            stock(),
            Payment::StockUnavailable,
            cancel_reasons::STOCK_FAILED,
            Order::StockUnavailable,
            true,
        ),
        (
            interrupted(codes::OPERATOR_CANCELLED),
            Payment::AdminCancel,
            cancel_reasons::OPERATOR,
            Order::UserRequested,
            false,
        ),
        (
            interrupted(codes::SAGA_DEADLINE),
            Payment::SystemError,
            cancel_reasons::DEADLINE,
            Order::SystemError,
            false,
        ),
        (
            interrupted(codes::STEP_FAILED),
            Payment::SystemError,
            cancel_reasons::SYSTEM,
            Order::SystemError,
            false,
        ),
        (
            declined(),
            Payment::SystemError,
            cancel_reasons::PAYMENT_FAILED,
            Order::SystemError,
            false,
        ),
    ];
    for (failure, payment_reason, order_reason, event_reason, stock_event) in cases {
        let code = failure.code().to_owned();
        let plan = Compensation::new(failure, true, "ORD-2");
        assert_eq!(plan.code, code);
        assert_eq!(plan.money, Money::Refund(payment_reason), "{code}");
        assert_eq!(plan.order_reason, order_reason, "{code}");
        assert_eq!(plan.order_event_reason, event_reason, "{code}");
        assert_eq!(plan.stock_event, stock_event, "{code}");
        assert_eq!(plan.notice.kind, "order-refunded");
        assert_eq!(plan.notice.title, "주문이 취소되었습니다");
        assert!(plan.notice.body.contains("ORD-2"), "{}", plan.notice.body);
        assert_eq!(plan.pg_reason(), format!("order cancelled: {code}"));
    }
}
