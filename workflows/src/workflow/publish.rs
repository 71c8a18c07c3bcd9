//! The platform's events and saga tracker records: built by the steps, published by local
//! activities. Under [`EVENT_OUTBOX_PATCH`](super::EVENT_OUTBOX_PATCH) they go into an outbox in
//! the workflow's state and [`drain_outbox`](Saga::drain_outbox), beside the steps, hands them to
//! Kafka in order, so no step waits for Kafka. Older generations publish inline (kept for replay).

use super::{
    PUBLISH_ATTENTION_PATCH, PUBLISH_PAUSE_GROWS_PATCH, PUBLISH_PAUSE_OUTLIVES_CANCEL_PATCH,
    failure::failure_message,
    options::{outbox_options, publish_options},
    saga::{Saga, attention_keys},
};
use crate::{activities::EventActivities, errors, ids, types::*};
use std::time::Duration;
use temporalio_common::error::IncomingError;
use temporalio_workflow::{
    ActivityExecutionError, TimerOptions, WaitConditionOptions, WorkflowCancellationToken,
};

/// Pauses between publish tries double up to this, as they always have.
const SHORT_PAUSES_UP_TO: Duration = Duration::from_secs(30);
/// Then on to this ([`PUBLISH_PAUSE_GROWS_PATCH`]): each try and its pause add about six events
/// to the history, and a history of 51,200 events is terminated by Temporal, unpublished events
/// and all. At 30 s that is about three days of a Kafka outage; at 5 minutes, about a month.
const LONGEST_PAUSE: Duration = Duration::from_secs(300);

impl Saga {
    /// The outbox's publisher: hands what the steps put in the outbox to Kafka, oldest first, a
    /// batch per pass, until the steps are over and nothing is left.
    pub(super) async fn drain_outbox(&self) {
        loop {
            let options = WaitConditionOptions::builder()
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            let _ = self
                .ctx
                .wait_condition_with_options(|s| !s.outbox.is_empty() || s.outbox_closed, options)
                .await;
            // The batch stays in the outbox until Kafka took it, so a run that ends while it
            // waits (terminated by an operator) still shows it (the `unpublished` query).
            let batch = self.ctx.state(|s| s.outbox.clone());
            if batch.is_empty() {
                return;
            }
            let sent = batch.len();
            self.deliver(batch).await;
            self.ctx.state_mut(|s| {
                s.outbox.drain(..sent);
                s.status.publish_error = None;
            });
        }
    }

    /// Publishes one batch, trying again on a durable timer (1 s, doubling to 30 s, then to
    /// 5 minutes: [`PUBLISH_PAUSE_GROWS_PATCH`]) while Kafka
    /// or the registry refuses it: a retry never holds a workflow task, so the business steps
    /// go on. Same records, same event ids on every try. The status shows the last error while
    /// it lasts. An outage needs no operator; a refusal only a person can lift (the registry
    /// refusing payflow's credentials or schema, an event that does not fit its schema, brokers
    /// refusing payflow's records or producer: [`errors::KAFKA_REFUSED`]) also
    /// raises the attention flag ([`PUBLISH_ATTENTION_PATCH`]), which the publication that
    /// finally gets through lowers again.
    async fn deliver(&self, batch: Vec<DomainEvent>) {
        let summary = batch_summary(&batch);
        let mut pause = Duration::from_secs(1);
        loop {
            let published = self
                .ctx
                .execute_local_activity(
                    EventActivities::publish_all,
                    batch.clone(),
                    outbox_options(summary),
                )
                .await;
            match published {
                Ok(_) => {
                    self.ctx.state_mut(|s| s.published.extend(batch));
                    // Lowers a refusal's flag; nothing to do (no command) if none was raised.
                    self.attention(attention_keys::PUBLISH, None);
                    return;
                }
                Err(err) => {
                    let error = format!("publish {summary}: {}", failure_message(&err));
                    // Raised while a refusal lasts, lowered if it turns into an outage.
                    let refused = needs_a_person(&err) && self.ctx.patched(PUBLISH_ATTENTION_PATCH);
                    self.attention(attention_keys::PUBLISH, refused.then(|| error.clone()));
                    self.ctx.state_mut(|s| s.status.publish_error = Some(error));
                    self.ctx
                        .timer(
                            TimerOptions::builder(pause)
                                .summary(format!("publish {summary} again"))
                                .cancellation_token(self.pause_token())
                                .build(),
                        )
                        .await;
                    // Past 30 s only under the patch, consulted only once a pause reaches it.
                    let longest = if pause >= SHORT_PAUSES_UP_TO
                        && self.ctx.patched(PUBLISH_PAUSE_GROWS_PATCH)
                    {
                        LONGEST_PAUSE
                    } else {
                        SHORT_PAUSES_UP_TO
                    };
                    pause = (pause * 2).min(longest);
                }
            }
        }
    }

    /// The token of a pause between publish tries: its own once the run was cancelled
    /// ([`PUBLISH_PAUSE_OUTLIVES_CANCEL_PATCH`]), so an operator's cancel does not end every
    /// pause at once; the workflow's (as before the patch) otherwise.
    fn pause_token(&self) -> WorkflowCancellationToken {
        let run = self.ctx.cancellation_token();
        if run.is_cancelled() && self.ctx.patched(PUBLISH_PAUSE_OUTLIVES_CANCEL_PATCH) {
            WorkflowCancellationToken::new()
        } else {
            run
        }
    }

    /// Records a saga step's status for the saga tracker; it is published with the next
    /// event (or at the end of the run). It waits in the workflow's state, so a run that ends
    /// before then still shows it (the `unpublished` query).
    pub(super) fn track(&self, step: &'static str, status: SagaStatus, reason: Option<&str>) {
        if !self.platform {
            return;
        }
        match status {
            SagaStatus::Started => self.current_step.set(Some(step)),
            _ if self.current_step.get() == Some(step) => self.current_step.set(None),
            _ => {}
        }
        let metadata = serde_json::json!({
            "workflowId": self.workflow_id,
            "runId": self.ctx.run_id(),
            "paymentId": self.payment.payment_id,
            "amount": self.payment.amount,
            "failureReason": reason,
        });
        let now = self.now_millis();
        let record = DomainEvent {
            event_id: ids::saga_record_id(&self.workflow_id, step, status.as_str()),
            event_timestamp: now,
            order_id: self.payment.order_id.clone(),
            body: EventBody::SagaTracker {
                saga_type: SagaType::PaymentCompletion,
                step: step.to_owned(),
                status,
                metadata: Some(metadata.to_string()),
                recorded_at: now,
            },
        };
        self.ctx.state_mut(|s| s.tracked.push(record));
    }

    /// The tracker records waiting for the next event, taken.
    fn take_tracked(&self) -> Vec<DomainEvent> {
        self.ctx.state_mut(|s| std::mem::take(&mut s.tracked))
    }

    /// Publishes the tracker records still waiting, if any.
    pub(super) async fn flush(&self) {
        let batch = self.take_tracked();
        if batch.is_empty() {
        } else if self.outbox {
            self.ctx.state_mut(|s| s.outbox.extend(batch));
        } else {
            self.publish_batch(batch).await;
        }
    }

    /// Publishes an event; retried until Kafka takes it. Awaited with the step it runs beside.
    /// Under the platform patch the tracker records waiting go out with it; under the outbox
    /// patch they go into the outbox and nothing waits.
    pub(super) async fn publish(&self, body: EventBody) {
        let event = DomainEvent {
            event_id: ids::event_id(&self.workflow_id, body.event_type()),
            event_timestamp: self.now_millis(),
            order_id: self.payment.order_id.clone(),
            body,
        };
        if self.platform {
            let mut batch = self.take_tracked();
            batch.push(event);
            if self.outbox {
                self.ctx.state_mut(|s| s.outbox.extend(batch));
                return;
            }
            return self.publish_batch(batch).await;
        }
        let summary = event.event_type().name();
        let published = if self.lean {
            // A local activity on the workflow worker: no task to dispatch, one marker event.
            self.ctx
                .execute_local_activity(
                    EventActivities::publish,
                    event.clone(),
                    publish_options(summary),
                )
                .await
        } else {
            self.ctx
                .execute_activity(
                    EventActivities::publish,
                    event.clone(),
                    self.publish_activity_options(summary),
                )
                .await
        };
        self.settle(published, vec![event], summary);
    }

    /// Publishes a batch of events in order with one local activity, retried until Kafka
    /// takes it (before the outbox).
    async fn publish_batch(&self, batch: Vec<DomainEvent>) {
        let summary = batch_summary(&batch);
        let published = self
            .ctx
            .execute_local_activity(
                EventActivities::publish_all,
                batch.clone(),
                publish_options(summary),
            )
            .await;
        self.settle(published, batch, summary);
    }

    /// Records what Kafka took (the `events` query), or flags a publication that failed for
    /// good (only a non-retryable failure, a schema bug, ends its retries): the events' absence
    /// is then visible in the history and the attention flag.
    fn settle<T>(
        &self,
        published: Result<T, ActivityExecutionError>,
        events: Vec<DomainEvent>,
        summary: &str,
    ) {
        match published {
            Ok(_) => self.ctx.state_mut(|s| s.published.extend(events)),
            Err(err) => self.attention(
                attention_keys::PUBLISH,
                Some(format!(
                    "publish {summary} failed: {}",
                    failure_message(&err)
                )),
            ),
        }
    }
}

/// Whether a failed publication waits for a person: the activity said no retry can help, or
/// that the brokers refuse payflow ([`errors::KAFKA_REFUSED`], retryable so that the inline
/// publication of older runs keeps trying). A local activity's failure is the application
/// failure itself; a regular one's is its cause.
fn needs_a_person(err: &ActivityExecutionError) -> bool {
    let top = err
        .failure()
        .and_then(|f| f.maybe_application_failure())
        .is_some_and(|app| app.non_retryable || app.r#type == errors::KAFKA_REFUSED);
    top || matches!(err.reason(), Some(IncomingError::Application(app))
        if app.is_non_retryable() || app.type_name() == Some(errors::KAFKA_REFUSED))
}

/// The non-tracker event a batch carries, for summaries.
fn batch_summary(batch: &[DomainEvent]) -> &'static str {
    batch
        .iter()
        .map(|e| e.event_type().name())
        .find(|n| *n != EventType::SagaTracker.name())
        .unwrap_or(EventType::SagaTracker.name())
}
