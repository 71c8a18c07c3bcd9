//! Order service (`order-activities`): the `orders` schema and push notifications.

use crate::{
    failure::{Transient, non_retryable, retryable},
    metrics::Metrics,
    product::PricedLine,
    secret::Secret,
};
use payflow_workflows::{
    activities::markers,
    errors,
    types::{
        CancelOrder, CancelledOrder, CompleteAndNotify, OrderCompletion, OrderItem, OrderStatus,
        OrderUpdate, PushNotification,
    },
};
use serde::Serialize;
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Push gateway settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Base URL; pushes go to `{base_url}/v1/push`.
    pub base_url: String,
    /// Bearer token for the gateway, if it wants one.
    pub api_key: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// The push gateway client: `POST /v1/push` with an `Idempotency-Key`, so the gateway delivers
/// a retried notification once.
#[derive(Debug, Clone)]
pub struct PushClient {
    http: reqwest::Client,
    config: PushConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushBody<'a> {
    user_id: &'a str,
    title: &'a str,
    body: &'a str,
    data: PushData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushData<'a> {
    order_id: &'a str,
}

impl PushClient {
    /// Builds the client.
    pub fn new(config: PushConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, config })
    }

    /// Sends one notification.
    pub async fn send(&self, n: &PushNotification) -> anyhow::Result<()> {
        let mut request = self
            .http
            .post(format!("{}/v1/push", self.config.base_url))
            .header("Idempotency-Key", &n.notification_id)
            .json(&PushBody {
                user_id: &n.user_id,
                title: &n.title,
                body: &n.body,
                data: PushData {
                    order_id: &n.order_id,
                },
            });
        if !self.config.api_key.is_empty() {
            request = request.bearer_auth(self.config.api_key.expose());
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "push gateway answered HTTP {}",
            response.status().as_u16()
        );
        Ok(())
    }
}

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRow {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub user_id: String,
    /// Where the order is.
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    /// Total in won.
    pub total_amount: i64,
    /// The payment, once paid.
    pub payment_id: Option<String>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The `orders` schema: what the order service's activities and the API (creating and
/// reading orders) share.
#[derive(Debug, Clone)]
pub struct OrderStore {
    db: PgPool,
}

/// The order service's activities.
#[derive(Debug, Clone)]
pub struct OrderActivities {
    store: OrderStore,
    push: PushClient,
    metrics: Metrics,
}

impl OrderActivities {
    /// Wires the database pool and the push client.
    pub fn new(db: PgPool, push: PushClient) -> Self {
        Self {
            store: OrderStore::new(db),
            push,
            metrics: Metrics::default(),
        }
    }

    /// Records the seed's monitoring points on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One prompt attempt at a push: true if it went out (now or before). A slow or failing
    /// gateway answers false, and the workflow sends the push with retries instead.
    pub async fn try_push(&self, n: &PushNotification) -> bool {
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.send_push(n)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(order_id = %n.order_id, error = ?e, "push not sent; retrying it apart");
                false
            }
            Err(_) => {
                tracing::warn!(order_id = %n.order_id, "push gateway slow; retrying it apart");
                false
            }
        }
    }

    /// Sends a push once: the gateway deduplicates by id, and the notifications table keeps
    /// a retried activity from asking twice.
    pub async fn send_push(&self, n: &PushNotification) -> Result<(), ActivityError> {
        let sent: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM orders.notifications WHERE notification_id = $1")
                .bind(&n.notification_id)
                .fetch_optional(&self.store.db)
                .await
                .transient("read notifications")?;
        if sent.is_some() {
            return Ok(());
        }
        self.push
            .send(n)
            .await
            .map_err(|e| retryable("push gateway", e))?;
        sqlx::query(
            "INSERT INTO orders.notifications (notification_id, order_id, user_id, title)
             VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(&n.notification_id)
        .bind(&n.order_id)
        .bind(&n.user_id)
        .bind(&n.title)
        .execute(&self.store.db)
        .await
        .transient("record notification")?;
        tracing::info!(order_id = %n.order_id, user_id = %n.user_id, "push sent");
        Ok(())
    }
}

impl OrderStore {
    /// Wraps the database pool.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// The database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.db).await.map(|_| ())
    }

    /// Moves an order to `to` from a state that may become it ([`OrderStatus::can_become`]);
    /// a retry that finds it already there is fine; any other state is a conflict.
    async fn transition(
        &self,
        order_id: &str,
        payment_id: &str,
        to: OrderStatus,
        reason: Option<&str>,
    ) -> Result<bool, ActivityError> {
        let from: Vec<&str> = OrderStatus::sources(to)
            .into_iter()
            .map(OrderStatus::as_str)
            .collect();
        let changed = sqlx::query(
            "UPDATE orders.orders
                SET status = $3, payment_id = COALESCE(payment_id, NULLIF($2, '')), cancel_reason = COALESCE($4, cancel_reason),
                    updated_at = now(),
                    completed_at = CASE WHEN $3 = 'ORDER_COMPLETED' THEN now() ELSE completed_at END,
                    cancelled_at = CASE WHEN $3 = 'ORDER_CANCELLED' THEN now() ELSE cancelled_at END
              WHERE order_id = $1 AND status = ANY($5)",
        )
        .bind(order_id)
        .bind(payment_id)
        .bind(to.as_str())
        .bind(reason)
        .bind(&from)
        .execute(&self.db)
        .await
        .transient("update order")?;
        if changed.rows_affected() == 1 {
            return Ok(true);
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM orders.orders WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.db)
                .await
                .transient("read order")?;
        match status {
            None => Err(non_retryable(
                errors::NOT_FOUND,
                format!("order {order_id} does not exist"),
            )),
            Some(s) if s.parse().is_ok_and(|s: OrderStatus| s.already(to)) => Ok(false),
            Some(s) => Err(non_retryable(
                errors::INVALID_STATE,
                format!("order {order_id} is {s}, cannot become {to}"),
            )),
        }
    }

    /// The order's items.
    pub async fn items(&self, order_id: &str) -> Result<Vec<OrderItem>, sqlx::Error> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT product_id, quantity FROM orders.order_items WHERE order_id = $1 ORDER BY product_id",
        )
        .bind(order_id)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(product_id, quantity)| OrderItem {
                product_id,
                quantity,
            })
            .collect())
    }

    /// The preceding step's half: the order in `PAYMENT_WAIT` with its lines.
    pub async fn create(
        &self,
        order_id: &str,
        user_id: &str,
        lines: &[PricedLine],
    ) -> Result<i64, sqlx::Error> {
        let total: i64 = lines
            .iter()
            .map(|l| l.unit_price * i64::from(l.item.quantity))
            .sum();
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO orders.orders (order_id, user_id, status, total_amount) VALUES ($1, $2, $4, $3)",
        )
        .bind(order_id)
        .bind(user_id)
        .bind(total)
        .bind(OrderStatus::PaymentWait.as_str())
        .execute(&mut *tx)
        .await?;
        for l in lines {
            sqlx::query(
                "INSERT INTO orders.order_items (order_id, product_id, quantity, unit_price) VALUES ($1, $2, $3, $4)",
            )
            .bind(order_id)
            .bind(&l.item.product_id)
            .bind(l.item.quantity)
            .bind(l.unit_price)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(total)
    }

    /// An order, if it exists.
    pub async fn get(&self, order_id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, status, total_amount, payment_id, cancel_reason, created_at, updated_at
               FROM orders.orders WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.db)
        .await
    }
}

#[activities]
impl OrderActivities {
    /// See [`payflow_workflows::activities::OrderActivities::mark_paid`].
    #[activity(definition = markers::MarkOrderPaid)]
    pub async fn mark_paid(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        self.store
            .transition(
                &input.order_id,
                &input.payment_id,
                OrderStatus::PaymentCompleted,
                None,
            )
            .await
            .map(|_| ())
    }

    /// See [`payflow_workflows::activities::OrderActivities::complete`].
    #[activity(definition = markers::CompleteOrder)]
    pub async fn complete(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderUpdate,
    ) -> Result<(), ActivityError> {
        let changed = self
            .store
            .transition(
                &input.order_id,
                &input.payment_id,
                OrderStatus::OrderCompleted,
                None,
            )
            .await?;
        if changed {
            self.metrics.order("completed");
        }
        Ok(())
    }

    /// See [`payflow_workflows::activities::OrderActivities::complete_and_notify`].
    #[activity(definition = markers::CompleteOrderAndNotify)]
    pub async fn complete_and_notify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CompleteAndNotify,
    ) -> Result<OrderCompletion, ActivityError> {
        let changed = self
            .store
            .transition(
                &input.order.order_id,
                &input.order.payment_id,
                OrderStatus::OrderCompleted,
                None,
            )
            .await?;
        if changed {
            self.metrics.order("completed");
        }
        Ok(OrderCompletion {
            pushed: self.try_push(&input.push).await,
        })
    }

    /// See [`payflow_workflows::activities::OrderActivities::cancel`].
    #[activity(definition = markers::CancelOrder)]
    pub async fn cancel(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CancelOrder,
    ) -> Result<CancelledOrder, ActivityError> {
        // A compensation wins over everything: even a completed order is cancelled when its
        // payment is being refunded.
        let changed = self
            .store
            .transition(
                &input.order_id,
                "",
                OrderStatus::OrderCancelled,
                Some(&input.reason),
            )
            .await?;
        if changed {
            self.metrics.order("cancelled");
        }
        let items = self
            .store
            .items(&input.order_id)
            .await
            .transient("read order items")?;
        Ok(CancelledOrder { items })
    }

    /// See [`payflow_workflows::activities::OrderActivities::push`].
    #[activity(definition = markers::SendPush)]
    pub async fn push(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PushNotification,
    ) -> Result<(), ActivityError> {
        self.send_push(&input).await
    }
}
