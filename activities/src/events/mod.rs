//! Events (Kafka): `EventActivities` publishes the workflow's domain events and saga tracker
//! records the way the platform's services read them (`../shared/contract/PLATFORM.md`).
//!
//! - **Framing**: the Confluent wire format by default (`0x00`, the schema's 4-byte registry
//!   id, the Avro binary datum), the id found under `<topic>-value` in the schema registry and
//!   cached ([`registry`]); Avro single-object encoding ([`avro`]) as an option.
//! - **Topics**: each schema's `kafka_topic` (`c4ang.payment.completed`, ...), with an optional
//!   prefix (tests) and per-event-type overrides.
//! - **Partitioning**: keyed by order id with murmur2, as Java producers do
//!   (`partitioner=murmur2_random`), so one order's records share a partition with the
//!   platform's own.
//! - **Delivery**: an idempotent producer with `acks=all`: a broker retry never duplicates a
//!   record. A retried *activity* may publish the same event twice; it carries the same
//!   `eventId`, which is what consumers deduplicate on.

pub mod avro;
pub mod probe;
pub mod reader;
pub mod registry;

use crate::failure::{non_retryable, retryable, retryable_refusal};
use crate::span::activity_span;
use payflow_workflows::{
    activities::markers,
    errors,
    types::{DomainEvent, EventType, PublishedEvent},
};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use registry::{RegistryError, SchemaRegistry, value_subject};
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

/// How long librdkafka tries to deliver a record before it answers that it could not.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(3);

/// How event values are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `0x00` + registry id + datum: what Confluent's `KafkaAvroDeserializer` reads.
    #[default]
    Confluent,
    /// `C3 01` + fingerprint + datum (Avro single-object encoding), no registry.
    SingleObject,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "confluent" => Ok(Self::Confluent),
            "single-object" => Ok(Self::SingleObject),
            other => Err(format!(
                "unknown event encoding {other:?} (confluent or single-object)"
            )),
        }
    }
}

/// Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub bootstrap_servers: String,
    /// Prepended to every topic name (empty in production; tests use their own).
    pub topic_prefix: String,
    /// Topics replacing the contract's for some event types (before the prefix).
    pub topics: BTreeMap<EventType, String>,
    /// Partitions of topics created by payflow.
    pub partitions: i32,
    /// Replication factor of topics created by payflow.
    pub replication: i32,
    /// How values are framed.
    pub encoding: Encoding,
}

impl KafkaConfig {
    /// The topic an event type is published to.
    pub fn topic(&self, ty: EventType) -> String {
        let name = self
            .topics
            .get(&ty)
            .map(String::as_str)
            .unwrap_or_else(|| avro::kafka_topic(ty));
        format!("{}{name}", self.topic_prefix)
    }

    /// Every event type with its topic.
    pub fn topic_names(&self) -> Vec<(EventType, String)> {
        EventType::ALL
            .iter()
            .map(|t| (*t, self.topic(*t)))
            .collect()
    }

    /// An admin client of the brokers.
    fn admin(&self) -> rdkafka::error::KafkaResult<AdminClient<DefaultClientContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap_servers)
            .create()
    }

    /// The platform's settings of an event type's topic (PLATFORM.md): 30 days for payments
    /// and the saga tracker, 7 days for the others, snappy for `payment.completed`.
    pub fn topic_settings(ty: EventType) -> Vec<(&'static str, &'static str)> {
        const DAYS_30: &str = "2592000000";
        const DAYS_7: &str = "604800000";
        match ty {
            EventType::PaymentCompleted => {
                vec![("retention.ms", DAYS_30), ("compression.type", "snappy")]
            }
            EventType::PaymentFailed | EventType::PaymentCancelled | EventType::SagaTracker => {
                vec![("retention.ms", DAYS_30)]
            }
            EventType::StockConfirmed
            | EventType::StockConfirmationFailed
            | EventType::OrderCancelled => vec![("retention.ms", DAYS_7)],
        }
    }
}

/// Publishes domain events. Built once per worker; clones share the producer, the schemas
/// and the registry's id cache.
#[derive(Clone)]
pub struct EventActivities {
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    schemas: Arc<avro::Schemas>,
    registry: Option<Arc<SchemaRegistry>>,
    config: KafkaConfig,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for EventActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventActivities")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A programming error: the event does not fit its schema.
    #[error(transparent)]
    Encoding(#[from] avro::EncodeError),
    /// The registry failed (transient or not, see [`RegistryError::is_transient`]).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Kafka did not take the record: transient, unless [`PublishError::needs_a_person`].
    #[error("publish to {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl PublishError {
    /// Whether only a person can lift it: an event that does not fit its schema, a registry
    /// that refuses payflow, or brokers that refuse payflow's records for want of permission
    /// (to write the topic, or to produce at all: the producer's fatal error, after which a
    /// new producer is built and refused again). The events still wait and are tried again,
    /// but the workflow raises its attention flag while this lasts, where an outage only
    /// waits. (Refused credentials are left out: librdkafka reports them as a failed
    /// connection, and the records time out as in an outage. So are size errors: they come
    /// for a whole batch, other payments' records included.)
    pub fn needs_a_person(&self) -> bool {
        match self {
            PublishError::Encoding(_) => true,
            PublishError::Registry(e) => !e.is_transient(),
            PublishError::Kafka { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                )
            ),
        }
    }

    /// The activity failure: retryable unless a person must act. Brokers that refuse payflow
    /// stay retryable (type [`errors::KAFKA_REFUSED`]): the outbox raises its flag on the
    /// type, and the workflows from before the outbox, which publish inline and drop what a
    /// non-retryable failure ends, keep retrying as they always have.
    pub fn into_activity_error(self) -> ActivityError {
        let err = self;
        match &err {
            _ if !err.needs_a_person() => retryable("publish", err),
            PublishError::Encoding(_) => non_retryable("EventEncoding", err.to_string()),
            PublishError::Registry(_) => non_retryable("SchemaRegistry", err.to_string()),
            PublishError::Kafka { .. } => retryable_refusal(errors::KAFKA_REFUSED, err.to_string()),
        }
    }
}

/// A send failed by a producer that librdkafka declared failed for good (its records come
/// back `Fatal` or purged from the queue), answered with the fatal error's own code: a cluster
/// that refused payflow's producer is a refusal, a broker that lost acknowledged records is
/// not.
fn fatal_cause(
    producer: &FutureProducer,
    e: rdkafka::error::KafkaError,
) -> rdkafka::error::KafkaError {
    match producer.client().fatal_error() {
        Some((code, _)) => rdkafka::error::KafkaError::MessageProduction(code),
        None => e,
    }
}

impl EventActivities {
    /// Counts what is published on these metrics.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Connects an idempotent producer. Librdkafka connects lazily; nothing blocks here.
    /// `registry` is required for the Confluent encoding.
    pub fn new(config: KafkaConfig, registry: Option<SchemaRegistry>) -> anyhow::Result<Self> {
        if config.encoding == Encoding::Confluent && registry.is_none() {
            anyhow::bail!("the Confluent event encoding needs a schema registry URL");
        }
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(Self::connect(&config)?)),
            schemas: Arc::new(avro::Schemas::load()),
            registry: registry.map(Arc::new),
            config,
            metrics: Default::default(),
        })
    }

    fn connect(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Java's default partitioner for keyed records: murmur2 of the key.
            .set("partitioner", "murmur2_random")
            // Send at once: a payment waits on its events, and batching buys nothing at
            // this volume.
            .set("linger.ms", "0")
            // A record's fate is known before a publish try gives up (the outbox's try has
            // 4 s): a record the try no longer waits for must not go on being sent behind
            // the next try's copy of it.
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .set("client.id", "payflow")
            .create()?)
    }

    /// The producer, built anew if librdkafka has declared the current one unusable. An
    /// idempotent producer's fatal error (a broker that lost records it had acknowledged, say)
    /// fails every later send; without a new producer, the events of every payment would wait
    /// in their outboxes until someone restarted the worker.
    fn producer(&self) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        let current = self
            .producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((code, reason)) = current.client().fatal_error() else {
            return Ok(current);
        };
        let (fresh, old) = {
            let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
            if slot.client().fatal_error().is_none() {
                // Another task built it anew meanwhile.
                return Ok(slot.clone());
            }
            tracing::warn!(%code, reason, "the Kafka producer failed for good; building a new one");
            let fresh = Self::connect(&self.config)
                .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
            self.metrics.producer_rebuilt();
            (fresh.clone(), std::mem::replace(&mut *slot, fresh))
        };
        // Destroying a librdkafka client blocks (it joins its threads): not under the lock, and
        // not on the runtime's threads.
        drop(current);
        tokio::task::spawn_blocking(move || drop(old));
        Ok(fresh)
    }

    /// Connects to the brokers and learns the schema ids of every topic, so the first
    /// payment does not pay for it. Failures are only logged: publishing retries on its own.
    pub async fn warm_up(&self) {
        match self.brokers(Duration::from_secs(5)).await {
            Ok(brokers) => tracing::info!(brokers, "Kafka producer connected"),
            Err(e) => tracing::warn!(error = %e, "Kafka not reachable yet; publishing will retry"),
        }
        if let Some(registry) = &self.registry {
            for ty in EventType::ALL {
                let subject = value_subject(&self.config.topic(ty));
                if let Err(e) = registry.id(&subject, avro::schema_text(ty)).await {
                    tracing::warn!(subject, error = %e, "schema id not known yet; publishing will retry");
                }
            }
        }
    }

    /// Whether the schema registry answers payflow as it will be asked: a look-up of its first
    /// event type's schema under that type's subject ([`SchemaRegistry::answers_for`]);
    /// `None` without a registry.
    pub async fn registry_answers(&self) -> Option<Result<(), registry::RegistryError>> {
        let registry = self.registry.as_ref()?;
        let ty = EventType::ALL[0];
        let subject = value_subject(&self.config.topic(ty));
        Some(registry.answers_for(&subject, avro::schema_text(ty)).await)
    }

    /// How many brokers answer the producer's metadata request within `timeout` (what the
    /// worker's `/readyz` reports after start).
    pub async fn brokers(&self, timeout: Duration) -> Result<usize, String> {
        let producer = self.producer().map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The value bytes of an event in the configured framing.
    pub async fn encode(&self, event: &DomainEvent) -> Result<Vec<u8>, PublishError> {
        let ty = event.event_type();
        match (&self.registry, self.config.encoding) {
            (Some(registry), Encoding::Confluent) => {
                let subject = value_subject(&self.config.topic(ty));
                let id = registry.id(&subject, avro::schema_text(ty)).await?;
                Ok(self.schemas.encode_confluent(event, id)?)
            }
            _ => Ok(self.schemas.encode(event)?),
        }
    }

    /// Encodes and publishes one event; answers where it landed.
    pub async fn publish_event(
        &self,
        event: &DomainEvent,
    ) -> Result<PublishedEvent, ActivityError> {
        self.publish_events(std::slice::from_ref(event))
            .await
            .map(|mut published| published.remove(0))
            .map_err(PublishError::into_activity_error)
    }

    /// Encodes every event, sends them all in order, then waits for every delivery: one
    /// broker round trip for the batch. Records of one order share a partition, and the
    /// idempotent producer keeps their order.
    pub async fn publish_events(
        &self,
        events: &[DomainEvent],
    ) -> Result<Vec<PublishedEvent>, PublishError> {
        let mut encoded = Vec::with_capacity(events.len());
        for event in events {
            encoded.push((
                self.config.topic(event.event_type()),
                self.encode(event).await?,
            ));
        }
        let producer = self.producer().map_err(|source| PublishError::Kafka {
            topic: encoded.first().map(|(t, _)| t.clone()).unwrap_or_default(),
            source,
        })?;
        let deliveries: Vec<_> = events
            .iter()
            .zip(&encoded)
            .map(|(event, (topic, payload))| {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "eventId",
                        value: Some(event.event_id.as_str()),
                    })
                    .insert(Header {
                        key: "eventType",
                        value: Some(event.event_type().name()),
                    });
                let record = FutureRecord::to(topic)
                    .key(event.order_id.as_str())
                    .payload(payload)
                    .headers(headers);
                // No wait for room in the queue: the delivery timeout is the whole budget.
                producer.send(record, Duration::ZERO)
            })
            .collect();
        let mut published = Vec::with_capacity(events.len());
        for ((delivery, event), (topic, _)) in futures::future::join_all(deliveries)
            .await
            .into_iter()
            .zip(events)
            .zip(&encoded)
        {
            let delivery = delivery.map_err(|(source, _)| PublishError::Kafka {
                topic: topic.clone(),
                source: fatal_cause(&producer, source),
            })?;
            tracing::info!(
                order_id = %event.order_id,
                event_id = %event.event_id,
                topic = %topic,
                partition = delivery.partition,
                offset = delivery.offset,
                "event published"
            );
            published.push(PublishedEvent {
                topic: topic.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
            });
        }
        Ok(published)
    }

    /// Each event type's topic's `retention.ms`, as the brokers have it (those they answer for).
    pub async fn topic_retention(kafka: &KafkaConfig) -> std::collections::HashMap<EventType, i64> {
        use rdkafka::admin::ResourceSpecifier;
        use std::collections::HashMap;
        let Ok(admin) = kafka.admin() else {
            return HashMap::new();
        };
        let names = kafka.topic_names();
        let resources: Vec<ResourceSpecifier<'_>> = names
            .iter()
            .map(|(_, name)| ResourceSpecifier::Topic(name))
            .collect();
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let Ok(described) = admin.describe_configs(&resources, &options).await else {
            return HashMap::new();
        };
        names
            .iter()
            .zip(described)
            .filter_map(|((ty, _), resource)| {
                let ms = resource
                    .ok()?
                    .get("retention.ms")?
                    .value
                    .clone()?
                    .parse()
                    .ok()?;
                Some((*ty, ms))
            })
            .collect()
    }

    /// Creates those of payflow's topics that are missing, with the platform's settings, and
    /// registers every schema under its topic's subject (idempotent: `payflow admin setup`).
    pub async fn ensure_topics(
        config: &KafkaConfig,
        registry: Option<&SchemaRegistry>,
    ) -> anyhow::Result<()> {
        let admin = config.admin()?;
        let names = config.topic_names();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|(ty, name)| {
                KafkaConfig::topic_settings(*ty).into_iter().fold(
                    NewTopic::new(
                        name,
                        config.partitions,
                        TopicReplication::Fixed(config.replication),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        // Only the missing ones: where the platform created the topics and payflow may not
        // create any (no CREATE permission), a request for all of them would be refused for
        // ever, though there is nothing to create.
        let admin = Arc::new(admin);
        let existing: std::collections::HashSet<String> = {
            let admin = admin.clone();
            tokio::task::spawn_blocking(move || {
                admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(10))
                    .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
            })
            .await??
        };
        let missing: Vec<&NewTopic<'_>> = topics
            .iter()
            .filter(|t| !existing.contains(t.name))
            .collect();
        if !missing.is_empty() {
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            let names: Vec<&str> = missing.iter().map(|t| t.name).collect();
            let results = admin
                .create_topics(missing, &options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create topics {}: {e}", names.join(", ")))?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
                }
            }
        }
        if let Some(registry) = registry {
            for (ty, name) in &names {
                let subject = value_subject(name);
                let id = registry.register(&subject, avro::schema_text(*ty)).await?;
                tracing::info!(subject, id, "schema registered");
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
        ctx: ActivityContext,
        event: DomainEvent,
    ) -> Result<PublishedEvent, ActivityError> {
        self.publish_event(&event)
            .instrument(activity_span(&ctx, &event.order_id))
            .await
    }

    /// See [`payflow_workflows::activities::EventActivities::publish_all`].
    #[activity(definition = markers::PublishEvents)]
    pub async fn publish_all(
        self: Arc<Self>,
        ctx: ActivityContext,
        events: Vec<DomainEvent>,
    ) -> Result<Vec<PublishedEvent>, ActivityError> {
        let published = self
            .publish_events(&events)
            .instrument(activity_span(
                &ctx,
                events.first().map_or("", |e| e.order_id.as_str()),
            ))
            .await;
        let outcome = if published.is_ok() {
            "published"
        } else {
            "failed"
        };
        self.metrics.events(outcome, events.len());
        published.map_err(PublishError::into_activity_error)
    }
}
