//! A worker or API process that starts while a dependency is away waits for it, logged, and
//! serves once it is back: it never exits on it. A malformed URL still fails at once.

use payflow_tests::{TcpGate, database_url, kafka_bootstrap, redis_url, temporal_address};
use std::{process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// A payflow binary next to this test's (the workspace build makes them).
fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name)
}

/// Starts the worker binary with everything but `overrides` pointing at the test services;
/// answers the process and its log lines (stdout and stderr).
fn spawn_worker(overrides: &[(&str, String)]) -> (Child, mpsc::UnboundedReceiver<String>) {
    spawn("payflow-worker", &[], overrides)
}

fn spawn(
    name: &str,
    args: &[&str],
    overrides: &[(&str, String)],
) -> (Child, mpsc::UnboundedReceiver<String>) {
    let prefix = format!("s{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut command = Command::new(binary(name));
    command
        .args(args)
        .env("TEMPORAL_ADDRESS", temporal_address())
        .env("DATABASE_URL", database_url())
        .env("REDIS_URL", redis_url())
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &prefix)
        .env("PAYFLOW_TASK_QUEUE_PREFIX", &prefix)
        .env("PAYFLOW_METRICS_LISTEN", "")
        .env(
            "RUST_LOG",
            "info,temporalio_sdk_core=warn,apache_avro=error",
        )
        .env_remove("PAYFLOW_LOG_JSON")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in overrides {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start payflow-worker");
    let (tx, rx) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for reader in [
        Box::pin(stdout) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
        Box::pin(stderr),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Waits (bounded) for a log line containing every one of `parts`.
async fn wait_for_line(lines: &mut mpsc::UnboundedReceiver<String>, parts: &[&str]) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if parts.iter().all(|p| line.contains(p)) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no log line with {parts:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgresql_and_redis_are_away_waits_and_then_serves() {
    let pg_target = pg_target();
    let redis_target = redis_url().trim_start_matches("redis://").to_owned();
    let mut pg = TcpGate::closed(&pg_target).await;
    let mut redis = TcpGate::closed(&redis_target).await;
    let db_url = database_url().replace(&pg_target, &pg.addr.to_string());
    let (mut worker, mut lines) = spawn_worker(&[
        ("DATABASE_URL", db_url),
        ("REDIS_URL", format!("redis://{}", redis.addr)),
    ]);

    wait_for_line(&mut lines, &["dependency unavailable", "PostgreSQL"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    pg.open().await;
    wait_for_line(&mut lines, &["dependency unavailable", "Redis"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    redis.open().await;
    wait_for_line(&mut lines, &["worker started"]).await;
    assert!(worker.try_wait().unwrap().is_none());
    worker.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_database_url_fails_at_once_with_a_clear_message() {
    let (mut worker, mut lines) = spawn_worker(&[("DATABASE_URL", "postgres://[::1".to_owned())]);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker exits at once")
        .unwrap();
    assert!(!status.success());
    wait_for_line(&mut lines, &["DATABASE_URL"]).await;
}

/// `host:port` of the test database.
fn pg_target() -> String {
    database_url()
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_started_while_postgresql_is_away_waits_and_then_answers() {
    let target = pg_target();
    let mut pg = TcpGate::closed(&target).await;
    let (mut api, mut lines) = spawn(
        "payflow",
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            (
                "DATABASE_URL",
                database_url().replace(&target, &pg.addr.to_string()),
            ),
            ("PAYFLOW_API_KEYS", "startup-test-key".to_owned()),
        ],
    );
    wait_for_line(&mut lines, &["dependency unavailable", "PostgreSQL"]).await;
    assert!(api.try_wait().unwrap().is_none(), "the API is still up");
    pg.open().await;
    let line = wait_for_line(&mut lines, &["payflow API on http://"]).await;
    let base = line[line.find("http://").unwrap()..].trim().to_owned();
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    api.kill().await.unwrap();
}
