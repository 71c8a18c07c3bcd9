//! A worker or API process that starts while a dependency is away waits for it, logged, and
//! serves once it is back: it never exits on it. A malformed URL still fails at once.

use payflow_tests::{
    OwnBroker, OwnSandbox, TcpGate, TestRegistry, database_url, eventually, free_port,
    kafka_bootstrap, redis_url, spawn, temporal_address, wait_for_line,
};
use std::time::Duration;
use tokio::{process::Child, sync::mpsc};

/// Starts the worker binary against the test services, but for `overrides`.
fn spawn_worker(overrides: &[(&str, String)]) -> (Child, mpsc::UnboundedReceiver<String>) {
    spawn("payflow-worker", &[], &test_services(overrides))
}

/// The test services' environment for a fresh task queue and topic prefix, with `overrides`.
fn test_services(overrides: &[(&str, String)]) -> Vec<(String, String)> {
    let prefix = format!("s{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut env: Vec<(String, String)> = [
        ("TEMPORAL_ADDRESS", temporal_address()),
        ("DATABASE_URL", database_url()),
        ("REDIS_URL", redis_url()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap()),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("PAYFLOW_TASK_QUEUE_PREFIX", prefix),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgresql_and_redis_are_away_waits_and_then_serves() {
    let pg_target = pg_target();
    let redis_target = redis_url().trim_start_matches("redis://").to_owned();
    let mut pg = TcpGate::closed(&pg_target).await;
    let mut redis = TcpGate::closed(&redis_target).await;
    let db_url = database_url().replace(&pg_target, &pg.addr.to_string());
    let health_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (mut worker, mut lines) = spawn_worker(&[
        ("DATABASE_URL", db_url),
        ("REDIS_URL", format!("redis://{}", redis.addr)),
        ("PAYFLOW_HEALTH_LISTEN", health_addr.to_string()),
    ]);
    let readyz = format!("http://{health_addr}/readyz");
    let ready = || readyz_answer(&readyz);

    wait_for_line(&mut lines, &["dependency unavailable", "PostgreSQL"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    // Its /readyz says what it waits for.
    let (code, body) = eventually(Duration::from_secs(20), "/readyz", || async {
        ready()
            .await
            .filter(|(_, b)| b["checks"]["PostgreSQL"]["state"] == "waiting")
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "starting");
    assert_eq!(body["checks"]["Temporal"]["state"], "up");
    pg.open().await;
    wait_for_line(&mut lines, &["dependency unavailable", "Redis"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    redis.open().await;
    wait_for_line(&mut lines, &["worker started"]).await;
    assert!(worker.try_wait().unwrap().is_none());
    // Serving: 200, every dependency it waited for up (no schema registry runs for this
    // test, so it is `degraded` while that one is waited for in the background).
    let (_, body) = eventually(Duration::from_secs(30), "serving", || async {
        ready().await.filter(|(code, _)| *code == 200)
    })
    .await;
    for dependency in ["Temporal", "PostgreSQL", "Redis"] {
        assert_eq!(body["checks"][dependency]["state"], "up", "{body}");
    }
    worker.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_url_fails_at_once_with_a_clear_message() {
    for (setting, value) in [
        ("DATABASE_URL", "postgres://[::1"),
        // No scheme: not a URL the PG client can call.
        ("PG_BASE_URL", "api.tosspayments.com"),
        ("PUSH_BASE_URL", "push-gateway:8443"),
    ] {
        let (mut worker, mut lines) = spawn_worker(&[
            (setting, value.to_owned()),
            ("PG_SECRET_KEY", "test_sk_payflow".to_owned()),
        ]);
        let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker exits at once on a malformed {setting}"))
            .unwrap();
        assert!(!status.success(), "{setting}");
        wait_for_line(&mut lines, &[setting]).await;
    }
}

/// A worker pointed at a PG other than the local sandbox, with no secret key configured, stops
/// at once and names the setting, rather than sending the sandbox's test key to a PG that would
/// refuse, and so cancel, every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_elsewhere_without_a_secret_key_fails_at_once() {
    let (mut worker, mut lines) = spawn_worker(&[
        ("PG_BASE_URL", "https://pg.example.invalid".to_owned()),
        // Empty is unset (the test's own environment may hold the sandbox's key).
        ("PG_SECRET_KEY", String::new()),
    ]);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker exits at once")
        .unwrap();
    assert!(!status.success());
    wait_for_line(&mut lines, &["PG_SECRET_KEY is not set"]).await;
}

/// A PG that refuses the secret key, or a base URL where no PG answers its look-ups, is not an
/// outage: every payment would fail and its order be cancelled. The worker asks again for 30 s
/// (a key still propagating), then stops and names the settings, and never prints the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_that_refuses_the_secret_key_or_is_no_pg_stops_the_worker_after_asking_again() {
    let sandbox = OwnSandbox::start().await;
    // An HTTP server that is not a PG: it answers the look-up 404 in its own words.
    let not_a_pg = TestRegistry::start(true).await.unwrap();
    let wrong_key = "live_sk_not_the_merchants_4f1c";
    for (url, key, answer) in [
        (
            format!("http://{}", sandbox.addr),
            wrong_key,
            "HTTP 401 UNAUTHORIZED_KEY",
        ),
        (
            not_a_pg.url.clone(),
            "test_sk_payflow",
            "HTTP 404 to a payment look-up",
        ),
    ] {
        let (mut worker, mut lines) = spawn_worker(&[
            ("PAYFLOW_SERVICES", "payment".to_owned()),
            ("PG_BASE_URL", url.clone()),
            ("PG_SECRET_KEY", key.to_owned()),
        ]);
        let said = stops_saying(&mut worker, &mut lines, &format!("with the PG at {url}")).await;
        assert!(
            said.contains("refused; asking again before giving up")
                && said.contains("refuses payflow's configuration")
                && said.contains(answer)
                && said.contains("PG_SECRET_KEY and PG_BASE_URL"),
            "{said}"
        );
        assert!(!said.contains(key), "the key is never printed: {said}");
    }
}

/// A key the PG refuses only for a moment at start (a rotation still reaching every PG node)
/// is asked again, and the worker starts once the PG takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_key_refused_for_a_moment_at_start_is_asked_again_and_the_worker_serves() {
    let sandbox = OwnSandbox::start().await;
    sandbox
        .configure(serde_json::json!({ "secretKey": "test_sk_not_yet" }))
        .await;
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "payment".to_owned()),
        ("PG_BASE_URL", format!("http://{}", sandbox.addr)),
        ("PG_SECRET_KEY", "test_sk_payflow".to_owned()),
    ]);
    wait_for_line(
        &mut lines,
        &["refused; asking again before giving up", "PG"],
    )
    .await;
    sandbox
        .configure(serde_json::json!({ "secretKey": "test_sk_payflow" }))
        .await;
    wait_for_line(&mut lines, &["worker started"]).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker is up");
    worker.kill().await.unwrap();
}

/// A PG that is away when the worker starts holds nothing up: the worker starts and `/readyz`
/// says `degraded` (the PG waited for) until the PG answers. A PG that refuses the key later
/// (rotated under a running worker) shows the same way, in the PG's words, until the key is
/// right again, and so does a PG that goes away after start; the worker stays up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_metrics_say_degraded_while_the_pg_is_away_or_refuses_the_key() {
    let sandbox = OwnSandbox::start().await;
    let mut gate = TcpGate::closed(&sandbox.addr.to_string()).await;
    let health = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "payment".to_owned()),
        ("PG_BASE_URL", format!("http://{}", gate.addr)),
        ("PG_SECRET_KEY", "test_sk_payflow".to_owned()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
        ("PAYFLOW_METRICS_LISTEN", metrics.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    expect_dependency(&health, &metrics, "PG", "waiting").await;

    gate.open().await;
    expect_dependency(&health, &metrics, "PG", "up").await;

    sandbox
        .configure(serde_json::json!({ "secretKey": "test_sk_rotated" }))
        .await;
    expect_dependency(&health, &metrics, "PG", "waiting").await;
    let (_, body) = readyz_answer(&format!("http://{health}/readyz"))
        .await
        .expect("/readyz");
    let why = body["checks"]["PG"]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("refuses payflow's secret key") && why.contains("UNAUTHORIZED_KEY"),
        "{body}"
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );

    sandbox
        .configure(serde_json::json!({ "secretKey": "test_sk_payflow" }))
        .await;
    expect_dependency(&health, &metrics, "PG", "up").await;

    // Away after start: two checks without an answer.
    gate.close();
    expect_dependency(&health, &metrics, "PG", "waiting").await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    worker.kill().await.unwrap();
}

/// A schema registry that refuses payflow's credentials for 30 s stops the worker (the workflows
/// would run on, and no event would ever go out), naming the settings and never printing the
/// password; with the right credentials the worker registers its schemas and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_refuses_the_credentials_stops_the_worker_and_the_right_ones_serve() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut registry, _) = spawn(
        "payflow-registry",
        &["--listen", &addr, "--basic-auth", "payflow:registry-s3cret"],
        &[],
    );
    eventually(Duration::from_secs(10), "the registry", || async {
        tokio::net::TcpStream::connect(&addr).await.ok()
    })
    .await;
    let url = format!("http://{addr}");
    let wrong = "not-the-registry-password-7d2";
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "workflow".to_owned()),
        ("SCHEMA_REGISTRY_URL", url.clone()),
        ("SCHEMA_REGISTRY_USER", "payflow".to_owned()),
        ("SCHEMA_REGISTRY_PASSWORD", wrong.to_owned()),
    ]);
    let said = stops_saying(&mut worker, &mut lines, "with a wrong registry password").await;
    assert!(
        said.contains("refused; asking again before giving up")
            && said.contains("schema registry at")
            && said.contains("refuses payflow's configuration")
            && said.contains("401")
            && said.contains("SCHEMA_REGISTRY_PASSWORD"),
        "{said}"
    );
    assert!(
        !said.contains(wrong),
        "the password is never printed: {said}"
    );

    let health = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "workflow".to_owned()),
        ("SCHEMA_REGISTRY_URL", url.clone()),
        ("SCHEMA_REGISTRY_USER", "payflow".to_owned()),
        ("SCHEMA_REGISTRY_PASSWORD", "registry-s3cret".to_owned()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    let readyz = format!("http://{health}/readyz");
    eventually(Duration::from_secs(30), "the registry up", || async {
        readyz_answer(&readyz)
            .await
            .filter(|(_, b)| b["checks"]["schema registry"]["state"] == "up")
    })
    .await;
    let subjects: Vec<String> = reqwest::Client::new()
        .get(format!("{url}/subjects"))
        .basic_auth("payflow", Some("registry-s3cret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        subjects
            .iter()
            .any(|s| s.ends_with("payment.completed-value")),
        "the worker registered its schemas: {subjects:?}"
    );
    worker.kill().await.unwrap();
    registry.kill().await.unwrap();
}

/// A database that does not exist, a Redis password refused or missing, or a Temporal namespace
/// the server does not have is not an outage: waiting cannot mend it, so the worker stops at once and says
/// which setting is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_a_refused_redis_password_or_an_unknown_namespace_fails_at_once() {
    let database = database_url();
    let (server, _) = database.rsplit_once('/').expect("a database URL");
    let redis = redis_url().replacen("redis://", "redis://:not-the-password@", 1);
    // A Redis of its own that wants a password the URL does not give.
    let locked_port = free_port();
    let mut locked = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &locked_port.to_string(),
            "--requirepass",
            "s3cret",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server");
    let locked_addr = format!("127.0.0.1:{locked_port}");
    eventually(Duration::from_secs(10), "the locked Redis", || async {
        tokio::net::TcpStream::connect(&locked_addr).await.ok()
    })
    .await;
    for (setting, value) in [
        ("DATABASE_URL", format!("{server}/payflow_no_such_database")),
        ("REDIS_URL", redis),
        ("REDIS_URL", format!("redis://{locked_addr}")),
        ("TEMPORAL_NAMESPACE", "payflow-no-such-namespace".to_owned()),
    ] {
        let (mut worker, mut lines) = spawn_worker(&[(setting, value)]);
        let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker exits at once on a wrong {setting}"))
            .unwrap();
        assert!(!status.success(), "{setting}");
        wait_for_line(&mut lines, &[setting]).await;
        wait_for_line(&mut lines, &["refuses payflow's configuration"]).await;
    }
    locked.kill().await.unwrap();
}

/// `PAYFLOW_LOG_JSON=1`, as docker-compose.yml sets it: the worker starts and logs JSON lines
/// (a switch's variable takes 1/0, true/false, yes/no, on/off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_by_its_environment_to_log_json_starts_and_logs_json() {
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_LOG_JSON", "1".to_owned()),
        ("PAYFLOW_SERVICES", "payment,order".to_owned()),
    ]);
    let line = wait_for_line(&mut lines, &["worker started"]).await;
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(json["level"], "INFO", "{line}");
    assert!(worker.try_wait().unwrap().is_none(), "the worker is up");
    worker.kill().await.unwrap();
}

/// Waits (90 s at most: a refusal is asked again for 30 s first) until the worker stops with
/// a failure; answers everything it logged.
async fn stops_saying(
    worker: &mut Child,
    lines: &mut mpsc::UnboundedReceiver<String>,
    how: &str,
) -> String {
    let status = tokio::time::timeout(Duration::from_secs(90), worker.wait())
        .await
        .unwrap_or_else(|_| panic!("the worker stops {how}"))
        .unwrap();
    assert!(!status.success(), "{how}");
    let mut said = Vec::new();
    while let Some(line) = lines.recv().await {
        said.push(line);
    }
    said.join("\n")
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
        &test_services(&[
            (
                "DATABASE_URL",
                database_url().replace(&target, &pg.addr.to_string()),
            ),
            ("PAYFLOW_API_KEYS", "startup-test-key".to_owned()),
        ]),
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

/// A `/readyz` answer: status code and body, if the endpoint answers.
async fn readyz_answer(url: &str) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::get(url).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.ok()?))
}

/// The worker's `payflow_dependency_up` for `dependency` on its `/metrics`, if exported.
async fn dependency_gauge(metrics: &str, dependency: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| {
            l.starts_with("payflow_dependency_up{")
                && l.contains(&format!("dependency=\"{dependency}\""))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Waits until the worker's `/readyz` shows `dependency` in `state` (`up` or `waiting`), then
/// checks the overall status (`ready` or `degraded`, both 200) and the dependency's gauge.
async fn expect_dependency(health: &str, metrics: &str, dependency: &str, state: &str) {
    let readyz = format!("http://{health}/readyz");
    let (code, body) = eventually(
        Duration::from_secs(30),
        &format!("{dependency} {state}"),
        || async {
            readyz_answer(&readyz)
                .await
                .filter(|(_, body)| body["checks"][dependency]["state"] == state)
        },
    )
    .await;
    let (status, gauge) = if state == "up" {
        ("ready", 1.0)
    } else {
        ("degraded", 0.0)
    };
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some(status)),
        "{body}"
    );
    assert_eq!(dependency_gauge(metrics, dependency).await, Some(gauge));
}

/// PostgreSQL going away after the worker started shows on `/readyz` (`degraded`) and on the
/// dependency gauge, and clears once it is back; the worker stays up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_metrics_say_degraded_while_postgresql_is_away_after_start() {
    let target = pg_target();
    let mut pg = TcpGate::closed(&target).await;
    pg.open().await;
    // The payment service's PG, so that everything but PostgreSQL answers.
    let sandbox = OwnSandbox::start().await;
    let health = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "payment".to_owned()),
        (
            "DATABASE_URL",
            database_url().replace(&target, &pg.addr.to_string()),
        ),
        ("PG_BASE_URL", format!("http://{}", sandbox.addr)),
        ("PG_SECRET_KEY", "test_sk_payflow".to_owned()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
        ("PAYFLOW_METRICS_LISTEN", metrics.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    expect_dependency(&health, &metrics, "PostgreSQL", "up").await;

    pg.close();
    expect_dependency(&health, &metrics, "PostgreSQL", "waiting").await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );

    pg.open().await;
    expect_dependency(&health, &metrics, "PostgreSQL", "up").await;
    worker.kill().await.unwrap();
}

/// Temporal going away after the worker started (its connections cut and refused) shows on
/// `/readyz` and the gauge too, and clears once it is back; the worker stays up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_metrics_say_degraded_while_temporal_is_away_after_start() {
    let target = temporal_address();
    let mut temporal = TcpGate::closed(&target).await;
    temporal.open().await;
    let health = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "order".to_owned()),
        ("TEMPORAL_ADDRESS", temporal.addr.to_string()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
        ("PAYFLOW_METRICS_LISTEN", metrics.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    expect_dependency(&health, &metrics, "Temporal", "up").await;

    temporal.close();
    expect_dependency(&health, &metrics, "Temporal", "waiting").await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );

    temporal.open().await;
    expect_dependency(&health, &metrics, "Temporal", "up").await;
    worker.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_metrics_say_degraded_while_kafka_is_away_after_start() {
    let broker = OwnBroker::start().await;
    let health = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "workflow".to_owned()),
        ("KAFKA_BOOTSTRAP_SERVERS", broker.address.clone()),
        // No schema registry runs for this test.
        ("EVENT_ENCODING", "single-object".to_owned()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
        ("PAYFLOW_METRICS_LISTEN", metrics.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    expect_dependency(&health, &metrics, "Kafka", "up").await;

    // Stopped: its port stays open and nothing answers.
    broker.signal("STOP");
    expect_dependency(&health, &metrics, "Kafka", "waiting").await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );

    broker.signal("CONT");
    expect_dependency(&health, &metrics, "Kafka", "up").await;
    worker.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_metrics_say_degraded_while_the_registry_is_away_after_start() {
    let mut registry = TestRegistry::start(true).await.unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "workflow".to_owned()),
        ("SCHEMA_REGISTRY_URL", registry.url.clone()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
        ("PAYFLOW_METRICS_LISTEN", metrics.clone()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    expect_dependency(&health, &metrics, "schema registry", "up").await;

    // Taken away (its port refuses connections) after the schemas were registered.
    registry.stop();
    expect_dependency(&health, &metrics, "schema registry", "waiting").await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up"
    );

    registry.restart().await;
    expect_dependency(&health, &metrics, "schema registry", "up").await;
    worker.kill().await.unwrap();
}

/// With `SCHEMA_REGISTRY_AUTO_REGISTER=false` the worker registers nothing at start (the
/// credentials may only read; `payflow admin setup` registers): it creates its topics, looks
/// the ids up, and serves, instead of waiting forever for a registration it may not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_not_register_schemas_registers_none_and_serves() {
    let registry = TestRegistry::start(true).await.unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let (mut worker, mut lines) = spawn_worker(&[
        ("PAYFLOW_SERVICES", "workflow".to_owned()),
        ("SCHEMA_REGISTRY_URL", registry.url.clone()),
        ("SCHEMA_REGISTRY_AUTO_REGISTER", "false".to_owned()),
        ("PAYFLOW_HEALTH_LISTEN", health.clone()),
    ]);
    // The warm-up, after the topics, looks each id up and finds none.
    wait_for_line(&mut lines, &["schema id not known yet"]).await;
    assert!(
        registry.subjects().await.is_empty(),
        "the worker registered nothing"
    );
    let (code, body) = eventually(Duration::from_secs(20), "/readyz", || async {
        readyz_answer(&format!("http://{health}/readyz"))
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    worker.kill().await.unwrap();
}

/// A rolling deploy: the new version has migrated the database, and a worker of the version
/// before it restarts meanwhile. It starts and serves; it does not refuse the migration it
/// does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_older_than_the_database_schema_still_starts() {
    let scratch = ScratchDatabase::migrated("payflow_rolling").await;
    // What the next version of payflow would have applied.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000001, 'from a newer payflow', true, '\\x00'::bytea, 0)",
    )
    .execute(&scratch.pool)
    .await
    .unwrap();

    // Not the product service: its expiry sweeper would release other tests' reservations in
    // the shared Redis while marking them in this scratch database.
    let (mut worker, mut lines) = spawn_worker(&[
        ("DATABASE_URL", scratch.url.clone()),
        ("PAYFLOW_SERVICES", "payment,order".to_owned()),
    ]);
    wait_for_line(&mut lines, &["worker started"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the older worker is still up"
    );
    worker.kill().await.unwrap();
    let _ = worker.wait().await;
    scratch.drop().await;
}

/// PostgreSQL answers the worker's connection and then goes away while the worker applies a
/// migration (a database restarting, a failover): the migration rolls back, the worker waits
/// for PostgreSQL as for one that refused the connection, applies the migration once it is
/// back, and serves. It does not exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_loses_postgresql_while_migrating_waits_and_then_serves() {
    let (scratch, last) = ScratchDatabase::migrated_but_the_last("payflow_migrating").await;
    // The last migration alters the orders table: holding the table keeps the worker inside
    // that migration until the gate is closed under it. (A newer last migration needs the
    // lock on what it changes.)
    assert_eq!(last, 20261125000003, "the migration this test holds up");
    let mut holder = scratch.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders.orders IN ACCESS SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let target = pg_target();
    let mut pg = TcpGate::closed(&target).await;
    pg.open().await;
    let (mut worker, mut lines) = spawn_worker(&[
        (
            "DATABASE_URL",
            scratch.url.replace(&target, &pg.addr.to_string()),
        ),
        ("PAYFLOW_SERVICES", "payment,order".to_owned()),
    ]);
    eventually(
        Duration::from_secs(30),
        "the worker waiting inside the migration",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks \
                 WHERE relation = 'orders.orders'::regclass AND NOT granted \
                   AND database = (SELECT oid FROM pg_database \
                                    WHERE datname = current_database())",
            )
            .fetch_one(&scratch.pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    pg.close();
    wait_for_line(&mut lines, &["dependency unavailable", "PostgreSQL"]).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up after losing PostgreSQL mid-migration"
    );
    holder.rollback().await.unwrap();
    pg.open().await;
    wait_for_line(&mut lines, &["worker started"]).await;
    assert!(worker.try_wait().unwrap().is_none());
    let applied: Vec<bool> =
        sqlx::query_scalar("SELECT success FROM _sqlx_migrations WHERE version = $1")
            .bind(last)
            .fetch_all(&scratch.pool)
            .await
            .unwrap();
    assert_eq!(applied, [true], "the migration is recorded as applied");
    let column: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = 'orders' AND table_name = 'orders' \
           AND column_name = 'reservation_expires_at'",
    )
    .fetch_one(&scratch.pool)
    .await
    .unwrap();
    assert_eq!(column, 1, "and what it does is done");
    worker.kill().await.unwrap();
    let _ = worker.wait().await;
    scratch.drop().await;
}

/// A database of a test's own, with payflow's migrations applied.
struct ScratchDatabase {
    admin: sqlx::PgPool,
    name: String,
    url: String,
    pool: sqlx::PgPool,
}

impl ScratchDatabase {
    async fn migrated(prefix: &str) -> Self {
        let scratch = Self::created(prefix).await;
        payflow_activities::db::migrate(&scratch.pool)
            .await
            .unwrap();
        scratch
    }

    /// Empty.
    async fn created(prefix: &str) -> Self {
        let admin = payflow_activities::db::connect(&database_url(), 1)
            .await
            .unwrap();
        // One test per prefix: what a failed earlier run of it left behind goes first.
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(format!("{prefix}_"))
                .fetch_all(&admin)
                .await
                .unwrap();
        for name in stale {
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
        }
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let base = database_url()
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap();
        let url = format!("{base}/{name}");
        let pool = payflow_activities::db::connect(&url, 2).await.unwrap();
        Self {
            admin,
            name,
            url,
            pool,
        }
    }

    /// With every migration but the last applied; answers that migration's version too.
    async fn migrated_but_the_last(prefix: &str) -> (Self, i64) {
        let scratch = Self::created(prefix).await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../activities/migrations");
        let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
        let mut migrations = migrator.migrations.to_vec();
        let last = migrations.pop().expect("migrations").version;
        migrator.migrations = migrations.into();
        migrator.run(&scratch.pool).await.unwrap();
        (scratch, last)
    }

    async fn drop(self) {
        self.pool.close().await;
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}
