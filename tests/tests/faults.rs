//! Faults with the real worker process: payments in flight while the worker is killed
//! (SIGKILL) and started again, the PG answers 15 % of its calls with 503, and the PG sandbox
//! restarts. Checked from the outside: every payment final, nothing charged
//! twice, stock conserved, one push per order, and every event and saga tracker record of every
//! path on its topic, in order (a repeated event id only ever repeats the same event).

use futures::{StreamExt, stream::FuturesUnordered};
use payflow_tests::{
    DECLINED_STEPS, SUCCESS_STEPS, Stack, StackOptions, assert_conserved, database_url, distinct,
    event_path, fast_timings, kafka_bootstrap, own_key, redis_url, spawn, steps, temporal_address,
    wait_for_line,
};
use payflow_workflows::types::{PaymentMethod, PaymentStage, SagaTimings};

/// The stack's worker (all services) as a process of its own.
fn worker_process(
    stack: &Stack,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let config = &stack.worker_config;
    let env: Vec<(String, String)> = [
        ("TEMPORAL_ADDRESS", temporal_address()),
        (
            "PAYFLOW_TASK_QUEUE_PREFIX",
            config.temporal.task_queue_prefix.clone(),
        ),
        ("DATABASE_URL", database_url()),
        ("REDIS_URL", redis_url()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap()),
        ("KAFKA_TOPIC_PREFIX", config.kafka.topic_prefix.clone()),
        ("SCHEMA_REGISTRY_URL", stack.registry.url.clone()),
        ("PG_BASE_URL", stack.sandbox_url.clone()),
        ("PG_SECRET_KEY", "test_sk_payflow".into()),
        ("PUSH_BASE_URL", stack.sandbox_url.clone()),
        ("PAYFLOW_SWEEP_INTERVAL_MS", "200".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    spawn("payflow-worker", &[], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_flight_survive_a_killed_worker_a_flaky_pg_and_a_pg_restart() {
    // The PG step's budget as in production (30 s): the test's usual 3 s would rightly void
    // approvals the killed worker held past it.
    let mut stack = Stack::start_with(StackOptions {
        services: None,
        timings: Some(SagaTimings {
            pg_timeout_secs: 30,
            ..fast_timings()
        }),
        ..StackOptions::default()
    })
    .await;
    let (mut worker, mut lines) = worker_process(&stack);
    wait_for_line(&mut lines, &["worker started"]).await;
    let products = stack.products(&[60, 60]).await;
    let mut orders = Vec::new();
    for i in 0..24 {
        let user = format!("USR-KILL{i}");
        let order = stack
            .order(&user, &[(&products[i % 2], 1 + (i % 3) as i32)])
            .await;
        // Every sixth card is declined.
        let key = (i % 6 == 5).then(|| own_key("tpk_decline_INSUFFICIENT_FUNDS"));
        orders.push((order, user, key));
    }

    stack
        .configure_sandbox(serde_json::json!({ "errorRate": 0.15 }))
        .await;
    {
        let mut pending: FuturesUnordered<_> = orders
            .iter()
            .map(|(order, _, key)| stack.pay(order, PaymentMethod::Card, key.as_deref()))
            .collect();
        // The worker dies once the first decision is out, with the others in flight.
        pending.next().await.expect("a decision");
        worker.kill().await.expect("SIGKILL the worker");
        // Workflows the dead worker was running, not only decisions still to come.
        let running = stack
            .payflow
            .payments
            .temporal()
            .count_workflows(
                format!(
                    "TaskQueue = '{}' AND ExecutionStatus = 'Running'",
                    stack.payflow.payments.queues().workflow
                ),
                Default::default(),
            )
            .await
            .expect("count the running payments")
            .count();
        assert!(running > 0, "payments running when the worker died");
        let (restarted, mut lines) = worker_process(&stack);
        worker = restarted;
        wait_for_line(&mut lines, &["worker started"]).await;
        while pending.next().await.is_some() {}
    }
    // The PG sandbox restarts while the last steps (completions, pushes) run: it keeps its books
    // (and comes back without the injected 503s).
    stack.restart_sandbox().await;

    // Every payment final (so every event published) before the topics are read.
    for (order, _, _) in &orders {
        stack.outcome(&order.order_id).await;
    }
    let all = stack.records().await;
    for (order, user, key) in &orders {
        let id = &order.order_id;
        let declined = key.is_some();
        let outcome = stack.outcome(id).await;
        let books = stack.books(id).await;
        let payment = stack
            .row(
                "SELECT status FROM payment.payments WHERE order_id = $1",
                id,
            )
            .await;
        let order_status = stack.order_status(id).await;
        if declined {
            assert_eq!(outcome.stage, PaymentStage::OrderCancelled, "{id}");
            assert_eq!((books.charges, books.cancels), (0, 0), "{id}");
            assert_eq!(payment["status"], "FAILED", "{id}");
            assert_eq!(order_status, "ORDER_CANCELLED", "{id}");
        } else {
            assert_eq!(
                outcome.stage,
                PaymentStage::OrderCompleted,
                "{id}: {outcome:?}"
            );
            assert_eq!((books.charges, books.cancels), (1, 0), "{id}");
            assert_eq!(payment["status"], "COMPLETED", "{id}");
            assert_eq!(order_status, "ORDER_COMPLETED", "{id}");
        }
        assert_eq!(stack.pushes(user).await.len(), 1, "{id}: one push");

        let records = distinct(all.iter().filter(|r| &r.key == id).cloned().collect())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let (types, saga) = event_path(&records);
        if declined {
            assert_eq!(types, ["order.cancelled", "payment.failed"], "{id}");
            assert_eq!(saga, steps(&DECLINED_STEPS), "{id}");
        } else {
            assert_eq!(types, ["payment.completed", "stock.confirmed"], "{id}");
            assert_eq!(saga, steps(&SUCCESS_STEPS), "{id}");
        }
    }
    assert_conserved(&stack, &products).await;
    for p in &products {
        let ledger = stack.ledger(&p.product_id).await;
        assert_eq!(ledger.held, 0, "nothing left held: {ledger:?}");
    }
    worker.kill().await.expect("stop the worker");
}
