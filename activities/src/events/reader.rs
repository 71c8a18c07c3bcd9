//! Reading topics back: what the reconciliation (`payflow events audit`) and the tests use to
//! see what a broker actually holds.

use super::KafkaConfig;
use payflow_workflows::types::EventType;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

/// One record as the broker holds it.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The key (the order id).
    pub key: String,
    /// Headers (`eventId`, `eventType`).
    pub headers: BTreeMap<String, String>,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// Every record of `topics` from `since_ms` (epoch milliseconds; `None`: from the beginning) to
/// the end as it was when the read began. Blocking: run it on a blocking thread.
pub fn read_topics(
    bootstrap: &str,
    topics: &[String],
    since_ms: Option<i64>,
    limit: Duration,
) -> anyhow::Result<Vec<StoredRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("payflow-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut starts = TopicPartitionList::new();
    let mut targets: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                if high > low {
                    let start = match since_ms {
                        Some(ms) => Offset::Offset(ms),
                        None => Offset::Offset(low),
                    };
                    starts.add_partition_offset(topic, p.id(), start)?;
                    targets.insert((topic.clone(), p.id()), high);
                }
            }
        }
    }
    let mut out = Vec::new();
    if targets.is_empty() {
        return Ok(out);
    }
    // Timestamps become offsets (the first record at or after them).
    let assignment = if since_ms.is_some() {
        consumer.offsets_for_times(starts, timeout)?
    } else {
        starts
    };
    // A partition with nothing since then has nothing to wait for.
    for element in assignment.elements() {
        if element.offset() == Offset::End {
            targets.remove(&(element.topic().to_owned(), element.partition()));
        }
    }
    if targets.is_empty() {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + limit;
    while !targets.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "Kafka did not deliver the records in time"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message?;
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            use rdkafka::message::Headers;
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let slot = (m.topic().to_owned(), m.partition());
        out.push(StoredRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            headers,
            value: m.payload().unwrap_or_default().to_vec(),
        });
        if targets
            .get(&slot)
            .is_some_and(|high| m.offset() + 1 >= *high)
        {
            targets.remove(&slot);
        }
    }
    Ok(out)
}

/// Every record on the topics of every event type of `kafka`, from `since_ms` (`None`: from the
/// beginning), read on a blocking thread.
pub async fn read_event_topics(
    kafka: &KafkaConfig,
    since_ms: Option<i64>,
    limit: Duration,
) -> anyhow::Result<Vec<StoredRecord>> {
    let topics: Vec<String> = EventType::ALL.iter().map(|t| kafka.topic(*t)).collect();
    let bootstrap = kafka.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || read_topics(&bootstrap, &topics, since_ms, limit)).await?
}
