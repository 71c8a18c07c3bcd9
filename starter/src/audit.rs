//! `payflow events audit`: knowing that events arrived. A broker can acknowledge a record and
//! lose it (seen with the dev stack's Tansu after a crash), and a payment an operator terminated
//! ends with the events it had not handed to Kafka yet. The audit lists the payments that ended
//! since a moment and those still running, asks each workflow which events and tracker records Kafka took (its `events`
//! query: ids and content exactly as published) and which it never published (`unpublished`),
//! reads the topics back, and reports every one that is not there; with `--republish` it
//! publishes the missing ones again with their original event ids (consumers deduplicate by
//! them), in each order's order. A payment whose workflow cannot answer (its history no longer
//! replays, say) is reported, and the others are audited all the same.

use crate::client::PaymentClient;
use futures::StreamExt;
use payflow_activities::{
    EventActivities,
    events::{KafkaConfig, reader},
};
use payflow_workflows::types::{DomainEvent, EventType};
use serde::Serialize;
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};
use temporalio_client::WorkflowListOptions;

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Payments that ended since the moment given.
    pub payments: usize,
    /// Payments still running, whatever their age: what they published since the moment given
    /// is checked (those that cannot answer yet are audited again, at the latest once they end).
    pub running: usize,
    /// Events and tracker records they published or should have.
    pub expected: usize,
    /// Of those, never handed to Kafka: their workflow ended first (terminated).
    pub unpublished: usize,
    /// Of those, found on their topics.
    pub found: usize,
    /// Not found: `(order id, event type, event id)`.
    pub missing: Vec<(String, String, String)>,
    /// Published once, and gone from their topics since by the topic's retention (7 days for
    /// stock and order topics, 30 for payments and the saga tracker): not missing, and not
    /// published again weeks late.
    pub expired: usize,
    /// Published again (with `--republish`).
    pub republished: usize,
    /// Payments whose workflow could not say what it published: `(order id, error)`.
    pub unreadable: Vec<(String, String)>,
}

impl AuditReport {
    /// A few lines for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "payments ended {} (and {} running); events expected {} (never published {}); \
             found {}; missing {}; expired by retention {}; republished {}; payments unreadable {}",
            self.payments,
            self.running,
            self.expected,
            self.unpublished,
            self.found,
            self.missing.len(),
            self.expired,
            self.republished,
            self.unreadable.len()
        );
        for (order, ty, id) in &self.missing {
            out.push_str(&format!("\n  missing {ty} of {order} (event id {id})"));
        }
        for (order, error) in &self.unreadable {
            out.push_str(&format!("\n  unreadable {order}: {error}"));
        }
        out
    }
}

/// Audits the payments of `payments`' task queues that ended at or after `since`, and those
/// still running; republishes what is missing when `republish` holds a producer.
pub async fn audit(
    payments: &PaymentClient,
    kafka: &KafkaConfig,
    republish: Option<&EventActivities>,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<AuditReport> {
    let payment_workflows = format!(
        "WorkflowType = 'PaymentWorkflow' AND TaskQueue = '{}'",
        payments.queues().workflow
    );
    let ended = format!(
        "{payment_workflows} AND ExecutionStatus != 'Running' AND CloseTime >= '{}'",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // Each run itself: a reset may have started another run under the same id. Running
    // payments too (a refund waiting for an operator can stay open for days): what they
    // published since the moment given is checked; what they have not published yet is theirs
    // to publish. Running ones are listed first, so a payment that ends between the two
    // listings is in the second (and, being in both, counted as ended).
    let mut runs: Vec<(String, String, bool)> = Vec::new();
    let mut listed_runs = std::collections::HashMap::new();
    for (query, running) in [
        (
            format!("{payment_workflows} AND ExecutionStatus = 'Running'"),
            true,
        ),
        (ended, false),
    ] {
        let mut listed = payments
            .temporal()
            .list_workflows(query, WorkflowListOptions::builder().build());
        while let Some(execution) = listed.next().await {
            let execution = execution?;
            if let Some(order) = execution.id().strip_prefix("payment-") {
                let run = execution.run_id().to_owned();
                match listed_runs.get(&run) {
                    Some(&at) => runs[at] = (order.to_owned(), run, running),
                    None => {
                        listed_runs.insert(run.clone(), runs.len());
                        runs.push((order.to_owned(), run, running));
                    }
                }
            }
        }
    }
    let mut expected: Vec<DomainEvent> = Vec::new();
    let mut unpublished = 0;
    let mut unreadable = Vec::new();
    let mut listed_ids = HashSet::new();
    let mut never_published = HashSet::new();
    for (order, run, running) in &runs {
        // Published first, then the rest: each order's events in their order.
        match payments.event_log(order, run).await {
            Ok((mut published, mut rest)) => {
                if *running {
                    rest.clear();
                    // Only the moment given bounds how far back the topics are read.
                    published.retain(|e| e.event_timestamp >= since.timestamp_millis() - 60_000);
                }
                // What a run ended by a reset never published is not owed: the run the reset
                // started decides the order's path again (it may complete an order the old run
                // was cancelling), and publishes its own events.
                if !rest.is_empty() && superseded(payments, order, run).await {
                    rest.clear();
                }
                unpublished += rest.len();
                never_published.extend(rest.iter().map(|e| e.event_id.clone()));
                // Two runs of one payment list the events they share once.
                expected.extend(
                    published
                        .into_iter()
                        .chain(rest)
                        .filter(|e| listed_ids.insert(e.event_id.clone())),
                );
            }
            // A running payment may not answer yet (its first task still to come) or for a
            // while (its worker away): it is audited again, at the latest once it ends.
            Err(_) if *running => {}
            Err(err) => unreadable.push((order.clone(), format!("{:#}", anyhow::Error::from(err)))),
        }
    }

    // The topics from a little before the earliest event: a payment that ended since then may
    // have published before.
    let earliest = expected
        .iter()
        .map(|e| e.event_timestamp)
        .min()
        .unwrap_or(since.timestamp_millis());
    let stored =
        reader::read_event_topics(kafka, Some(earliest - 60_000), Duration::from_secs(120)).await?;
    let present: HashSet<&str> = stored
        .iter()
        .filter_map(|r| r.headers.get("eventId").map(String::as_str))
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let not_found: Vec<&DomainEvent> = expected
        .iter()
        .filter(|e| !present.contains(e.event_id.as_str()))
        .collect();
    // The topics' own retention (the platform may have created them with other settings than
    // payflow's), asked only when something was not found.
    let retention = if not_found.is_empty() {
        HashMap::new()
    } else {
        EventActivities::topic_retention(kafka).await
    };
    let (expired, missing): (Vec<DomainEvent>, Vec<DomainEvent>) =
        not_found.into_iter().cloned().partition(|e| {
            let ty = e.event_type();
            !never_published.contains(&e.event_id)
                && past_retention(
                    retention
                        .get(&ty)
                        .copied()
                        .or_else(|| contract_retention(ty)),
                    e.event_timestamp,
                    now,
                )
        });
    let mut republished = 0;
    if let Some(events) = republish
        && !missing.is_empty()
    {
        events.publish_events(&missing).await?;
        republished = missing.len();
    }
    Ok(AuditReport {
        payments: runs.iter().filter(|(_, _, running)| !running).count(),
        running: runs.iter().filter(|(_, _, running)| *running).count(),
        expected: expected.len(),
        unpublished,
        found: expected.len() - missing.len() - expired.len(),
        expired: expired.len(),
        missing: missing
            .iter()
            .map(|e| {
                (
                    e.order_id.clone(),
                    e.event_type().name().to_owned(),
                    e.event_id.clone(),
                )
            })
            .collect(),
        republished,
        unreadable,
    })
}

/// Whether a later run of the payment (a reset's) took over from `run`. A payment Temporal
/// cannot describe is taken as not superseded: its events are listed rather than dropped.
async fn superseded(payments: &PaymentClient, order_id: &str, run: &str) -> bool {
    payments
        .temporal()
        .get_workflow_handle::<payflow_workflows::PaymentWorkflow>(
            payflow_workflows::ids::payment_workflow_id(order_id),
        )
        .describe(temporalio_client::WorkflowDescribeOptions::default())
        .await
        .is_ok_and(|latest| latest.run_id() != run)
}

/// Whether an event made at `made_ms` is past a topic's `retention` (ms) at `now_ms`, so the
/// broker may have deleted it. The event's own time stands in for its record's: an event
/// published long after it was made (a registry refusing it for days) is judged early.
fn past_retention(retention: Option<i64>, made_ms: i64, now_ms: i64) -> bool {
    retention.is_some_and(|retention| retention >= 0 && made_ms < now_ms - retention)
}

/// The retention payflow gives a type's topic (the platform's settings).
fn contract_retention(ty: EventType) -> Option<i64> {
    KafkaConfig::topic_settings(ty)
        .into_iter()
        .find(|(key, _)| *key == "retention.ms")
        .and_then(|(_, ms)| ms.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::past_retention;
    use payflow_workflows::types::EventType;

    #[test]
    fn an_event_older_than_its_topics_retention_is_past_it() {
        use super::contract_retention;
        const DAY: i64 = 24 * 60 * 60 * 1000;
        let now = 100 * DAY;
        let stock = contract_retention(EventType::StockConfirmed);
        let payment = contract_retention(EventType::PaymentCompleted);
        assert!(past_retention(stock, now - 8 * DAY, now));
        assert!(!past_retention(stock, now - 6 * DAY, now));
        assert!(!past_retention(payment, now - 8 * DAY, now));
        assert!(past_retention(payment, now - 31 * DAY, now));
        assert!(!past_retention(
            contract_retention(EventType::SagaTracker),
            now - 29 * DAY,
            now
        ));
        // A topic the platform keeps for a day; one kept for ever (-1); one not described.
        assert!(past_retention(Some(DAY), now - 2 * DAY, now));
        assert!(!past_retention(Some(-1), now - 90 * DAY, now));
        assert!(!past_retention(None, now - 90 * DAY, now));
    }
}
