//! The `orders` schema: orders, their lines and the pushes sent. What the order service's
//! activities and the API (creating and reading orders) share.

use crate::{
    failure::{Transient, non_retryable},
    product::PricedLine,
};
use payflow_workflows::{
    errors,
    types::{OrderItem, OrderStatus, PushNotification},
};
use serde::Serialize;
use sqlx::PgPool;
use temporalio_sdk::activities::ActivityError;

/// How long past `reservation_expires_at` an order still counts as held (clock skew between
/// Redis, which times reservations, and PostgreSQL, which the API asks).
pub const RESERVATION_LAPSE_GRACE_SECS: f64 = 2.0;

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
    /// Until when the order's stock is reserved (none for orders from before it was recorded).
    pub reservation_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// True once that time has passed by more than [`RESERVATION_LAPSE_GRACE_SECS`] on the
    /// database's clock. The time itself comes from Redis' clock, which decides the expiry
    /// (the stock confirmation's claim and the sweep); the grace keeps a database clock a
    /// little ahead of Redis' from refusing an order whose stock is still held (a payment in
    /// the grace that finds its stock gone is refunded, the stock-failure path).
    #[serde(skip)]
    pub reservation_lapsed: bool,
}

/// The `orders` schema: what the order service's activities and the API (creating and
/// reading orders) share.
#[derive(Debug, Clone)]
pub struct OrderStore {
    db: PgPool,
}

impl OrderStore {
    /// Wraps the database pool.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// The database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::db::ping(&self.db).await
    }

    /// Moves an order to `to` from a state that may become it ([`OrderStatus::can_become`]);
    /// a retry that finds it already there is fine; any other state is a conflict.
    pub(super) async fn transition(
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

    /// The preceding step's half: the order in `PAYMENT_WAIT` with its lines, its stock held
    /// until `reservation_expires_at` (epoch milliseconds).
    pub async fn create(
        &self,
        order_id: &str,
        user_id: &str,
        lines: &[PricedLine],
        total: i64,
        reservation_expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO orders.orders (order_id, user_id, status, total_amount, reservation_expires_at)
             VALUES ($1, $2, $4, $3, $5)",
        )
        .bind(order_id)
        .bind(user_id)
        .bind(total)
        .bind(OrderStatus::PaymentWait.as_str())
        .bind(chrono::DateTime::from_timestamp_millis(reservation_expires_at))
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
        Ok(())
    }

    /// What `lines` cost together, in won; `None` beyond what an `i64` holds.
    pub fn total(lines: &[PricedLine]) -> Option<i64> {
        lines.iter().try_fold(0i64, |sum, l| {
            l.unit_price
                .checked_mul(i64::from(l.item.quantity))
                .and_then(|line| sum.checked_add(line))
        })
    }

    /// An order, if it exists.
    pub async fn get(&self, order_id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, status, total_amount, payment_id, cancel_reason, created_at, updated_at,
                    reservation_expires_at,
                    COALESCE(reservation_expires_at + make_interval(secs => $2) <= now(), false) AS reservation_lapsed
               FROM orders.orders WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(RESERVATION_LAPSE_GRACE_SECS)
        .fetch_optional(&self.db)
        .await
    }

    /// True when the push `notification_id` went out already.
    pub async fn notified(&self, notification_id: &str) -> Result<bool, sqlx::Error> {
        let sent: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM orders.notifications WHERE notification_id = $1")
                .bind(notification_id)
                .fetch_optional(&self.db)
                .await?;
        Ok(sent.is_some())
    }

    /// Records that the push went out (idempotent).
    pub async fn record_notification(&self, n: &PushNotification) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO orders.notifications (notification_id, order_id, user_id, title)
             VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(&n.notification_id)
        .bind(&n.order_id)
        .bind(&n.user_id)
        .bind(&n.title)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}
