//! `payflow`: the command line (see `payflow --help`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,apache_avro=error,payflow_starter::api=info,tower_http=info".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    payflow_starter::cli::run(payflow_starter::cli::Cli::parse()).await
}
