//! The HTTP API over real HTTP, against the running worker and services.

use payflow_starter::client::ClientError;
use payflow_tests::{Stack, eventually, own_key, temporal_address};
use payflow_workflows::types::PaymentStage;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "test-api-key-1";

struct Api {
    stack: Stack,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        let stack = Stack::start().await;
        let base = stack.serve_api(KEY).await;
        Self {
            stack,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(
        &self,
        path: &str,
        body: &'static str,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// An order of one unit of a fresh product priced 1,000 won.
    async fn order(&self, user: &str) -> Value {
        let products = self.stack.products(&[10]).await;
        let (status, order) = self
            .post(
                "/api/v1/orders",
                json!({ "userId": user, "items": [{ "productId": products[0].product_id, "quantity": 3 }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order
    }

    /// Nothing happened for this order: no workflow, no PG call, no payment row, no payment key
    /// bound to it, its stock neither sold nor given back.
    async fn assert_untouched(&self, order_id: &str) {
        assert_eq!(self.stack.books(order_id).await.charges, 0);
        let keys = self
            .stack
            .rows(
                "SELECT payment_key FROM payment.payment_keys WHERE order_id = $1",
                order_id,
            )
            .await;
        assert!(keys.is_empty(), "no key bound: {keys:?}");
        let moved = self
            .stack
            .rows(
                "SELECT product_id, status FROM product.stock_reservations
                  WHERE order_id = $1 AND status IN ('CONFIRMED', 'RELEASED')",
                order_id,
            )
            .await;
        assert!(moved.is_empty(), "the stock did not move: {moved:?}");
        let rows = self
            .stack
            .rows(
                "SELECT payment_id FROM payment.payments WHERE order_id = $1",
                order_id,
            )
            .await;
        assert!(rows.is_empty(), "{rows:?}");
        assert!(matches!(
            self.stack.payflow.payments.status(order_id).await,
            Err(payflow_starter::client::ClientError::NotFound(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_created_and_paid_over_http_completes() {
    let api = Api::start().await;
    let order = api.order("USR-HTTP").await;
    assert_eq!(order["status"], "PAYMENT_WAIT");
    assert_eq!(order["totalAmount"], 3_000);
    assert!(order["reservationExpiresAt"].is_string());
    let order_id = order["orderId"].as_str().unwrap();

    let (status, body) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": order_id, "paymentMethod": "CARD", "amount": 3000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["orderId"], order_id);
    assert!(body["approvalNumber"].is_string());
    let payment_id = body["paymentId"].as_str().unwrap().to_owned();

    let order_path = format!("/api/v1/orders/{order_id}");
    // The order row commits in the completing step; the payment's stage follows when the
    // workflow hears of it.
    eventually(Duration::from_secs(30), "ORDER_COMPLETED", || async {
        let (_, o) = api.get(&order_path).await;
        (o["status"] == "ORDER_COMPLETED" && o["payment"]["stage"] == "ORDER_COMPLETED")
            .then_some(o)
    })
    .await;
    let (status, payment) = api.get(&format!("/api/v1/payments/{payment_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["approvalNumber"], body["approvalNumber"]);
    assert!(payment["stageTimes"]["ORDER_COMPLETED"].is_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_answers_400_payment_failed() {
    let api = Api::start().await;
    let order = api.order("USR-HTTP-DECL").await;
    let (status, body) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": order["orderId"], "paymentMethod": "CARD", "amount": 3000,
                    "paymentKey": own_key("tpk_decline_CARD_LIMIT_EXCEEDED") }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "PAYMENT_FAILED");
    assert_eq!(body["reason"], "CARD_LIMIT_EXCEEDED");
    assert_eq!(body["orderId"], order["orderId"]);
    assert_eq!(body["retryable"], true);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// Past the namespace's retention Temporal no longer holds a finished payment's workflow (here
/// it is deleted, as retention would). The payment is still answered, from what the payment
/// service recorded: looked up, in its order's view, and to a repeated request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_temporal_no_longer_holds_is_answered_from_its_records() {
    let api = Api::start().await;
    let paid = api.order("USR-HTTP-OLD").await;
    let declined = api.order("USR-HTTP-OLD-DECL").await;
    let paying = |order: &Value, key: Option<String>| {
        json!({ "orderId": order["orderId"], "paymentMethod": "CARD", "amount": 3000,
                "paymentKey": key })
    };
    let (_, approval) = api.post("/api/v1/payments", paying(&paid, None)).await;
    let decline = paying(&declined, Some(own_key("tpk_decline_INVALID_CARD")));
    let (_, refusal) = api.post("/api/v1/payments", decline.clone()).await;
    let order_ids = [&paid, &declined].map(|o| o["orderId"].as_str().unwrap().to_owned());
    for order_id in &order_ids {
        api.stack.outcome(order_id).await;
        let deleted = std::process::Command::new("temporal")
            .args([
                "workflow",
                "delete",
                "--yes",
                "--address",
                &temporal_address(),
            ])
            .args(["-w", &payflow_workflows::ids::payment_workflow_id(order_id)])
            .output()
            .expect("run the temporal CLI");
        assert!(deleted.status.success(), "{deleted:?}");
    }
    for order_id in &order_ids {
        // The server deletes in the background: seconds, or tens of seconds when it is busy.
        eventually(Duration::from_secs(120), "the workflow gone", || async {
            let got = api.stack.payflow.payments.status(order_id).await;
            let gone = matches!(got, Err(ClientError::NotFound(_)));
            gone.then_some(())
        })
        .await;
    }

    let payment_id = approval["paymentId"].as_str().unwrap();
    let (status, payment) = api.get(&format!("/api/v1/payments/{payment_id}")).await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["stage"], "ORDER_COMPLETED");
    assert_eq!(payment["approvalNumber"], approval["approvalNumber"]);
    let (_, order) = api
        .get(&format!(
            "/api/v1/orders/{}",
            paid["orderId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(order["payment"]["paymentId"], payment_id);
    let (status, again) = api.post("/api/v1/payments", paying(&paid, None)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["paymentId"], &again["approvalNumber"]),
        (&approval["paymentId"], &approval["approvalNumber"])
    );

    let (status, again) = api.post("/api/v1/payments", decline).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    for field in ["error", "reason", "message", "retryable"] {
        assert_eq!(again[field], refusal[field], "{field}");
    }
    assert_eq!(
        api.stack
            .books(paid["orderId"].as_str().unwrap())
            .await
            .charges,
        1
    );
}

/// A client that retries an order's creation after a lost answer sends the same
/// Idempotency-Key: it gets the order the first request created, and no stock is held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_retried_with_its_idempotency_key_is_created_once() {
    let api = Api::start().await;
    let products = api.stack.products(&[10]).await;
    let product = &products[0].product_id;
    // A key of this run's own: the database outlives test runs.
    let key = &format!("checkout-{}", uuid::Uuid::new_v4().simple());
    let create = |user: &str, key: &str, quantity: i32| {
        let request = api
            .http
            .post(format!("{}/api/v1/orders", api.base))
            .bearer_auth(KEY)
            .header("Idempotency-Key", key)
            .json(&json!({ "userId": user, "items": [{ "productId": product, "quantity": quantity }] }));
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, first) = create("USR-IDEM", key, 3).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = create("USR-IDEM", key, 3).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["orderId"], first["orderId"]);
    assert_eq!(again["totalAmount"], first["totalAmount"]);
    assert_eq!(api.stack.ledger(product).await.held, 3, "held once");

    // The same key for other items is refused, and changes nothing.
    let (status, refused) = create("USR-IDEM", key, 5).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("IDEMPOTENCY_KEY_REUSED")
        )
    );
    assert_eq!(api.stack.ledger(product).await.held, 3);
    // Keys are the customer's own: another customer's same key is another order.
    let (status, other) = create("USR-IDEM-2", key, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_ne!(other["orderId"], first["orderId"]);

    // Paid, the order is still what the key answers, as it is now.
    let order_id = first["orderId"].as_str().unwrap();
    let (status, _) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": order_id, "paymentMethod": "CARD", "amount": first["totalAmount"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.stack.outcome(order_id).await;
    let (status, after) = create("USR-IDEM", key, 3).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(
        (&after["orderId"], after["status"].as_str()),
        (&first["orderId"], Some("ORDER_COMPLETED"))
    );
    assert_eq!(
        api.stack.ledger(product).await.held,
        1,
        "only the other customer's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_key_of_another_order_answers_409_and_starts_nothing() {
    let api = Api::start().await;
    let a = api.order("USR-HTTP-KEY-A").await;
    let b = api.order("USR-HTTP-KEY-B").await;
    let key = own_key("tpk_http_shared");
    let (status, body) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": a["orderId"], "paymentMethod": "CARD", "amount": 3000, "paymentKey": key }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": b["orderId"], "paymentMethod": "CARD", "amount": 3000, "paymentKey": key }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "PAYMENT_KEY_IN_USE");
    // The other order is not named to this caller.
    let a_id = a["orderId"].as_str().unwrap();
    assert!(!body["message"].as_str().unwrap().contains(a_id), "{body}");
    let (_, order) = api
        .get(&format!(
            "/api/v1/orders/{}",
            b["orderId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(order["status"], "PAYMENT_WAIT");
    assert!(order["payment"].is_null(), "{order}");
    let books = api.stack.books(a_id).await;
    assert_eq!((books.charges, books.cancels), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_reservation_lapsed_is_refused_before_any_charge() {
    let api = Api::start().await;
    let products = api.stack.products(&[4]).await;
    let (status, order) = api
        .post(
            "/api/v1/orders",
            json!({ "userId": "USR-HTTP-LAPSED", "reservationTtlSecs": 1,
                    "items": [{ "productId": products[0].product_id, "quantity": 2 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["orderId"].as_str().unwrap().to_owned();
    let (_, shown) = api.get(&format!("/api/v1/orders/{id}")).await;
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        time(&shown["reservationExpiresAt"]),
        time(&order["reservationExpiresAt"]),
        "the order shows until when its stock is held: {shown}"
    );
    eventually(
        Duration::from_secs(15),
        "the reservation to lapse",
        || async {
            let order = api.stack.payflow.orders.get(&id).await.unwrap()?;
            order.reservation_lapsed.then_some(())
        },
    )
    .await;

    let key = own_key("tpk_http_lapsed");
    let pay = json!({ "orderId": id, "paymentMethod": "CARD", "amount": order["totalAmount"], "paymentKey": key });
    for _ in 0..2 {
        let (status, body) = api.post("/api/v1/payments", pay.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "RESERVATION_EXPIRED");
        assert_eq!(body["orderId"], id.as_str());
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("no payment was started"),
            "{body}"
        );
    }
    api.assert_untouched(&id).await;
    let keys = api
        .stack
        .rows(
            "SELECT order_id FROM payment.payment_keys WHERE payment_key = $1",
            &key,
        )
        .await;
    assert!(keys.is_empty(), "the key is not bound: {keys:?}");
    let (_, shown) = api.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(shown["status"], "PAYMENT_WAIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let api = Api::start().await;
    let order = api.order("USR-HTTP-BAD").await;
    let id = order["orderId"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "wrong type",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": "3000" }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "missing field",
            json!({ "orderId": id, "amount": 3000 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "unknown field",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 3000, "discount": 2900 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "unknown method",
            json!({ "orderId": id, "paymentMethod": "BITCOIN", "amount": 3000 }),
            StatusCode::BAD_REQUEST,
            "UNKNOWN_PAYMENT_METHOD",
        ),
        (
            "tampered amount",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 100 }),
            StatusCode::BAD_REQUEST,
            "AMOUNT_MISMATCH",
        ),
        (
            "zero amount",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 0 }),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            "negative amount",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": -3000 }),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            "fractional amount",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 2999.5 }),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            "blank payment key",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 3000, "paymentKey": "   " }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "payflow's own key of another order",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 3000, "paymentKey": "tpk_PAY-ORD-OTHER" }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "order id with a NUL",
            json!({ "orderId": format!("{id}\u{0}"), "paymentMethod": "CARD", "amount": 3000 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "payment key with a space",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 3000, "paymentKey": "tpk a" }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, answer) = api.post("/api/v1/payments", body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let (got, answer) = api
        .post_raw("/api/v1/payments", "{\"orderId\": ", "application/json")
        .await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON"))
    );
    let (got, _) = api
        .post_raw("/api/v1/payments", "orderId=1", "text/plain")
        .await;
    assert_eq!(got, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge: &'static str = Box::leak(
        format!(
            "{{\"orderId\": \"{id}\", \"paymentKey\": \"{}\"}}",
            "x".repeat(64 * 1024)
        )
        .into_boxed_str(),
    );
    let (got, answer) = api
        .post_raw("/api/v1/payments", huge, "application/json")
        .await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE")),
        "{answer}"
    );
    api.assert_untouched(&id).await;

    // An unknown order.
    let (got, answer) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": "ORD-NOPE", "paymentMethod": "CARD", "amount": 3000 }),
        )
        .await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    api.assert_untouched("ORD-NOPE").await;

    // An order that is not waiting for payment (and never had one).
    sqlx::query("UPDATE orders.orders SET status = 'ORDER_CANCELLED' WHERE order_id = $1")
        .bind(&id)
        .execute(&api.stack.pool)
        .await
        .unwrap();
    let (got, answer) = api
        .post(
            "/api/v1/payments",
            json!({ "orderId": id, "paymentMethod": "CARD", "amount": 3000 }),
        )
        .await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (StatusCode::CONFLICT, Some("ORDER_NOT_PAYABLE"))
    );
    api.assert_untouched(&id).await;
    let (got, _) = api.get("/api/v1/payments/PAY-ORD-NOPE").await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    // Ids with a NUL, or bytes that are not text, are bad requests, not outages to retry.
    for path in [
        "/api/v1/orders/ORD%00",
        "/api/v1/payments/PAY-ORD%00",
        "/api/v1/orders/%FF",
    ] {
        let (got, answer) = api.get(path).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{path}: {answer}"
        );
    }
    // A route asked with a method it does not take answers in the API's JSON too.
    let (got, answer) = api.get("/api/v1/payments").await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_requests_at_once_start_one_payment_and_charge_once() {
    let api = Api::start().await;
    let order = api.order("USR-HTTP-DUP").await;
    let id = order["orderId"].as_str().unwrap().to_owned();
    let body = json!({ "orderId": id, "paymentMethod": "TOSS", "amount": 3000 });
    let answers =
        futures::future::join_all((0..10).map(|_| api.post("/api/v1/payments", body.clone())))
            .await;
    let first = &answers[0].1;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        assert_eq!(answer["paymentId"], first["paymentId"]);
        assert_eq!(answer["approvalNumber"], first["approvalNumber"]);
    }
    let outcome = api.stack.outcome(&id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    // Again, after it finished: the same payment.
    let (status, again) = api.post("/api/v1/payments", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["paymentId"], first["paymentId"]);
    assert_eq!(api.stack.books(&id).await.charges, 1);
    let count = api
        .stack
        .payflow
        .payments
        .temporal()
        .count_workflows(format!("OrderId = '{id}'"), Default::default())
        .await
        .unwrap()
        .count();
    assert_eq!(count, 1, "one workflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_wants_a_valid_key_but_health_checks_are_open() {
    let api = Api::start().await;
    let url = format!("{}/api/v1/orders", api.base);
    let body = json!({ "userId": "USR-X", "items": [{ "productId": "P", "quantity": 1 }] });
    let r = api.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"], "UNAUTHORIZED");
    let r = api
        .http
        .post(&url)
        .bearer_auth("test-api-key-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = api
        .http
        .get(format!("{}/api/v1/payments/PAY-X", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    for path in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        let r = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let ready: Value = api
        .http
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"],
        json!({ "temporal": "up", "postgres": "up", "redis": "up" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_beyond_the_stock_is_refused_naming_the_short_items() {
    let api = Api::start().await;
    let products = api.stack.products(&[2, 5]).await;
    let (status, body) = api
        .post(
            "/api/v1/orders",
            json!({ "userId": "USR-SHORT", "items": [
                { "productId": products[0].product_id, "quantity": 3 },
                { "productId": products[1].product_id, "quantity": 1 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "INSUFFICIENT_STOCK");
    assert_eq!(
        body["items"],
        json!([{ "productId": products[0].product_id, "available": 2 }])
    );
    // Nothing was reserved.
    for (p, seeded) in [(&products[0], 2), (&products[1], 5)] {
        assert_eq!(api.stack.ledger(&p.product_id).await.available, seeded);
    }
    let (status, body) = api
        .post(
            "/api/v1/orders",
            json!({ "userId": "USR-SHORT", "items": [{ "productId": "NOPE", "quantity": 1 }] }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UNKNOWN_PRODUCTS"))
    );
    let (status, body) = api
        .post("/api/v1/orders", json!({ "userId": "USR-SHORT", "items": [{ "productId": products[1].product_id, "quantity": 0 }] }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    // Lines of one product that add up past what a quantity can hold, reservations that end at
    // once or never, ids the database cannot hold (a NUL) or too long to be ids, and a total
    // beyond what the platform's events can carry (99,999,999 won): refused, nothing reserved.
    let product = &products[1].product_id;
    let dear = payflow_activities::product::Product {
        product_id: format!("{product}-DEAR"),
        name: "a dear product".into(),
        price: 60_000_000,
        stock: 5,
    };
    api.stack
        .payflow
        .products
        .seed(std::slice::from_ref(&dear))
        .await
        .unwrap();
    let refused = [
        json!({ "userId": "USR-SHORT", "items": [
            { "productId": product, "quantity": i32::MAX },
            { "productId": product, "quantity": 2 } ] }),
        json!({ "userId": "USR-\u{0}", "items": [{ "productId": product, "quantity": 1 }] }),
        json!({ "userId": "U".repeat(101), "items": [{ "productId": product, "quantity": 1 }] }),
        json!({ "userId": "USR-SHORT", "items": [{ "productId": "P\u{0}", "quantity": 1 }] }),
        json!({ "userId": "USR-SHORT", "items": [{ "productId": dear.product_id, "quantity": 2 }] }),
        json!({ "userId": "USR-SHORT", "reservationTtlSecs": 0,
                "items": [{ "productId": product, "quantity": 1 }] }),
        json!({ "userId": "USR-SHORT", "reservationTtlSecs": u64::MAX,
                "items": [{ "productId": product, "quantity": 1 }] }),
    ];
    for order in refused {
        let (status, body) = api.post("/api/v1/orders", order.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{order}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for (p, seeded) in [(&products[0], 2), (&products[1], 5), (&dear, 5)] {
        let ledger = api.stack.ledger(&p.product_id).await;
        assert_eq!((ledger.available, ledger.held), (seeded, 0), "{ledger:?}");
    }
    // No order was written for any refused request, and no stock is held or sold for one: a
    // total beyond the cap is known only once the prices are read with the reservation, which
    // is then given back at once (its lines RELEASED).
    let orders = api
        .stack
        .rows(
            "SELECT order_id FROM orders.orders WHERE user_id = $1",
            "USR-SHORT",
        )
        .await;
    assert!(orders.is_empty(), "{orders:?}");
    for p in [&products[0], &products[1], &dear] {
        let lines = api
            .stack
            .rows(
                "SELECT order_id, status FROM product.stock_reservations
                  WHERE product_id = $1 AND status <> 'RELEASED'",
                &p.product_id,
            )
            .await;
        assert!(lines.is_empty(), "{}: {lines:?}", p.product_id);
    }
}
