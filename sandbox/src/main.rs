//! `payflow-sandbox`: the PG and push gateway sandbox as a standalone server.

use clap::Parser;
use payflow_sandbox::{SandboxConfig, run};
use std::{net::SocketAddr, time::Duration};

/// Sandbox of the Toss-shaped PG and the push gateway.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The PG secret key callers must present (basic auth user).
    #[arg(
        long,
        env = "PG_SECRET_KEY",
        default_value = "test_sk_payflow",
        hide_env_values = true
    )]
    secret_key: String,
    /// Latency added to every PG answer, in milliseconds.
    #[arg(long, env = "SANDBOX_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..1) of an injected 503 on a PG call.
    #[arg(long, env = "SANDBOX_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Probability (0..1) that a new charge is answered only after the hold time.
    #[arg(long, env = "SANDBOX_TIMEOUT_RATE", default_value_t = 0.0)]
    timeout_rate: f64,
    /// How long `tpk_timeout` holds its answer, in seconds.
    #[arg(long, env = "SANDBOX_TIMEOUT_HOLD_SECS", default_value_t = 120)]
    timeout_hold_secs: u64,
    /// Probability (0..1) that a new charge is made only after the late hold, whether or not
    /// the client still waits (as `tpk_late`).
    #[arg(long, env = "SANDBOX_LATE_RATE", default_value_t = 0.0)]
    late_rate: f64,
    /// How long `tpk_late` takes to charge, in seconds.
    #[arg(long, env = "SANDBOX_LATE_HOLD_SECS", default_value_t = 60)]
    late_hold_secs: u64,
    /// Journal file that keeps the books (payments, idempotent answers, cancellations, pushes)
    /// across restarts; in memory only when unset.
    #[arg(long, env = "SANDBOX_BOOKS")]
    books: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "sandbox listening");
    let config = SandboxConfig {
        secret_key: args.secret_key,
        latency: Duration::from_millis(args.latency_ms),
        error_rate: args.error_rate,
        timeout_rate: args.timeout_rate,
        timeout_hold: Duration::from_secs(args.timeout_hold_secs),
        late_rate: args.late_rate,
        late_hold: Duration::from_secs(args.late_hold_secs),
        books: args.books,
    };
    run(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
