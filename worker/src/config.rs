//! The worker's own configuration: which services it hosts, the PG and push clients, tuning,
//! metrics and health listeners. What every process shares (Temporal, PostgreSQL, Redis, Kafka)
//! is in [`payflow_common::config`].

use anyhow::Context;
use clap::{Args, ValueEnum};
use payflow_activities::{Secret, order::PushConfig, payment::pg::PgConfig};
use payflow_common::config::{
    DatabaseArgs, KafkaArgs, RedisArgs, TemporalArgs, defaults, without_password,
};
use std::{net::SocketAddr, time::Duration};

/// The PG.
#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    /// PG base URL (the sandbox locally, the real PG in production).
    #[arg(
        id = "pg_base_url",
        long = "pg-base-url",
        env = "PG_BASE_URL",
        default_value = defaults::SANDBOX_URL
    )]
    pub base_url: String,
    /// PG secret key. Without it, the sandbox's test key, and only for the sandbox at its
    /// default address: a PG elsewhere would refuse every payment, and each refused payment
    /// cancels its order.
    #[arg(long = "pg-secret-key", env = "PG_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,
    /// Timeout of one PG request, in milliseconds.
    #[arg(
        long = "pg-timeout-ms",
        env = "PG_TIMEOUT_MS",
        default_value_t = 8000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_ms: u64,
}

/// The PG sandbox's secret key, used when none is configured and the PG is the local sandbox.
pub const SANDBOX_SECRET_KEY: &str = "test_sk_payflow";

impl PgArgs {
    /// The PG client's configuration; an error when no secret key is set for a PG other than
    /// the local sandbox.
    pub fn config(&self) -> anyhow::Result<PgConfig> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        payflow_activities::check_http_url(&base_url)
            .with_context(|| format!("PG_BASE_URL {}", without_password(&base_url)))?;
        let secret_key = match self.secret_key.as_ref().filter(|k| !k.expose().is_empty()) {
            Some(key) => key.clone(),
            None if base_url == defaults::SANDBOX_URL => SANDBOX_SECRET_KEY
                .parse()
                .expect("a secret parses from any string"),
            None => anyhow::bail!(
                "PG_SECRET_KEY is not set: the sandbox's test key is used only with the sandbox at \
                 {} (PG_BASE_URL is {base_url})",
                defaults::SANDBOX_URL
            ),
        };
        Ok(PgConfig {
            base_url,
            secret_key,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// The push gateway.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Push gateway base URL.
    #[arg(
        id = "push_base_url",
        long = "push-base-url",
        env = "PUSH_BASE_URL",
        default_value = defaults::SANDBOX_URL
    )]
    pub base_url: String,
    /// Push gateway API key (bearer), if it wants one.
    #[arg(
        long = "push-api-key",
        env = "PUSH_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub api_key: Secret,
}

impl PushArgs {
    /// The push client's configuration.
    pub fn config(&self) -> anyhow::Result<PushConfig> {
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        payflow_activities::check_http_url(&base_url)
            .with_context(|| format!("PUSH_BASE_URL {}", without_password(&base_url)))?;
        Ok(PushConfig {
            base_url,
            api_key: self.api_key.clone(),
            timeout: Duration::from_secs(5),
        })
    }
}

/// What one worker process hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Service {
    /// The payment workflow and the event publisher (`payment-workflow`).
    Workflow,
    /// PG and payment DB (`payment-activities`).
    Payment,
    /// Redis reservation and product DB (`product-activities`), plus the expiry sweeper.
    Product,
    /// Order DB and push (`order-activities`).
    Order,
}

/// A count of which zero would leave the worker doing nothing while it reports ready.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Worker tuning.
#[derive(Debug, Clone, Args)]
pub struct TuningArgs {
    /// Workflows kept in the sticky cache.
    #[arg(long, env = "PAYFLOW_MAX_CACHED_WORKFLOWS", default_value_t = 2000)]
    pub max_cached_workflows: usize,
    /// Concurrent workflow tasks per worker.
    #[arg(long, env = "PAYFLOW_WORKFLOW_TASK_SLOTS", default_value_t = 200, value_parser = at_least_one())]
    pub workflow_task_slots: usize,
    /// Concurrent activities per service worker.
    #[arg(long, env = "PAYFLOW_ACTIVITY_SLOTS", default_value_t = 200, value_parser = at_least_one())]
    pub activity_slots: usize,
    /// Workflow task pollers per worker.
    #[arg(long, env = "PAYFLOW_WORKFLOW_POLLERS", default_value_t = 4, value_parser = at_least_one())]
    pub workflow_pollers: usize,
    /// Activity task pollers per service worker.
    #[arg(long, env = "PAYFLOW_ACTIVITY_POLLERS", default_value_t = 4, value_parser = at_least_one())]
    pub activity_pollers: usize,
}

impl Default for TuningArgs {
    fn default() -> Self {
        Self {
            max_cached_workflows: 2000,
            workflow_task_slots: 200,
            activity_slots: 200,
            workflow_pollers: 4,
            activity_pollers: 4,
        }
    }
}

/// Everything a worker needs.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Services this process hosts.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        env = "PAYFLOW_SERVICES",
        default_value = "workflow,payment,product,order"
    )]
    pub services: Vec<Service>,
    /// Apply database migrations at start.
    #[arg(long, env = "PAYFLOW_MIGRATE", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate: bool,
    /// Serve Prometheus metrics (`/metrics`) here; empty to disable.
    #[arg(long, env = "PAYFLOW_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// Serve `/healthz` and `/readyz` here (what the worker waits for, what is degraded);
    /// empty to disable.
    #[arg(long, env = "PAYFLOW_HEALTH_LISTEN", default_value = "")]
    pub health_listen: String,
    /// Host the workflow with activities that do no IO (`payflow bench --noop`: Temporal's own
    /// ceiling on this machine). Use a task queue prefix of its own.
    #[arg(long, env = "PAYFLOW_NOOP", value_parser = clap::builder::BoolishValueParser::new())]
    pub noop: bool,
    /// How often the product worker gives back expired reservations, in milliseconds (at
    /// least 1: the sweep cannot be switched off, or lapsed stock would never come back).
    #[arg(
        long,
        env = "PAYFLOW_SWEEP_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub sweep_interval_ms: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub temporal: TemporalArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: RedisArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub pg: PgArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub push: PushArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tuning: TuningArgs,
}

impl WorkerConfig {
    /// True if this process hosts `service`.
    pub fn hosts(&self, service: Service) -> bool {
        self.services.contains(&service)
    }

    /// The metrics address, if metrics are on.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.metrics_listen.is_empty() {
            Ok(None)
        } else {
            Ok(Some(self.metrics_listen.parse()?))
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: super::WorkerConfig,
    }

    #[test]
    fn a_sweep_interval_of_zero_is_refused_at_start() {
        use clap::Parser;
        let parsed = Cli::try_parse_from(["payflow-worker", "--sweep-interval-ms", "250"]).unwrap();
        assert_eq!(parsed.worker.sweep_interval_ms, 250);
        let refused = Cli::try_parse_from(["payflow-worker", "--sweep-interval-ms", "0"])
            .err()
            .expect("refused");
        assert!(
            refused.to_string().contains("sweep-interval-ms"),
            "{refused}"
        );
    }

    #[test]
    fn slots_pollers_or_a_pg_timeout_of_zero_are_refused_at_start() {
        use clap::Parser;
        for flag in [
            "--workflow-task-slots",
            "--activity-slots",
            "--workflow-pollers",
            "--activity-pollers",
            "--pg-timeout-ms",
        ] {
            let refused = Cli::try_parse_from(["payflow-worker", flag, "0"])
                .err()
                .unwrap_or_else(|| panic!("{flag} 0 refused"));
            assert!(refused.to_string().contains(flag), "{refused}");
            assert!(
                Cli::try_parse_from(["payflow-worker", flag, "2"]).is_ok(),
                "{flag}"
            );
        }
    }

    #[test]
    fn the_sandbox_key_is_used_only_for_the_sandbox() {
        // Built by hand: the test's environment may hold PG_BASE_URL and PG_SECRET_KEY.
        let config = |base_url: &str, key: Option<&str>| {
            super::PgArgs {
                base_url: base_url.to_owned(),
                secret_key: key.map(|k| k.parse().expect("infallible")),
                timeout_ms: 1000,
            }
            .config()
        };
        let sandbox = payflow_common::config::defaults::SANDBOX_URL;
        assert_eq!(
            config(sandbox, None).unwrap().secret_key.expose(),
            super::SANDBOX_SECRET_KEY
        );
        for key in [None, Some("")] {
            let refused = config("https://api.pg.example", key)
                .unwrap_err()
                .to_string();
            assert!(refused.contains("PG_SECRET_KEY is not set"), "{refused}");
        }
        let given = config("https://api.pg.example", Some("live_sk_x")).unwrap();
        assert_eq!(given.secret_key.expose(), "live_sk_x");
    }
}
