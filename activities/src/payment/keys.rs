//! Payment keys bound to orders (`payment.payment_keys`).
//!
//! A payment key is the client's word, not proof of ownership: the browser hands it to the
//! backend after the PG's checkout. The first order a key is presented for owns it; the API
//! refuses it for any other order before anything starts, and the approval refuses it again for
//! payments started by other means. The table's primary key makes the binding race-free.

use sqlx::PgPool;

/// Who a payment key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBinding {
    /// The key is bound to the order it was presented for (now or before).
    Bound,
    /// The key belongs to another order.
    InUse,
}

/// What presenting a key for an order's payment found ([`PaymentKeys::present`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// The key is bound to this order (now or before).
    Bound,
    /// The key is this order's and the order's payment has reached the PG step (under this key
    /// or another): the request repeats that payment.
    Started,
    /// The key belongs to another order.
    InUse,
    /// This order's payment is already at the PG under another key: the request is a repeat
    /// of that payment, and the key it carries was not bound.
    OrderPaying,
}

/// The payment key bindings.
#[derive(Debug, Clone)]
pub struct PaymentKeys {
    db: PgPool,
}

impl PaymentKeys {
    /// Over the payflow database.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Binds `payment_key` to `order_id` for a payment request, unless it belongs to another
    /// order, in one round trip. Idempotent: presenting a key to its own order again answers
    /// [`Presented::Bound`] (or [`Presented::Started`] once its payment reached the PG step)
    /// and writes nothing. A key is bound only while the order's payment
    /// has not reached the PG under another key: a repeated request carrying another key (a
    /// client's mistake, or another order's key) binds nothing and answers
    /// [`Presented::OrderPaying`], so it cannot take that key from the order it belongs to.
    pub async fn present(
        &self,
        payment_key: &str,
        order_id: &str,
    ) -> Result<Presented, sqlx::Error> {
        until_settled(|| async {
            let (owner, paying, started): (Option<String>, bool, bool) = sqlx::query_as(
                "WITH payment AS (
                     SELECT coalesce(bool_or(payment_key <> $1), false) AS other_key,
                            coalesce(bool_or(payment_key = $1), false) AS this_key
                       FROM payment.payments WHERE order_id = $2),
                 bound AS (
                     INSERT INTO payment.payment_keys (payment_key, order_id)
                     SELECT $1, $2 FROM payment WHERE NOT payment.other_key
                     ON CONFLICT (payment_key) DO NOTHING
                     RETURNING order_id)
                 SELECT (SELECT order_id FROM bound
                         UNION ALL
                         SELECT order_id FROM payment.payment_keys WHERE payment_key = $1
                         LIMIT 1),
                        (SELECT other_key FROM payment),
                        (SELECT other_key OR this_key FROM payment)",
            )
            .bind(payment_key)
            .bind(order_id)
            .fetch_one(&self.db)
            .await?;
            Ok(match owner {
                Some(owner) if binding(&owner, order_id) == KeyBinding::Bound => Some(if started {
                    Presented::Started
                } else {
                    Presented::Bound
                }),
                Some(_) => Some(Presented::InUse),
                None if paying => Some(Presented::OrderPaying),
                None => None,
            })
        })
        .await
    }
}

/// Whether a key owned by `owner` is bound to `order_id`.
pub(crate) fn binding(owner: &str, order_id: &str) -> KeyBinding {
    if owner == order_id {
        KeyBinding::Bound
    } else {
        KeyBinding::InUse
    }
}

/// Runs a binding statement until it sees the key's owner (`Some`). A statement that binds a
/// key sees its own insert, or rows committed before it started; when a concurrent request bound
/// the key while it waited, it sees neither and answers `None`: ask again.
pub(crate) async fn until_settled<T, F, Fut>(mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    for _ in 0..3 {
        if let Some(settled) = attempt().await? {
            return Ok(settled);
        }
    }
    Err(sqlx::Error::Protocol(
        "payment key binding did not settle".into(),
    ))
}
