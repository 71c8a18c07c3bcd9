//! What operators and QA rely on: search attributes, the status query, encrypted payloads with
//! a codec server, key rotation, and metrics.

use base64::Engine;
use payflow_common::codec::CodecKeys;
use payflow_starter::{
    PaymentClient,
    replay::{NamedHistory, Verdict, descriptor_pool, fetch, replay},
};
use payflow_tests::{CODEC_TOKEN, Stack, StackOptions, eventually, fast_timings, metric, own_key};
use payflow_worker::config::Service;
use payflow_workflows::{
    ids,
    types::{PaymentMethod, PaymentStage, SagaTimings},
};
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use serde_json::json;
use std::time::Duration;
use temporalio_common::protos::temporal::api::{common::v1::Payload, history::v1::History};

const KEY: &str = "ops-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_find_payments_by_their_search_attributes() {
    let stack = Stack::start().await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-SA", &[(&products[0], 2)]).await;
    stack.pay(&order, PaymentMethod::BankTransfer, None).await;
    stack.outcome(&order.order_id).await;

    let query = format!(
        "OrderId = '{}' AND UserId = 'USR-SA' AND PaymentMethod = 'BANK_TRANSFER' \
         AND PaymentStage = 'ORDER_COMPLETED' AND Amount = {} AND NeedsAttention = false",
        order.order_id, order.total_amount
    );
    stack
        .wait_until_listed(&query, 1, "the visibility query to find it")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_query_shows_each_stage_as_the_payment_moves() {
    // No product worker yet: the payment stops after the payment step.
    let mut stack = Stack::start_with(StackOptions {
        services: Some(vec![Service::Workflow, Service::Payment, Service::Order]),
        timings: Some(SagaTimings {
            pg_timeout_secs: 60,
            ..fast_timings()
        }),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5, 5]).await;

    // Waiting for the PG.
    let pending = stack.order("USR-ST1", &[(&products[1], 1)]).await;
    let payments = stack.payflow.clone();
    let pending_id = pending.order_id.clone();
    tokio::spawn(async move {
        let _ = payments
            .pay(payflow_starter::service::Pay {
                order_id: pending_id,
                payment_method: PaymentMethod::Card,
                amount: pending.total_amount,
                payment_key: Some(own_key("tpk_timeout_status")),
            })
            .await;
    });
    let waiting = eventually(Duration::from_secs(20), "PAYMENT_WAIT", || async {
        stack.payflow.payments.status(&pending.order_id).await.ok()
    })
    .await;
    assert_eq!(waiting.stage, PaymentStage::PaymentWait);
    assert_eq!(waiting.approval_number, None);
    assert_eq!(waiting.payment_id, ids::payment_id(&pending.order_id));
    assert_eq!(waiting.user_id, "USR-ST1");

    // Paid, the stock step not yet run.
    let order = stack.order("USR-ST2", &[(&products[0], 2)]).await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    let paid = eventually(Duration::from_secs(20), "PAYMENT_COMPLETED", || async {
        let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
        (s.stage == PaymentStage::PaymentCompleted).then_some(s)
    })
    .await;
    assert_eq!(paid.approval_number, decision.approval_number);
    assert_eq!(paid.amount, order.total_amount);
    assert!(paid.stage_times.contains_key("PAYMENT_COMPLETED"));

    // The product service comes up; the payment finishes.
    stack.restart_worker_with_every_service().await;
    stack.outcome(&order.order_id).await;
    let done = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .unwrap();
    assert_eq!(done.stage, PaymentStage::OrderCompleted);
    let times: Vec<i64> = [
        "PAYMENT_WAIT",
        "PAYMENT_COMPLETED",
        "STOCK_CONFIRMED",
        "ORDER_COMPLETED",
    ]
    .iter()
    .map(|s| done.stage_times[*s])
    .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(done.failure_reason, None);
}

/// Every payload in a history, outside search attributes (which the server must index):
/// `(payload, unencoded by design)`. The SDK writes summaries (user metadata) and patch
/// markers (the patch's name) without the codec.
fn payloads(history: &History) -> Vec<(Payload, bool)> {
    fn walk(message: &DynamicMessage, metadata: bool, out: &mut Vec<(Payload, bool)>) {
        let name = message.descriptor().full_name().to_owned();
        if name == "temporal.api.common.v1.SearchAttributes" {
            return;
        }
        let marker = (name == "temporal.api.history.v1.MarkerRecordedEventAttributes")
            .then(|| message.get_field_by_name("marker_name"))
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned));
        let patch_marker = marker.as_deref() == Some("core_patch");
        if marker.as_deref() == Some("core_local_activity") {
            // The SDK's own bookkeeping (`data`: seq, attempt, times) is plain; the local
            // activity's `result` goes through the codec.
            for (field, value) in message.fields() {
                if let Value::Map(details) = value {
                    for (key, v) in details {
                        let plain = key.as_str() == Some("data");
                        visit(v, metadata || plain, out);
                    }
                } else if field.name() != "details" {
                    visit(value, metadata, out);
                }
            }
            return;
        }
        if name == "temporal.api.common.v1.Payload" {
            out.push((message.transcode_to::<Payload>().unwrap(), metadata));
            return;
        }
        let metadata = metadata || patch_marker || name == "temporal.api.sdk.v1.UserMetadata";
        for (_, value) in message.fields() {
            visit(value, metadata, out);
        }
    }
    fn visit(value: &Value, metadata: bool, out: &mut Vec<(Payload, bool)>) {
        match value {
            Value::Message(m) => walk(m, metadata, out),
            Value::List(items) => items.iter().for_each(|v| visit(v, metadata, out)),
            Value::Map(map) => map.values().for_each(|v| visit(v, metadata, out)),
            _ => {}
        }
    }
    let descriptor = descriptor_pool()
        .get_message_by_name("temporal.api.history.v1.History")
        .unwrap();
    let message = DynamicMessage::decode(descriptor, history.encode_to_vec().as_slice()).unwrap();
    let mut out = Vec::new();
    walk(&message, false, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_encrypted_at_rest_and_the_codec_server_decodes_them() {
    let keys = CodecKeys::generate("k1");
    let stack = Stack::start_with(StackOptions {
        codec_keys: Some(keys.clone()),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-ENC", &[(&products[0], 3)]).await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    assert!(decision.approved);
    stack.outcome(&order.order_id).await;

    // The history as stored: fetched raw, without any codec.
    let workflow_id = ids::payment_workflow_id(&order.order_id);
    let raw = fetch(stack.payflow.payments.temporal(), &workflow_id)
        .await
        .unwrap();
    let all = payloads(&raw.history);
    assert!(all.len() > 10, "{} payloads", all.len());
    let secrets = [
        order.order_id.as_bytes().to_vec(),
        order.total_amount.to_string().into_bytes(),
        decision.approval_number.clone().unwrap().into_bytes(),
    ];
    assert!(
        all.iter().any(|(_, summary)| *summary),
        "summaries are there"
    );
    for (p, plain) in &all {
        // Summaries name the order and amount as the OrderId and Amount search attributes do;
        // the workflow's own data (inputs, results, failures) is what must be sealed.
        if *plain || p.metadata.get("encoding").map(Vec::as_slice) == Some(b"binary/null") {
            continue;
        }
        for secret in &secrets {
            assert!(
                !p.data.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{p:?}"
            );
        }
        assert_eq!(
            p.metadata.get("encoding").map(Vec::as_slice),
            Some(b"binary/encrypted".as_slice()),
            "a payload in plain text: {p:?}"
        );
    }

    // The codec server (what the Web UI calls) decodes them.
    let base = stack.serve_api(KEY).await;
    let started = raw.history.events[0].attributes.clone();
    let input = match started {
        Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
            a.input.unwrap().payloads[0].clone()
        }
        other => panic!("not a start event: {other:?}"),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({ "payloads": [{
        "metadata": input.metadata.iter().map(|(k, v)| (k.clone(), b64.encode(v))).collect::<std::collections::HashMap<_, _>>(),
        "data": b64.encode(&input.data),
    }]});
    let http = reqwest::Client::new();
    for url in [
        format!("{base}/codec/decode"),
        format!("{base}/codec/{CODEC_TOKEN}/decode"),
    ] {
        let decoded: serde_json::Value = http
            .post(&url)
            .bearer_auth(KEY)
            .header("x-namespace", "default")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = b64
            .decode(decoded["payloads"][0]["data"].as_str().unwrap())
            .unwrap();
        let input: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(input["orderId"], order.order_id.as_str(), "{url}");
        assert_eq!(input["amount"], order.total_amount);
    }
    // Without a key, nothing is decoded.
    let refused = http
        .post(format!("{base}/codec/decode"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    // The capability URL takes the codec token only: an API key there is refused, and it
    // only decodes.
    for token in ["wrong", KEY] {
        let refused = http
            .post(format!("{base}/codec/{token}/decode"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{token}"
        );
    }
    let refused = http
        .post(format!("{base}/codec/{CODEC_TOKEN}/encode"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    // The Web UI's origin may call it.
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/codec/{CODEC_TOKEN}/decode"),
        )
        .header("origin", "http://localhost:8233")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-namespace")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:8233"
    );

    // QA replays the encrypted history with the keys; without them it cannot.
    let dc = stack.worker_config.temporal.data_converter().unwrap();
    let results = replay(vec![raw.clone()], dc).await.unwrap();
    assert_eq!(results[0].verdict, Verdict::Replayed);
    let results = replay(vec![raw], Default::default()).await.unwrap();
    assert!(
        matches!(results[0].verdict, Verdict::Failed(_)),
        "{:?}",
        results[0].verdict
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_still_reads_payments_made_under_the_old_one() {
    let k1 = CodecKeys::generate("k1");
    let k2 = CodecKeys::generate("k2");
    let mut stack = Stack::start_with(StackOptions {
        codec_keys: Some(k1.clone()),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-ROT", &[(&products[0], 1)]).await;
    stack.pay(&order, PaymentMethod::Card, None).await;
    stack.outcome(&order.order_id).await;

    // Rotate: k2 encrypts from now on, k1 still decrypts.
    stack.worker_config.temporal.codec_keys = format!("{k2},{k1}").parse().unwrap();
    stack.restart_worker().await;
    let client = PaymentClient::connect(&stack.worker_config.temporal)
        .await
        .unwrap();
    let status = client.status(&order.order_id).await.unwrap();
    assert_eq!(status.stage, PaymentStage::OrderCompleted);

    // A new payment under k2 completes and is encrypted with k2.
    let stack_payflow = payflow_starter::Payflow {
        payments: client.clone(),
        ..stack.payflow.clone()
    };
    let second = stack.order("USR-ROT", &[(&products[0], 1)]).await;
    stack_payflow
        .pay(payflow_starter::service::Pay {
            order_id: second.order_id.clone(),
            payment_method: PaymentMethod::Card,
            amount: second.total_amount,
            payment_key: None,
        })
        .await
        .unwrap();
    assert_eq!(
        client.result(&second.order_id).await.unwrap().stage,
        PaymentStage::OrderCompleted
    );
    let raw = fetch(
        client.temporal(),
        &ids::payment_workflow_id(&second.order_id),
    )
    .await
    .unwrap();
    let ids_used: Vec<Vec<u8>> = payloads(&raw.history)
        .into_iter()
        .filter_map(|(p, _)| p.metadata.get("encryption-key-id").cloned())
        .collect();
    assert!(!ids_used.is_empty() && ids_used.iter().all(|id| id == b"k2"));

    // The old payment's history needs k1: with k2 alone it no longer replays.
    let old: NamedHistory = fetch(
        client.temporal(),
        &ids::payment_workflow_id(&order.order_id),
    )
    .await
    .unwrap();
    let k2_only =
        payflow_common::codec::data_converter(Some(std::sync::Arc::new(k2.parse().unwrap())));
    let results = replay(vec![old], k2_only).await.unwrap();
    assert!(matches!(results[0].verdict, Verdict::Failed(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_metrics_move_with_payments() {
    let stack = Stack::start_with(StackOptions {
        metrics: true,
        ..StackOptions::default()
    })
    .await;
    let url = format!(
        "http://{}/metrics",
        stack.metrics_addr.expect("metrics served")
    );
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    let before = scrape().await;

    let products = stack.products(&[5]).await;
    let ok = stack.order("USR-MET", &[(&products[0], 1)]).await;
    stack.pay(&ok, PaymentMethod::Card, None).await;
    stack.outcome(&ok.order_id).await;
    let declined = stack.order("USR-MET", &[(&products[0], 1)]).await;
    stack
        .pay(
            &declined,
            PaymentMethod::Card,
            Some(&own_key("tpk_decline_EXPIRED_CARD")),
        )
        .await;
    stack.outcome(&declined.order_id).await;

    let after = scrape().await;
    let moved =
        |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(
        moved("payflow_payments_total", "outcome=\"completed\""),
        1.0,
        "{after}"
    );
    assert_eq!(moved("payflow_payments_total", "outcome=\"failed\""), 1.0);
    assert_eq!(moved("payflow_orders_total", "outcome=\"completed\""), 1.0);
    assert_eq!(moved("payflow_orders_total", "outcome=\"cancelled\""), 1.0);
    assert_eq!(
        moved("payflow_pg_request_duration_count", "outcome=\"ok\""),
        1.0
    );
    assert_eq!(
        moved("payflow_pg_request_duration_count", "outcome=\"declined\""),
        1.0
    );
    assert_eq!(
        moved(
            "payflow_stock_confirmation_duration_count",
            "outcome=\"confirmed\""
        ),
        1.0
    );
    // 2 events and 6 saga tracker records of the completed payment, 2 and 4 of the declined.
    assert_eq!(moved("payflow_events_total", "outcome=\"published\""), 14.0);
    assert_eq!(moved("payflow_events_total", "outcome=\"failed\""), 0.0);
    // The SDK's own worker metrics are on the same endpoint.
    // (exported a moment after the workflow task completes)
    eventually(
        Duration::from_secs(10),
        "temporal_workflow_completed",
        || async {
            let now = scrape().await;
            (metric(&now, "temporal_workflow_completed", "")
                - metric(&before, "temporal_workflow_completed", "")
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    assert!(after.contains("temporal_activity_execution_latency"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_setup_registers_the_search_attributes_once() {
    use temporalio_client::{grpc::WorkflowService, tonic::IntoRequest};
    use temporalio_common::protos::temporal::api::workflowservice::v1::RegisterNamespaceRequest;
    let stack = Stack::without_worker().await;
    let namespace = format!("payflow-{}", stack.prefix);
    let mut client = stack.payflow.payments.temporal().clone();
    WorkflowService::register_namespace(
        &mut client,
        RegisterNamespaceRequest {
            namespace: namespace.clone(),
            workflow_execution_retention_period: Some(
                Duration::from_secs(86_400).try_into().unwrap(),
            ),
            ..Default::default()
        }
        .into_request(),
    )
    .await
    .unwrap();
    let register = || {
        payflow_starter::admin::register_search_attributes(
            stack.payflow.payments.temporal(),
            &namespace,
        )
    };
    // A fresh namespace may take a moment to be usable.
    let first = eventually(Duration::from_secs(20), "the namespace", || async {
        register().await.ok()
    })
    .await;
    assert_eq!(
        first,
        [
            "Amount",
            "NeedsAttention",
            "OrderId",
            "PaymentMethod",
            "PaymentStage",
            "UserId"
        ]
    );
    assert!(
        register().await.unwrap().is_empty(),
        "a second run adds nothing"
    );
}
