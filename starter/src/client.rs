//! `PaymentClient`: the typed Rust door to payment workflows, over `temporalio-client`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use payflow_starter::client::PaymentClient;
//! use payflow_workflows::types::{PaymentMethod, PaymentRequest};
//!
//! let payments = PaymentClient::connect(&Default::default()).await?;
//! let decision = payments
//!     .pay(PaymentRequest {
//!         order_id: "ORD-1".into(),
//!         user_id: "USR-1".into(),
//!         payment_method: PaymentMethod::Card,
//!         amount: 50_000,
//!         payment_key: None,
//!         timings: None,
//!     })
//!     .await?;
//! if decision.approved {
//!     let outcome = payments.result("ORD-1").await?; // ORDER_COMPLETED or ORDER_CANCELLED
//!     println!("{:?}", outcome.stage);
//! }
//! # Ok(()) }
//! ```

use payflow_common::config::TemporalArgs;
use payflow_workflows::{
    PaymentWorkflow, payment_workflow_id,
    queues::TaskQueues,
    search,
    types::{
        DomainEvent, ManualRefund, PaymentDecision, PaymentOutcome, PaymentRequest, PaymentStage,
        PaymentStatus, RetryRefund,
    },
};
use std::time::Duration;
use temporalio_client::{
    Client, NamespacedClient, RpcOptions, WorkflowCancelOptions, WorkflowExecutionInfo,
    WorkflowGetResultOptions, WorkflowHandle, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowSignalOptions, WorkflowUpdateWithStartOptions,
    errors::{
        WorkflowGetResultError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError,
        WorkflowUpdateWithStartError,
    },
};
use temporalio_common::{
    HasWorkflowDefinition, QueryDefinition, search_attributes::SearchAttributes,
};

/// The update every request for a payment shares: the server answers repeats (even after the
/// workflow finished) from the stored outcome, so a retried request never starts anything.
const DECISION_UPDATE_ID: &str = "payment-decision";

/// What can go wrong talking to payment workflows.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No payment workflow for this order.
    #[error("no payment for order {0}")]
    NotFound(String),
    /// Temporal could not be reached or refused; the SDK's error is the source.
    #[error("Temporal: {0}")]
    Temporal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Typed access to payment workflows.
#[derive(Clone)]
pub struct PaymentClient {
    client: Client,
    queues: TaskQueues,
    namespace: String,
}

impl std::fmt::Debug for PaymentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClient")
            .field("queues", &self.queues)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl PaymentClient {
    /// Connects to Temporal (flags, then `TEMPORAL_*` environment, then a local dev server).
    pub async fn connect(args: &TemporalArgs) -> anyhow::Result<Self> {
        Ok(Self::new(
            args.connect().await?,
            TaskQueues::with_prefix(&args.task_queue_prefix),
            args.namespace(),
        ))
    }

    /// Wraps an existing client.
    pub fn new(client: Client, queues: TaskQueues, namespace: String) -> Self {
        Self {
            client,
            queues,
            namespace,
        }
    }

    /// The underlying Temporal client.
    pub fn temporal(&self) -> &Client {
        &self.client
    }

    /// The task queues in use.
    pub fn queues(&self) -> &TaskQueues {
        &self.queues
    }

    /// Starts the order's payment (or finds the one already running or finished) and answers
    /// once the PG has decided. One round trip: update-with-start.
    pub async fn pay(&self, request: PaymentRequest) -> Result<PaymentDecision, ClientError> {
        let order_id = request.order_id.clone();
        let workflow_id = payment_workflow_id(&order_id);
        // What operators read in the Web UI's list. Summaries are stored unencrypted; they say
        // no more than the OrderId and Amount search attributes already do.
        let summary = format!(
            "{} payment of {} won, order {order_id}",
            request.payment_method, request.amount
        );
        let attributes = SearchAttributes::new([
            search::ORDER_ID.value_set(order_id.clone()),
            search::USER_ID.value_set(request.user_id.clone()),
            search::PAYMENT_METHOD.value_set(request.payment_method.as_str().to_owned()),
            search::PAYMENT_STAGE.value_set("PAYMENT_WAIT".to_owned()),
            search::AMOUNT.value_set(request.amount),
            search::NEEDS_ATTENTION.value_set(false),
        ]);
        let options = WorkflowUpdateWithStartOptions::new(
            self.queues.workflow.clone(),
            workflow_id.clone(),
            WorkflowIdConflictPolicy::UseExisting,
        )
        // One order, one payment: a finished payment is never started again.
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .search_attributes(attributes)
        .static_summary(summary)
        .update_id(DECISION_UPDATE_ID.to_owned())
        .rpc_options(rpc_timeout(Duration::from_secs(90)))
        .build();
        let result = self
            .client
            .execute_update_with_start_workflow(
                PaymentWorkflow::run,
                request,
                PaymentWorkflow::payment_decision,
                (),
                options,
            )
            .await;
        match result {
            Ok(decision) => Ok(decision),
            // Finished before this request (and the decision update is no longer stored): its
            // state still answers.
            Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted {
                ..
            })) => self.current_decision(&order_id).await,
            Err(e) => Err(ClientError::Temporal(e.into())),
        }
    }

    /// The payment's current state (the workflow's `status` query).
    pub async fn status(&self, order_id: &str) -> Result<PaymentStatus, ClientError> {
        self.query(order_id, None, PaymentWorkflow::status).await
    }

    /// Asks the payment's workflow one of its queries (state only, so a closed one answers too):
    /// its run `run_id`, or its latest.
    async fn query<Q>(
        &self,
        order_id: &str,
        run_id: Option<&str>,
        query: Q,
    ) -> Result<Q::Output, ClientError>
    where
        Q: QueryDefinition<Workflow = <PaymentWorkflow as HasWorkflowDefinition>::Run, Input = ()>,
    {
        let run = WorkflowExecutionInfo::builder()
            .namespace(self.client.namespace())
            .workflow_id(payment_workflow_id(order_id))
            .maybe_run_id(run_id.map(str::to_owned))
            .build();
        WorkflowHandle::<_, PaymentWorkflow>::new(self.client.clone(), run)
            .query(query, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| match e {
                WorkflowQueryError::NotFound(_) => ClientError::NotFound(order_id.to_owned()),
                other => ClientError::Temporal(other.into()),
            })
    }

    /// What the payment answers a repeated request now, from its status (see
    /// [`decision_from_status`]).
    pub async fn current_decision(&self, order_id: &str) -> Result<PaymentDecision, ClientError> {
        Ok(decision_from_status(&self.status(order_id).await?))
    }

    /// Every event and tracker record Kafka took for the payment, as published (the
    /// workflow's `events` query).
    pub async fn events(&self, order_id: &str) -> Result<Vec<DomainEvent>, ClientError> {
        self.query(order_id, None, PaymentWorkflow::events).await
    }

    /// What the run `run_id` of the payment published (its `events` query) and what it has not
    /// handed to Kafka (yet, or ever: a run terminated before it published them; its
    /// `unpublished` query), each in order.
    pub async fn event_log(
        &self,
        order_id: &str,
        run_id: &str,
    ) -> Result<(Vec<DomainEvent>, Vec<DomainEvent>), ClientError> {
        futures::try_join!(
            self.query(order_id, Some(run_id), PaymentWorkflow::events),
            self.query(order_id, Some(run_id), PaymentWorkflow::unpublished),
        )
    }

    /// Waits for the payment's final state.
    pub async fn result(&self, order_id: &str) -> Result<PaymentOutcome, ClientError> {
        self.client
            .get_workflow_handle::<PaymentWorkflow>(payment_workflow_id(order_id))
            .get_result(WorkflowGetResultOptions::default())
            .await
            .map_err(|e| match e {
                WorkflowGetResultError::NotFound(_) => ClientError::NotFound(order_id.to_owned()),
                other => ClientError::Temporal(other.into()),
            })
    }

    /// Operator: stop the payment and compensate whatever it did (refund, stock, order).
    pub async fn cancel(&self, order_id: &str, reason: &str) -> Result<(), ClientError> {
        self.client
            .get_workflow_handle::<PaymentWorkflow>(payment_workflow_id(order_id))
            .cancel(
                WorkflowCancelOptions::builder()
                    .reason(reason.to_owned())
                    .build(),
            )
            .await
            .map_err(|e| interaction(order_id, e))
    }

    /// Operator: try a failed refund again.
    pub async fn retry_refund(&self, order_id: &str, operator: &str) -> Result<(), ClientError> {
        self.client
            .get_workflow_handle::<PaymentWorkflow>(payment_workflow_id(order_id))
            .signal(
                PaymentWorkflow::retry_refund,
                RetryRefund {
                    operator: operator.to_owned(),
                },
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| interaction(order_id, e))
    }

    /// Operator: record a refund done by hand.
    pub async fn refund_completed_manually(
        &self,
        order_id: &str,
        refund: ManualRefund,
    ) -> Result<(), ClientError> {
        self.client
            .get_workflow_handle::<PaymentWorkflow>(payment_workflow_id(order_id))
            .signal(
                PaymentWorkflow::refund_completed_manually,
                refund,
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| interaction(order_id, e))
    }

    /// Temporal answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        use temporalio_client::{grpc::WorkflowService, tonic::IntoRequest};
        use temporalio_common::protos::temporal::api::workflowservice::v1::GetSystemInfoRequest;
        let mut client = self.client.clone();
        WorkflowService::get_system_info(&mut client, GetSystemInfoRequest {}.into_request())
            .await
            .map(|_| ())
            .map_err(|e| ClientError::Temporal(e.into()))
    }

    /// The payment's page in the Temporal Web UI.
    pub fn web_ui_link(&self, ui_base: &str, order_id: &str) -> String {
        format!(
            "{}/namespaces/{}/workflows/{}",
            ui_base.trim_end_matches('/'),
            self.namespace,
            payment_workflow_id(order_id)
        )
    }
}

fn interaction(order_id: &str, e: WorkflowInteractionError) -> ClientError {
    match e {
        WorkflowInteractionError::NotFound(_) => ClientError::NotFound(order_id.to_owned()),
        other => ClientError::Temporal(other.into()),
    }
}

fn rpc_timeout(timeout: Duration) -> RpcOptions {
    let mut options = RpcOptions::default();
    options.timeout = Some(timeout);
    options
}

/// What a payment that is past its decision answers a repeated request: approved while the
/// approval stands; once the payment is being undone or the order is cancelled (a refund
/// after the approval included), failed with the failure's code and reason, and the approval
/// number it had; not retryable once the PG refused to cancel a charge of it.
pub fn decision_from_status(status: &PaymentStatus) -> PaymentDecision {
    let undone = matches!(
        status.stage,
        PaymentStage::Compensating | PaymentStage::OrderCancelled
    );
    let approved = status.approval_number.is_some() && !undone;
    PaymentDecision {
        order_id: status.order_id.clone(),
        payment_id: status.payment_id.clone(),
        approved,
        approval_number: status.approval_number.clone(),
        failure_code: if approved {
            None
        } else {
            status.failure_code.clone()
        },
        // As the first answer said it (runs from before this field: the order's reason).
        failure_message: if approved {
            None
        } else {
            status
                .failure_message
                .clone()
                .or_else(|| status.failure_reason.clone())
        },
        // Not while the PG may still hold a charge it refused to cancel: paying again could
        // charge the customer twice.
        retryable: !approved && !status.charge_held,
    }
}
