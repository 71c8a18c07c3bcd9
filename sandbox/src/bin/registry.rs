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
    /// `USER:PASSWORD` every request but `/healthz` must carry (HTTP basic auth); none: open.
    #[arg(long, env = "REGISTRY_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut registry = Registry::open(args.state)?;
    if let Some(credentials) = &args.basic_auth {
        let Some((user, password)) = credentials.split_once(':') else {
            anyhow::bail!("--basic-auth takes USER:PASSWORD");
        };
        registry = registry.with_basic_auth(user, password);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "schema registry listening");
    run(listener, registry, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
