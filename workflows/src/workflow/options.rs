//! How long each kind of step may take and how it is retried. Summaries are stored unencrypted:
//! no amounts or approval numbers in them.

use super::saga::Saga;
use crate::errors;
use std::time::Duration;
use temporalio_workflow::{
    ActivityCloseTimeouts, ActivityOptions, LocalActivityOptions, RetryPolicy,
    WorkflowCancellationToken,
};

impl Saga {
    /// The PG step: bounded by the PG timeout in total, retrying transient errors quickly; a
    /// decline or another 4xx is final at once.
    pub(super) fn pg_options(&self, token: &WorkflowCancellationToken) -> ActivityOptions {
        let total = Duration::from_secs(self.timings.pg_timeout_secs);
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: total,
            start_to_close: total.min(Duration::from_secs(10)),
        })
        .task_queue(self.queues.payment.clone())
        .summary(format!("PG approval ({})", self.payment.payment_method))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(2))
                .non_retryable_error_types([errors::PAYMENT_DECLINED, errors::PG_REJECTED])
                .build(),
        )
        .cancellation_token(token.clone())
        .build()
    }

    /// Stock confirmation: a missing, expired or short reservation is final; anything else is
    /// retried twice, `stock_retry_secs` apart.
    pub(super) fn stock_options(&self, token: &WorkflowCancellationToken) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(self.queues.product.clone())
            .summary("confirm reserved stock".to_owned())
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(self.timings.stock_retry_secs))
                    .backoff_coefficient(1.0)
                    .maximum_attempts(3)
                    .non_retryable_error_types([
                        errors::RESERVATION_EXPIRED,
                        errors::RESERVATION_MISSING,
                        errors::RESERVATION_RELEASED,
                        errors::INSUFFICIENT_STOCK,
                    ])
                    .build(),
            )
            .cancellation_token(token.clone())
            .build()
    }

    /// A database step of a service: retried until it succeeds (or the token is cancelled).
    pub(super) fn service_options(
        &self,
        queue: &str,
        summary: &str,
        token: Option<&WorkflowCancellationToken>,
    ) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(queue.to_owned())
            .summary(summary.to_owned())
            .retry_policy(steady_retry())
            .cancellation_token(token.cloned().unwrap_or_default())
            .build()
    }

    /// The refund: 5 tries spaced `refund_retry_secs`, immune to the deadline and to
    /// cancellation; a refusal by the PG is final at once.
    pub(super) fn refund_options(&self) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
            .task_queue(self.queues.payment.clone())
            .summary("refund at the PG".to_owned())
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(self.timings.refund_retry_secs))
                    .backoff_coefficient(1.0)
                    .maximum_attempts(5)
                    .non_retryable_error_types([errors::REFUND_REJECTED])
                    .build(),
            )
            .cancellation_token(WorkflowCancellationToken::new())
            .build()
    }

    /// A push: a few tries over about two minutes, then given up (the order's state does not
    /// depend on it).
    pub(super) fn push_options(&self, title: &str) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(self.queues.order.clone())
            .summary(format!("push: {title}"))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(500))
                    .backoff_coefficient(2.0)
                    .maximum_interval(Duration::from_secs(30))
                    .maximum_attempts(8)
                    .build(),
            )
            .cancellation_token(WorkflowCancellationToken::new())
            .build()
    }

    /// A compensation step's first `tries` (see [`Saga::service_options`]), after which the
    /// workflow says so and goes on trying.
    pub(super) fn bounded_service_options(
        &self,
        queue: &str,
        summary: &str,
        tries: u32,
    ) -> ActivityOptions {
        let mut options = self.service_options(queue, summary, None);
        if let Some(policy) = options.retry_policy.as_mut() {
            policy.set_maximum_attempts(tries);
        }
        options
    }

    /// A compensation step's first run under [`super::COMPENSATION_WATCHED_PATCH`]: over once
    /// `stuck_step_secs` pass without success (whether its tries fail or none starts) or after
    /// `tries`, when the workflow says so and goes on trying.
    pub(super) fn watched_options(
        &self,
        queue: &str,
        summary: &str,
        tries: Option<u32>,
    ) -> ActivityOptions {
        let stuck = Duration::from_secs(self.timings.stuck_step_secs.max(1));
        let mut options = self.service_options(queue, summary, None);
        options.close_timeouts = ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: stuck,
            start_to_close: Duration::from_secs(10),
        };
        if let (Some(policy), Some(tries)) = (options.retry_policy.as_mut(), tries) {
            policy.set_maximum_attempts(tries);
        }
        options
    }

    /// Publishing as a regular activity on the workflow's queue (before the lean saga).
    pub(super) fn publish_activity_options(&self, summary: &str) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .task_queue(self.queues.workflow.clone())
            .summary(format!("publish {summary}"))
            .retry_policy(steady_retry())
            .cancellation_token(WorkflowCancellationToken::new())
            .build()
    }
}

/// One try of an outbox batch (two attempts, a few seconds at most, so a workflow task is never
/// held long); the outbox retries on a timer after it.
pub(super) fn outbox_options(summary: &str) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(4))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(100))
                .maximum_attempts(2)
                .build(),
        )
        .summary(format!("publish {summary}"))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// A publication before the outbox: a local activity on the workflow worker (no task to
/// dispatch, one marker event), retried until Kafka takes it, immune to the deadline and to
/// cancellation.
pub(super) fn publish_options(summary: &str) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(steady_retry())
        .timer_backoff_threshold(Duration::from_secs(5))
        .summary(format!("publish {summary}"))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Retries at a steady pace without limit: for steps that must eventually succeed.
fn steady_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .build()
}
