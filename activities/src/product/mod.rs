//! Product service (`product-activities`): the Redis reservation and the `product` schema.
//!
//! Stock lives in two places: Redis holds what is *available* for new orders and the orders'
//! temporary reservations; the product database holds the permanent stock (net of confirmed
//! sales) and one `stock_reservations` row per order line. For every product:
//! Redis available + held in reservations + confirmed in the database = stock ever seeded.

pub mod reservation;
mod store;

pub use store::{ORPHAN_GRACE_MS, PricedLine, Product, ProductStore, ReserveError};

use crate::metrics::Metrics;
use crate::span::activity_span;
use payflow_workflows::{
    activities::markers,
    types::{ConfirmStock, ReleaseStock, StockConfirmation, StockRelease},
};
use reservation::Reservations;
use sqlx::PgPool;
use std::{sync::Arc, time::Instant};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

/// The product service's activities: the store, measured.
#[derive(Debug, Clone)]
pub struct ProductActivities {
    store: ProductStore,
    metrics: Metrics,
}

impl ProductActivities {
    /// Wires Redis and the database pool.
    pub fn new(redis: Reservations, db: PgPool) -> Self {
        Self {
            store: ProductStore::new(redis, db),
            metrics: Metrics::default(),
        }
    }

    /// Records the seed's monitoring points on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The store the activities work on.
    pub fn store(&self) -> &ProductStore {
        &self.store
    }

    /// Stock confirmation (see [`payflow_workflows::activities::ProductActivities::confirm`]).
    pub async fn confirm_stock(
        &self,
        c: &ConfirmStock,
    ) -> Result<StockConfirmation, ActivityError> {
        let started = Instant::now();
        let result = self.store.confirm_stock(c).await;
        let outcome = match &result {
            Ok(_) => "confirmed",
            Err(ActivityError::Application(a)) if a.is_non_retryable() => "refused",
            Err(_) => "error",
        };
        self.metrics.stock(started.elapsed(), outcome);
        result
    }
}

#[activities]
impl ProductActivities {
    /// See [`payflow_workflows::activities::ProductActivities::confirm`].
    #[activity(definition = markers::ConfirmStock)]
    pub async fn confirm(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ConfirmStock,
    ) -> Result<StockConfirmation, ActivityError> {
        self.confirm_stock(&input)
            .instrument(activity_span(&ctx, &input.order_id))
            .await
    }

    /// See [`payflow_workflows::activities::ProductActivities::release`].
    #[activity(definition = markers::ReleaseStock)]
    pub async fn release(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ReleaseStock,
    ) -> Result<StockRelease, ActivityError> {
        self.store
            .release_stock(&input)
            .instrument(activity_span(&ctx, &input.order_id))
            .await
    }
}
