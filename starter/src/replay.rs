//! Replaying workflow histories against the current workflow code, to catch non-determinism
//! before a deploy.
//!
//! Accepted inputs:
//! - JSON as the Temporal Web UI downloads it or `temporal workflow show -o json` writes it
//!   (proto3 JSON: camelCase, `EVENT_TYPE_*` enums, int64 as strings). The SDK's own
//!   `WorkflowHistory::from_json` reads a different (serde) shape, so this module parses proto3
//!   JSON against the Temporal API's descriptors;
//! - the SDK's serde JSON;
//! - binary protobuf `History`;
//! - histories fetched from the server by workflow id or visibility query.

use anyhow::Context;
use futures::StreamExt;
use payflow_workflows::PaymentWorkflow;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
use serde_json::Value;
use std::sync::LazyLock;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowHistory, WorkflowListOptions,
};
use temporalio_common::{
    data_converters::DataConverter, protos::temporal::api::history::v1::History,
};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/temporal_descriptors.bin"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTORS).expect("the Temporal API descriptors are valid")
});

/// The Temporal API's protobuf descriptors (to read or walk histories generically).
pub fn descriptor_pool() -> &'static DescriptorPool {
    &POOL
}

/// A history to replay, with a name for the report (file name or workflow id).
#[derive(Debug, Clone)]
pub struct NamedHistory {
    /// File name or workflow id.
    pub name: String,
    /// The events.
    pub history: History,
}

/// Reads a history file in any accepted format.
pub fn parse_history(bytes: &[u8]) -> anyhow::Result<History> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.first().is_some_and(|b| *b == b'{' || *b == b'[') {
        let mut json: Value = serde_json::from_slice(trimmed).context("not valid JSON")?;
        if json.is_array() {
            json = serde_json::json!({ "events": json });
        }
        match from_proto_json(&json) {
            Ok(history) => Ok(history),
            Err(proto_err) => {
                // The SDK's own serde shape (e.g. `WorkflowHistory::to_json`).
                serde_json::from_value::<History>(json).map_err(|serde_err| {
                    anyhow::anyhow!(
                        "neither proto3 JSON ({proto_err}) nor the SDK's JSON ({serde_err})"
                    )
                })
            }
        }
    } else {
        History::decode(bytes).context("not JSON and not a binary protobuf History")
    }
}

fn from_proto_json(json: &Value) -> anyhow::Result<History> {
    let mut json = json.clone();
    normalize_event_types(&mut json);
    let descriptor = POOL
        .get_message_by_name("temporal.api.history.v1.History")
        .context("History descriptor missing")?;
    let message = DynamicMessage::deserialize_with_options(
        descriptor,
        json,
        // Histories from a newer server may carry fields this SDK does not know; they do not
        // matter for replay.
        &DeserializeOptions::new().deny_unknown_fields(false),
    )?;
    let history: History = message.transcode_to()?;
    anyhow::ensure!(!history.events.is_empty(), "the history has no events");
    Ok(history)
}

/// Older Web UI downloads name event types `WorkflowExecutionStarted` rather than
/// `EVENT_TYPE_WORKFLOW_EXECUTION_STARTED`.
fn normalize_event_types(json: &mut Value) {
    let Some(events) = json.get_mut("events").and_then(Value::as_array_mut) else {
        return;
    };
    for event in events {
        if let Some(Value::String(t)) = event.get_mut("eventType")
            && !t.starts_with("EVENT_TYPE_")
        {
            let mut screaming = String::from("EVENT_TYPE");
            for (i, c) in t.chars().enumerate() {
                if c.is_uppercase() || i == 0 {
                    screaming.push('_');
                }
                screaming.push(c.to_ascii_uppercase());
            }
            *t = screaming;
        }
    }
}

/// The outcome of replaying one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The current code makes the same decisions.
    Replayed,
    /// The current code diverges: deploying it would break running workflows like this one.
    Nondeterministic(String),
    /// The history could not be replayed for another reason (workflow panic, codec, ...).
    Failed(String),
}

/// One line of a replay report.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    /// File name or workflow id.
    pub name: String,
    /// What happened.
    pub verdict: Verdict,
}

/// Replays histories against the current `PaymentWorkflow`, with the data converter that
/// decodes them (the production codec, when payloads are encrypted).
pub async fn replay(
    histories: Vec<NamedHistory>,
    data_converter: DataConverter,
) -> anyhow::Result<Vec<ReplayResult>> {
    replay_as::<PaymentWorkflow>(histories, data_converter).await
}

/// Replays histories against the workflow implementation `W` (tests use it to show that a
/// changed workflow diverges).
pub async fn replay_as<W>(
    histories: Vec<NamedHistory>,
    data_converter: DataConverter,
) -> anyhow::Result<Vec<ReplayResult>>
where
    W: temporalio_sdk::workflows::WorkflowImplementation,
    <W::Run as temporalio_common::WorkflowDefinition>::Input: Send,
{
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<W>()?
            .data_converter(data_converter)
            .build(),
    )?;
    let names: Vec<String> = histories.iter().map(|h| h.name.clone()).collect();
    let results = replayer
        .replay_workflows(
            histories
                .into_iter()
                .map(|h| WorkflowHistory::from(h.history)),
        )
        .await?;
    Ok(names
        .into_iter()
        .zip(results)
        .map(|(name, r)| ReplayResult {
            name,
            verdict: match r.replay_failure {
                None => Verdict::Replayed,
                Some(WorkflowReplayFailure::Nondeterminism { message }) => {
                    Verdict::Nondeterministic(message)
                }
                Some(other) => Verdict::Failed(other.to_string()),
            },
        })
        .collect())
}

/// The ids of the keys that encrypted payloads in a history (empty when nothing is encrypted).
///
/// Payload metadata is a protobuf `map<string, bytes>`, so in the encoded history each key id
/// follows its map key as field 2 of the entry; the scan reads it from there.
pub fn encryption_key_ids(history: &History) -> std::collections::BTreeSet<String> {
    let bytes = history.encode_to_vec();
    let marker = payflow_common::codec::KEY_ID_METADATA.as_bytes();
    let mut ids = std::collections::BTreeSet::new();
    let mut rest = bytes.as_slice();
    while let Some(at) = rest.windows(marker.len()).position(|w| w == marker) {
        rest = &rest[at + marker.len()..];
        if let [0x12, len, value @ ..] = rest
            && usize::from(*len) < 0x80
            && value.len() >= usize::from(*len)
        {
            ids.insert(String::from_utf8_lossy(&value[..usize::from(*len)]).into_owned());
        }
    }
    ids
}

/// Fetches the history of a workflow (latest run) from the server.
pub async fn fetch(client: &Client, workflow_id: &str) -> anyhow::Result<NamedHistory> {
    let events = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .with_context(|| format!("fetch the history of {workflow_id}"))?;
    Ok(NamedHistory {
        name: workflow_id.to_owned(),
        history: History { events },
    })
}

/// Fetches the histories of the workflows a visibility query finds (at most `limit`).
pub async fn fetch_query(
    client: &Client,
    query: &str,
    limit: usize,
) -> anyhow::Result<Vec<NamedHistory>> {
    let mut ids = Vec::new();
    let mut stream = client.list_workflows(
        query.to_owned(),
        WorkflowListOptions::builder().limit(limit).build(),
    );
    while let Some(execution) = stream.next().await {
        ids.push(execution?.id().to_owned());
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(fetch(client, &id).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_json_event_types_are_read_in_both_spellings() {
        let json = br#"{"events":[{"eventId":"1","eventTime":"2026-11-24T02:51:15.295796553Z",
            "eventType":"WorkflowExecutionStarted","taskId":"1048587",
            "workflowExecutionStartedEventAttributes":{"workflowType":{"name":"PaymentWorkflow"},
              "taskQueue":{"name":"payment-workflow","kind":"TASK_QUEUE_KIND_NORMAL"},
              "workflowTaskTimeout":"10s","attempt":1,"workflowId":"payment-ORD-1",
              "someFieldFromTheFuture":true}}]}"#;
        let history = parse_history(json).unwrap();
        assert_eq!(history.events.len(), 1);
        assert_eq!(history.events[0].event_id, 1);
        assert_eq!(history.events[0].event_type, 1); // WORKFLOW_EXECUTION_STARTED
        // The binary form reads back the same.
        let again = parse_history(&history.encode_to_vec()).unwrap();
        assert_eq!(again, history);
    }

    #[test]
    fn the_keys_that_sealed_a_history_are_named() {
        // "ZGV2MQ==" is "dev1", "YmluYXJ5L2VuY3J5cHRlZA==" is "binary/encrypted".
        let event = |id: u32, key: &str| {
            format!(
                r#"{{"eventId":"{id}","eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_STARTED",
                "workflowExecutionStartedEventAttributes":{{"workflowType":{{"name":"PaymentWorkflow"}},
                  "input":{{"payloads":[{{"metadata":{{"encoding":"YmluYXJ5L2VuY3J5cHRlZA==",
                  "encryption-key-id":"{key}"}},"data":"AAAA"}}]}}}}}}"#
            )
        };
        let json = format!(
            r#"{{"events":[{},{}]}}"#,
            event(1, "ZGV2MQ=="),
            event(2, "b2xk")
        );
        let history = parse_history(json.as_bytes()).unwrap();
        let ids: Vec<String> = encryption_key_ids(&history).into_iter().collect();
        assert_eq!(ids, ["dev1", "old"]);
        let plain = parse_history(include_bytes!("../../tests/histories/v2/success_card.json"));
        assert!(encryption_key_ids(&plain.unwrap()).is_empty());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let err = parse_history(b"{\"events\": 3}").unwrap_err().to_string();
        assert!(err.contains("proto3 JSON"), "{err}");
    }
}
