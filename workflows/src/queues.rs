//! Task queue names. Each service's activities run on their own queue, so each service's worker
//! holds only its own credentials and scales alone.
//!
//! A deployment may prefix every queue (tests do, so parallel test workers never steal each
//! other's tasks). The workflow derives the activity queues from the queue it runs on, so the
//! prefix needs no extra input.

/// The workflow's queue (also where the event publisher runs).
pub const WORKFLOW: &str = "payment-workflow";
/// Payment service: PG and payment database.
pub const PAYMENT: &str = "payment-activities";
/// Product service: Redis reservation and product database.
pub const PRODUCT: &str = "product-activities";
/// Order service: order database and push notifications.
pub const ORDER: &str = "order-activities";

/// The four queues of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQueues {
    /// Workflow tasks and event publishing.
    pub workflow: String,
    /// Payment service activities.
    pub payment: String,
    /// Product service activities.
    pub product: String,
    /// Order service activities.
    pub order: String,
}

impl TaskQueues {
    /// The queues with a prefix (empty for the standard names).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            workflow: format!("{prefix}{WORKFLOW}"),
            payment: format!("{prefix}{PAYMENT}"),
            product: format!("{prefix}{PRODUCT}"),
            order: format!("{prefix}{ORDER}"),
        }
    }

    /// The queues of the deployment whose workflow queue is `workflow_queue`.
    pub fn for_workflow_queue(workflow_queue: &str) -> Self {
        let prefix = workflow_queue.strip_suffix(WORKFLOW).unwrap_or("");
        Self::with_prefix(prefix)
    }
}

impl Default for TaskQueues {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_queues_follow_the_workflow_queue_prefix() {
        assert_eq!(
            TaskQueues::for_workflow_queue(WORKFLOW),
            TaskQueues::default()
        );
        let q = TaskQueues::for_workflow_queue("t42-payment-workflow");
        assert_eq!(q.product, "t42-product-activities");
        assert_eq!(q.workflow, "t42-payment-workflow");
    }
}
