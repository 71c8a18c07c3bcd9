//! Events (Kafka): `EventActivities` publishes the workflow's domain events.
//!
//! Records are keyed by order id (so one order's events stay in order on a partition), carry
//! `eventId` and `eventType` headers, and hold the Avro single-object encoding of the contract
//! schema. The producer is idempotent with `acks=all`: a broker retry never duplicates a record.
//! A retried *activity* may publish the same event twice; it carries the same `eventId`, which
//! is what consumers deduplicate on.

pub mod avro;

use crate::failure::{non_retryable, retryable};
use payflow_workflows::{
    activities::markers,
    types::{DomainEvent, EventType, PublishedEvent},
};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use std::{sync::Arc, time::Duration};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub bootstrap_servers: String,
    /// Prepended to every topic name (e.g. `c4ang.` for the contract's `kafka_topic` names).
    pub topic_prefix: String,
    /// Partitions of topics created by payflow.
    pub partitions: i32,
    /// Replication factor of topics created by payflow.
    pub replication: i32,
}

impl KafkaConfig {
    /// The topic an event type is published to.
    pub fn topic(&self, ty: EventType) -> String {
        format!("{}{}", self.topic_prefix, ty.name())
    }
}

/// Publishes domain events. Built once per worker; the producer is shared.
pub struct EventActivities {
    producer: FutureProducer,
    schemas: avro::Schemas,
    config: KafkaConfig,
}

impl std::fmt::Debug for EventActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventActivities")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EventActivities {
    /// Connects an idempotent producer. Librdkafka connects lazily; nothing blocks here.
    pub fn new(config: KafkaConfig) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Send at once: a payment waits on its events, and batching buys nothing at
            // this volume.
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .set("client.id", "payflow")
            .create()?;
        Ok(Self {
            producer,
            schemas: avro::Schemas::load(),
            config,
        })
    }

    /// Encodes and publishes one event; answers where it landed.
    pub async fn publish_event(
        &self,
        event: &DomainEvent,
    ) -> Result<PublishedEvent, ActivityError> {
        let ty = event.event_type();
        let payload = self
            .schemas
            .encode(event)
            .map_err(|e| non_retryable("EventEncoding", e.to_string()))?;
        let topic = self.config.topic(ty);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "eventId",
                value: Some(event.event_id.as_str()),
            })
            .insert(Header {
                key: "eventType",
                value: Some(ty.name()),
            })
            .insert(Header {
                key: "contentType",
                value: Some("application/avro"),
            });
        let record = FutureRecord::to(&topic)
            .key(event.order_id.as_str())
            .payload(&payload)
            .headers(headers);
        match self.producer.send(record, Duration::from_secs(5)).await {
            Ok(delivery) => {
                tracing::info!(
                    order_id = %event.order_id,
                    event_id = %event.event_id,
                    topic = %topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "event published"
                );
                Ok(PublishedEvent {
                    topic,
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((err, _)) => Err(retryable(&format!("publish to {topic}"), err)),
        }
    }

    /// Creates payflow's topics if they are missing (idempotent).
    pub async fn ensure_topics(config: &KafkaConfig) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .create()?;
        let names: Vec<String> = EventType::ALL.iter().map(|t| config.topic(*t)).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    config.partitions,
                    TopicReplication::Fixed(config.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(topics.iter(), &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

#[activities]
impl EventActivities {
    /// See [`payflow_workflows::activities::EventActivities::publish`].
    #[activity(definition = markers::PublishEvent)]
    pub async fn publish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        event: DomainEvent,
    ) -> Result<PublishedEvent, ActivityError> {
        self.publish_event(&event).await
    }
}
