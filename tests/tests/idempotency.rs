//! Every activity, run twice through its real entry point against the real services, leaves
//! the same state: no second charge, row, stock movement, push or event id.

use payflow_activities::{
    EventActivities, OrderActivities, PaymentActivities, ProductActivities, order::PushClient,
    payment::pg::PgClient,
};
use payflow_starter::service::CreatedOrder;
use payflow_tests::Stack;
use payflow_workflows::{
    errors, ids,
    types::{
        ApprovePayment, CancelOrder, CompleteAndNotify, ConfirmStock, DomainEvent, EventBody,
        EventType, OrderUpdate, PaymentCancellationReason, PaymentMethod, PushNotification,
        RecordPayment, RecordPaymentCancellation, RecordPaymentFailure, RefundPayment,
        ReleaseStock, SagaStatus, SagaType, VoidPayment,
    },
};
use temporalio_sdk::{
    activities::ActivityError,
    testing::{ActivityEnvironment, ActivityEnvironmentError},
};

fn env(stack: &Stack) -> ActivityEnvironment {
    let pg = PgClient::new(stack.worker_config.pg.config().unwrap()).unwrap();
    let push = PushClient::new(stack.worker_config.push.config().unwrap()).unwrap();
    ActivityEnvironment::builder_with_default()
        .register_activities(PaymentActivities::new(pg, stack.pool.clone()))
        .register_activities(ProductActivities::new(
            stack.redis.clone(),
            stack.pool.clone(),
        ))
        .register_activities(OrderActivities::new(stack.pool.clone(), push))
        .register_activities(
            EventActivities::new(
                stack.kafka.clone(),
                stack.worker_config.kafka.registry().unwrap(),
            )
            .unwrap(),
        )
        .build()
}

/// What the workflow asks the PG step for an order (payment id and key derived as it does).
fn approval_request(order: &CreatedOrder, user: &str, method: PaymentMethod) -> ApprovePayment {
    ApprovePayment {
        payment_id: ids::payment_id(&order.order_id),
        order_id: order.order_id.clone(),
        user_id: user.into(),
        payment_method: method,
        amount: order.total_amount,
        payment_key: format!("tpk_{}", order.order_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_success_path_activities_run_twice_change_things_once() {
    let stack = Stack::without_worker().await;
    EventActivities::ensure_topics(
        &stack.kafka,
        stack.worker_config.kafka.registry().unwrap().as_ref(),
    )
    .await
    .unwrap();
    let env = env(&stack);
    let products = stack.products(&[7]).await;
    let order = stack.order("USR-IDEM", &[(&products[0], 2)]).await;
    let payment = approval_request(&order, "USR-IDEM", PaymentMethod::Card);

    // PG approval with the same key: the same approval, one charge.
    let a = env
        .run(PaymentActivities::approve, payment.clone())
        .await
        .unwrap();
    let b = env
        .run(PaymentActivities::approve, payment.clone())
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(stack.books(&order.order_id).await.charges, 1);

    // The approval recorded its row; as if that write had been lost (the PG charged, the
    // worker died before the row said so), the row goes back to IN_PROGRESS.
    let forget_the_approval = || async {
        sqlx::query(
            "UPDATE payment.payments SET status = 'IN_PROGRESS', pg_approval_number = NULL,
                    approved_at = NULL WHERE order_id = $1",
        )
        .bind(&order.order_id)
        .execute(&stack.pool)
        .await
        .unwrap();
    };
    let payment_row = || async {
        let rows = stack
            .rows(
                "SELECT status, pg_approval_number FROM payment.payments WHERE order_id = $1",
                &order.order_id,
            )
            .await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        (
            rows[0]["status"].as_str().unwrap_or_default().to_owned(),
            rows[0]["pg_approval_number"].as_str().map(str::to_owned),
        )
    };
    let completed = ("COMPLETED".to_owned(), Some(a.approval_number.clone()));

    // The approval retried after that: the PG answers the same key with the same approval,
    // the row is completed, and nothing is charged twice.
    forget_the_approval().await;
    let retried = env
        .run(PaymentActivities::approve, payment.clone())
        .await
        .unwrap();
    assert_eq!(retried, a);
    assert_eq!(payment_row().await, completed);
    assert_eq!(stack.books(&order.order_id).await.charges, 1);

    // Recording it twice, from the row the lost write left: one COMPLETED row.
    forget_the_approval().await;
    let record = RecordPayment {
        payment: payment.clone(),
        approval: a.clone(),
    };
    env.run(PaymentActivities::record, record.clone())
        .await
        .unwrap();
    assert_eq!(payment_row().await, completed);
    env.run(PaymentActivities::record, record).await.unwrap();
    assert_eq!(payment_row().await, completed);

    // And approving after it was recorded does not ask the PG again: with every PG call
    // failing, it still answers the recorded approval.
    stack
        .configure_sandbox(serde_json::json!({ "errorRate": 1.0 }))
        .await;
    let recorded = env.run(PaymentActivities::approve, payment.clone()).await;
    stack
        .configure_sandbox(serde_json::json!({ "errorRate": 0.0 }))
        .await;
    assert_eq!(recorded.unwrap(), a);
    assert_eq!(stack.books(&order.order_id).await.charges, 1);

    // Stock confirmation twice: decremented once, same items.
    let confirm = ConfirmStock {
        order_id: order.order_id.clone(),
        payment_id: payment.payment_id.clone(),
    };
    let first = env
        .run(ProductActivities::confirm, confirm.clone())
        .await
        .unwrap();
    let second = env.run(ProductActivities::confirm, confirm).await.unwrap();
    assert_eq!(first, second);
    let ledger = stack.ledger(&products[0].product_id).await;
    assert_eq!(ledger.counts(), (5, 0, 2, 5));

    // Order transitions twice each.
    let update = OrderUpdate {
        order_id: order.order_id.clone(),
        payment_id: payment.payment_id.clone(),
    };
    for _ in 0..2 {
        env.run(OrderActivities::mark_paid, update.clone())
            .await
            .unwrap();
        assert_eq!(
            stack.order_status(&order.order_id).await,
            "PAYMENT_COMPLETED"
        );
    }
    for _ in 0..2 {
        env.run(OrderActivities::complete, update.clone())
            .await
            .unwrap();
    }
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");
    // Marking a completed order paid again is a no-op, not a regression.
    env.run(OrderActivities::mark_paid, update).await.unwrap();
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");

    // Push twice: delivered once.
    let push = PushNotification {
        notification_id: ids::notification_id(&order.order_id, "order-completed"),
        user_id: "USR-IDEM".into(),
        order_id: order.order_id.clone(),
        title: "주문이 완료되었습니다".into(),
        body: "test".into(),
    };
    env.run(OrderActivities::push, push.clone()).await.unwrap();
    env.run(OrderActivities::push, push).await.unwrap();
    assert_eq!(stack.pushes("USR-IDEM").await.len(), 1);

    // Publishing twice carries the same event id and the same bytes.
    let event = DomainEvent {
        event_id: ids::event_id(
            &ids::payment_workflow_id(&order.order_id),
            EventType::PaymentCompleted,
        ),
        event_timestamp: 1_700_000_000_000,
        order_id: order.order_id.clone(),
        body: EventBody::PaymentCompleted {
            payment_id: payment.payment_id.clone(),
            user_id: "USR-IDEM".into(),
            total_amount: order.total_amount,
            payment_method: PaymentMethod::Card,
            pg_approval_number: a.approval_number.clone(),
            completed_at: a.approved_at,
        },
    };
    env.run(EventActivities::publish, event.clone())
        .await
        .unwrap();
    env.run(EventActivities::publish, event.clone())
        .await
        .unwrap();
    let records = stack.events_of(&order.order_id).await;
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.headers["eventId"] == event.event_id)
    );
    assert_eq!(records[0].value, records[1].value);

    // A batch with a saga tracker record, published twice: the same records again, same ids.
    let tracked = DomainEvent {
        event_id: ids::saga_record_id(&workflow_id_of(&order), "PAYMENT_COMPLETION", "COMPLETED"),
        event_timestamp: a.approved_at,
        order_id: order.order_id.clone(),
        body: EventBody::SagaTracker {
            saga_type: SagaType::PaymentCompletion,
            step: "PAYMENT_COMPLETION".into(),
            status: SagaStatus::Completed,
            metadata: None,
            recorded_at: a.approved_at,
        },
    };
    let batch = vec![tracked.clone(), event.clone()];
    let first = env
        .run(EventActivities::publish_all, batch.clone())
        .await
        .unwrap();
    let second = env.run(EventActivities::publish_all, batch).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].partition, second[0].partition);
    let saga = stack.saga_records_of(&order.order_id).await;
    assert_eq!(saga.len(), 2);
    assert!(
        saga.iter()
            .all(|r| r.headers["eventId"] == tracked.event_id)
    );
    assert_eq!(saga[0].value, saga[1].value);
    assert_eq!(stack.events_of(&order.order_id).await.len(), 4);
}

/// The lean path's order completion with its prompt push, run twice: the order completes once
/// and the customer gets one push (the first run knows nothing can have been sent yet; the second
/// finds the push recorded and leaves the gateway alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_completion_with_its_push_run_twice_pushes_once() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[3]).await;
    let order = stack.order("USR-IDEM-PUSH", &[(&products[0], 1)]).await;
    let input = CompleteAndNotify {
        order: OrderUpdate {
            order_id: order.order_id.clone(),
            payment_id: ids::payment_id(&order.order_id),
        },
        push: PushNotification {
            notification_id: ids::notification_id(&order.order_id, "order-completed"),
            user_id: "USR-IDEM-PUSH".into(),
            order_id: order.order_id.clone(),
            title: "주문이 완료되었습니다".into(),
            body: "test".into(),
        },
    };
    let first = env
        .run(OrderActivities::complete_and_notify, input.clone())
        .await
        .unwrap();
    assert!(first.pushed, "the sandbox's push gateway takes it at once");
    // The gateway now fails its next push: the second run must find the push recorded and not
    // ask the gateway at all (if it skipped the look-up, the push would fail and come back
    // `pushed: false`).
    stack.fail_pushes(1).await;
    let second = env
        .run(OrderActivities::complete_and_notify, input.clone())
        .await
        .unwrap();
    assert!(second.pushed, "the second run found the push already sent");
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");
    assert_eq!(stack.pushes("USR-IDEM-PUSH").await.len(), 1);
    let recorded = stack
        .rows(
            "SELECT notification_id FROM orders.notifications WHERE order_id = $1",
            &order.order_id,
        )
        .await;
    assert_eq!(recorded.len(), 1);
}

/// A stock confirmation that finds one of the order's products short in the database (its stock
/// was changed outside payflow) fails for good and moves nothing: the other product's decrement
/// is undone, the reservation stays RESERVED, and a second try answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_confirmation_short_of_stock_fails_for_good_and_moves_nothing() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[5, 5]).await;
    let order = stack
        .order("USR-IDEM-SHORT", &[(&products[0], 2), (&products[1], 3)])
        .await;
    // Both products down to 2: the confirmation (in product order) takes 2 of P1, then finds 3
    // of P2 short, and must undo P1's decrement.
    for p in &products {
        sqlx::query("UPDATE product.products SET stock = 2 WHERE product_id = $1")
            .bind(&p.product_id)
            .execute(&stack.pool)
            .await
            .unwrap();
    }
    let confirm = ConfirmStock {
        order_id: order.order_id.clone(),
        payment_id: ids::payment_id(&order.order_id),
    };
    for _ in 0..2 {
        let err = env
            .run(ProductActivities::confirm, confirm.clone())
            .await
            .expect_err("3 of a product with 2 in stock cannot be confirmed");
        let ActivityEnvironmentError::Activity(ActivityError::Application(failure)) = err else {
            panic!("not an application failure: {err:?}");
        };
        assert_eq!(failure.type_name(), Some(errors::INSUFFICIENT_STOCK));
        assert!(failure.is_non_retryable(), "{failure:?}");
        let message = format!("{failure:?}");
        let short = format!("not enough stock of {}", products[1].product_id);
        assert!(message.contains(&short), "{message}");
    }
    for p in &products {
        assert_eq!(
            stack.ledger(&p.product_id).await.db_stock,
            2,
            "{}",
            p.product_id
        );
    }
    let rows = stack
        .rows(
            "SELECT status FROM product.stock_reservations WHERE order_id = $1",
            &order.order_id,
        )
        .await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["status"] == "RESERVED"), "{rows:?}");
}

/// A confirmation that finds the reservation expired gives its stock back in Redis and then
/// marks the rows `EXPIRED`, two writes; a crash or a database error between them leaves the
/// rows `RESERVED` with nothing in Redis. The retry must still answer "expired" (not "missing")
/// and finish the marking, with the stock counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_retried_after_an_expiry_half_recorded_still_answers_expired() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[4]).await;
    let order = stack
        .order_with_ttl("USR-IDEM-LAPSED", &[(&products[0], 2)], 1)
        .await;
    let confirm = ConfirmStock {
        order_id: order.order_id.clone(),
        payment_id: ids::payment_id(&order.order_id),
    };
    // A 1 ms reservation has lapsed by the time the order is created.
    let first = env
        .run(ProductActivities::confirm, confirm.clone())
        .await
        .expect_err("the reservation expired");
    assert_eq!(
        failure_type(first).as_deref(),
        Some(errors::RESERVATION_EXPIRED)
    );
    // The state a failure between the two writes leaves: Redis gave the stock back, the rows
    // still say RESERVED.
    sqlx::query("UPDATE product.stock_reservations SET status = 'RESERVED' WHERE order_id = $1")
        .bind(&order.order_id)
        .execute(&stack.pool)
        .await
        .unwrap();
    for _ in 0..2 {
        let err = env
            .run(ProductActivities::confirm, confirm.clone())
            .await
            .expect_err("an expired reservation is not confirmed");
        assert_eq!(
            failure_type(err).as_deref(),
            Some(errors::RESERVATION_EXPIRED)
        );
    }
    let rows = stack
        .rows(
            "SELECT status FROM product.stock_reservations WHERE order_id = $1",
            &order.order_id,
        )
        .await;
    assert!(rows.iter().all(|r| r["status"] == "EXPIRED"), "{rows:?}");
    let ledger = stack.ledger(&products[0].product_id).await;
    assert_eq!(ledger.counts(), (4, 0, 0, 4), "{ledger:?}");
}

/// The failure type an activity's application failure carries.
fn failure_type(err: ActivityEnvironmentError) -> Option<String> {
    let ActivityEnvironmentError::Activity(ActivityError::Application(failure)) = err else {
        panic!("not an application failure: {err:?}");
    };
    failure.type_name().map(str::to_owned)
}

fn workflow_id_of(order: &CreatedOrder) -> String {
    ids::payment_workflow_id(&order.order_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compensations_run_twice_change_things_once() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[4, 4]).await;

    // A held reservation released twice: back once.
    let held = stack.order("USR-COMP", &[(&products[0], 3)]).await;
    let release = ReleaseStock {
        order_id: held.order_id.clone(),
    };
    let r1 = env
        .run(ProductActivities::release, release.clone())
        .await
        .unwrap();
    let r2 = env.run(ProductActivities::release, release).await.unwrap();
    assert_eq!(
        (r1.action.as_str(), r2.action.as_str()),
        ("RELEASED", "NOTHING")
    );
    let ledger = stack.ledger(&products[0].product_id).await;
    assert_eq!((ledger.available, ledger.held, ledger.confirmed), (4, 0, 0));

    // Confirmed stock given back twice: restocked once, in the database and in Redis.
    let sold = stack.order("USR-COMP", &[(&products[1], 2)]).await;
    env.run(
        ProductActivities::confirm,
        ConfirmStock {
            order_id: sold.order_id.clone(),
            payment_id: ids::payment_id(&sold.order_id),
        },
    )
    .await
    .unwrap();
    let release = ReleaseStock {
        order_id: sold.order_id.clone(),
    };
    let r1 = env
        .run(ProductActivities::release, release.clone())
        .await
        .unwrap();
    let r2 = env.run(ProductActivities::release, release).await.unwrap();
    assert_eq!(
        (r1.action.as_str(), r2.action.as_str()),
        ("RESTOCKED", "NOTHING")
    );
    let ledger = stack.ledger(&products[1].product_id).await;
    assert_eq!(
        (
            ledger.available,
            ledger.held,
            ledger.confirmed,
            ledger.db_stock
        ),
        (4, 0, 0, 4)
    );

    // Refund twice: one cancellation at the PG.
    let payment = approval_request(&sold, "USR-COMP", PaymentMethod::Toss);
    let approval = env
        .run(PaymentActivities::approve, payment.clone())
        .await
        .unwrap();
    let refund = RefundPayment {
        payment_id: payment.payment_id.clone(),
        payment_key: payment.payment_key.clone(),
        approval_number: approval.approval_number.clone(),
        amount: payment.amount,
        reason: "test".into(),
    };
    let f1 = env
        .run(PaymentActivities::refund, refund.clone())
        .await
        .unwrap();
    let f2 = env.run(PaymentActivities::refund, refund).await.unwrap();
    assert!(f1.cancelled && f2.cancelled);
    assert_eq!(f1.reference, f2.reference);
    let books = stack.books(&sold.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1));
    let cancellation = RecordPaymentCancellation {
        payment: payment.clone(),
        reason: PaymentCancellationReason::StockUnavailable,
        refund_reference: f1.reference.clone(),
        refunded_by: "pg".into(),
    };
    env.run(PaymentActivities::record_cancellation, cancellation.clone())
        .await
        .unwrap();
    env.run(PaymentActivities::record_cancellation, cancellation)
        .await
        .unwrap();
    let row = stack
        .row(
            "SELECT status, refund_reference FROM payment.payments WHERE order_id = $1",
            &sold.order_id,
        )
        .await;
    assert_eq!(row["status"], "CANCELLED");

    // Voiding a payment the PG never made: nothing to cancel, twice.
    let void = VoidPayment {
        payment_id: ids::payment_id(&held.order_id),
        payment_key: format!("tpk_{}", held.order_id),
        reason: "test".into(),
        late: false,
    };
    let v1 = env
        .run(PaymentActivities::void, void.clone())
        .await
        .unwrap();
    let v2 = env.run(PaymentActivities::void, void).await.unwrap();
    assert!(!v1.cancelled && !v2.cancelled);
    let failure = RecordPaymentFailure {
        payment: ApprovePayment {
            payment_id: ids::payment_id(&held.order_id),
            order_id: held.order_id.clone(),
            ..payment
        },
        code: "PG_TIMEOUT".into(),
        message: "test".into(),
    };
    env.run(PaymentActivities::record_failure, failure.clone())
        .await
        .unwrap();
    env.run(PaymentActivities::record_failure, failure)
        .await
        .unwrap();
    assert_eq!(
        stack.payment_failure(&held.order_id).await,
        ("FAILED".to_owned(), Some("PG_TIMEOUT".to_owned()))
    );

    // Cancelling an order twice: cancelled once, same items.
    let cancel = CancelOrder {
        order_id: held.order_id.clone(),
        reason: "결제 실패".into(),
    };
    let c1 = env
        .run(OrderActivities::cancel, cancel.clone())
        .await
        .unwrap();
    let c2 = env.run(OrderActivities::cancel, cancel).await.unwrap();
    assert_eq!(c1, c2);
    let row = stack
        .row(
            "SELECT status, cancel_reason FROM orders.orders WHERE order_id = $1",
            &held.order_id,
        )
        .await;
    assert_eq!(
        (row["status"].as_str(), row["cancel_reason"].as_str()),
        (Some("ORDER_CANCELLED"), Some("결제 실패"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_or_refund_run_twice_moves_this_orders_money_back_once_and_never_anothers() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[9]).await;
    let x = stack.order("USR-VOID-X", &[(&products[0], 1)]).await;
    let y = stack.order("USR-VOID-Y", &[(&products[0], 1)]).await;
    let z = stack.order("USR-VOID-Z", &[(&products[0], 1)]).await;
    let x_payment = approval_request(&x, "USR-VOID-X", PaymentMethod::Card);
    env.run(PaymentActivities::approve, x_payment.clone())
        .await
        .unwrap();

    // Y's void presented X's key: the PG holds nothing of Y's, so nothing is cancelled.
    let foreign = VoidPayment {
        payment_id: ids::payment_id(&y.order_id),
        payment_key: x_payment.payment_key.clone(),
        reason: "test".into(),
        late: false,
    };
    for _ in 0..2 {
        let v = env
            .run(PaymentActivities::void, foreign.clone())
            .await
            .unwrap();
        assert!(!v.cancelled);
    }
    let books = stack.books(&x.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0));

    // X's own void, twice: one cancellation.
    let own = VoidPayment {
        payment_id: x_payment.payment_id.clone(),
        payment_key: x_payment.payment_key.clone(),
        reason: "test".into(),
        late: false,
    };
    let v1 = env.run(PaymentActivities::void, own.clone()).await.unwrap();
    let v2 = env.run(PaymentActivities::void, own.clone()).await.unwrap();
    assert!(v1.cancelled && v2.cancelled);
    assert_eq!(v1.reference, v2.reference);
    // The workflow's second look (under a key of its own), twice: the payment is cancelled
    // already, by someone else, so it says so (no reference of its own) and cancels nothing.
    let late = VoidPayment { late: true, ..own };
    for _ in 0..2 {
        let v = env
            .run(PaymentActivities::void, late.clone())
            .await
            .unwrap();
        assert!(v.cancelled && v.reference.is_none(), "{v:?}");
    }
    let books = stack.books(&x.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1));
    // The void marked X's payment failed (the workflow voids only when it never heard of an
    // approval): the approval it took back no longer reads as completed, and an approval
    // attempt that comes late neither charges again nor records one.
    let status = || async {
        stack
            .row(
                "SELECT status FROM payment.payments WHERE payment_id = $1",
                &x_payment.payment_id,
            )
            .await["status"]
            .clone()
    };
    assert_eq!(status().await, "FAILED");
    assert!(
        env.run(PaymentActivities::approve, x_payment.clone())
            .await
            .is_err()
    );
    assert_eq!(status().await, "FAILED");
    let books = stack.books(&x.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1));

    // Z's refund names X's key: the refund uses what Z's own confirmation recorded.
    let z_payment = approval_request(&z, "USR-VOID-Z", PaymentMethod::Card);
    let approval = env
        .run(PaymentActivities::approve, z_payment.clone())
        .await
        .unwrap();
    let refund = RefundPayment {
        payment_id: z_payment.payment_id.clone(),
        payment_key: x_payment.payment_key.clone(),
        approval_number: approval.approval_number,
        amount: z_payment.amount,
        reason: "test".into(),
    };
    for _ in 0..2 {
        let r = env
            .run(PaymentActivities::refund, refund.clone())
            .await
            .unwrap();
        assert!(r.cancelled);
    }
    let z_books = stack.books(&z.order_id).await;
    assert_eq!((z_books.charges, z_books.cancels), (1, 1));
    let x_books = stack.books(&x.order_id).await;
    assert_eq!((x_books.charges, x_books.cancels), (1, 1));

    // A refund of an approval this order never recorded is refused, and moves nothing.
    let forged = RefundPayment {
        payment_id: ids::payment_id(&y.order_id),
        payment_key: x_payment.payment_key.clone(),
        approval_number: "00000000".into(),
        amount: 1_000,
        reason: "test".into(),
    };
    assert!(env.run(PaymentActivities::refund, forged).await.is_err());
    let x_books = stack.books(&x.order_id).await;
    assert_eq!((x_books.charges, x_books.cancels), (1, 1));
}

/// The first void asked the PG to cancel before the PG had charged and was told "no such
/// payment", an answer the PG keeps under the void's idempotency key. The charge that lands
/// afterwards is still cancelled by the workflow's second look, under its own key, once, however
/// often it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_look_cancels_what_the_first_void_was_told_was_not_there() {
    let stack = Stack::without_worker().await;
    let env = env(&stack);
    let products = stack.products(&[3]).await;
    let order = stack.order("USR-VOID-LATE", &[(&products[0], 1)]).await;
    let payment = approval_request(&order, "USR-VOID-LATE", PaymentMethod::Card);
    let refused = reqwest::Client::new()
        .post(format!(
            "{}/v1/payments/{}/cancel",
            stack.sandbox_url, payment.payment_key
        ))
        .basic_auth("test_sk_payflow", Some(""))
        .header("Idempotency-Key", format!("{}-void", payment.payment_id))
        .json(&serde_json::json!({ "cancelReason": "test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::NOT_FOUND);
    env.run(PaymentActivities::approve, payment.clone())
        .await
        .unwrap();

    let first = VoidPayment {
        payment_id: payment.payment_id.clone(),
        payment_key: payment.payment_key.clone(),
        reason: "test".into(),
        late: false,
    };
    let v = env
        .run(PaymentActivities::void, first.clone())
        .await
        .unwrap();
    assert!(!v.cancelled, "the void's key replays its answer: {v:?}");
    let late = VoidPayment {
        late: true,
        ..first
    };
    let l1 = env
        .run(PaymentActivities::void, late.clone())
        .await
        .unwrap();
    let l2 = env.run(PaymentActivities::void, late).await.unwrap();
    assert!(l1.cancelled && l1.reference.is_some(), "{l1:?}");
    assert_eq!(l1, l2);
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 1), "{books:?}");
}
