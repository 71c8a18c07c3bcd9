//! The seed's success flow, end to end on real Temporal, PostgreSQL, Redis and Kafka.

use apache_avro::types::Value;
use payflow_tests::{SUCCESS_STEPS, Stack, avro_str, check_history, platform_view, steps};
use payflow_workflows::{
    ids,
    types::{EventType, PaymentMethod, PaymentStage},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_payment_completes_the_order_and_tells_everyone() {
    let stack = Stack::start().await;
    let products = stack.products(&[10, 5]).await;
    let order = stack
        .order("USR-001", &[(&products[0], 2), (&products[1], 1)])
        .await;
    assert_eq!(order.total_amount, 2 * 1_000 + 2_000);

    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(decision.approved, "{decision:?}");
    let approval = decision.approval_number.clone().expect("approval number");
    assert_eq!(decision.payment_id, ids::payment_id(&order.order_id));

    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    assert_eq!(outcome.approval_number.as_deref(), Some(approval.as_str()));

    // Payment DB: COMPLETED with the approval number.
    let payment = stack
        .row("SELECT status, amount, method, pg_approval_number FROM payment.payments WHERE order_id = $1", &order.order_id)
        .await;
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["amount"], 4_000);
    assert_eq!(payment["method"], "CARD");
    assert_eq!(payment["pg_approval_number"], approval.as_str());

    // Order DB: ORDER_COMPLETED.
    let row = stack
        .row(
            "SELECT status, payment_id FROM orders.orders WHERE order_id = $1",
            &order.order_id,
        )
        .await;
    assert_eq!(row["status"], "ORDER_COMPLETED");
    assert_eq!(row["payment_id"], decision.payment_id.as_str());

    // Stock: reservations CONFIRMED, decremented exactly once, nothing left in Redis.
    let reservations = stack
        .rows("SELECT product_id, quantity, status FROM product.stock_reservations WHERE order_id = $1 ORDER BY product_id", &order.order_id)
        .await;
    assert_eq!(reservations.len(), 2);
    assert!(reservations.iter().all(|r| r["status"] == "CONFIRMED"));
    assert!(stack.redis.held(&order.order_id).await.unwrap().is_empty());
    for (product, seeded, bought) in [(&products[0], 10, 2), (&products[1], 5, 1)] {
        let ledger = stack.ledger(&product.product_id).await;
        assert_eq!(ledger.db_stock, seeded - bought, "{ledger:?}");
        assert_eq!(ledger.available, seeded - bought, "{ledger:?}");
        assert_eq!(ledger.confirmed, bought);
        assert_eq!(ledger.total(), seeded);
    }

    // The PG charged exactly once.
    let books = stack.books(&order.order_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0));

    // One push, with the seed's wording.
    let pushes = stack.pushes("USR-001").await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].title, "주문이 완료되었습니다");
    assert_eq!(
        pushes[0].body,
        format!(
            "주문번호 {}의 결제가 완료되었습니다. 배송 준비 중입니다.",
            order.order_id
        )
    );

    // Both events, keyed by order id, in the contract's Avro.
    let events = stack.events_of(&order.order_id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(events.len(), 2, "{types:?}");
    let workflow_id = ids::payment_workflow_id(&order.order_id);

    let completed = events
        .iter()
        .find(|e| e.event_type() == "payment.completed")
        .expect("payment.completed");
    assert_eq!(
        completed.topic,
        stack.kafka.topic(EventType::PaymentCompleted)
    );
    // The Confluent wire format: magic byte 0, then the registry id of the schema.
    assert_eq!(completed.value[0], 0x00);
    let fields = completed.decode();
    let event_id = ids::event_id(&workflow_id, EventType::PaymentCompleted);
    assert_eq!(avro_str(&fields["eventId"]), event_id);
    assert_eq!(completed.headers["eventId"], event_id);
    assert_eq!(avro_str(&fields["orderId"]), order.order_id);
    assert_eq!(avro_str(&fields["paymentId"]), decision.payment_id);
    assert_eq!(avro_str(&fields["userId"]), "USR-001");
    assert_eq!(avro_str(&fields["paymentMethod"]), "CARD");
    assert_eq!(avro_str(&fields["pgApprovalNumber"]), approval);
    let Value::Decimal(amount) = &fields["totalAmount"] else {
        panic!("totalAmount is not a decimal: {:?}", fields["totalAmount"]);
    };
    // 4,000.00 won at scale 2.
    let unscaled = <Vec<u8>>::try_from(amount).unwrap();
    assert_eq!(i64::from_be_bytes(sign_extend(&unscaled)), 400_000);

    let confirmed = events
        .iter()
        .find(|e| e.event_type() == "stock.confirmed")
        .expect("stock.confirmed");
    let fields = confirmed.decode();
    assert_eq!(
        avro_str(&fields["eventId"]),
        ids::event_id(&workflow_id, EventType::StockConfirmed)
    );
    assert_eq!(avro_str(&fields["paymentId"]), decision.payment_id);
    let Value::Array(items) = &fields["confirmedItems"] else {
        panic!("confirmedItems is not an array")
    };
    assert_eq!(items.len(), 2);
    assert_eq!(
        platform_view(&stack, &order.order_id).await,
        steps(&SUCCESS_STEPS)
    );
    check_history(&stack, &order.order_id, "success_card").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kakao_pay_completes_and_paying_again_returns_the_same_payment() {
    let stack = Stack::start().await;
    let products = stack.products(&[3]).await;
    let order = stack.order("USR-002", &[(&products[0], 3)]).await;

    let first = stack.pay(&order, PaymentMethod::KakaoPay, None).await;
    assert!(first.approved);
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);

    // A repeated request after the payment finished answers the same payment, charging nothing.
    let again = stack.pay(&order, PaymentMethod::KakaoPay, None).await;
    assert_eq!(again.payment_id, first.payment_id);
    assert_eq!(again.approval_number, first.approval_number);
    assert_eq!(stack.books(&order.order_id).await.charges, 1);
    // Sold out exactly.
    let ledger = stack.ledger(&products[0].product_id).await;
    assert_eq!((ledger.available, ledger.held, ledger.confirmed), (0, 0, 3));
    check_history(&stack, &order.order_id, "success_kakao_pay_paid_twice").await;
}

fn sign_extend(bytes: &[u8]) -> [u8; 8] {
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xFF
    } else {
        0
    };
    let mut out = [fill; 8];
    out[8 - bytes.len()..].copy_from_slice(bytes);
    out
}
