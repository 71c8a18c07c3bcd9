//! A payment key is the client's word, not proof of ownership. Whatever keys clients send,
//! payflow never cancels or refunds a payment of another order: a key is bound to the first
//! order it is presented for, a definite rejection by the PG is final (nothing to void), and an
//! unknown outcome is voided only for a payment the PG says is this order's.

use payflow_starter::service::{Pay, PayflowError};
use payflow_tests::{Stack, StackOptions, check_history, eventually, own_key};
use payflow_workflows::types::{PaymentMethod, PaymentRequest, PaymentStage};
use std::time::Duration;

async fn pay_with(
    stack: &Stack,
    order: &payflow_starter::service::CreatedOrder,
    key: &str,
) -> Result<payflow_workflows::types::PaymentDecision, PayflowError> {
    stack
        .payflow
        .pay(Pay {
            order_id: order.order_id.clone(),
            payment_method: PaymentMethod::Card,
            amount: order.total_amount,
            payment_key: Some(key.to_owned()),
        })
        .await
}

/// Pays `order` with `key` in the background and waits until its approval is at the PG (its
/// attempt recorded `IN_PROGRESS`, the PG not answered yet); answers the payment's request.
async fn pay_at_pg(
    stack: &Stack,
    order: &payflow_starter::service::CreatedOrder,
    key: &str,
) -> tokio::task::JoinHandle<Result<payflow_workflows::types::PaymentDecision, PayflowError>> {
    let paying = {
        let payflow = stack.payflow.clone();
        let order = order.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            payflow
                .pay(Pay {
                    order_id: order.order_id,
                    payment_method: PaymentMethod::Card,
                    amount: order.total_amount,
                    payment_key: Some(key),
                })
                .await
        })
    };
    eventually(Duration::from_secs(10), "the PG call", || async {
        let rows = stack
            .rows(
                "SELECT status FROM payment.payments WHERE order_id = $1",
                &order.order_id,
            )
            .await;
        (rows.first().is_some_and(|r| r["status"] == "IN_PROGRESS")).then_some(())
    })
    .await;
    paying
}

/// Order A stays charged and completed: one charge, no cancel, payment `COMPLETED`.
async fn assert_untouched_and_completed(stack: &Stack, order_id: &str) {
    let books = stack.books(order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0), "{books:?}");
    assert_eq!(books.payments[0]["status"], "DONE");
    let row = stack
        .row(
            "SELECT o.status AS order_status, p.status AS payment_status
               FROM orders.orders o JOIN payment.payments p USING (order_id)
              WHERE order_id = $1",
            order_id,
        )
        .await;
    assert_eq!(row["order_status"], "ORDER_COMPLETED");
    assert_eq!(row["payment_status"], "COMPLETED");
}

/// B was refused before anything started: still waiting for payment, no payment row, no
/// workflow, nothing at the PG.
async fn assert_nothing_started(stack: &Stack, order_id: &str) {
    assert_eq!(stack.order_status(order_id).await, "PAYMENT_WAIT");
    let payments = stack
        .rows(
            "SELECT status FROM payment.payments WHERE order_id = $1",
            order_id,
        )
        .await;
    assert!(payments.is_empty(), "{payments:?}");
    assert!(stack.payflow.payments.status(order_id).await.is_err());
    let books = stack.books(order_id).await;
    assert_eq!((books.charges, books.cancels), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_a_completed_order_is_refused_for_another_order_and_cancels_nothing() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let a = stack.order("USR-KEY-A", &[(&products[0], 1)]).await;
    let b = stack.order("USR-KEY-B", &[(&products[0], 1)]).await;
    let key = own_key("tpk_shared");

    let paid = pay_with(&stack, &a, &key).await.unwrap();
    assert!(paid.approved, "{paid:?}");
    assert_eq!(
        stack.outcome(&a.order_id).await.stage,
        PaymentStage::OrderCompleted
    );

    let refused = pay_with(&stack, &b, &key).await;
    assert!(
        matches!(refused, Err(PayflowError::PaymentKeyInUse)),
        "{refused:?}"
    );
    assert_nothing_started(&stack, &b.order_id).await;
    assert_untouched_and_completed(&stack, &a.order_id).await;

    // B pays with a key of its own.
    let own = pay_with(&stack, &b, &own_key("tpk_b")).await.unwrap();
    assert!(own.approved);
    assert_eq!(
        stack.outcome(&b.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
    assert_untouched_and_completed(&stack, &a.order_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_presented_while_its_order_is_still_at_the_pg_is_refused() {
    let stack = Stack::start_with(StackOptions {
        sandbox: payflow_sandbox::SandboxConfig {
            latency: Duration::from_millis(1500),
            ..StackOptions::default().sandbox
        },
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let a = stack.order("USR-RACE-A", &[(&products[0], 1)]).await;
    let b = stack.order("USR-RACE-B", &[(&products[0], 1)]).await;
    let key = own_key("tpk_race");

    let paying_a = pay_at_pg(&stack, &a, &key).await;
    let refused = pay_with(&stack, &b, &key).await;
    assert!(
        matches!(refused, Err(PayflowError::PaymentKeyInUse)),
        "{refused:?}"
    );

    assert!(paying_a.await.unwrap().unwrap().approved);
    assert_eq!(
        stack.outcome(&a.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
    assert_nothing_started(&stack, &b.order_id).await;
    assert_untouched_and_completed(&stack, &a.order_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orders_racing_for_one_key_have_exactly_one_winner() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let a = stack.order("USR-TWIN-A", &[(&products[0], 1)]).await;
    let b = stack.order("USR-TWIN-B", &[(&products[0], 1)]).await;
    let key = own_key("tpk_twin");

    let (ra, rb) = tokio::join!(pay_with(&stack, &a, &key), pay_with(&stack, &b, &key));
    let (winner, loser) = match (&ra, &rb) {
        (Ok(d), Err(PayflowError::PaymentKeyInUse)) if d.approved => (&a, &b),
        (Err(PayflowError::PaymentKeyInUse), Ok(d)) if d.approved => (&b, &a),
        other => panic!("one approval and one refusal expected: {other:?}"),
    };
    assert_eq!(
        stack.outcome(&winner.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
    assert_untouched_and_completed(&stack, &winner.order_id).await;
    assert_nothing_started(&stack, &loser.order_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_started_without_the_api_cannot_use_another_orders_key() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let a = stack.order("USR-LIB-A", &[(&products[0], 1)]).await;
    let b = stack.order("USR-LIB-B", &[(&products[0], 1)]).await;
    let key = own_key("tpk_lib");
    assert!(pay_with(&stack, &a, &key).await.unwrap().approved);
    assert_eq!(
        stack.outcome(&a.order_id).await.stage,
        PaymentStage::OrderCompleted
    );

    // The client library goes straight to Temporal: the approval refuses the key itself.
    let decision = stack
        .payflow
        .payments
        .pay(PaymentRequest {
            order_id: b.order_id.clone(),
            user_id: "USR-LIB-B".into(),
            payment_method: PaymentMethod::Card,
            amount: b.total_amount,
            payment_key: Some(key.clone()),
            timings: stack.payflow.timings,
        })
        .await
        .unwrap();
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PAYMENT_KEY_IN_USE"));
    assert_eq!(
        stack.outcome(&b.order_id).await.stage,
        PaymentStage::OrderCancelled
    );
    let books = stack.books(&b.order_id).await;
    assert_eq!((books.charges, books.cancels), (0, 0));
    assert_untouched_and_completed(&stack, &a.order_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_rejection_by_the_pg_is_final_and_voids_nothing() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let b = stack.order("USR-REJ-B", &[(&products[0], 1)]).await;
    // Another system paid its order X with this key at the PG; payflow has never seen it.
    let key = own_key("tpk_elsewhere");
    assert_eq!(
        stack.charge_at_pg("ORD-ELSEWHERE-X", &key, 1_000).await,
        200
    );

    let decision = pay_with(&stack, &b, &key).await.unwrap();
    assert!(!decision.approved);
    assert_eq!(
        decision.failure_code.as_deref(),
        Some("ALREADY_PROCESSED_PAYMENT")
    );
    let outcome = stack.outcome(&b.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(outcome.failure_reason.as_deref(), Some("결제 실패"));
    let x = stack.books("ORD-ELSEWHERE-X").await;
    assert_eq!((x.charges, x.cancels), (1, 0), "{x:?}");
    assert_eq!(x.payments[0]["status"], "DONE");
    let mine = stack.books(&b.order_id).await;
    assert_eq!((mine.charges, mine.cancels), (0, 0));
    assert_eq!(
        stack.payment_failure(&b.order_id).await,
        (
            "FAILED".to_owned(),
            Some("ALREADY_PROCESSED_PAYMENT".to_owned())
        )
    );
    check_history(&stack, &b.order_id, "pg_rejected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_with_another_orders_key_voids_nothing() {
    let stack = Stack::start_with(StackOptions {
        sandbox: payflow_sandbox::SandboxConfig {
            timeout_hold: Duration::from_secs(6),
            ..StackOptions::default().sandbox
        },
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let b = stack.order("USR-UNK-B", &[(&products[0], 1)]).await;
    // Order X's payment with a timing-out key is charged at the PG (its answer never comes).
    let key = own_key("tpk_timeout");
    let outside = {
        let url = stack.sandbox_url.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("{url}/v1/payments/confirm"))
                .basic_auth("test_sk_payflow", Some(""))
                .json(&serde_json::json!({
                    "paymentKey": key, "orderId": "ORD-ELSEWHERE-Y", "amount": 1_000 }))
                .send()
                .await;
        })
    };
    eventually(Duration::from_secs(10), "X's charge", || async {
        (stack.books("ORD-ELSEWHERE-Y").await.charges == 1).then_some(())
    })
    .await;

    // B's approval with that key gets no answer in time: the outcome is unknown, so payflow
    // looks B's payment up at the PG, finds none, and cancels nothing.
    let decision = pay_with(&stack, &b, &key).await.unwrap();
    assert!(!decision.approved);
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    assert_eq!(
        stack.outcome(&b.order_id).await.stage,
        PaymentStage::OrderCancelled
    );
    let y = stack.books("ORD-ELSEWHERE-Y").await;
    assert_eq!((y.charges, y.cancels), (1, 0), "{y:?}");
    assert_eq!(y.payments[0]["status"], "DONE");
    let mine = stack.books(&b.order_id).await;
    assert_eq!((mine.charges, mine.cancels), (0, 0));
    outside.abort();
}

/// A repeated request for an order whose payment is at the PG carries another key (here another
/// order's): it joins the payment under way and binds nothing, so the key's own order can still
/// pay with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_with_another_key_joins_the_payment_under_way_and_takes_no_key() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let a = stack.order("USR-REPEAT-A", &[(&products[0], 1)]).await;
    let b = stack.order("USR-REPEAT-B", &[(&products[0], 1)]).await;
    // A's PG call never answers in time (the sandbox charges after a minute).
    let paying_a = pay_at_pg(&stack, &a, &own_key("tpk_late")).await;
    let b_key = own_key("tpk_b");
    let repeat = pay_with(&stack, &a, &b_key)
        .await
        .expect("the repeat is answered");
    let first = paying_a
        .await
        .unwrap()
        .expect("A's own request is answered");
    assert_eq!(repeat, first, "the repeat answers A's payment");
    assert_eq!(first.failure_code.as_deref(), Some("PG_TIMEOUT"));
    assert!(
        stack
            .rows(
                "SELECT order_id FROM payment.payment_keys WHERE payment_key = $1",
                &b_key,
            )
            .await
            .is_empty(),
        "the repeat bound no key"
    );

    let own = pay_with(&stack, &b, &b_key).await.unwrap();
    assert!(own.approved, "{own:?}");
    assert_eq!(
        stack.outcome(&b.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
}
