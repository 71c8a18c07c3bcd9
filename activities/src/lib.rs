//! payflow's side effects: the implementations of the activities declared in
//! `payflow_workflows::activities`, one struct per owning service.
//!
//! - [`payment`]: `PaymentActivities { pg, db }`: the PG ([`payment::pg`]) and the `payment` schema.
//! - [`product`]: `ProductActivities` over a `ProductStore { redis, db }`: the Redis
//!   reservation ([`product::reservation`]) and the `product` schema, which order creation
//!   (seed, reserve) shares.
//! - [`order`]: `OrderActivities { db, push }`: the `orders` schema and the push gateway.
//! - [`events`]: `EventActivities { producer }`: Kafka, Avro single-object encoding.
//! - [`db`]: the PostgreSQL pool and migrations.
//! - [`failure`]: retryable vs non-retryable failures.
//! - [`metrics`]: the seed's monitoring points.
//!
//! Every activity is idempotent: running it twice leaves the same state, charges nothing
//! twice and publishes the same event id.

pub mod db;
pub mod events;
pub mod failure;
pub mod metrics;
pub mod order;
pub mod payment;
pub mod product;
pub mod secret;
mod span;
#[cfg(test)]
mod test_http;

pub use events::EventActivities;
pub use order::{OrderActivities, OrderStore};
pub use payment::PaymentActivities;
pub use product::{ProductActivities, ProductStore};
pub use secret::Secret;

/// Checks the base URL of an HTTP service payflow calls (the PG, the push gateway): an
/// `http` or `https` URL with a host. Says what is wrong, not the URL.
pub fn check_http_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("not a URL ({e})"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https") && parsed.has_host(),
        "not an http:// or https:// URL with a host"
    );
    Ok(())
}
