//! `payflow-registry`: the development stand-in for the Confluent Schema Registry (see
//! `payflow_sandbox::registry`).

use clap::Parser;
use payflow_sandbox::registry::{Registry, run};
use std::{net::SocketAddr, path::PathBuf};

/// A schema registry speaking the Confluent REST API subset serializers use.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (Confluent's default port).
    #[arg(long, env = "REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// JSON file keeping the registered schemas across restarts (none: memory only).
    #[arg(long, env = "REGISTRY_STATE")]
    state: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let registry = Registry::open(args.state)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "schema registry listening");
    run(listener, registry, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
