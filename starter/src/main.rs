//! `payflow`: the command line (see `payflow --help`).

use clap::Parser;
use payflow_common::telemetry::LogTo;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    payflow_common::telemetry::init_logs(
        "warn,apache_avro=error,payflow_starter::api=info,tower_http=info",
        LogTo::Stderr,
        false,
    );
    payflow_starter::cli::run(payflow_starter::cli::Cli::parse()).await
}
