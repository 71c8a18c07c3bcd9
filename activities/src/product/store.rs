//! The product service's data: the Redis reservations and the `product` schema (products,
//! reservation rows). The order-creation side (seed, reserve) and the activities' side
//! (confirm, release, expire) share it.

use super::reservation::{Claim, Reservations, Reserve};
use crate::failure::{Transient, non_retryable};
use ReservationStatus::{Confirmed, Expired, Released, Reserved};
use payflow_workflows::{
    errors,
    types::{
        ConfirmStock, OrderItem, ReleaseStock, ReservationStatus, StockConfirmation, StockRelease,
    },
};
use sqlx::{PgPool, Postgres, Transaction};
use temporalio_sdk::activities::ActivityError;

/// How long past its expiry a Redis reservation whose order never got reservation rows stays
/// held before the sweeper gives its stock back: an order creation stalled that long has died.
pub const ORPHAN_GRACE_MS: u64 = 60_000;

/// The product service's store: Redis and the database pool.
#[derive(Debug, Clone)]
pub struct ProductStore {
    redis: Reservations,
    db: PgPool,
}

/// A product to seed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Id, e.g. `PRD-001`.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in won.
    pub price: i64,
    /// Stock.
    pub stock: i32,
}

/// A reserved order line, priced from the product table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product and quantity.
    pub item: OrderItem,
    /// Unit price in won.
    pub unit_price: i64,
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Some products do not exist.
    #[error("unknown products: {0:?}")]
    UnknownProducts(Vec<String>),
    /// Not enough available stock: (product, available).
    #[error("not enough stock: {0:?}")]
    Short(Vec<(String, i64)>),
    /// The order already holds a reservation.
    #[error("order {0} already has a reservation")]
    Exists(String),
    /// Redis or the database failed.
    #[error(transparent)]
    Infra(#[from] anyhow::Error),
}

impl ProductStore {
    /// Wires Redis and the database pool.
    pub fn new(redis: Reservations, db: PgPool) -> Self {
        Self { redis, db }
    }

    /// The Redis reservation store.
    pub fn reservations(&self) -> &Reservations {
        &self.redis
    }

    /// Seeds products (idempotent: existing products keep their stock). Redis gets the
    /// database's stock minus what live reservations hold, if it has no figure yet.
    pub async fn seed(&self, products: &[Product]) -> anyhow::Result<()> {
        for p in products {
            sqlx::query(
                "INSERT INTO product.products (product_id, name, price, stock)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (product_id) DO NOTHING",
            )
            .bind(&p.product_id)
            .bind(&p.name)
            .bind(p.price)
            .bind(p.stock)
            .execute(&self.db)
            .await?;
            let available: i64 = sqlx::query_scalar(
                "SELECT p.stock::BIGINT - COALESCE((SELECT SUM(r.quantity) FROM product.stock_reservations r
                          WHERE r.product_id = p.product_id AND r.status = 'RESERVED'), 0)
                   FROM product.products p WHERE p.product_id = $1",
            )
            .bind(&p.product_id)
            .fetch_one(&self.db)
            .await?;
            self.redis
                .init_stock(&p.product_id, available.max(0))
                .await?;
        }
        Ok(())
    }

    /// The preceding step's half: price the lines and reserve them (Redis, with a TTL, plus
    /// `RESERVED` rows). All lines or none.
    pub async fn reserve(
        &self,
        order_id: &str,
        items: &[OrderItem],
        ttl_ms: u64,
    ) -> Result<(Vec<PricedLine>, i64), ReserveError> {
        let ids: Vec<String> = items.iter().map(|i| i.product_id.clone()).collect();
        let prices: Vec<(String, i64)> = sqlx::query_as(
            "SELECT product_id, price FROM product.products WHERE product_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.db)
        .await
        .map_err(anyhow::Error::from)?;
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !prices.iter().any(|(p, _)| p == *id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ReserveError::UnknownProducts(unknown));
        }
        let lines: Vec<PricedLine> = items
            .iter()
            .map(|i| PricedLine {
                item: i.clone(),
                unit_price: prices
                    .iter()
                    .find(|(p, _)| *p == i.product_id)
                    .map(|(_, price)| *price)
                    .unwrap_or_default(),
            })
            .collect();

        let expires_at = match self
            .redis
            .reserve(order_id, items, ttl_ms)
            .await
            .map_err(anyhow::Error::from)?
        {
            Reserve::Reserved { expires_at } => expires_at,
            Reserve::Short(short) => return Err(ReserveError::Short(short)),
            Reserve::Exists => return Err(ReserveError::Exists(order_id.to_owned())),
        };
        let insert = async {
            let mut tx = self.db.begin().await?;
            for l in &lines {
                sqlx::query(
                    "INSERT INTO product.stock_reservations (order_id, product_id, quantity, status, expires_at)
                     VALUES ($1, $2, $3, 'RESERVED', to_timestamp($4::DOUBLE PRECISION / 1000))",
                )
                .bind(order_id)
                .bind(&l.item.product_id)
                .bind(l.item.quantity)
                .bind(expires_at as f64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        if let Err(e) = insert.await {
            // Give the stock back rather than strand it in Redis.
            let _ = self.redis.release(order_id).await;
            return Err(ReserveError::Infra(e.into()));
        }
        Ok((lines, expires_at))
    }

    /// Stock confirmation (see [`payflow_workflows::activities::ProductActivities::confirm`]):
    /// the Redis claim, then the database's stock and reservation rows in one call of
    /// `product.confirm_stock` (one statement, so one transaction).
    pub async fn confirm_stock(
        &self,
        c: &ConfirmStock,
    ) -> Result<StockConfirmation, ActivityError> {
        let order_id = &c.order_id;
        match self
            .redis
            .claim(order_id)
            .await
            .transient("claim reservation")?
        {
            Claim::Claimed(_) => {}
            Claim::Expired => {
                self.mark_expired(std::slice::from_ref(order_id))
                    .await
                    .transient("mark reservation expired")?;
                return Err(non_retryable(
                    errors::RESERVATION_EXPIRED,
                    format!("the stock reservation of order {order_id} expired"),
                ));
            }
            Claim::Missing => {
                // Perhaps an earlier attempt confirmed it and removed the claim, or found it
                // expired and gave its stock back in Redis but did not get to mark the rows
                // (they are still `RESERVED`, past their expiry): mark them now, as it would have.
                let lapsed = self
                    .mark_lapsed(order_id)
                    .await
                    .transient("mark reservation expired")?;
                return match self.rows(order_id).await.transient("read reservation")? {
                    _ if lapsed => Err(non_retryable(
                        errors::RESERVATION_EXPIRED,
                        format!("the stock reservation of order {order_id} expired"),
                    )),
                    rows if !rows.is_empty() && rows.iter().all(|r| r.is(Confirmed)) => {
                        Ok(StockConfirmation {
                            items: items(&rows),
                        })
                    }
                    rows if rows.iter().any(|r| r.is(Released)) => Err(non_retryable(
                        errors::RESERVATION_RELEASED,
                        format!("the stock reservation of order {order_id} was released"),
                    )),
                    rows if rows.iter().any(|r| r.is(Expired)) => Err(non_retryable(
                        errors::RESERVATION_EXPIRED,
                        format!("the stock reservation of order {order_id} expired"),
                    )),
                    _ => Err(non_retryable(
                        errors::RESERVATION_MISSING,
                        format!("order {order_id} has no stock reservation"),
                    )),
                };
            }
        }

        // One round trip (migration `confirm_stock`): locks the lines, and decrements and
        // confirms them only when they are all reserved or confirmed; answers the lines found.
        let rows: Vec<ReservationLine> = sqlx::query_as(
            "SELECT product_id, quantity, status FROM product.confirm_stock($1, $2)",
        )
        .bind(order_id)
        .bind(&c.payment_id)
        .fetch_all(&self.db)
        .await
        .map_err(|e| match insufficient_stock(&e) {
            // The claim stays in Redis; the workflow's compensation gives it back.
            Some(message) => non_retryable(
                errors::INSUFFICIENT_STOCK,
                format!("{message} for order {order_id}"),
            ),
            None => crate::failure::retryable("confirm stock", e),
        })?;
        if rows.is_empty() {
            return Err(non_retryable(
                errors::RESERVATION_MISSING,
                format!("order {order_id} has no stock reservation rows"),
            ));
        }
        if let Some(r) = rows.iter().find(|r| !r.is(Reserved) && !r.is(Confirmed)) {
            return Err(non_retryable(
                errors::RESERVATION_RELEASED,
                format!("the stock reservation of order {order_id} is {}", r.status),
            ));
        }
        let items = items(&rows);
        self.redis
            .finish_claim(order_id)
            .await
            .transient("remove Redis reservation")?;
        tracing::info!(order_id = %order_id, "stock confirmed");
        Ok(StockConfirmation { items })
    }

    /// Compensation (see [`payflow_workflows::activities::ProductActivities::release`]).
    pub async fn release_stock(&self, r: &ReleaseStock) -> Result<StockRelease, ActivityError> {
        let order_id = &r.order_id;
        let mut tx = self.db.begin().await.transient("begin")?;
        let rows = lock_rows(&mut tx, order_id)
            .await
            .transient("lock reservation")?;
        let items = items(&rows);
        let action = if rows.is_empty() {
            self.redis
                .release(order_id)
                .await
                .transient("release reservation")?;
            "NOTHING"
        } else if rows.iter().all(|r| r.is(Released)) {
            "NOTHING"
        } else if rows.iter().any(|r| r.is(Confirmed)) {
            // Stock already permanent: give it back to the database and to Redis (once).
            for ReservationLine {
                product_id,
                quantity,
                ..
            } in rows.iter().filter(|r| r.is(Confirmed))
            {
                sqlx::query(
                    "UPDATE product.products SET stock = stock + $2, updated_at = now() WHERE product_id = $1",
                )
                .bind(product_id)
                .bind(quantity)
                .execute(&mut *tx)
                .await
                .transient("restock")?;
            }
            let confirmed: Vec<OrderItem> = rows
                .iter()
                .filter(|r| r.is(Confirmed))
                .map(ReservationLine::item)
                .collect();
            self.redis
                .restock(order_id, &confirmed)
                .await
                .transient("restock Redis")?;
            // A confirmation cut short after its commit may have left its claim behind; the
            // claimed stock is in the database now, so the claim is only dropped.
            self.redis
                .finish_claim(order_id)
                .await
                .transient("drop claim")?;
            "RESTOCKED"
        } else {
            // Held, claimed or already expired: whatever Redis still holds goes back.
            self.redis
                .release(order_id)
                .await
                .transient("release reservation")?;
            "RELEASED"
        };
        sqlx::query(
            "UPDATE product.stock_reservations SET status = 'RELEASED', updated_at = now()
              WHERE order_id = $1 AND status <> 'RELEASED'",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .transient("mark released")?;
        tx.commit().await.transient("commit")?;
        tracing::info!(order_id = %order_id, action, "stock released");
        Ok(StockRelease {
            items,
            action: action.to_owned(),
        })
    }

    /// Marks the rows of expired reservations `EXPIRED`, then gives their stock back in Redis.
    /// In that order, so a sweeper that dies between the two leaves the reservation held in
    /// Redis, and the next sweep finishes it; the other order would leave rows `RESERVED` that
    /// no sweep finds again. Run periodically by the product worker; answers how many orders
    /// it expired.
    ///
    /// An order is created Redis first, rows a moment later: a reservation that expires in
    /// between (a very short TTL, a stalled creation) has no rows to mark yet, so it is left
    /// held until they are there. Only when its order has had no rows for
    /// [`ORPHAN_GRACE_MS`] past the expiry (the creation died between the two) does its stock
    /// go back without them.
    pub async fn sweep_expired(&self) -> anyhow::Result<usize> {
        let expired = self.redis.expired(500).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let with_rows = self.mark_expired(&expired).await?;
        let (with_rows, without): (Vec<String>, Vec<String>) =
            expired.into_iter().partition(|o| with_rows.contains(o));
        let released = self.redis.release_expired(&with_rows, 0).await?;
        if !released.is_empty() {
            tracing::info!(
                count = released.len(),
                "expired stock reservations released"
            );
        }
        let orphans = self
            .redis
            .release_expired(&without, ORPHAN_GRACE_MS)
            .await?;
        for order_id in &orphans {
            tracing::warn!(
                order_id = %order_id,
                "stock of a reservation whose order was never created released"
            );
        }
        Ok(released.len() + orphans.len())
    }

    /// Marks the `RESERVED` rows of `order_ids` `EXPIRED`; answers those of `order_ids` that
    /// have reservation rows (whatever their status), in the same statement.
    async fn mark_expired(&self, order_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "WITH marked AS (
               UPDATE product.stock_reservations SET status = 'EXPIRED', updated_at = now()
                WHERE order_id = ANY($1) AND status = 'RESERVED')
             SELECT DISTINCT order_id FROM product.stock_reservations WHERE order_id = ANY($1)",
        )
        .bind(order_ids)
        .fetch_all(&self.db)
        .await
    }

    /// Marks an order's reservation `EXPIRED` if its rows are still `RESERVED` past their expiry
    /// while Redis holds nothing of it; answers whether it did.
    async fn mark_lapsed(&self, order_id: &str) -> Result<bool, sqlx::Error> {
        let marked: Vec<i32> = sqlx::query_scalar(
            "UPDATE product.stock_reservations SET status = 'EXPIRED', updated_at = now()
              WHERE order_id = $1 AND status = 'RESERVED' AND expires_at <= now()
             RETURNING 1",
        )
        .bind(order_id)
        .fetch_all(&self.db)
        .await?;
        Ok(!marked.is_empty())
    }

    async fn rows(&self, order_id: &str) -> Result<Vec<ReservationLine>, sqlx::Error> {
        sqlx::query_as(
            "SELECT product_id, quantity, status FROM product.stock_reservations
              WHERE order_id = $1 ORDER BY product_id",
        )
        .bind(order_id)
        .fetch_all(&self.db)
        .await
    }
}

/// The message of `product.confirm_stock`'s "not enough stock of <product>" (SQLSTATE PYF01).
fn insufficient_stock(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("PYF01") => {
            Some(db.message().to_owned())
        }
        _ => None,
    }
}

async fn lock_rows(
    tx: &mut Transaction<'_, Postgres>,
    order_id: &str,
) -> Result<Vec<ReservationLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, quantity, status FROM product.stock_reservations
          WHERE order_id = $1 ORDER BY product_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await
}

/// One line of an order's stock reservation (`product.stock_reservations`).
#[derive(Debug, Clone, sqlx::FromRow)]
struct ReservationLine {
    product_id: String,
    quantity: i32,
    #[sqlx(try_from = "String")]
    status: ReservationStatus,
}

impl ReservationLine {
    fn is(&self, status: ReservationStatus) -> bool {
        self.status == status
    }

    fn item(&self) -> OrderItem {
        OrderItem {
            product_id: self.product_id.clone(),
            quantity: self.quantity,
        }
    }
}

fn items(rows: &[ReservationLine]) -> Vec<OrderItem> {
    rows.iter().map(ReservationLine::item).collect()
}
