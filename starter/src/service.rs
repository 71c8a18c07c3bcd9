//! `Payflow`: what the HTTP API and the CLI do, in one place. Orders are created here (the
//! preceding step: price, reserve, `PAYMENT_WAIT`), and payments are validated here before a
//! workflow exists: bad input changes nothing and never reaches the PG.

use crate::client::{ClientError, PaymentClient, decision_from_status};
use payflow_activities::{
    OrderStore,
    order::OrderRow,
    payment::{
        keys::{PaymentKeys, Presented},
        records::PaymentRecords,
    },
    product::{Product, ProductStore, ReserveError},
};
use payflow_workflows::{
    ids,
    types::{
        MAX_AMOUNT, OrderItem, OrderStatus, PaymentDecision, PaymentMethod, PaymentRequest,
        PaymentStatus, SagaTimings, check_amount,
    },
};
use serde::Serialize;

/// Default reservation time of a new order (SPEC §4: 15 minutes).
pub const DEFAULT_RESERVATION_TTL_MS: u64 = 15 * 60 * 1000;
/// The longest reservation an order may ask for (a day): stock held longer is stock nobody
/// can sell, and the reservation script keeps expiry times in milliseconds it must be able to
/// add up.
pub const MAX_RESERVATION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The demo catalogue: the seed's products, priced so its scenarios come out at 50,000 won
/// (`PRD-001` × 2 + `PRD-002`) and 30,000 won (`PRD-003`).
pub fn demo_catalogue() -> Vec<Product> {
    [
        ("PRD-001", "무선 마우스", 20_000),
        ("PRD-002", "마우스 패드", 10_000),
        ("PRD-003", "USB-C 허브", 30_000),
    ]
    .into_iter()
    .map(|(id, name, price)| Product {
        product_id: id.into(),
        name: name.into(),
        price,
        stock: 100_000,
    })
    .collect()
}

/// Why a request was refused or failed. Each maps to one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum PayflowError {
    /// Input that cannot be right (e.g. a non-positive amount).
    #[error("{0}")]
    Invalid(String),
    /// The amount is not the order's total (a tampered amount never reaches the PG).
    #[error("amount {given} does not match the order total {expected}")]
    AmountMismatch {
        /// What the request said.
        given: i64,
        /// The order's total.
        expected: i64,
    },
    /// The order does not exist.
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// The order is not waiting for payment and has no payment to return.
    #[error("order {order_id} is {status}, not PAYMENT_WAIT")]
    OrderNotPayable {
        /// The order.
        order_id: String,
        /// Its status.
        status: OrderStatus,
    },
    /// Unknown products in an order.
    #[error("unknown products: {0:?}")]
    UnknownProducts(Vec<String>),
    /// Not enough stock: (product, available).
    #[error("not enough stock")]
    InsufficientStock(Vec<(String, i64)>),
    /// The payment does not exist.
    #[error("payment {0} not found")]
    PaymentNotFound(String),
    /// The payment key belongs to another order (which is not named to this caller).
    #[error("the payment key belongs to another order")]
    PaymentKeyInUse,
    /// The order's stock reservation lapsed before it was paid: no payment was started.
    #[error(
        "the stock reservation of order {order_id} expired at {expired_at}; no payment was started"
    )]
    ReservationExpired {
        /// The order.
        order_id: String,
        /// When the reservation lapsed (RFC 3339).
        expired_at: String,
    },
    /// An order was created with this idempotency key for other items (or another customer).
    #[error("this Idempotency-Key was used for another order")]
    IdempotencyKeyReused,
    /// A request with this idempotency key is still being served.
    #[error("an order with this Idempotency-Key is being created; try again")]
    IdempotencyKeyInUse,
    /// A dependency failed.
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

impl From<ClientError> for PayflowError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotFound(order) => PayflowError::PaymentNotFound(order),
            e @ ClientError::Temporal(_) => PayflowError::Unavailable(e.into()),
        }
    }
}

impl From<sqlx::Error> for PayflowError {
    fn from(e: sqlx::Error) -> Self {
        PayflowError::Unavailable(e.into())
    }
}

/// A new order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOrder {
    /// Its id.
    pub order_id: String,
    /// The customer.
    pub user_id: String,
    /// Total in won, from the product prices.
    pub total_amount: i64,
    /// `PAYMENT_WAIT`.
    pub status: OrderStatus,
    /// When the stock reservation expires (RFC 3339).
    pub reservation_expires_at: String,
    /// What was reserved.
    pub items: Vec<OrderItem>,
}

/// A payment to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pay {
    /// The order.
    pub order_id: String,
    /// How.
    pub payment_method: PaymentMethod,
    /// Amount in won; must be the order's total.
    pub amount: i64,
    /// The PG checkout widget's key, if any.
    pub payment_key: Option<String>,
}

/// Orders, stock and payments.
#[derive(Clone, Debug)]
pub struct Payflow {
    /// Payment workflows.
    pub payments: PaymentClient,
    /// The `orders` schema.
    pub orders: OrderStore,
    /// Products and reservations.
    pub products: ProductStore,
    /// Payment keys bound to orders.
    pub payment_keys: PaymentKeys,
    /// What the payment service recorded (payments whose workflow Temporal no longer holds).
    pub payment_records: PaymentRecords,
    /// Timings passed to new workflows (`None`: production defaults).
    pub timings: Option<SagaTimings>,
}

impl Payflow {
    /// Creates an order in `PAYMENT_WAIT` with its stock reserved for `ttl_ms`.
    pub async fn create_order(
        &self,
        user_id: &str,
        items: &[OrderItem],
        ttl_ms: u64,
    ) -> Result<CreatedOrder, PayflowError> {
        let merged = order_lines(user_id, items, ttl_ms)?;
        self.reserve_and_record(new_order_id(), user_id, merged, ttl_ms)
            .await
    }

    /// [`Self::create_order`], once per customer and idempotency key: a request repeated with
    /// the same key (a client retrying after a lost answer) answers the order the first one
    /// created, as it is now, and reserves nothing more; the same key with other items is
    /// refused. Answers the order and whether this request created it.
    pub async fn create_order_once(
        &self,
        user_id: &str,
        items: &[OrderItem],
        ttl_ms: u64,
        idempotency_key: &str,
    ) -> Result<(CreatedOrder, bool), PayflowError> {
        check_id("Idempotency-Key", idempotency_key)?;
        let merged = order_lines(user_id, items, ttl_ms)?;
        let order_id = order_id_for_key(user_id, idempotency_key);
        if let Some(order) = self.orders.get(&order_id).await? {
            if order.user_id != user_id || self.orders.items(&order_id).await? != merged {
                return Err(PayflowError::IdempotencyKeyReused);
            }
            let created = CreatedOrder {
                order_id: order.order_id,
                user_id: order.user_id,
                total_amount: order.total_amount,
                status: order.status,
                reservation_expires_at: order
                    .reservation_expires_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                items: merged,
            };
            return Ok((created, false));
        }
        let created = self
            .reserve_and_record(order_id, user_id, merged, ttl_ms)
            .await?;
        Ok((created, true))
    }

    /// Reserves the stock of `merged` under `order_id` and records the order; undoes the
    /// reservation if the order cannot be recorded.
    async fn reserve_and_record(
        &self,
        order_id: String,
        user_id: &str,
        merged: Vec<OrderItem>,
        ttl_ms: u64,
    ) -> Result<CreatedOrder, PayflowError> {
        let (lines, expires_at) = self
            .products
            .reserve(&order_id, &merged, ttl_ms)
            .await
            .map_err(|e| match e {
                ReserveError::UnknownProducts(p) => PayflowError::UnknownProducts(p),
                ReserveError::Short(s) => PayflowError::InsufficientStock(s),
                // Only an order id from an idempotency key can be taken: by a request with the
                // same key still being served (or cut short before it recorded the order; its
                // reservation lapses on its own).
                ReserveError::Exists(_) => PayflowError::IdempotencyKeyInUse,
                ReserveError::Infra(e) => PayflowError::Unavailable(e),
            })?;
        let created = match OrderStore::total(&lines).filter(|t| (1..=MAX_AMOUNT).contains(t)) {
            None => Err(PayflowError::Invalid(format!(
                "the order's total must be from 1 to {MAX_AMOUNT} won"
            ))),
            Some(total) => self
                .orders
                .create(&order_id, user_id, &lines, total, expires_at)
                .await
                .map(|()| total)
                .map_err(PayflowError::from),
        };
        let total = match created {
            Ok(total) => total,
            Err(e) => {
                // No order, no reservation.
                let _ = self
                    .products
                    .release_stock(&payflow_workflows::types::ReleaseStock {
                        order_id: order_id.clone(),
                    })
                    .await;
                return Err(e);
            }
        };
        tracing::info!(order_id = %order_id, total, "order created");
        Ok(CreatedOrder {
            order_id,
            user_id: user_id.to_owned(),
            total_amount: total,
            status: OrderStatus::PaymentWait,
            reservation_expires_at: chrono::DateTime::from_timestamp_millis(expires_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            items: merged,
        })
    }

    /// Pays an order: validates against the order, then starts (or finds) its payment and
    /// answers the PG's decision. A repeated request answers the same payment.
    pub async fn pay(&self, pay: Pay) -> Result<PaymentDecision, PayflowError> {
        check_id("orderId", &pay.order_id)?;
        check_amount(pay.amount).map_err(|e| PayflowError::Invalid(e.to_string()))?;
        if let Some(key) = &pay.payment_key {
            check_payment_key(key, &pay.order_id)?;
        }
        let order = self
            .orders
            .get(&pay.order_id)
            .await?
            .ok_or_else(|| PayflowError::OrderNotFound(pay.order_id.clone()))?;
        if pay.amount != order.total_amount {
            return Err(PayflowError::AmountMismatch {
                given: pay.amount,
                expected: order.total_amount,
            });
        }
        if order.status != OrderStatus::PaymentWait {
            // Already paid (or cancelled): the existing payment answers, if there is one.
            return match self.payment_status(&order).await? {
                Some(status) => Ok(decision_from_status(&status)),
                None => Err(PayflowError::OrderNotPayable {
                    order_id: order.order_id,
                    status: order.status,
                }),
            };
        }
        if order.reservation_lapsed {
            // The stock is no longer held: a charge now could only be refunded. A payment that
            // started before the lapse is joined below; none is started after it.
            match self.payments.status(&pay.order_id).await {
                Ok(_) => {}
                Err(ClientError::NotFound(_)) => {
                    return Err(PayflowError::ReservationExpired {
                        order_id: order.order_id,
                        expired_at: order
                            .reservation_expires_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The key is bound to this order before anything starts: a key of another order is
        // refused here, and a race between two orders for one key has one winner. A repeat of a
        // payment already at the PG binds nothing: it joins that payment below.
        let payment_key = pay
            .payment_key
            .clone()
            .unwrap_or_else(|| ids::default_payment_key(&order.order_id));
        let repeat = match self
            .payment_keys
            .present(&payment_key, &order.order_id)
            .await?
        {
            Presented::InUse => return Err(PayflowError::PaymentKeyInUse),
            Presented::Bound => false,
            Presented::Started | Presented::OrderPaying => true,
        };
        let decision = self
            .payments
            .pay(PaymentRequest {
                order_id: order.order_id,
                user_id: order.user_id,
                payment_method: pay.payment_method,
                amount: pay.amount,
                payment_key: pay.payment_key,
                timings: self.timings,
            })
            .await?;
        if repeat && decision.approved {
            // A repeat gets the first request's answer back, the approval, even while the
            // payment is being undone (a refund after a failed stock step, with the order still
            // waiting to be cancelled): the status says whether the approval still stands.
            return Ok(self.payments.current_decision(&decision.order_id).await?);
        }
        Ok(decision)
    }

    /// An order and its payment's state, if it has one.
    pub async fn order(
        &self,
        order_id: &str,
    ) -> Result<(OrderRow, Option<PaymentStatus>), PayflowError> {
        check_id("orderId", order_id)?;
        let order = self
            .orders
            .get(order_id)
            .await?
            .ok_or_else(|| PayflowError::OrderNotFound(order_id.to_owned()))?;
        let payment = self.payment_status(&order).await?;
        Ok((order, payment))
    }

    /// The payment of an order (`PaymentNotFound` if it has none): its workflow's status, or
    /// what was recorded of it (see [`Self::payment_status`]).
    pub async fn payment(&self, order_id: &str) -> Result<PaymentStatus, PayflowError> {
        let not_found = || PayflowError::PaymentNotFound(ids::payment_id(order_id));
        match self.payments.status(order_id).await {
            Ok(status) => Ok(status),
            Err(ClientError::NotFound(_)) => {
                let order = self.orders.get(order_id).await?.ok_or_else(not_found)?;
                self.payment_records
                    .status(&order)
                    .await?
                    .ok_or_else(not_found)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The status of an order's payment: its workflow's, or, for a final order whose workflow
    /// Temporal no longer holds (past the namespace's retention), what the payment service
    /// recorded of it. `None` if the order has no payment.
    async fn payment_status(
        &self,
        order: &OrderRow,
    ) -> Result<Option<PaymentStatus>, PayflowError> {
        match self.payments.status(&order.order_id).await {
            Ok(status) => Ok(Some(status)),
            Err(ClientError::NotFound(_)) => Ok(self.payment_records.status(order).await?),
            Err(e) => Err(e.into()),
        }
    }
}

/// A PG payment key as the checkout widget hands it over for `order_id`: 1 to 200 characters,
/// none of them whitespace or control characters, and not the key payflow derives for another
/// order paid without one (which would take that key from it). Anything else is refused before
/// it is bound to an order or reaches the PG (whose rejection would cancel the order for good).
pub fn check_payment_key(key: &str, order_id: &str) -> Result<(), PayflowError> {
    let length = key.chars().count();
    if length == 0 || length > 200 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PayflowError::Invalid(
            "paymentKey must be 1 to 200 characters, without spaces".into(),
        ));
    }
    if key.starts_with(ids::DEFAULT_PAYMENT_KEY_PREFIX) && key != ids::default_payment_key(order_id)
    {
        return Err(PayflowError::Invalid(format!(
            "paymentKey must not start with {} (payflow's own keys)",
            ids::DEFAULT_PAYMENT_KEY_PREFIX
        )));
    }
    Ok(())
}

/// The longest id payflow takes from a client (an order, a user, a product): ids are database
/// keys, search attributes and Kafka record keys.
pub const MAX_ID_CHARS: usize = 100;

/// An id from a client: 1 to [`MAX_ID_CHARS`] characters, not only spaces, no control
/// characters (PostgreSQL refuses a NUL, which would otherwise read as an outage).
pub fn check_id(what: &str, id: &str) -> Result<(), PayflowError> {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control)
    {
        return Err(PayflowError::Invalid(format!(
            "{what} must be 1 to {MAX_ID_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

/// An order's lines as a request gives them, checked (`userId`, products, positive quantities,
/// the reservation's time) and merged per product, sorted.
fn order_lines(
    user_id: &str,
    items: &[OrderItem],
    ttl_ms: u64,
) -> Result<Vec<OrderItem>, PayflowError> {
    check_id("userId", user_id)?;
    if items.is_empty() {
        return Err(PayflowError::Invalid(
            "an order needs at least one item".into(),
        ));
    }
    for i in items {
        check_id("productId", &i.product_id)?;
    }
    if let Some(i) = items.iter().find(|i| i.quantity <= 0) {
        return Err(PayflowError::Invalid(format!(
            "quantity of {} must be positive",
            i.product_id
        )));
    }
    if !(1..=MAX_RESERVATION_TTL_MS).contains(&ttl_ms) {
        return Err(PayflowError::Invalid(format!(
            "the reservation must last from 1 ms to {} s",
            MAX_RESERVATION_TTL_MS / 1000
        )));
    }
    let mut merged: Vec<OrderItem> = Vec::new();
    for i in items {
        match merged.iter_mut().find(|m| m.product_id == i.product_id) {
            Some(m) => {
                m.quantity = m.quantity.checked_add(i.quantity).ok_or_else(|| {
                    PayflowError::Invalid(format!("quantity of {} is too large", i.product_id))
                })?
            }
            None => merged.push(i.clone()),
        }
    }
    merged.sort();
    Ok(merged)
}

/// The order id of a customer's idempotency key: `ORD-` and 16 hex digits of a hash of both.
fn order_id_for_key(user_id: &str, key: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{user_id}\n{key}"));
    let hex: String = hash[..8].iter().map(|b| format!("{b:02X}")).collect();
    format!("ORD-{hex}")
}

/// A fresh order id: `ORD-` and 16 random hex digits.
pub fn new_order_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("ORD-{}", &id[..16])
}
