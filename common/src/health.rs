//! The worker's `/healthz` and `/readyz` (`PAYFLOW_HEALTH_LISTEN`), served from the moment the
//! process starts, so an operator sees what it is waiting for:
//!
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 503 `starting` while a dependency the hosted services need (Temporal,
//!   PostgreSQL, Redis) is away; then 200, `ready`, or `degraded` while Temporal, Kafka, the
//!   schema registry, PostgreSQL, Redis or the PG is away, or the PG refuses payflow's secret
//!   key (the workers reconnect; the workflows run on, their events follow, and the activities
//!   retry). The body names each
//!   dependency's state and, while it waits, the last error.

use axum::{Json, Router, http::StatusCode, routing::get};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// A dependency's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Check {
    /// Reachable.
    Up,
    /// Being waited for; the last error.
    Waiting {
        /// Why the last try failed.
        error: String,
    },
}

/// Told every change of a dependency's state (`true`: up), e.g. to keep a metric.
pub type Observer = Arc<dyn Fn(&'static str, bool) + Send + Sync>;

#[derive(Default)]
struct Inner {
    checks: BTreeMap<&'static str, Check>,
    started: bool,
    observer: Option<Observer>,
}

/// What the process knows of its dependencies. Clones share it; the default reports nothing.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<Inner>>);

impl Health {
    /// A health that also tells `observer` each dependency's state as it is reported.
    pub fn observed(observer: Observer) -> Self {
        let health = Self::default();
        health.with(|h| h.observer = Some(observer));
        health
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().expect("health lock"))
    }

    fn set(&self, dependency: &'static str, check: Check) {
        let up = check == Check::Up;
        if let Some(observer) = self.with(|h| {
            h.checks.insert(dependency, check);
            h.observer.clone()
        }) {
            observer(dependency, up);
        }
    }

    /// `dependency` is being waited for.
    pub fn waiting(&self, dependency: &'static str, error: String) {
        self.set(dependency, Check::Waiting { error });
    }

    /// `dependency` is reachable.
    pub fn up(&self, dependency: &'static str) {
        self.set(dependency, Check::Up);
    }

    /// The hosted services are polling.
    pub fn started(&self) {
        self.with(|h| h.started = true);
    }

    /// The `/readyz` answer.
    pub fn report(&self) -> (StatusCode, serde_json::Value) {
        let h = self.0.lock().expect("health lock");
        let all_up = h.checks.values().all(|c| *c == Check::Up);
        let (code, status) = match (h.started, all_up) {
            (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
            (true, true) => (StatusCode::OK, "ready"),
            (true, false) => (StatusCode::OK, "degraded"),
        };
        (
            code,
            serde_json::json!({ "status": status, "checks": h.checks }),
        )
    }
}

/// Serves `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    let (code, body) = health.report();
                    (code, Json(body))
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health endpoint stopped");
    }
}
