//! Logging: `RUST_LOG` when set, else the process's default filter; JSON lines on request. And
//! the signal that stops a long-running process.

use tracing_subscriber::{EnvFilter, fmt::writer::BoxMakeWriter};

/// Where a process's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// Standard output (the worker: its output is its log).
    Stdout,
    /// Standard error (the CLI: its output is the command's answer).
    Stderr,
}

/// Installs the process's log subscriber: `RUST_LOG` or `default_filter`, as text or, with
/// `json`, as JSON lines.
pub fn init_logs(default_filter: &str, to: LogTo, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let writer = match to {
        LogTo::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogTo::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Resolves when the process is told to stop: Ctrl-C (SIGINT), or SIGTERM (what `docker stop`,
/// systemd and Kubernetes send; a process that ignored it would be killed with its requests in
/// flight).
pub async fn shutdown_signal() {
    let sigterm = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = sigterm => {},
    }
}
