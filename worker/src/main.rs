//! `payflow-worker`: hosts the payment workflow and/or the services' activities.
//!
//! `payflow-worker --services payment,product,order,workflow` (the default hosts all four).

use clap::Parser;
use payflow_common::telemetry::LogTo;
use payflow_worker::{config::WorkerConfig, run_worker};

/// The payflow worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: WorkerConfig,
    /// Log as JSON lines (`PAYFLOW_LOG_JSON`: 1/0, true/false, yes/no, on/off).
    #[arg(long, env = "PAYFLOW_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    payflow_common::telemetry::init_logs(
        "info,temporalio_sdk_core=warn,apache_avro=error",
        LogTo::Stdout,
        args.log_json,
    );
    run_worker(args.config, payflow_common::telemetry::shutdown_signal()).await
}
