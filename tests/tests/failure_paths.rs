//! Every failure path of SPEC §3, end to end: whatever fails, no money stays charged without
//! stock, no stock stays held without an order, and every order ends in a final state.

use payflow_activities::product::{ORPHAN_GRACE_MS, Product, ProductStore, reservation::Reserve};
use payflow_starter::{audit::audit, service::Pay};
use payflow_tests::{
    DECLINED_STEPS, EVERY_SERVICE, SUCCESS_STEPS, Stack, StackOptions, VOIDED_STEPS,
    assert_conserved, avro_str, bare_command, binary, check_history, deadline_fired, eventually,
    fast_timings, own_key, platform_view, steps, temporal_address, types_of,
};
use payflow_worker::config::Service;
use payflow_workflows::types::{
    ManualRefund, OrderItem, OrderStatus, PaymentMethod, PaymentRequest, PaymentStage, SagaTimings,
};
use std::time::Duration;

/// The saga tracker records of a payment whose stock confirmation failed after the approval, in
/// order: the stock returned, the payment refunded, the order cancelled.
const STOCK_FAILED_STEPS: [(&str, &str); 7] = [
    ("PAYMENT_COMPLETION", "STARTED"),
    ("PAYMENT_COMPLETION", "COMPLETED"),
    ("STOCK_CONFIRMATION", "STARTED"),
    ("STOCK_CONFIRMATION", "FAILED"),
    ("COMPENSATION_STOCK", "COMPENSATED"),
    ("COMPENSATION_PAYMENT", "COMPENSATED"),
    ("COMPENSATION_ORDER", "COMPENSATED"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_cancels_the_order_and_gives_the_stock_back() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-DECL", &[(&products[0], 2)]).await;

    let decision = stack
        .pay(
            &order,
            PaymentMethod::Card,
            Some(&own_key("tpk_decline_INSUFFICIENT_FUNDS")),
        )
        .await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("INSUFFICIENT_FUNDS"));
    assert!(decision.retryable);

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(outcome.failure_reason.as_deref(), Some("결제 실패"));

    assert_eq!(
        stack.payment_failure(&order.order_id).await,
        ("FAILED".to_owned(), Some("INSUFFICIENT_FUNDS".to_owned()))
    );
    let row = stack
        .row(
            "SELECT status, cancel_reason FROM orders.orders WHERE order_id = $1",
            &order.order_id,
        )
        .await;
    assert_eq!(row["status"], "ORDER_CANCELLED");
    assert_eq!(row["cancel_reason"], "결제 실패");

    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (0, 0));
    assert_conserved(&stack, &products).await;
    assert_eq!(stack.ledger(&products[0].product_id).await.available, 5);

    let events = stack.events_of(&order.order_id).await;
    assert_eq!(types_of(&events), ["order.cancelled", "payment.failed"]);
    let failed = events
        .iter()
        .find(|e| e.event_type() == "payment.failed")
        .unwrap()
        .decode();
    assert_eq!(avro_str(&failed["failureReason"]), "INSUFFICIENT_FUNDS");
    let cancelled = events
        .iter()
        .find(|e| e.event_type() == "order.cancelled")
        .unwrap()
        .decode();
    assert_eq!(avro_str(&cancelled["userId"]), "USR-DECL");

    let pushes = stack.pushes("USR-DECL").await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].title, "결제에 실패했습니다");

    // The order cannot be paid again; a repeat hears the same failure, in the same words.
    let again = stack.pay(&order, PaymentMethod::Toss, None).await;
    assert!(!again.approved);
    assert_eq!(
        (&again.failure_code, &again.failure_message),
        (&decision.failure_code, &decision.failure_message)
    );
    assert_eq!(stack.books(&order.order_id).await.charges, 0);
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&DECLINED_STEPS),
        "saga tracker records of the declined path"
    );
    check_history(&stack, &order.order_id, "declined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_that_never_answers_is_voided_before_the_payment_is_declared_failed() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-TIMEOUT", &[(&products[0], 1)]).await;

    let decision = stack
        .pay(&order, PaymentMethod::Card, Some(&own_key("tpk_timeout")))
        .await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    // The PG charged while its answer was lost; the void took the money back.
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1), "{books:?}");
    assert_eq!(books.payments[0]["status"], "CANCELED");

    assert_eq!(
        stack.payment_failure(&order.order_id).await,
        ("FAILED".to_owned(), Some("PG_TIMEOUT".to_owned()))
    );
    let events = stack.events_of(&order.order_id).await;
    assert_eq!(types_of(&events), ["order.cancelled", "payment.failed"]);
    let cancelled = events
        .iter()
        .find(|e| e.event_type() == "order.cancelled")
        .unwrap()
        .decode();
    assert_eq!(
        avro_str(&cancelled["cancellationReason"]),
        "PAYMENT_TIMEOUT"
    );
    assert_conserved(&stack, &products).await;
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&VOIDED_STEPS),
        "saga tracker records of the pg_timeout path"
    );
    check_history(&stack, &order.order_id, "pg_timeout").await;
}

/// The PG's answer is lost and the void meets a PG that will not cancel the charge
/// (`NOT_CANCELABLE_PAYMENT`): asking again cannot help, so the workflow does not loop on it. The
/// order is cancelled and its stock returned; the charge stands, listed for operators, and the
/// saga tracker says the payment's compensation failed rather than that it was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_pg_will_not_cancel_is_listed_and_tracked_as_not_compensated() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-NOCANCEL", &[(&products[0], 1)]).await;
    let order_id = &order.order_id;

    let key = own_key("tpk_timeout_uncancelable");
    let decision = stack.pay(&order, PaymentMethod::Card, Some(&key)).await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    // The PG may still hold the charge: the customer is not told to pay again, now or when
    // asking again.
    assert!(!decision.retryable, "{decision:?}");

    let outcome = stack.outcome(order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    let books = stack.books(order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0), "{books:?}");
    let status = status_of(&stack, order_id).await;
    assert!(status.charge_held, "{status:?}");
    let repeat = stack.pay(&order, PaymentMethod::Card, Some(&key)).await;
    assert_eq!(repeat, decision, "a repeat answers the same");
    assert!(status.needs_attention, "{status:?}");
    assert_eq!(status.attention_reasons.len(), 1, "{status:?}");
    assert!(
        status.attention_reasons[0].starts_with("void at PG failed")
            && status.attention_reasons[0].contains("NOT_CANCELABLE_PAYMENT"),
        "{status:?}"
    );
    assert_eq!(
        platform_view(&stack, order_id).await,
        steps(&[
            ("PAYMENT_COMPLETION", "STARTED"),
            ("PAYMENT_COMPLETION", "FAILED"),
            ("COMPENSATION_PAYMENT", "FAILED"),
            ("COMPENSATION_STOCK", "COMPENSATED"),
            ("COMPENSATION_ORDER", "COMPENSATED"),
        ]),
    );
    assert_conserved(&stack, &products).await;
    check_history(&stack, order_id, "void_refused_for_good").await;
}

/// The PG charged, but its answer was lost; the retry is refused for a reason that says nothing
/// of the first attempt (the PG rotated the merchant key in between). The refusal is not taken
/// for "nothing charged": the workflow voids, is listed for operators while the PG refuses the
/// key, and takes the charge back once the key is right again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_after_a_lost_answer_voids_the_charge_of_the_first_attempt() {
    let stack = slow_pg_stack(3_000).await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-ROTATED", &[(&products[0], 1)]).await;
    let order_id = &order.order_id;

    let key = own_key("tpk_timeout");
    let paying = stack.pay(&order, PaymentMethod::Card, Some(&key));
    let pg_side = async {
        // The first confirm is charged and its answer held past payflow's timeout (3 s); the
        // key changes meanwhile, so the retry is refused.
        eventually(
            Duration::from_secs(10),
            "the first attempt's charge",
            || async { (stack.books(order_id).await.charges == 1).then_some(()) },
        )
        .await;
        stack
            .configure_sandbox(serde_json::json!({ "secretKey": "test_sk_rotated" }))
            .await;
        let status = eventually(Duration::from_secs(60), "the void to be listed", || async {
            let s = stack.payflow.payments.status(order_id).await.ok()?;
            s.needs_attention.then_some(s)
        })
        .await;
        assert_eq!(status.stage, PaymentStage::Compensating);
        assert!(
            status.attention_reasons[0].starts_with("void at PG keeps failing"),
            "{status:?}"
        );
        assert_eq!(stack.books(order_id).await.cancels, 0);
        stack
            .configure_sandbox(serde_json::json!({ "secretKey": "test_sk_payflow" }))
            .await;
    };
    let (decision, ()) = tokio::join!(paying, pg_side);
    assert!(!decision.approved, "{decision:?}");
    assert_eq!(decision.failure_code.as_deref(), Some("PG_ERROR"));

    let outcome = stack.outcome(order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    let books = stack.books(order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1), "{books:?}");
    assert!(!status_of(&stack, order_id).await.needs_attention);
    assert_eq!(
        stack.payment_failure(order_id).await,
        ("FAILED".to_owned(), Some("PG_ERROR".to_owned()))
    );
    assert_conserved(&stack, &products).await;
    check_history(&stack, order_id, "void_refused_then_restored").await;
}

/// The PG step times out while the PG is still working on the charge: the void finds nothing
/// at the PG yet, the payment is declared failed, and only then does the PG charge. The
/// attempt that gets that late approval takes the charge back itself: a customer whose order
/// was cancelled pays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_that_lands_after_the_payment_failed_is_taken_back() {
    // The worker waits up to 8 s for the PG's answer (the default), the PG step 3 s. The
    // workflow's own second look comes 15 s after the cancellation, long after the charge, so
    // what cancels the charge is the attempt that heard it.
    let stack = Stack::start_with(StackOptions {
        pg_request_timeout_ms: 8_000,
        timings: Some(SagaTimings {
            late_charge_secs: 15,
            ..fast_timings()
        }),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LATE", &[(&products[0], 1)]).await;
    // Longer than the PG step, shorter than the worker's wait for the answer.
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 5000 }))
        .await;

    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);

    // The PG charges about two seconds after the payment failed; the cancel follows it.
    let books = eventually(
        Duration::from_secs(40),
        "the late charge and its cancel",
        || async {
            let books = stack.books(&order.order_id).await;
            (books.charges > 0 && books.cancels > 0).then_some(books)
        },
    )
    .await;
    assert_eq!((books.charges, books.cancels), (1, 1), "{books:?}");
    assert_eq!(books.payments[0]["status"], "CANCELED");
    assert_eq!(
        books.payments[0]["cancels"][0]["cancelReason"],
        "payment not completed: approved after the payment had failed",
        "cancelled by the attempt that heard the approval: {books:?}"
    );
    assert_eq!(
        stack.payment_failure(&order.order_id).await,
        ("FAILED".to_owned(), Some("PG_TIMEOUT".to_owned()))
    );
    assert_conserved(&stack, &products).await;
    // The second look found the charge cancelled already and cancelled nothing more.
    let status = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .unwrap();
    assert!(!status.late_charge_voided, "{status:?}");
    check_history(&stack, &order.order_id, "late_approval_taken_back").await;
}

/// A stack whose PG charges `tpk_late` 10 s after the first confirm, whether or not anyone
/// still waits; the PG step may take 3 s, and the workflow looks again 15 s after the order is
/// cancelled.
async fn late_pg_stack() -> Stack {
    late_pg_stack_with(10, 15).await
}

/// A stack whose PG charges `tpk_late` `hold` seconds after the first confirm; the workflow
/// looks again `look` seconds after the order is cancelled.
async fn late_pg_stack_with(hold: u64, look: u64) -> Stack {
    Stack::start_with(late_pg_options(hold, look)).await
}

/// The options of [`late_pg_stack_with`].
fn late_pg_options(hold: u64, look: u64) -> StackOptions {
    StackOptions {
        timings: Some(SagaTimings {
            late_charge_secs: look,
            ..fast_timings()
        }),
        sandbox: payflow_sandbox::SandboxConfig {
            late_hold: Duration::from_secs(hold),
            ..payflow_sandbox::SandboxConfig::default()
        },
        pg_request_timeout_ms: 1_500,
        ..StackOptions::default()
    }
}

/// The PG charged the order late and the workflow's second look cancelled it: one charge, one
/// cancel, `lateChargeVoided`, nothing waiting for a person.
async fn assert_late_charge_cancelled(stack: &Stack, order_id: &str) {
    let books = stack.books(order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (1, 1),
        "the late charge is cancelled: {books:?}"
    );
    assert_eq!(books.payments[0]["status"], "CANCELED");
    let status = stack.payflow.payments.status(order_id).await.unwrap();
    assert!(status.late_charge_voided, "{status:?}");
    assert!(!status.needs_attention, "{status:?}");
}

/// The PG finishes a confirm after payflow stopped waiting for it: the approval step gave up,
/// its HTTP client disconnected (so no attempt is left to hear the approval), and the void found
/// nothing at the PG yet. The order is cancelled and the customer told at once; the workflow
/// looks once more after `late_charge_secs`, finds the charge and cancels it, so the customer
/// pays nothing. The history replays (`late_charge_voided`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_pg_completes_after_payflow_gave_up_is_found_and_cancelled() {
    let stack = late_pg_stack().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LATE-PG", &[(&products[0], 1)]).await;

    let decision = stack
        .pay(&order, PaymentMethod::Card, Some(&own_key("tpk_late")))
        .await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    // The customer is not held by the second look: the order is cancelled, its stock back,
    // while the PG has charged nothing yet.
    let status = eventually(Duration::from_secs(30), "the order cancelled", || async {
        let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
        (s.stage == PaymentStage::OrderCancelled).then_some(s)
    })
    .await;
    assert!(!status.late_charge_voided);
    let books = stack.books(&order.order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (0, 0),
        "the void looked before the PG charged: {books:?}"
    );

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(outcome.failure_code.as_deref(), Some("PG_TIMEOUT"));
    assert_late_charge_cancelled(&stack, &order.order_id).await;
    assert_eq!(
        stack.payment_failure(&order.order_id).await,
        ("FAILED".to_owned(), Some("PG_TIMEOUT".to_owned()))
    );
    // Nothing more for the platform: it was told the payment failed, which it did.
    let events = stack.events_of(&order.order_id).await;
    assert_eq!(types_of(&events), ["order.cancelled", "payment.failed"]);
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order.order_id, "late_charge_voided").await;
}

/// The PG charges after payflow gave up, and then refuses to cancel that charge. The customer
/// was told at once that the payment failed and could be tried again; once the second look
/// finds the charge it cannot take back, the charge is listed for operators, the payment says
/// the PG holds it, and a repeated request is no longer told to pay again, while the run is
/// still open (Kafka is away, so its events wait) as after it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_charge_the_pg_will_not_cancel_is_listed_and_not_paid_again() {
    let mut stack = Stack::start_with(StackOptions {
        kafka_away: true,
        ..late_pg_options(10, 15)
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LATE-HELD", &[(&products[0], 1)]).await;
    let key = own_key("tpk_late_uncancelable");
    let decision = stack.pay(&order, PaymentMethod::Card, Some(&key)).await;
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    assert!(decision.retryable, "nothing charged yet: {decision:?}");

    let status = eventually(Duration::from_secs(60), "the second look", || async {
        let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
        s.charge_held.then_some(s)
    })
    .await;
    assert!(!status.late_charge_voided, "{status:?}");
    assert!(status.needs_attention, "{status:?}");
    assert!(
        status
            .attention_reasons
            .iter()
            .any(|r| r.starts_with("void late charge failed") && r.contains("NOT_CANCELABLE")),
        "{status:?}"
    );
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0), "{books:?}");
    assert!(status.unpublished_events > 0, "the run is open: {status:?}");
    let repeat = stack.pay(&order, PaymentMethod::Card, Some(&key)).await;
    assert_eq!(repeat.failure_code.as_deref(), Some("PG_TIMEOUT"));
    assert!(!repeat.retryable, "the PG holds the charge: {repeat:?}");

    // Once its events are out the run closes; a repeat still says so.
    stack.restore_kafka().await;
    assert_eq!(
        stack.outcome(&order.order_id).await.stage,
        PaymentStage::OrderCancelled
    );
    let repeat = stack.pay(&order, PaymentMethod::Card, Some(&key)).await;
    assert!(!repeat.retryable, "{repeat:?}");
    assert_conserved(&stack, &products).await;
}

/// The second look comes while the PG is still deciding (it holds the payment `IN_PROGRESS`):
/// it is the last look, so it goes on looking until the PG has decided, and cancels the charge
/// the PG then completes. (It used to take "not charged yet" for an answer and leave it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_look_that_finds_the_pg_still_deciding_looks_until_it_has() {
    // The PG charges 12 s after the confirm; the second look comes about 5 s after it.
    let stack = late_pg_stack_with(12, 2).await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LATE-SLOW", &[(&products[0], 1)]).await;
    let decision = stack
        .pay(&order, PaymentMethod::Card, Some(&own_key("tpk_late")))
        .await;
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_late_charge_cancelled(&stack, &order.order_id).await;
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order.order_id, "late_charge_still_deciding").await;
}

/// An operator cancels a payment while the PG is still working on its charge. Compensation is
/// immune to cancellation, the wait for a late charge included: the workflow still looks again
/// after `late_charge_secs` (not at once, before the PG has charged) and cancels the charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancel_does_not_cut_the_wait_for_a_late_charge_short() {
    let stack = late_pg_stack().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-LATE-OP", &[(&products[0], 1)]).await;

    let cancel = async {
        eventually(Duration::from_secs(10), "the payment started", || async {
            stack.payflow.payments.status(&order.order_id).await.ok()
        })
        .await;
        stack
            .payflow
            .payments
            .cancel(&order.order_id, "operator: customer called")
            .await
            .expect("cancel");
    };
    let key = own_key("tpk_late");
    let (decision, ()) = tokio::join!(stack.pay(&order, PaymentMethod::Card, Some(&key)), cancel);
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("OPERATOR_CANCELLED"));

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_late_charge_cancelled(&stack, &order.order_id).await;
    assert_conserved(&stack, &products).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_pg_is_retried_and_charges_exactly_once() {
    // The dev server spaces activity retries by about a second: room for three of them.
    let stack = Stack::start_with_timings(SagaTimings {
        pg_timeout_secs: 20,
        ..fast_timings()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-FLAKY", &[(&products[0], 1)]).await;

    let decision = stack
        .pay(
            &order,
            PaymentMethod::NaverPay,
            Some(&own_key("tpk_flaky_3")),
        )
        .await;
    assert!(decision.approved, "{decision:?}");
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0));
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order.order_id, "flaky_pg_retried").await;
}

/// Pays an order whose reservation expired before the stock could be confirmed. The payment
/// starts through the client library, as when the reservation lapses between the API's check
/// and the stock step (the API itself refuses an order whose reservation has already lapsed).
async fn pay_expired(
    stack: &Stack,
    products: &[Product],
    user: &str,
    key: &str,
) -> (String, String) {
    let order = stack.order_with_ttl(user, &[(&products[0], 2)], 1).await;
    // The sweeper gives the stock back on its own (Redis first, then the reservation rows);
    // once it is done, the confirmation must refuse.
    eventually(
        Duration::from_secs(10),
        "the reservation to expire",
        || async {
            let released = stack.ledger(&products[0].product_id).await.held == 0;
            let marked = stack
                .rows(
                    "SELECT status FROM product.stock_reservations WHERE order_id = $1",
                    &order.order_id,
                )
                .await
                .iter()
                .all(|r| r["status"] == "EXPIRED");
            (released && marked).then_some(())
        },
    )
    .await;
    let decision = stack
        .payflow
        .payments
        .pay(PaymentRequest {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            payment_method: PaymentMethod::Card,
            amount: order.total_amount,
            payment_key: Some(key.to_owned()),
            timings: stack.payflow.timings,
        })
        .await
        .expect("pay");
    assert!(
        decision.approved,
        "the PG approves before the stock step: {decision:?}"
    );
    (order.order_id, decision.payment_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_reservation_refunds_the_payment_exactly_once() {
    let stack = Stack::start().await;
    let products = stack.products(&[6]).await;
    let key = own_key("tpk_expired_ok");
    let (order_id, payment_id) = pay_expired(&stack, &products, "USR-EXP", &key).await;

    let outcome = stack.outcome(&order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(outcome.failure_reason.as_deref(), Some("재고 확정 실패"));
    assert_eq!(outcome.failure_code.as_deref(), Some("RESERVATION_EXPIRED"));

    // The customer's app asks again: the answer is the refunded payment as it is now, not the
    // approval it once had, and nothing is charged again.
    let total = stack
        .row(
            "SELECT total_amount FROM orders.orders WHERE order_id = $1",
            &order_id,
        )
        .await["total_amount"]
        .as_i64()
        .unwrap();
    let again = stack
        .payflow
        .pay(payflow_starter::service::Pay {
            order_id: order_id.clone(),
            payment_method: PaymentMethod::Card,
            amount: total,
            payment_key: Some(key.clone()),
        })
        .await
        .expect("a repeated request is answered");
    assert!(!again.approved, "{again:?}");
    assert_eq!(again.failure_code.as_deref(), Some("RESERVATION_EXPIRED"));
    assert_eq!(again.payment_id, payment_id);

    let books = stack.books(&order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (1, 1),
        "refunded exactly once"
    );
    let payment = stack
        .row("SELECT status, cancel_reason, refunded_by, refund_reference FROM payment.payments WHERE payment_id = $1", &payment_id)
        .await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(payment["cancel_reason"], "STOCK_UNAVAILABLE");
    assert_eq!(payment["refunded_by"], "pg");
    assert!(payment["refund_reference"].is_string());
    let row = stack
        .row(
            "SELECT status, cancel_reason FROM orders.orders WHERE order_id = $1",
            &order_id,
        )
        .await;
    assert_eq!(
        (row["status"].as_str(), row["cancel_reason"].as_str()),
        (Some("ORDER_CANCELLED"), Some("재고 확정 실패"))
    );

    let events = stack.events_of(&order_id).await;
    assert_eq!(
        types_of(&events),
        [
            "payment.cancelled",
            "payment.completed",
            "stock.confirmation.failed"
        ],
        "the platform's flow for a stock failure: no order.cancelled (its product service \
         would restore the stock payflow already returned)"
    );
    let by_type = |t: &str| {
        events
            .iter()
            .find(|e| e.event_type() == t)
            .unwrap()
            .decode()
    };
    assert_eq!(
        avro_str(&by_type("payment.cancelled")["cancellationReason"]),
        "STOCK_UNAVAILABLE"
    );
    assert_eq!(
        avro_str(&by_type("stock.confirmation.failed")["failureReason"]),
        "RESERVATION_EXPIRED"
    );

    let pushes = stack.pushes("USR-EXP").await;
    assert_eq!(pushes.len(), 1);
    assert!(
        pushes[0].body.contains("영업일 기준 3~5일"),
        "{}",
        pushes[0].body
    );
    assert_conserved(&stack, &products).await;
    assert_eq!(stack.ledger(&products[0].product_id).await.available, 6);
    assert_eq!(
        platform_view(&stack, &order_id).await,
        steps(&STOCK_FAILED_STEPS),
        "saga tracker records of the stock_expired_refunded path"
    );
    check_history(&stack, &order_id, "stock_expired_refunded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_after_the_reservation_lapsed_joins_the_payment_started_before() {
    let stack = slow_pg_stack(10_000).await;
    let products = stack.products(&[5]).await;
    let order = stack
        .order_with_ttl("USR-EXP-JOIN", &[(&products[0], 1)], 1_500)
        .await;
    // The PG holds the confirm well past the reservation's lapse (and its grace).
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 8_000 }))
        .await;
    let first = stack.pay(&order, PaymentMethod::Card, None);
    let repeat = async {
        eventually(Duration::from_secs(10), "the payment to start", || async {
            stack.payflow.payments.status(&order.order_id).await.ok()
        })
        .await;
        wait_for_lapse(&stack, &order.order_id).await;
        let status = stack
            .payflow
            .payments
            .status(&order.order_id)
            .await
            .unwrap();
        assert_eq!(
            status.stage,
            PaymentStage::PaymentWait,
            "the first request is still at the PG"
        );
        stack.pay(&order, PaymentMethod::Card, None).await
    };
    let (first, repeat) = tokio::join!(first, repeat);
    assert!(first.approved, "{first:?}");
    assert_eq!(repeat, first, "the repeat answers the payment under way");
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 0 }))
        .await;
    // The stock lapsed under it: the payment is refunded, once.
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.failure_code.as_deref(), Some("RESERVATION_EXPIRED"));
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1));
    assert_conserved(&stack, &products).await;
}

/// A stack whose PG step may take 30 s in all, each PG request `request_timeout_ms`: room for
/// a PG that holds its answers.
async fn slow_pg_stack(request_timeout_ms: u64) -> Stack {
    Stack::start_with(StackOptions {
        timings: Some(SagaTimings {
            pg_timeout_secs: 30,
            ..fast_timings()
        }),
        pg_request_timeout_ms: request_timeout_ms,
        ..StackOptions::default()
    })
    .await
}

/// A stack whose saga deadline passes after 2 s, with a worker that lacks `missing`, so a step
/// of that service waits past the deadline.
async fn deadline_stack_without(missing: Service) -> Stack {
    Stack::start_with(StackOptions {
        timings: Some(SagaTimings {
            deadline_secs: 2,
            stuck_step_secs: 3,
            ..fast_timings()
        }),
        services: Some(
            EVERY_SERVICE
                .into_iter()
                .filter(|s| *s != missing)
                .collect(),
        ),
        ..StackOptions::default()
    })
    .await
}

/// The payment's status (the workflow's `status` query).
async fn status_of(stack: &Stack, order_id: &str) -> payflow_workflows::types::PaymentStatus {
    stack.payflow.payments.status(order_id).await.unwrap()
}

/// Waits until the API counts the order's reservation as lapsed.
async fn wait_for_lapse(stack: &Stack, order_id: &str) {
    eventually(
        Duration::from_secs(15),
        "the reservation to lapse",
        || async {
            let order = stack.payflow.orders.get(order_id).await.unwrap()?;
            order.reservation_lapsed.then_some(())
        },
    )
    .await;
}

/// Redis' clock in milliseconds, as the reservation scripts read it.
async fn redis_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

/// An order is created Redis first and reservation rows a moment later. A reservation that
/// expires in between is not given back by the sweeper until its rows are there to mark, so
/// rows and stock agree (before, the rows stayed `RESERVED` for good beside released stock);
/// one whose order creation died, and never got rows, is given back after a grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_expiring_while_its_order_is_created_is_swept_with_its_rows() {
    // No worker of its own; other tests' sweepers work on the same Redis meanwhile.
    let stack = Stack::without_worker().await;
    let products = stack.products(&[6, 6]).await;
    let store = ProductStore::new(stack.redis.clone(), stack.pool.clone());
    let mut conn = redis::Client::open(payflow_tests::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let line = |p: &Product| OrderItem {
        product_id: p.product_id.clone(),
        quantity: 2,
    };
    // Sweeps until the order's reservation is no longer held in Redis.
    let swept = |order_id: &str, what: &'static str| {
        let (store, redis, order_id) = (&store, &stack.redis, order_id.to_owned());
        async move {
            eventually(Duration::from_secs(10), what, || async {
                store.sweep_expired().await.unwrap();
                redis
                    .held(&order_id)
                    .await
                    .unwrap()
                    .is_empty()
                    .then_some(())
            })
            .await
        }
    };
    let reserve_in_redis = |order_id: String, p: &Product| {
        let redis = stack.redis.clone();
        let items = vec![line(p)];
        async move {
            match redis.reserve(&order_id, &items, 1).await.unwrap() {
                Reserve::Reserved { expires_at } => expires_at,
                other => panic!("not reserved: {other:?}"),
            }
        }
    };

    // The Redis half of an order creation; the reservation expires before the rows follow.
    let order_id = format!("{}-CREATING", stack.prefix.to_uppercase());
    let expires_at = reserve_in_redis(order_id.clone(), &products[0]).await;
    while redis_now_ms(&mut conn).await <= expires_at {
        tokio::task::yield_now().await;
    }
    store.sweep_expired().await.unwrap();
    assert_eq!(
        stack
            .redis
            .held(&order_id)
            .await
            .unwrap()
            .get(&products[0].product_id),
        Some(&2),
        "no rows yet: the reservation stays held"
    );
    // The rows, as the order creation writes them after its Redis reservation.
    sqlx::query(
        "INSERT INTO product.stock_reservations (order_id, product_id, quantity, status, expires_at)
         VALUES ($1, $2, 2, 'RESERVED', to_timestamp($3::DOUBLE PRECISION / 1000))",
    )
    .bind(&order_id)
    .bind(&products[0].product_id)
    .bind(expires_at as f64)
    .execute(&stack.pool)
    .await
    .unwrap();
    swept(&order_id, "the sweep with the rows").await;
    let status = stack
        .row(
            "SELECT status FROM product.stock_reservations WHERE order_id = $1",
            &order_id,
        )
        .await;
    assert_eq!(status["status"], "EXPIRED", "rows and stock agree");
    assert_eq!(stack.ledger(&products[0].product_id).await.available, 6);

    // An order creation that died between the two, longer ago than the grace period.
    let orphan = format!("{}-DIED", stack.prefix.to_uppercase());
    reserve_in_redis(orphan.clone(), &products[1]).await;
    let long_ago = redis_now_ms(&mut conn).await - ORPHAN_GRACE_MS as i64 - 1_000;
    let _: () = redis::pipe()
        .hset(format!("{{payflow}}:resv:{orphan}"), "expires_at", long_ago)
        .zadd("{payflow}:expiry", &orphan, long_ago)
        .query_async(&mut conn)
        .await
        .unwrap();
    swept(&orphan, "the orphan's sweep").await;
    assert_eq!(stack.ledger(&products[1].product_id).await.available, 6);
}

/// Waits until the payment asks for an operator; checks the status query and the search
/// attribute agree.
async fn wait_for_attention(stack: &Stack, order_id: &str) {
    let status = eventually(Duration::from_secs(60), "NeedsAttention", || async {
        let s = stack.payflow.payments.status(order_id).await.ok()?;
        s.needs_attention.then_some(s)
    })
    .await;
    assert!(status.attention_reason.unwrap().contains("refund failed"));
    assert_eq!(status.stage, PaymentStage::Compensating);
    let query = format!("NeedsAttention = true AND OrderId = '{order_id}'");
    stack
        .wait_until_listed(&query, 1, "the NeedsAttention search attribute")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_that_keeps_failing_waits_for_an_operator_to_retry_it() {
    let stack = Stack::start().await;
    let products = stack.products(&[3]).await;
    let key = &own_key("tpk_refund_fail_retry");
    let (order_id, payment_id) = pay_expired(&stack, &products, "USR-RF1", key).await;
    wait_for_attention(&stack, &order_id).await;
    assert_eq!(stack.books(&order_id).await.cancels, 0);

    // A repeat of the customer's request meanwhile hears that the payment is being undone, not
    // the approval the first request heard (the order is still waiting for its cancellation).
    let order = stack.payflow.orders.get(&order_id).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::PaymentWait);
    let repeat = stack
        .payflow
        .pay(Pay {
            order_id: order_id.clone(),
            payment_method: PaymentMethod::Card,
            amount: order.total_amount,
            payment_key: Some(key.clone()),
        })
        .await
        .unwrap();
    assert!(!repeat.approved, "{repeat:?}");
    assert_eq!(repeat.failure_code.as_deref(), Some("RESERVATION_EXPIRED"));

    // The operator fixes the cause at the PG and asks the workflow to try again.
    stack.fix_refunds(key).await;
    stack
        .payflow
        .payments
        .retry_refund(&order_id, "ops-kim")
        .await
        .unwrap();
    let outcome = stack.outcome(&order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(stack.books(&order_id).await.cancels, 1);
    let payment = stack
        .row(
            "SELECT status, refunded_by FROM payment.payments WHERE payment_id = $1",
            &payment_id,
        )
        .await;
    assert_eq!(
        (payment["status"].as_str(), payment["refunded_by"].as_str()),
        (Some("CANCELLED"), Some("pg"))
    );
    let status = stack.payflow.payments.status(&order_id).await.unwrap();
    assert!(!status.needs_attention);
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order_id, "refund_failed_then_retried").await;
}

/// An operator terminates a payment whose refund waits for them. The saga tracker's record of
/// the stock's return had not gone out: it waits for the next event, which never comes. The audit
/// finds it missing, after everything the run did publish, and republishes it, last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_record_a_terminated_payment_held_back_is_found_and_republished_last() {
    let stack = Stack::start().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let products = stack.products(&[3]).await;
    let key = &own_key("tpk_refund_fail_terminated");
    let (order_id, _) = pay_expired(&stack, &products, "USR-TRM", key).await;
    wait_for_attention(&stack, &order_id).await;
    let payments = &stack.payflow.payments;
    eventually(
        Duration::from_secs(10),
        "all but the waiting record out",
        || async {
            let s = payments.status(&order_id).await.ok()?;
            (s.unpublished_events == 1).then_some(())
        },
    )
    .await;
    stack.terminate(&order_id).await.expect("terminate");

    let report = eventually(Duration::from_secs(20), "the payment listed", || async {
        let r = audit(payments, &stack.kafka, None, since).await.ok()?;
        (r.payments == 1).then_some(r)
    })
    .await;
    assert_eq!(report.unpublished, 1, "{report:?}");
    assert_eq!(report.found, report.expected - 1, "{report:?}");
    assert_eq!(report.missing.len(), 1, "{report:?}");
    assert_eq!(report.missing[0].1, "saga.tracker", "{report:?}");
    let republished = audit(payments, &stack.kafka, Some(&stack.producer()), since)
        .await
        .unwrap();
    assert_eq!(republished.republished, 1, "{republished:?}");
    assert_eq!(
        platform_view(&stack, &order_id).await,
        // Up to the stock's return: the refund waited for an operator.
        steps(&STOCK_FAILED_STEPS[..5]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_an_operator_made_by_hand_is_recorded_and_not_repeated() {
    let stack = Stack::start().await;
    let products = stack.products(&[3]).await;
    let (order_id, payment_id) = pay_expired(
        &stack,
        &products,
        "USR-RF2",
        &own_key("tpk_refund_fail_manual"),
    )
    .await;
    wait_for_attention(&stack, &order_id).await;

    stack
        .payflow
        .payments
        .refund_completed_manually(
            &order_id,
            ManualRefund {
                operator: "ops-lee".into(),
                reference: "CONSOLE-REFUND-42".into(),
            },
        )
        .await
        .unwrap();
    let outcome = stack.outcome(&order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    check_history(&stack, &order_id, "refund_failed_then_done_by_hand").await;
    // The PG was not asked again.
    assert_eq!(stack.books(&order_id).await.cancels, 0);
    let payment = stack
        .row("SELECT status, refunded_by, refund_reference FROM payment.payments WHERE payment_id = $1", &payment_id)
        .await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(payment["refunded_by"], "ops-lee");
    assert_eq!(payment["refund_reference"], "CONSOLE-REFUND-42");
    let status = stack.payflow.payments.status(&order_id).await.unwrap();
    assert_eq!(status.refunded_by.as_deref(), Some("ops-lee"));
    assert!(!status.needs_attention);
    assert_conserved(&stack, &products).await;
}

/// An operator's word about a refund counts only while a refund waits for it: the CLI says so
/// before sending anything, and a signal sent anyway (from the Web UI, say, or meant for
/// another order) before the refund waits is dropped, so it cannot stand in for a refund
/// nobody made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_signal_sent_before_the_refund_waits_is_not_taken_for_one() {
    let stack = Stack::start_with_timings(SagaTimings {
        // Five refund tries take 16 s: the signals below come well before the wait.
        refund_retry_secs: 4,
        ..fast_timings()
    })
    .await;
    let products = stack.products(&[3]).await;
    let key = &own_key("tpk_refund_fail_stale");
    let (order_id, _) = pay_expired(&stack, &products, "USR-RF3", key).await;
    let cli = |args: &[&str]| {
        bare_command(&binary("payflow"))
            .env("TEMPORAL_ADDRESS", temporal_address())
            .args(args)
            .output()
            .expect("run payflow")
    };
    let early = [
        "operator",
        "refund-done",
        "--order",
        &order_id,
        "--operator",
        "ops-typo",
        "--reference",
        "WRONG-ORDER-1",
    ];
    let refused = cli(&early);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("is waiting for an operator"), "{said}");
    stack
        .payflow
        .payments
        .refund_completed_manually(
            &order_id,
            ManualRefund {
                operator: "ops-typo".into(),
                reference: "WRONG-ORDER-1".into(),
            },
        )
        .await
        .unwrap();

    wait_for_attention(&stack, &order_id).await;
    assert!(status_of(&stack, &order_id).await.refund_waiting);
    stack.fix_refunds(key).await;
    let asked = cli(&[
        "operator",
        "retry-refund",
        "--order",
        &order_id,
        "--operator",
        "ops-kim",
    ]);
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let outcome = stack.outcome(&order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(
        stack.books(&order_id).await.cancels,
        1,
        "refunded at the PG, not by the early word"
    );
    let status = status_of(&stack, &order_id).await;
    assert_eq!(status.refunded_by.as_deref(), Some("pg"));
    assert!(!status.refund_waiting && !status.needs_attention);
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order_id, "refund_signal_before_the_wait").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_deadline_voids_a_payment_the_pg_never_decided() {
    let stack = Stack::start_with_timings(SagaTimings {
        deadline_secs: 2,
        pg_timeout_secs: 60,
        ..fast_timings()
    })
    .await;
    let products = stack.products(&[4]).await;
    let order = stack.order("USR-DL1", &[(&products[0], 1)]).await;

    let decision = stack
        .pay(
            &order,
            PaymentMethod::Card,
            Some(&own_key("tpk_timeout_deadline")),
        )
        .await;
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("SAGA_DEADLINE"));
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(
        outcome.failure_reason.as_deref(),
        Some("결제 처리 시간 초과")
    );
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1));
    assert_conserved(&stack, &products).await;
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&VOIDED_STEPS),
        "saga tracker records of the deadline_before_pg_decided path"
    );
    check_history(&stack, &order.order_id, "deadline_before_pg_decided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_deadline_refunds_an_approved_payment_whose_stock_step_never_ran() {
    // No product worker: the stock confirmation cannot run.
    let mut stack = deadline_stack_without(Service::Product).await;
    let products = stack.products(&[4]).await;
    let order = stack.order("USR-DL2", &[(&products[0], 2)]).await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(decision.approved);

    // The deadline passes. The stock's return waits for the product service, the refund does
    // not: the customer's money comes back while nobody can give the stock back, and the
    // stuck step is listed for operators.
    let stuck = eventually(
        Duration::from_secs(30),
        "the refund, and the stock's return listed",
        || async {
            let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
            let listed = s
                .attention_reasons
                .iter()
                .any(|r| r.starts_with("release stock keeps failing, still trying"));
            (listed && stack.books(&order.order_id).await.cancels == 1).then_some(s)
        },
    )
    .await;
    assert_eq!(stuck.stage, PaymentStage::Compensating);
    assert!(stuck.needs_attention);
    stack.restart_worker_with_every_service().await;

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(outcome.failure_code.as_deref(), Some("SAGA_DEADLINE"));
    let books = stack.books(&order.order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (1, 1),
        "the approved payment was refunded"
    );
    let events = stack.events_of(&order.order_id).await;
    assert_eq!(
        types_of(&events),
        ["payment.cancelled", "payment.completed"],
        "after an approval the stock is returned by payflow: no order.cancelled"
    );
    assert_conserved(&stack, &products).await;
    assert_eq!(stack.ledger(&products[0].product_id).await.available, 4);
    let done = status_of(&stack, &order.order_id).await;
    assert!(
        !done.needs_attention,
        "taken off the list once the stock is back: {:?}",
        done.attention_reasons
    );
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&STOCK_FAILED_STEPS),
        "saga tracker records of the deadline_after_approval path"
    );
    check_history(&stack, &order.order_id, "deadline_after_approval").await;
}

/// The refund needs the payment service. When no payment worker polls, its tries never start
/// and nothing fails: the refund is listed for operators after `stuck_step_secs`, and goes
/// through once a worker is back, with no operator's signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_no_payment_worker_picks_up_is_listed_and_done_once_one_is_back() {
    let mut stack = Stack::start_with(StackOptions {
        timings: Some(SagaTimings {
            deadline_secs: 4,
            stuck_step_secs: 3,
            ..fast_timings()
        }),
        // No product worker: the stock step waits until the deadline.
        services: Some(vec![Service::Workflow, Service::Payment, Service::Order]),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[4]).await;
    let order = stack.order("USR-NOPAY", &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    // The payment service goes away too.
    stack.worker_config.services = vec![Service::Workflow, Service::Order];
    stack.restart_worker().await;

    let stuck = eventually(Duration::from_secs(30), "the refund listed", || async {
        let s = status_of(&stack, &order.order_id).await;
        s.attention_reasons
            .iter()
            .any(|r| r.starts_with("refund has not finished"))
            .then_some(s)
    })
    .await;
    assert_eq!(stuck.stage, PaymentStage::Compensating);
    assert_eq!(stack.books(&order.order_id).await.cancels, 0);
    stack.restart_worker_with_every_service().await;

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    let books = stack.books(&order.order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (1, 1),
        "refunded, no signal"
    );
    let done = status_of(&stack, &order.order_id).await;
    assert!(!done.needs_attention, "{:?}", done.attention_reasons);
    assert_eq!(done.refunded_by.as_deref(), Some("pg"));
    assert_conserved(&stack, &products).await;
    check_history(&stack, &order.order_id, "refund_without_payment_worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_deadline_lets_a_paid_order_with_confirmed_stock_complete() {
    // No order worker: the payment is approved and the stock confirmed, then the order's
    // completion waits for the order service past the deadline.
    let mut stack = deadline_stack_without(Service::Order).await;
    let products = stack.products(&[4]).await;
    let order = stack.order("USR-DL3", &[(&products[0], 2)]).await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(decision.approved);
    eventually(
        Duration::from_secs(2),
        "the stock to be confirmed",
        || async {
            (status_of(&stack, &order.order_id).await.stage == PaymentStage::StockConfirmed)
                .then_some(())
        },
    )
    .await;

    eventually(
        Duration::from_secs(30),
        "the saga deadline to fire",
        || async { deadline_fired(&stack, &order.order_id).await.then_some(()) },
    )
    .await;
    // The customer is charged and the order is not complete: operators are told.
    let waiting = eventually(Duration::from_secs(10), "the attention flag", || async {
        let s = status_of(&stack, &order.order_id).await;
        s.needs_attention.then_some(s)
    })
    .await;
    assert_eq!(
        waiting.stage,
        PaymentStage::StockConfirmed,
        "nothing undone"
    );
    assert!(
        waiting
            .attention_reasons
            .iter()
            .any(|r| r.contains("saga deadline")),
        "{:?}",
        waiting.attention_reasons
    );
    // Undoing now would need the same order service the completion waits for, and would take
    // back a payment and stock that are both done: the deadline leaves the completion to finish.
    stack.restart_worker_with_every_service().await;

    let outcome = stack.outcome(&order.order_id).await;
    check_history(&stack, &order.order_id, "deadline_during_completion").await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    assert_eq!(outcome.failure_code, None);
    assert!(
        !status_of(&stack, &order.order_id).await.needs_attention,
        "resolved with the completion"
    );
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");
    let books = stack.books(&order.order_id).await;
    assert_eq!(
        (books.charges, books.cancels),
        (1, 0),
        "charged once, nothing refunded"
    );
    let pushes = stack.pushes("USR-DL3").await;
    assert_eq!(pushes.len(), 1, "one push: {pushes:?}");
    assert_eq!(pushes[0].title, "주문이 완료되었습니다");
    let events = stack.events_of(&order.order_id).await;
    assert_eq!(types_of(&events), ["payment.completed", "stock.confirmed"]);
    assert_conserved(&stack, &products).await;
    assert_eq!(stack.ledger(&products[0].product_id).await.available, 2);
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&SUCCESS_STEPS),
        "saga tracker records of a completion that outlived the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_gateway_outage_does_not_hold_the_order_back_and_the_push_arrives_once() {
    let stack = Stack::start().await;
    let products = stack.products(&[2]).await;
    let order = stack.order("USR-PUSH", &[(&products[0], 1)]).await;
    stack.fail_pushes(3).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");
    let pushes = stack.pushes("USR-PUSH").await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].title, "주문이 완료되었습니다");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancellation_that_fails_for_good_is_listed_and_announced_nowhere() {
    let stack = Stack::start().await;
    let products = stack.products(&[3]).await;
    let order = stack.order("USR-CXF", &[(&products[0], 1)]).await;
    // Someone deleted the order behind payflow's back; the payment, started with the client
    // library (the API would refuse it), is declined.
    for table in ["orders.order_items", "orders.orders"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE order_id = $1"))
            .bind(&order.order_id)
            .execute(&stack.pool)
            .await
            .unwrap();
    }
    let decision = stack
        .payflow
        .payments
        .pay(PaymentRequest {
            order_id: order.order_id.clone(),
            user_id: "USR-CXF".into(),
            payment_method: PaymentMethod::Card,
            amount: order.total_amount,
            payment_key: Some(own_key("tpk_decline_INSUFFICIENT_FUNDS")),
            timings: stack.payflow.timings,
        })
        .await
        .unwrap();
    assert!(!decision.approved);
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);

    // The failed cancellation waits for an operator, and no event says the order was cancelled.
    let status = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .unwrap();
    assert!(status.needs_attention);
    assert_eq!(status.attention_reasons.len(), 1, "{status:?}");
    assert!(
        status.attention_reasons[0].starts_with("cancel order failed"),
        "{status:?}"
    );
    let events = stack.events_of(&order.order_id).await;
    assert_eq!(types_of(&events), ["payment.failed"]);
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&[
            ("PAYMENT_COMPLETION", "STARTED"),
            ("PAYMENT_COMPLETION", "FAILED"),
            ("COMPENSATION_STOCK", "COMPENSATED"),
            ("COMPENSATION_ORDER", "FAILED"),
        ]),
    );
    assert_conserved(&stack, &products).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pg_sandbox_remembers_a_charge_across_its_restart_and_refunds_it_once() {
    let mut stack = Stack::start().await;
    let products = stack.products(&[3]).await;
    let key = &own_key("tpk_refund_fail_restart");
    let (order_id, _) = pay_expired(&stack, &products, "USR-RST", key).await;
    wait_for_attention(&stack, &order_id).await;
    let before = stack.books(&order_id).await;
    assert_eq!((before.charges, before.cancels), (1, 0));

    // The PG restarts; its books are what they were.
    stack.restart_sandbox().await;
    assert_eq!(stack.books(&order_id).await, before);

    stack.fix_refunds(key).await;
    stack
        .payflow
        .payments
        .retry_refund(&order_id, "ops-park")
        .await
        .unwrap();
    assert_eq!(
        stack.outcome(&order_id).await.stage,
        PaymentStage::OrderCancelled
    );
    let after = stack.books(&order_id).await;
    assert_eq!((after.charges, after.cancels), (1, 1));
    // Restarted again: the refund, and its answer under its idempotency key, are still there.
    stack.restart_sandbox().await;
    assert_eq!(stack.books(&order_id).await, after);
    assert_conserved(&stack, &products).await;
}
