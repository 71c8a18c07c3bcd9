//! The platform's Kafka dialect (PLATFORM.md): topic names and partitions, Java's murmur2
//! partitioning, the schema registry taken away during payments, and single-object encoding
//! as an option.

use payflow_activities::events::{
    Encoding, EventActivities, PublishError, avro, registry::value_subject,
};
use payflow_starter::{audit::audit, service::CreatedOrder};
use payflow_tests::{
    SUCCESS_STEPS, Stack, StackOptions, TestRegistry, TimersFrom, check_history, eventually,
    java_partition, metric, murmur2, platform_view, steps, timer_durations, timer_fates, types_of,
};
use payflow_workflows::types::{DomainEvent, EventBody, EventType, PaymentMethod, PaymentStage};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};
use std::time::Duration;

/// Hashes of Kafka's own `Utils.murmur2` for these keys, from Kafka's `UtilsTest`
/// (`testMurmur2`): the values Java producers partition by.
const JAVA_MURMUR2: [(&str, i32); 6] = [
    ("21", -973_932_308),
    ("foobar", -790_332_482),
    ("a-little-bit-long-string", -985_981_536),
    ("a-little-bit-longer-string", -1_486_304_829),
    (
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        -58_897_971,
    ),
    ("abc", 479_470_107),
];

#[test]
fn the_test_murmur2_agrees_with_javas() {
    for (key, java) in JAVA_MURMUR2 {
        assert_eq!(murmur2(key.as_bytes()), java, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_on_the_partition_java_producers_choose() {
    let stack = Stack::start().await;
    let events = stack.producer();
    let batch: Vec<DomainEvent> = JAVA_MURMUR2
        .iter()
        .map(|(key, _)| DomainEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_timestamp: 1,
            order_id: (*key).to_owned(),
            body: EventBody::PaymentFailed {
                payment_id: format!("PAY-{key}"),
                user_id: "USR-P".into(),
                failure_reason: "TEST".into(),
                failed_at: 1,
            },
        })
        .collect();
    let published = events.publish_events(&batch).await.expect("published");
    let partitions = stack.kafka.partitions;
    assert_eq!(partitions, 3);
    let mut seen = std::collections::BTreeSet::new();
    for ((key, java), at) in JAVA_MURMUR2.iter().zip(&published) {
        assert_eq!(at.partition, java_partition(*java, partitions), "{key}");
        seen.insert(at.partition);
    }
    assert!(seen.len() > 1, "the keys spread over partitions: {seen:?}");
}

/// librdkafka's in-process mock cluster holding every topic of payflow's with `partitions`
/// partitions, and payflow's Kafka settings for it (no registry).
fn mock_kafka(
    partitions: i32,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    payflow_activities::events::KafkaConfig,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("librdkafka's mock cluster");
    let kafka = payflow_activities::events::KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        topic_prefix: String::new(),
        topics: Default::default(),
        partitions: 1,
        replication: 1,
        encoding: Encoding::SingleObject,
    };
    for ty in EventType::ALL {
        cluster
            .create_topic(&kafka.topic(ty), partitions, 1)
            .expect("topic");
    }
    (cluster, kafka)
}

/// A `payment.failed` event of a fresh order of `user`'s, for publishing straight through the
/// activities.
fn failed_payment_event(user: &str) -> DomainEvent {
    let id = uuid::Uuid::new_v4().to_string();
    DomainEvent {
        event_id: id.clone(),
        event_timestamp: 1,
        order_id: format!("ORD-{user}-{id}"),
        body: EventBody::PaymentFailed {
            payment_id: format!("PAY-{id}"),
            user_id: user.into(),
            failure_reason: "TEST".into(),
            failed_at: 1,
        },
    }
}

/// An idempotent producer that librdkafka declares failed for good fails every later send:
/// without a new producer, every payment's events would wait in their outboxes until someone
/// restarted the worker. A broker that loses records it acknowledged can cause it, and so can
/// a cluster that refuses payflow's producer (no permission) for a while; no real broker here
/// can be made to answer that on demand, so librdkafka's own in-process mock cluster refuses
/// the producer id once.
/// The publish that meets the failure fails, as a refusal (the cluster refused payflow's
/// producer: the workflow tries again, flagged meanwhile); the next one builds a new producer
/// and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_librdkafka_declared_failed_for_good_is_replaced_and_the_events_go_out() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, kafka) = mock_kafka(1);
    cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let events = EventActivities::new(kafka, None).expect("producer");
    let event = || failed_payment_event("USR-FATAL");
    let failed = events
        .publish_events(&[event()])
        .await
        .expect_err("the producer failed for good");
    // The cluster refused payflow's producer: a refusal (the workflow's flag goes up while it
    // lasts), not an outage.
    let PublishError::Kafka { source, .. } = &failed else {
        panic!("{failed}");
    };
    assert_eq!(
        source.rdkafka_error_code(),
        Some(rdkafka::error::RDKafkaErrorCode::ClusterAuthorizationFailed),
        "{failed}"
    );
    assert!(failed.needs_a_person(), "{failed:?}");
    let published = events
        .publish_events(&[event(), event()])
        .await
        .expect("published by a new producer");
    assert_eq!(published.len(), 2);
    // The health check asks the new producer too.
    assert_eq!(events.brokers(Duration::from_secs(5)).await, Ok(1));
}

/// Brokers that refuse payflow's records (no permission to write a topic, here) wait for a
/// person, not for time: the publish fails with the type the outbox raises the attention flag
/// on while it lasts (as it does for a registry refusal,
/// `a_registry_refusing_payflows_schema_flags_the_payment_until_an_operator_lifts_it`), and
/// once the permission is back the same events go out. An outage, by
/// contrast, is retried without a flag (`readyz_and_the_metrics_say_degraded_while_kafka_...`).
/// Tansu has no permissions to withhold, so librdkafka's in-process mock cluster refuses the
/// produce request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_payflow_may_not_write_flags_the_publish_for_a_person() {
    use payflow_workflows::errors;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use temporalio_sdk::activities::ActivityError;
    let (cluster, kafka) = mock_kafka(1);
    let events = EventActivities::new(kafka, None).expect("producer");
    let batch = [failed_payment_event("USR-ACL")];
    // The producer's first produce request meets a broker refusing the topic.
    assert_eq!(events.brokers(Duration::from_secs(5)).await, Ok(1));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let refused = events
        .publish_events(&batch)
        .await
        .expect_err("the topic refuses payflow");
    assert!(matches!(refused, PublishError::Kafka { .. }), "{refused}");
    assert!(refused.needs_a_person(), "{refused:?}");
    let ActivityError::Application(failure) = refused.into_activity_error() else {
        panic!("not an application failure");
    };
    // Retryable (workflows from before the outbox publish inline and drop what a
    // non-retryable failure ends), with the type the outbox raises its flag on.
    assert!(!failure.is_non_retryable(), "{failure:?}");
    assert_eq!(failure.type_name(), Some(errors::KAFKA_REFUSED));

    // The permission is back: the same event goes out on a later try (the
    // workflow tries again on a timer). librdkafka remembers the topic's refusal until its
    // metadata is read again, which the worker's health check does every few seconds.
    let published = eventually(Duration::from_secs(30), "the event published", || {
        let events = events.clone();
        let batch = batch.clone();
        async move {
            let _ = events.brokers(Duration::from_secs(5)).await;
            events.publish_events(&batch).await.ok()
        }
    })
    .await;
    assert_eq!(published.len(), 1);
}

/// The same through a payment: brokers refusing payflow's records hold neither the customer
/// nor the order, raise the payment's attention flag (and list why) while they refuse, and once
/// they take the records the events go out, the flag comes down with no signal, and the
/// workflow closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_refusing_payflow_flag_the_payment_until_they_take_its_events() {
    use rdkafka::{
        mocking::MockCluster,
        types::{RDKafkaApiKey, RDKafkaRespErr},
    };
    let cluster = MockCluster::new(1).expect("librdkafka's mock cluster");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000],
    );
    let stack = Stack::start_with(StackOptions {
        kafka_bootstrap: Some(cluster.bootstrap_servers()),
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-KAFKA-ACL", &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    // The order completes regardless; the flag says why its events wait.
    let flagged = eventually(
        Duration::from_secs(60),
        "the order completed, flagged",
        || async {
            let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
            (s.needs_attention && s.stage == PaymentStage::OrderCompleted).then_some(s)
        },
    )
    .await;
    assert!(flagged.unpublished_events > 0, "{flagged:?}");
    let reason = flagged.attention_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("publish ") && reason.contains("TopicAuthorizationFailed"),
        "{reason}"
    );

    // The permission is granted: the events go out, the flag comes down, the workflow closes.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let outcome = stack.outcome(&order.order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCompleted);
    let status = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .expect("status");
    assert_eq!(status.unpublished_events, 0, "{status:?}");
    assert!(!status.needs_attention, "{status:?}");
    assert!(status.attention_reasons.is_empty(), "{status:?}");
}

/// Where the platform created the topics and payflow may not create any (no CREATE permission),
/// the setup asks for nothing it need not: it finds the topics there and succeeds, where a
/// request to create them all was refused for ever (and the worker's readiness with it).
/// librdkafka's in-process mock cluster, which answers no CreateTopics at all, stands in for
/// such a cluster: Tansu has no permissions to withhold. (Creating the topics that are missing
/// is shown on the real broker by `topics_are_the_contracts_with_three_partitions_...`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_the_platform_created_need_no_permission_to_create() {
    let (_cluster, kafka) = mock_kafka(3);
    EventActivities::ensure_topics(&kafka, None)
        .await
        .expect("nothing to create");
}

/// With `SCHEMA_REGISTRY_AUTO_REGISTER=false` (credentials that may only read the registry), a
/// schema missing from its subject waits for a person: publishing fails as no retry can lift
/// (non-retryable, which is what raises the workflow's attention flag, as
/// `a_registry_refusing_payflows_schema_flags_the_payment_until_an_operator_lifts_it` shows) and
/// names `payflow admin setup`, and succeeds once the setup has registered the schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_payflow_may_not_register_waits_for_the_setup() {
    let stack = Stack::without_worker().await;
    let registry = TestRegistry::start(true).await.unwrap();
    let mut reader = stack.worker_config.kafka.clone();
    reader.registry_url = registry.url.clone();
    reader.auto_register = false;
    let events = EventActivities::new(stack.kafka.clone(), reader.registry().unwrap()).unwrap();
    let batch = [DomainEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_timestamp: 1,
        order_id: "ORD-READONLY".into(),
        body: EventBody::PaymentFailed {
            payment_id: "PAY-ORD-READONLY".into(),
            user_id: "USR-R".into(),
            failure_reason: "TEST".into(),
            failed_at: 1,
        },
    }];
    let refused = events.publish_events(&batch).await.unwrap_err();
    assert!(
        matches!(&refused, PublishError::Registry(e) if !e.is_transient()),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("payflow admin setup"),
        "{refused}"
    );
    assert!(
        registry.subjects().await.is_empty(),
        "payflow registered nothing"
    );

    // The setup (credentials that may write) registers every schema; publishing goes on.
    let mut admin = reader.clone();
    admin.auto_register = true;
    EventActivities::ensure_topics(&stack.kafka, admin.registry().unwrap().as_ref())
        .await
        .unwrap();
    let published = events.publish_events(&batch).await.expect("published");
    assert_eq!(published.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_the_contracts_with_three_partitions_and_the_platforms_settings() {
    let stack = Stack::start().await;
    // The worker creates them in the background; a payment proves it has.
    let products = stack.products(&[2]).await;
    let order = stack.order("USR-TOPICS", &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    assert_eq!(
        stack.outcome(&order.order_id).await.stage,
        PaymentStage::OrderCompleted
    );

    let expected = [
        (EventType::PaymentCompleted, "c4ang.payment.completed"),
        (EventType::PaymentFailed, "c4ang.payment.failed"),
        (EventType::PaymentCancelled, "c4ang.payment.cancelled"),
        (EventType::StockConfirmed, "c4ang.stock.confirmed"),
        (
            EventType::StockConfirmationFailed,
            "c4ang.stock.confirmation-failed",
        ),
        (EventType::OrderCancelled, "c4ang.order.cancelled"),
        (EventType::SagaTracker, "c4ang.saga.tracker"),
    ];
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka.bootstrap_servers)
        .create()
        .expect("consumer");
    for (ty, name) in expected {
        let topic = stack.kafka.topic(ty);
        assert_eq!(topic, format!("{}{name}", stack.kafka.topic_prefix));
        let metadata = eventually(Duration::from_secs(20), &topic, || {
            let consumer = &consumer;
            let topic = topic.clone();
            async move {
                let m = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .ok()?;
                let n = m.topics().first()?.partitions().len();
                (n > 0).then_some(n)
            }
        })
        .await;
        assert_eq!(metadata, 3, "{topic}");
    }

    // Read back from the broker: retention 30 days for the payment topics and the saga
    // tracker, 7 days for the others; snappy for payment.completed (PLATFORM.md).
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka.bootstrap_servers)
        .create()
        .expect("admin client");
    const DAYS_30: &str = "2592000000";
    const DAYS_7: &str = "604800000";
    for (ty, retention, compression) in [
        (EventType::PaymentCompleted, DAYS_30, Some("snappy")),
        (EventType::PaymentFailed, DAYS_30, None),
        (EventType::PaymentCancelled, DAYS_30, None),
        (EventType::SagaTracker, DAYS_30, None),
        (EventType::StockConfirmed, DAYS_7, None),
        (EventType::StockConfirmationFailed, DAYS_7, None),
        (EventType::OrderCancelled, DAYS_7, None),
    ] {
        let topic = stack.kafka.topic(ty);
        let described = admin
            .describe_configs(
                &[ResourceSpecifier::Topic(&topic)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("describe configs");
        let resource = described
            .into_iter()
            .next()
            .expect("one resource")
            .expect("the topic's configuration");
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        assert_eq!(value("retention.ms").as_deref(), Some(retention), "{topic}");
        if let Some(compression) = compression {
            assert_eq!(
                value("compression.type").as_deref(),
                Some(compression),
                "{topic}"
            );
        }
    }
}

/// Waits until the order is complete for its customer while its events cannot go out, and
/// checks what the customer and operators see then.
async fn served_while_events_wait(stack: &Stack, order: &CreatedOrder, user: &str) {
    let status = eventually(
        Duration::from_secs(30),
        "ORDER_COMPLETED, events waiting",
        || async {
            let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
            (s.stage == PaymentStage::OrderCompleted && s.publish_error.is_some()).then_some(s)
        },
    )
    .await;
    assert!(status.unpublished_events > 0, "{status:?}");
    assert!(
        !status.needs_attention,
        "the events follow without an operator"
    );
    assert_eq!(stack.order_status(&order.order_id).await, "ORDER_COMPLETED");
    assert_eq!(stack.pushes(user).await.len(), 1, "the customer was told");
    // The workflow stays open until its events are out.
    let query = format!(
        "WorkflowId = '{}' AND ExecutionStatus = 'Running'",
        payflow_workflows::ids::payment_workflow_id(&order.order_id)
    );
    stack
        .wait_until_listed(&query, 1, "the workflow still running")
        .await;
}

/// A stack started with `options` (events unable to leave) and one order of `user`'s paid on
/// it, checked by [`served_while_events_wait`].
async fn paid_while_events_wait(options: StackOptions, user: &str) -> (Stack, CreatedOrder) {
    let stack = Stack::start_with(options).await;
    let products = stack.products(&[5]).await;
    let order = stack.order(user, &[(&products[0], 2)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    served_while_events_wait(&stack, &order, user).await;
    (stack, order)
}

/// After the outage: the workflow closed, and every record of the path is on its topic once,
/// in order.
async fn events_followed(stack: &Stack, order: &CreatedOrder) {
    assert_eq!(
        stack.outcome(&order.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
    let events = stack.events_of(&order.order_id).await;
    // Two topics: Kafka orders records within a partition, not across topics.
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    types.sort();
    assert_eq!(types, ["payment.completed", "stock.confirmed"]);
    assert_eq!(
        platform_view(stack, &order.order_id).await,
        steps(&SUCCESS_STEPS),
        "every record of {}, once, in order",
        order.order_id
    );
    let status = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .expect("status");
    assert_eq!((status.unpublished_events, status.publish_error), (0, None));
}

/// An operator cancels a payment while the registry is away: the compensation's events wait in
/// the outbox, and the publisher still rests between tries on its durable timer (a pause already
/// running when the cancel arrives ends early). Before patch publish-pause-outlives-cancel-v9
/// no pause after the cancel lasted: the publisher tried again without rest, growing the
/// history toward Temporal's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_operator_cancel_the_publisher_still_rests_between_tries() {
    let mut stack = Stack::start_with(StackOptions {
        registry_down: true,
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-CANCEL-OUT", &[(&products[0], 1)]).await;
    let order_id = &order.order_id;
    // The PG takes its time, so the cancel lands while it decides.
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 2_000 }))
        .await;
    let cancel = async {
        eventually(Duration::from_secs(10), "the payment to start", || async {
            stack.payflow.payments.status(order_id).await.ok()
        })
        .await;
        stack
            .payflow
            .payments
            .cancel(order_id, "operator: customer called")
            .await
            .expect("cancel");
    };
    let (decision, ()) = tokio::join!(stack.pay(&order, PaymentMethod::Card, None), cancel);
    assert_eq!(decision.failure_code.as_deref(), Some("OPERATOR_CANCELLED"));

    // The compensation is done and its events wait: two pauses between tries ran their course.
    eventually(
        Duration::from_secs(60),
        "two pauses after the cancel",
        || async {
            let (fired, _) =
                timer_fates(&stack, order_id, "again", TimersFrom::CancelRequest).await;
            (fired >= 2).then_some(())
        },
    )
    .await;
    assert!(stack.records().await.is_empty(), "nothing went out yet");
    stack.registry.restart().await;
    let outcome = stack.outcome(order_id).await;
    assert_eq!(outcome.stage, PaymentStage::OrderCancelled);
    assert_eq!(
        types_of(&stack.events_of(order_id).await),
        ["order.cancelled", "payment.failed"]
    );
    check_history(&stack, order_id, "cancelled_while_registry_away").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_up_no_customer_and_loses_and_reorders_nothing() {
    // Away before the worker could learn any schema id.
    let mut stack = Stack::start_with(StackOptions {
        registry_down: true,
        metrics: true,
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[10]).await;
    let mut orders = Vec::new();
    for i in 0..4 {
        let user = format!("USR-REG{i}");
        let order = stack.order(&user, &[(&products[0], 1)]).await;
        assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
        orders.push((order, user));
    }
    for (order, user) in &orders {
        served_while_events_wait(&stack, order, user).await;
    }
    assert!(
        stack.records().await.is_empty(),
        "no event goes out unframed"
    );
    // The metrics say so.
    let scrape = format!("http://{}/metrics", stack.metrics_addr.expect("metrics"));
    let text = reqwest::get(&scrape).await.unwrap().text().await.unwrap();
    assert!(metric(&text, "payflow_events_total", "outcome=\"failed\"") > 0.0);
    assert_eq!(
        metric(&text, "payflow_events_total", "outcome=\"published\""),
        0.0
    );
    stack.registry.restart().await;
    for (order, _) in &orders {
        events_followed(&stack, order).await;
    }
}

/// While the registry (or Kafka) stays away, the pause between publish tries goes on growing
/// past 30 s: a try every 30 s would grow a payment's history, in about three days, to the
/// size at which Temporal terminates the run and its unpublished events with it. (About a
/// minute and a half: the pause has to pass 30 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_spaces_the_publish_tries_out_past_30_seconds() {
    let stack = Stack::start_with(StackOptions {
        registry_down: true,
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[2]).await;
    let order = stack.order("USR-LONG", &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    let pauses = eventually(
        Duration::from_secs(150),
        "a pause longer than 30 s",
        || async {
            let pauses = timer_durations(&stack, &order.order_id, "again").await;
            pauses.iter().any(|p| *p > 30).then_some(pauses)
        },
    )
    .await;
    assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 60], "the first batch's pauses");
    check_history(&stack, &order.order_id, "long_publish_outage").await;
    stack.terminate(&order.order_id).await.expect("terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refusing_payflows_schema_flags_the_payment_until_an_operator_lifts_it() {
    let (mut stack, order) = paid_while_events_wait(
        StackOptions {
            registry_down: true,
            ..StackOptions::default()
        },
        "USR-REFUSED",
    )
    .await;

    // The registry comes back holding another schema under the saga tracker's subject, one
    // payflow's cannot join (BACKWARD): no retry can help, a person has to.
    let subject = value_subject(&stack.kafka.topic(EventType::SagaTracker));
    stack
        .registry
        .restart_with(&[(subject.as_str(), "\"string\"")])
        .await;
    let flagged = eventually(Duration::from_secs(60), "NeedsAttention", || async {
        let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
        s.needs_attention.then_some(s)
    })
    .await;
    let reason = flagged.attention_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("publish ") && reason.contains("incompatible"),
        "{reason}"
    );
    assert_eq!(flagged.stage, PaymentStage::OrderCompleted);
    assert!(flagged.unpublished_events > 0, "{flagged:?}");
    assert!(stack.records().await.is_empty(), "nothing went out");
    let flagged_query = format!(
        "NeedsAttention = true AND OrderId = '{}' AND ExecutionStatus = 'Running'",
        order.order_id
    );
    stack
        .wait_until_listed(&flagged_query, 1, "the NeedsAttention search attribute")
        .await;

    // The operator lets the subject take payflow's schema; the next try gets through and the
    // flag comes down without anything sent to the workflow.
    let lifted = reqwest::Client::new()
        .put(format!("{}/config/{subject}", stack.registry.url))
        .json(&serde_json::json!({ "compatibility": "NONE" }))
        .send()
        .await
        .expect("registry");
    assert!(lifted.status().is_success(), "{lifted:?}");
    events_followed(&stack, &order).await;
    let status = stack
        .payflow
        .payments
        .status(&order.order_id)
        .await
        .expect("status");
    assert!(!status.needs_attention, "{status:?}");
    assert!(status.attention_reasons.is_empty(), "{status:?}");
    stack
        .wait_until_listed(
            &format!(
                "NeedsAttention = false AND OrderId = '{}' AND ExecutionStatus = 'Completed'",
                order.order_id
            ),
            1,
            "the flag lowered on the closed workflow",
        )
        .await;
    check_history(&stack, &order.order_id, "publish_refused_then_lifted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_kafka_is_away_orders_complete_and_their_events_follow() {
    let (mut stack, order) = paid_while_events_wait(
        StackOptions {
            kafka_away: true,
            ..StackOptions::default()
        },
        "USR-KAF",
    )
    .await;
    assert!(stack.events_of(&order.order_id).await.is_empty());

    stack.restore_kafka().await;
    events_followed(&stack, &order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_object_encoding_still_works_when_configured() {
    let stack = Stack::start_with(StackOptions {
        encoding: Encoding::SingleObject,
        ..StackOptions::default()
    })
    .await;
    let products = stack.products(&[2]).await;
    let order = stack.order("USR-SOE", &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    assert_eq!(
        stack.outcome(&order.order_id).await.stage,
        PaymentStage::OrderCompleted
    );
    let records: Vec<_> = stack
        .records()
        .await
        .into_iter()
        .filter(|r| r.key == order.order_id)
        .collect();
    assert_eq!(records.len(), 8, "2 events and 6 saga tracker records");
    for record in &records {
        assert_eq!(record.value[..2], avro::SINGLE_OBJECT_MARKER);
        assert_eq!(
            payflow_tests::avro_str(&record.decode()["orderId"]),
            order.order_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_events_a_broker_lost_and_republishes_them_with_their_ids() {
    let stack = Stack::start().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let products = stack.products(&[5]).await;
    let paid = stack.order("USR-AUD1", &[(&products[0], 1)]).await;
    let declined = stack.order("USR-AUD2", &[(&products[0], 1)]).await;
    assert!(stack.pay(&paid, PaymentMethod::Card, None).await.approved);
    let key = payflow_tests::own_key("tpk_decline_EXPIRED_CARD");
    assert!(
        !stack
            .pay(&declined, PaymentMethod::Card, Some(&key))
            .await
            .approved
    );
    for order in [&paid, &declined] {
        stack.outcome(&order.order_id).await;
    }
    let payments = &stack.payflow.payments;

    // Where they were published, everything is there: 2 events and 6 tracker records of the
    // completed payment, 2 and 4 of the declined one.
    let report = eventually(Duration::from_secs(20), "both payments listed", || async {
        let r = audit(payments, &stack.kafka, None, since).await.ok()?;
        (r.payments == 2).then_some(r)
    })
    .await;
    assert_eq!((report.expected, report.found), (14, 14), "{report:?}");
    assert!(report.missing.is_empty());

    // A broker that lost every record (the same payments read against empty topics): all
    // missing; republished with their original ids; then nothing missing.
    let mut lost = stack.kafka.clone();
    lost.topic_prefix = format!("{}lost.", stack.kafka.topic_prefix);
    let report = audit(payments, &lost, None, since).await.unwrap();
    assert_eq!(report.missing.len(), 14, "{report:?}");
    let registry = stack.worker_config.kafka.registry().expect("registry");
    // The topics are there (a broker that lost records, not its topics).
    EventActivities::ensure_topics(&lost, registry.as_ref())
        .await
        .expect("topics");
    let producer = EventActivities::new(lost.clone(), registry).expect("producer");
    let report = audit(payments, &lost, Some(&producer), since)
        .await
        .unwrap();
    assert_eq!(report.republished, 14);
    let again = audit(payments, &lost, None, since).await.unwrap();
    assert!(again.missing.is_empty(), "{again:?}");
    // The republished records are the published events, id for id.
    let original: Vec<String> = payments
        .events(&paid.order_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let stored =
        payflow_activities::events::reader::read_event_topics(&lost, None, Duration::from_secs(30))
            .await
            .unwrap();
    let mut republished: Vec<String> = stored
        .iter()
        .filter(|r| r.key == paid.order_id)
        .map(|r| r.headers["eventId"].clone())
        .collect();
    let mut expected = original.clone();
    republished.sort();
    expected.sort();
    assert_eq!(republished, expected);
}

/// A stack whose registry is away, and an order of `user`'s paid on it: completed, its events
/// waiting for the registry (two events, six tracker records), then terminated by an operator.
/// Answers the moment to audit from.
async fn terminated_with_its_events_waiting(
    user: &str,
) -> (Stack, CreatedOrder, chrono::DateTime<chrono::Utc>) {
    let stack = Stack::start_with(StackOptions {
        registry_down: true,
        ..StackOptions::default()
    })
    .await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let products = stack.products(&[5]).await;
    let order = stack.order(user, &[(&products[0], 1)]).await;
    assert!(stack.pay(&order, PaymentMethod::Card, None).await.approved);
    eventually(Duration::from_secs(30), "the order to complete", || async {
        let s = stack.payflow.payments.status(&order.order_id).await.ok()?;
        (s.stage == PaymentStage::OrderCompleted && s.unpublished_events == 8).then_some(())
    })
    .await;
    stack.terminate(&order.order_id).await.expect("terminate");
    (stack, order, since)
}

/// A payment an operator terminated while the registry was away ends with its events never
/// handed to Kafka; a workflow that cannot answer (it never got past its first task) is reported
/// without stopping the audit. The audit lists the first payment's events as missing,
/// republishes them with their ids once the registry is back, and finds them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_republishes_what_a_terminated_payment_never_published_and_reports_what_it_cannot_read()
 {
    let (mut stack, order, since) = terminated_with_its_events_waiting("USR-TERM").await;
    let order_id = &order.order_id;
    let payments = &stack.payflow.payments;
    // A payment workflow whose input does not decode: its first task never completes, so no
    // worker can answer a query about it (terminated before or after a worker tried).
    let broken = format!("{order_id}-BROKEN");
    let started = std::process::Command::new("temporal")
        .args([
            "workflow",
            "start",
            "--address",
            &payflow_tests::temporal_address(),
        ])
        .args([
            "--type",
            "PaymentWorkflow",
            "--task-queue",
            &payments.queues().workflow,
        ])
        .args([
            "--workflow-id",
            &payflow_workflows::payment_workflow_id(&broken),
        ])
        .args(["--input", "\"not a payment request\""])
        .output()
        .expect("run the temporal CLI");
    assert!(started.status.success(), "{started:?}");
    // Whether a worker failed its first task already or not, it is still running.
    stack.terminate(&broken).await.expect("terminate");

    let report = eventually(Duration::from_secs(20), "both payments listed", || async {
        let r = audit(payments, &stack.kafka, None, since).await.ok()?;
        (r.payments == 2).then_some(r)
    })
    .await;
    assert_eq!(
        (report.expected, report.unpublished, report.found),
        (8, 8, 0),
        "{report:?}"
    );
    assert_eq!(report.missing.len(), 8, "{report:?}");
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].0, broken, "{report:?}");

    stack.registry.restart().await;
    let report = audit(payments, &stack.kafka, Some(&stack.producer()), since)
        .await
        .unwrap();
    assert_eq!(report.republished, 8, "{report:?}");
    let again = audit(payments, &stack.kafka, None, since).await.unwrap();
    assert_eq!((again.found, again.missing.len()), (8, 0), "{again:?}");
    // On their topics, in order, decoded by Confluent's reader.
    assert_eq!(platform_view(&stack, order_id).await, steps(&SUCCESS_STEPS));
    assert_eq!(
        types_of(&stack.events_of(order_id).await),
        ["payment.completed", "stock.confirmed"]
    );
}

/// An operator resets a payment that was terminated with its events unpublished: the new run
/// takes over the order and publishes its own events. What the replaced run never published is
/// not owed any more (republishing it could announce a path the new run did not take), and the
/// two runs' shared events are listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_owes_nothing_for_a_run_a_reset_replaced() {
    let (mut stack, order, since) = terminated_with_its_events_waiting("USR-RESET").await;
    let order_id = &order.order_id;
    let payments = &stack.payflow.payments;
    let reset = std::process::Command::new("temporal")
        .args([
            "workflow",
            "reset",
            "--address",
            &payflow_tests::temporal_address(),
        ])
        .args([
            "--workflow-id",
            &payflow_workflows::payment_workflow_id(order_id),
        ])
        .args(["--type", "LastWorkflowTask", "--reason", "test: reset"])
        .output()
        .expect("run the temporal CLI");
    assert!(reset.status.success(), "{reset:?}");

    // The terminated run is the only one that ended; the new one waits for the registry.
    let report = eventually(
        Duration::from_secs(20),
        "the replaced run listed",
        || async {
            let r = audit(payments, &stack.kafka, None, since).await.ok()?;
            (r.payments == 1).then_some(r)
        },
    )
    .await;
    assert_eq!(
        (report.expected, report.unpublished, report.missing.len()),
        (0, 0, 0),
        "{report:?}"
    );

    // The new run publishes once the registry is back, and ends.
    stack.registry.restart().await;
    stack.outcome(order_id).await;
    let report = eventually(Duration::from_secs(20), "both runs listed", || async {
        let r = audit(payments, &stack.kafka, None, since).await.ok()?;
        (r.payments == 2).then_some(r)
    })
    .await;
    assert_eq!(
        (report.expected, report.found, report.missing.len()),
        (8, 8, 0),
        "{report:?}"
    );
    assert_eq!(platform_view(&stack, order_id).await, steps(&SUCCESS_STEPS));
}

/// A payment still running (here: cancelled after the PG took too long, waiting to look for a
/// late charge; a refund waiting for an operator can wait for days) has published its events:
/// the audit checks those too, so a broker that lost them is caught before the payment ends,
/// and republishes them with their ids. What a running payment has not published yet is its
/// own to publish, not owed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_checks_what_a_running_payment_published() {
    let stack = Stack::start_with_timings(payflow_workflows::types::SagaTimings {
        late_charge_secs: 600,
        ..payflow_tests::fast_timings()
    })
    .await;
    let since = chrono::Utc::now();
    let products = stack.products(&[5]).await;
    let order = stack.order("USR-AUDIT-RUN", &[(&products[0], 1)]).await;
    let order_id = &order.order_id;
    // Longer than the PG step: PG_TIMEOUT, voided, cancelled; then the workflow waits.
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 5000 }))
        .await;
    let decision = stack.pay(&order, PaymentMethod::Card, None).await;
    stack
        .configure_sandbox(serde_json::json!({ "latencyMs": 0 }))
        .await;
    assert_eq!(decision.failure_code.as_deref(), Some("PG_TIMEOUT"));
    let payments = &stack.payflow.payments;
    eventually(
        Duration::from_secs(30),
        "the cancellation's events out",
        || async {
            let s = payments.status(order_id).await.ok()?;
            (s.stage == PaymentStage::OrderCancelled && s.unpublished_events == 0).then_some(())
        },
    )
    .await;

    let report = audit(payments, &stack.kafka, None, since).await.unwrap();
    assert_eq!((report.payments, report.running), (0, 1), "{report:?}");
    // Two events and five tracker records (the void's path).
    assert_eq!((report.expected, report.found), (7, 7), "{report:?}");

    // The same payment read against topics that lost everything: all seven missing, and
    // published again with their ids.
    let mut lost = stack.kafka.clone();
    lost.topic_prefix = format!("{}lost.", stack.kafka.topic_prefix);
    let registry = stack.worker_config.kafka.registry().expect("registry");
    EventActivities::ensure_topics(&lost, registry.as_ref())
        .await
        .expect("topics");
    let producer = EventActivities::new(lost.clone(), registry).expect("producer");
    let report = audit(payments, &lost, Some(&producer), since)
        .await
        .unwrap();
    assert_eq!(
        (report.missing.len(), report.republished),
        (7, 7),
        "{report:?}"
    );
    let again = audit(payments, &lost, None, since).await.unwrap();
    assert_eq!((again.found, again.missing.len()), (7, 0), "{again:?}");
    assert_eq!(
        payments.status(order_id).await.unwrap().stage,
        PaymentStage::OrderCancelled,
        "still running, its order cancelled"
    );
}
