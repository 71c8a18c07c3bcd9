//! Is the broker taking records? One acknowledged record on a topic of its own, within a
//! deadline: what the dev stack's broker guard asks every few seconds (a broker can keep its
//! port open and still refuse every produce; seen with Tansu after a crash).

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    producer::{FutureProducer, FutureRecord},
};
use std::time::Duration;

/// The topic the probe writes to (one partition, records kept an hour).
pub const PROBE_TOPIC: &str = "payflow.broker-check";

/// Produces one record (acks=all) to [`PROBE_TOPIC`], creating it if needed; answers its
/// offset. Fails when the broker does not acknowledge it within `deadline`.
pub async fn probe(bootstrap_servers: &str, deadline: Duration) -> anyhow::Result<i64> {
    let millis = deadline.as_millis().max(1).to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("socket.timeout.ms", &millis)
        .create()?;
    let topic =
        NewTopic::new(PROBE_TOPIC, 1, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    let options = AdminOptions::new()
        .operation_timeout(Some(deadline))
        .request_timeout(Some(deadline));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("acks", "all")
        .set("message.timeout.ms", &millis)
        .set("client.id", "payflow-broker-check")
        .create()?;
    let at = chrono::Utc::now().to_rfc3339();
    let delivered = producer
        .send(
            FutureRecord::<str, str>::to(PROBE_TOPIC)
                .key("probe")
                .payload(&at),
            deadline,
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("the broker did not take the probe record: {e}"))?;
    Ok(delivered.offset)
}
