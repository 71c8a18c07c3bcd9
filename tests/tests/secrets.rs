//! Secrets stay secret: a whole run (payments over the API, a refused key, the Web UI's codec
//! calls, a decline) is logged at debug level for payflow's own crates and at info for
//! everything else, and no configured credential appears in it.

use payflow_common::codec::CodecKeys;
use payflow_tests::{CODEC_TOKEN, Logs, Stack, StackOptions, own_key};
use payflow_workflows::types::{PaymentMethod, PaymentStage};
use serde_json::json;

const KEY: &str = "secret-api-key-7d2e9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_reaches_the_logs() {
    let logs = Logs::capture(
        "info,payflow_activities=debug,payflow_worker=debug,payflow_starter=debug,\
         payflow_sandbox=debug,tower_http=debug,apache_avro=error",
    );

    let codec_keys = CodecKeys::generate("k9");
    let stack = Stack::start_with(StackOptions {
        codec_keys: Some(codec_keys.clone()),
        ..StackOptions::default()
    })
    .await;
    let base = stack.serve_api(KEY).await;
    let http = reqwest::Client::new();
    let products = stack.products(&[5]).await;

    // A payment over the API, one with a wrong key, and a declined one.
    let order = stack.order("USR-SEC", &[(&products[0], 1)]).await;
    let paid: serde_json::Value = http
        .post(format!("{base}/api/v1/payments"))
        .bearer_auth(KEY)
        .json(&json!({ "orderId": order.order_id, "paymentMethod": "CARD", "amount": order.total_amount }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["status"], "COMPLETED", "{paid}");
    let refused = http
        .post(format!("{base}/api/v1/payments"))
        .bearer_auth(format!("{KEY}-not"))
        .json(&json!({ "orderId": order.order_id, "paymentMethod": "CARD", "amount": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let declined = stack.order("USR-SEC", &[(&products[0], 1)]).await;
    let decision = stack
        .pay(
            &declined,
            PaymentMethod::Card,
            Some(&own_key("tpk_decline_INVALID_CARD")),
        )
        .await;
    assert!(!decision.approved);
    for o in [&order, &declined] {
        let stage = stack.outcome(&o.order_id).await.stage;
        assert!(matches!(
            stage,
            PaymentStage::OrderCompleted | PaymentStage::OrderCancelled
        ));
    }

    // The Web UI's codec calls: the capability URL, a wrong token in it, and the token with
    // no action after it (a mistyped URL).
    for path in [
        format!("{CODEC_TOKEN}/decode"),
        "not-the-token/decode".to_owned(),
        CODEC_TOKEN.to_owned(),
    ] {
        http.post(format!("{base}/codec/{path}"))
            .json(&json!({ "payloads": [] }))
            .send()
            .await
            .unwrap();
    }

    let text = logs.text();
    assert!(
        text.contains("/codec/***/decode"),
        "the codec calls are logged, their token masked"
    );
    assert!(text.contains("/api/v1/payments"), "API requests are logged");
    let key_material = codec_keys
        .split_once(':')
        .map(|(_, k)| k.to_owned())
        .unwrap();
    let pg_secret = stack
        .worker_config
        .pg
        .secret_key
        .as_ref()
        .expect("a PG key")
        .expose()
        .to_owned();
    for (what, secret) in [
        ("API key", KEY),
        ("codec token", CODEC_TOKEN),
        ("payload encryption key", key_material.as_str()),
        ("PG secret key", pg_secret.as_str()),
    ] {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret),
            "the {what} is in the logs ({} bytes of logs)",
            text.len()
        );
    }
}
