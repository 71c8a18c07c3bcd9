//! The Redis side of stock: per-product available stock and per-order reservations.
//!
//! Keys (all under the hash tag `{payflow}`, so every script touches one slot and stays atomic
//! on a Redis cluster too):
//!
//! - `{payflow}:stock:<productId>`: available stock (what new orders may reserve).
//! - `{payflow}:resv:<orderId>`: a held reservation: `p:<productId>` -> quantity, `expires_at`.
//! - `{payflow}:claimed:<orderId>`: a reservation claimed by a stock confirmation in progress.
//! - `{payflow}:expiry`: sorted set of held reservations by expiry time.
//! - `{payflow}:restocked:<orderId>`: marks a confirmed order's stock as given back.
//!
//! Reservations carry their own expiry instead of a Redis TTL: a key that simply vanished
//! would take its stock with it. Expiry is decided by one script at a time (the claim, the
//! release, or the sweeper), each of which moves the stock exactly once; so an expiry racing a
//! confirmation can neither lose nor double-count stock.

use payflow_workflows::types::OrderItem;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use std::{collections::BTreeMap, sync::LazyLock};

const EXPIRY: &str = "{payflow}:expiry";

fn stock_key(product_id: &str) -> String {
    format!("{{payflow}}:stock:{product_id}")
}
fn resv_key(order_id: &str) -> String {
    format!("{{payflow}}:resv:{order_id}")
}
fn claimed_key(order_id: &str) -> String {
    format!("{{payflow}}:claimed:{order_id}")
}
fn restocked_key(order_id: &str) -> String {
    format!("{{payflow}}:restocked:{order_id}")
}

/// Redis' clock in milliseconds; every script decides expiry by the same clock.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Gives back the stock of the reservation hash at `key` and deletes it.
const GIVE_BACK: &str = r"
local function give_back(key)
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 2) == 'p:' then
      redis.call('INCRBY', '{payflow}:stock:' .. string.sub(f, 3), fields[i + 1])
    end
  end
  redis.call('DEL', key)
  return fields
end
";

/// KEYS: resv, expiry, stock keys...; ARGV: order id, ttl ms, then product id / quantity pairs.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
if redis.call('EXISTS', KEYS[1]) == 1 then return {{'EXISTS'}} end
local short = {{}}
local n = (#ARGV - 2) / 2
for i = 1, n do
  local qty = tonumber(ARGV[2 + 2 * i])
  local avail = tonumber(redis.call('GET', KEYS[2 + i]) or '0')
  if avail < qty then
    table.insert(short, ARGV[1 + 2 * i])
    table.insert(short, tostring(avail))
  end
end
if #short > 0 then
  table.insert(short, 1, 'SHORT')
  return short
end
local expires = now + tonumber(ARGV[2])
for i = 1, n do
  redis.call('DECRBY', KEYS[2 + i], ARGV[2 + 2 * i])
  redis.call('HSET', KEYS[1], 'p:' .. ARGV[1 + 2 * i], ARGV[2 + 2 * i])
end
redis.call('HSET', KEYS[1], 'expires_at', tostring(expires))
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return {{'OK', tostring(expires)}}"
    ))
});

/// KEYS: resv, claimed, expiry; ARGV: order id.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{GIVE_BACK}
if redis.call('EXISTS', KEYS[2]) == 1 then
  local fields = redis.call('HGETALL', KEYS[2])
  table.insert(fields, 1, 'CLAIMED')
  return fields
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {{'MISSING'}} end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
if expires <= now then
  give_back(KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {{'EXPIRED'}}
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local fields = redis.call('HGETALL', KEYS[2])
table.insert(fields, 1, 'CLAIMED')
return fields"
    ))
});

/// KEYS: resv, claimed, expiry; ARGV: order id. Gives back a held or claimed reservation.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GIVE_BACK}
redis.call('ZREM', KEYS[3], ARGV[1])
for _, key in ipairs({{KEYS[1], KEYS[2]}}) do
  if redis.call('EXISTS', key) == 1 then
    give_back(key)
    return 'RELEASED'
  end
end
return 'NONE'"
    ))
});

/// KEYS: restocked marker; ARGV: marker ttl ms, then product id / quantity pairs. Gives back
/// confirmed stock once per order.
static RESTOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('INCRBY', '{payflow}:stock:' .. ARGV[i], ARGV[i + 1])
end
return 1",
    )
});

/// KEYS: expiry; ARGV: max orders. Gives back expired reservations; answers their order ids.
/// KEYS: expiry; ARGV: limit. Answers up to `limit` held reservations past their expiry, and
/// forgets expiry entries whose reservation is gone (claimed or released). Moves no stock.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local expired = {{}}
for _, order_id in ipairs(due) do
  local key = '{{payflow}}:resv:' .. order_id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], order_id)
  elseif tonumber(redis.call('HGET', key, 'expires_at') or '0') <= now then
    table.insert(expired, order_id)
  end
end
return expired"
    ))
});

/// KEYS: expiry; ARGV: grace ms, then order ids. Gives back each reservation that is still
/// held and expired at least `grace` ms ago; answers those it gave back. Forgets the expiry
/// entries of those it gave back and of those already gone; keeps the others for a later sweep.
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{GIVE_BACK}
local grace = tonumber(ARGV[1])
local released = {{}}
for i = 2, #ARGV do
  local order_id = ARGV[i]
  local key = '{{payflow}}:resv:' .. order_id
  if redis.call('EXISTS', key) == 1 then
    local expires = tonumber(redis.call('HGET', key, 'expires_at') or '0')
    if expires + grace <= now then
      give_back(key)
      table.insert(released, order_id)
      redis.call('ZREM', KEYS[1], order_id)
    end
  else
    redis.call('ZREM', KEYS[1], order_id)
  end
end
return released"
    ))
});

/// The result of reserving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved until this time (epoch ms, Redis clock).
    Reserved {
        /// Expiry of the reservation.
        expires_at: i64,
    },
    /// Not enough stock: (product id, available) of each short line.
    Short(Vec<(String, i64)>),
    /// The order already has a reservation.
    Exists,
}

/// The result of claiming an order's reservation for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Claimed (now or by an earlier attempt): the reserved items.
    Claimed(Vec<OrderItem>),
    /// The reservation had expired; its stock went back to available.
    Expired,
    /// No reservation (never made, already confirmed, released or swept).
    Missing,
}

/// The Redis reservation store. Cheap to clone.
#[derive(Clone)]
pub struct Reservations {
    redis: ConnectionManager,
}

impl std::fmt::Debug for Reservations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reservations")
    }
}

impl Reservations {
    /// Checks a Redis URL without connecting (a malformed one is a configuration error).
    pub fn check_url(url: &str) -> redis::RedisResult<()> {
        redis::Client::open(url).map(|_| ())
    }

    /// Whether a connection error says the configuration is wrong rather than that Redis is
    /// away: its password refused, or one required and not given. Waiting cannot mend either.
    /// (The connection manager has already retried for about 10 s before it answers, so a Redis
    /// refusing AUTH for a passing reason, its connection limit, has had its chance.)
    pub fn misconfigured(e: &redis::RedisError) -> bool {
        e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
    }

    /// Connects (the connection manager reconnects by itself) and asks once, so a Redis that
    /// wants a password the URL does not give (NOAUTH) says so now, not at the first payment.
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let connected = Self {
            redis: ConnectionManager::new(client).await?,
        };
        connected.ping().await?;
        Ok(connected)
    }

    /// Sets a product's available stock if Redis has none yet (idempotent seeding).
    pub async fn init_stock(&self, product_id: &str, available: i64) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        let _: bool = c.set_nx(stock_key(product_id), available).await?;
        Ok(())
    }

    /// A product's available stock (0 when unknown).
    pub async fn available(&self, product_id: &str) -> redis::RedisResult<i64> {
        let mut c = self.redis.clone();
        let v: Option<i64> = c.get(stock_key(product_id)).await?;
        Ok(v.unwrap_or(0))
    }

    /// What an order holds (held or claimed), by product.
    pub async fn held(&self, order_id: &str) -> redis::RedisResult<BTreeMap<String, i64>> {
        let mut c = self.redis.clone();
        let mut out = BTreeMap::new();
        for key in [resv_key(order_id), claimed_key(order_id)] {
            let fields: BTreeMap<String, String> = c.hgetall(&key).await?;
            for (f, v) in fields {
                if let Some(pid) = f.strip_prefix("p:") {
                    *out.entry(pid.to_owned()).or_default() += v.parse::<i64>().unwrap_or(0);
                }
            }
        }
        Ok(out)
    }

    /// Atomically reserves every line or none.
    pub async fn reserve(
        &self,
        order_id: &str,
        items: &[OrderItem],
        ttl_ms: u64,
    ) -> redis::RedisResult<Reserve> {
        let mut c = self.redis.clone();
        let mut inv = RESERVE.prepare_invoke();
        inv.key(resv_key(order_id)).key(EXPIRY);
        for i in items {
            inv.key(stock_key(&i.product_id));
        }
        inv.arg(order_id).arg(ttl_ms);
        for i in items {
            inv.arg(&i.product_id).arg(i.quantity);
        }
        let reply: Vec<String> = inv.invoke_async(&mut c).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("OK") => Reserve::Reserved {
                expires_at: reply[1].parse().unwrap_or_default(),
            },
            Some("EXISTS") => Reserve::Exists,
            _ => Reserve::Short(
                reply[1..]
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].parse().unwrap_or_default()))
                    .collect(),
            ),
        })
    }

    /// Claims the reservation for confirmation (idempotent: a retry gets the same claim).
    pub async fn claim(&self, order_id: &str) -> redis::RedisResult<Claim> {
        let mut c = self.redis.clone();
        let reply: Vec<String> = CLAIM
            .key(resv_key(order_id))
            .key(claimed_key(order_id))
            .key(EXPIRY)
            .arg(order_id)
            .invoke_async(&mut c)
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("CLAIMED") => Claim::Claimed(items_of(&reply[1..])),
            Some("EXPIRED") => Claim::Expired,
            _ => Claim::Missing,
        })
    }

    /// Forgets a claim once the stock is permanent in the database.
    pub async fn finish_claim(&self, order_id: &str) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        let _: i64 = c.del(claimed_key(order_id)).await?;
        Ok(())
    }

    /// Gives back a held or claimed reservation; true if there was one.
    pub async fn release(&self, order_id: &str) -> redis::RedisResult<bool> {
        let mut c = self.redis.clone();
        let reply: String = RELEASE
            .key(resv_key(order_id))
            .key(claimed_key(order_id))
            .key(EXPIRY)
            .arg(order_id)
            .invoke_async(&mut c)
            .await?;
        Ok(reply == "RELEASED")
    }

    /// Gives confirmed stock back to available, once per order.
    pub async fn restock(&self, order_id: &str, items: &[OrderItem]) -> redis::RedisResult<bool> {
        let mut c = self.redis.clone();
        let mut inv = RESTOCK.prepare_invoke();
        // The marker outlives any retry of the compensation by far.
        inv.key(restocked_key(order_id))
            .arg(30u64 * 24 * 3600 * 1000);
        for i in items {
            inv.arg(&i.product_id).arg(i.quantity);
        }
        let done: i64 = inv.invoke_async(&mut c).await?;
        Ok(done == 1)
    }

    /// Up to `limit` held reservations past their expiry (nothing moves; see
    /// [`Reservations::release_expired`]).
    pub async fn expired(&self, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut c = self.redis.clone();
        DUE.key(EXPIRY).arg(limit).invoke_async(&mut c).await
    }

    /// Gives back the stock of those of `order_ids` still held and expired at least `grace_ms`
    /// ago; answers them.
    pub async fn release_expired(
        &self,
        order_ids: &[String],
        grace_ms: u64,
    ) -> redis::RedisResult<Vec<String>> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.redis.clone();
        SWEEP
            .key(EXPIRY)
            .arg(grace_ms)
            .arg(order_ids)
            .invoke_async(&mut c)
            .await
    }

    /// Reachable?
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut c = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
    }
}

fn items_of(fields: &[String]) -> Vec<OrderItem> {
    let mut items: Vec<OrderItem> = fields
        .chunks(2)
        .filter_map(|kv| {
            let pid = kv[0].strip_prefix("p:")?;
            Some(OrderItem {
                product_id: pid.to_owned(),
                quantity: kv.get(1)?.parse().ok()?,
            })
        })
        .collect();
    items.sort();
    items
}
