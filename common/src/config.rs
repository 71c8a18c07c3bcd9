//! Configuration every payflow process shares: typed clap structs with environment fallbacks
//! (the doc comments are the help text), the default addresses of a local stack, and the
//! patient connect loop. The worker and the `payflow` CLI/API flatten the parts they need.

use crate::{codec::CodecKeys, health::Health};
use clap::Args;
use payflow_activities::{
    Secret,
    events::{
        Encoding, KafkaConfig,
        registry::{RegistryConfig, SchemaRegistry},
    },
};
use payflow_workflows::types::EventType;
use std::{sync::Arc, time::Duration};

/// Where the parts of a local stack listen: the defaults of every flag below, of the worker's,
/// of the tests' stacks, and of the scripts (`scripts/lib.sh` reads these lines; keep each a
/// one-line `pub const NAME: &str = "...";`).
pub mod defaults {
    /// The Temporal dev server's frontend.
    pub const TEMPORAL_ADDRESS: &str = "127.0.0.1:7233";
    /// The payflow database.
    pub const DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/payflow";
    /// Redis.
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
    /// The Kafka broker.
    pub const KAFKA_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
    /// The schema registry (Confluent's default port).
    pub const SCHEMA_REGISTRY_URL: &str = "http://127.0.0.1:8081";
    /// The PG and push sandbox.
    pub const SANDBOX_URL: &str = "http://127.0.0.1:8090";
}
use temporalio_client::{
    Client, ClientOptions, Connection, Url, envconfig::LoadClientConfigProfileOptions,
};
use temporalio_common::data_converters::DataConverter;

/// Where Temporal is. Unset flags fall back to the SDK's `TEMPORAL_*` environment variables and
/// `temporal.toml` profile (TLS, API key), then to a local dev server.
#[derive(Debug, Clone, Default, Args)]
pub struct TemporalArgs {
    /// Temporal frontend address, e.g. `127.0.0.1:7233` (also `TEMPORAL_ADDRESS`).
    #[arg(long = "temporal-address")]
    pub address: Option<String>,
    /// Temporal namespace (also `TEMPORAL_NAMESPACE`).
    #[arg(long = "temporal-namespace")]
    pub namespace: Option<String>,
    /// Prefix of every task queue name (deployments sharing one namespace; tests).
    #[arg(long, env = "PAYFLOW_TASK_QUEUE_PREFIX", default_value = "")]
    pub task_queue_prefix: String,
    /// Payload encryption keys, `id:base64key[,...]` (32-byte AES-256 keys): the first
    /// encrypts, all decrypt. Empty: payloads are not encrypted.
    #[arg(
        long,
        env = "PAYFLOW_CODEC_KEYS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub codec_keys: Secret,
}

impl TemporalArgs {
    /// Standard queues, no overrides.
    pub fn local(address: &str, task_queue_prefix: &str) -> Self {
        Self {
            address: Some(address.to_owned()),
            namespace: None,
            task_queue_prefix: task_queue_prefix.to_owned(),
            codec_keys: Secret::default(),
        }
    }

    /// The encryption keys, if configured.
    pub fn keys(&self) -> anyhow::Result<Option<Arc<CodecKeys>>> {
        crate::codec::keys_from_setting(&self.codec_keys)
    }

    /// The data converter of this deployment (encrypting when keys are configured).
    pub fn data_converter(&self) -> anyhow::Result<DataConverter> {
        Ok(crate::codec::data_converter(self.keys()?))
    }

    /// Connects a client.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let (connection, client) = self.client_options()?;
        let connection = Connection::connect(connection).await?;
        Ok(Client::new(connection, client)?)
    }

    /// Connects a client, waiting (logged, with backoff) while the server is away, until it
    /// describes the namespace (a worker's first request, which gives up after a few seconds of
    /// its own); a configuration error (address, codec keys, a namespace the server does not
    /// have, an API key or caller it refuses) still fails at once.
    pub async fn connect_patiently(&self, health: &Health) -> anyhow::Result<Client> {
        use anyhow::Context;
        use temporalio_client::{grpc::WorkflowService, tonic::IntoRequest};
        use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
        let (connection, client) = self.client_options()?;
        let connection = until_available_reported(
            "Temporal",
            health,
            || Connection::connect(connection.clone()),
            // The connection's first call (GetSystemInfo) is where a server that checks
            // credentials (Temporal Cloud) refuses a missing or wrong API key.
            |e: &temporalio_client::errors::ClientConnectError| {
                matches!(e, temporalio_client::errors::ClientConnectError::SystemInfoCallError(s)
                    if refuses_credentials(s))
            },
        )
        .await
        .context("the Temporal client's API key or identity")?;
        let client = Client::new(connection, client)?;
        let namespace = self.namespace();
        until_available_reported(
            "Temporal",
            health,
            || {
                let mut client = client.clone();
                let request = DescribeNamespaceRequest {
                    namespace: namespace.clone(),
                    ..Default::default()
                };
                async move {
                    WorkflowService::describe_namespace(&mut client, request.into_request()).await
                }
            },
            refuses_configuration,
        )
        .await
        .with_context(|| {
            format!("TEMPORAL_NAMESPACE {namespace} (and the client's API key or identity)")
        })?;
        Ok(client)
    }

    /// The checked connection and client options.
    fn client_options(
        &self,
    ) -> anyhow::Result<(
        temporalio_client::ConnectionOptions,
        temporalio_client::ClientOptions,
    )> {
        let (mut connection, mut client) =
            ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
                .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
        if let Some(address) = &self.address {
            let url = if address.contains("://") {
                address.clone()
            } else {
                format!("http://{address}")
            };
            connection.target = Url::parse(&url)?;
        }
        if let Some(namespace) = &self.namespace {
            client.namespace = namespace.clone();
        }
        client.data_converter = self.data_converter()?;
        if connection.identity.is_empty() {
            connection.identity = format!("payflow@{}", std::process::id());
        }
        Ok((connection, client))
    }

    /// Whether Temporal answers for the namespace (what a worker's `/readyz` asks after start).
    pub async fn answers(&self, client: &Client) -> Result<(), String> {
        use temporalio_client::{grpc::WorkflowService, tonic::IntoRequest};
        use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
        let request = DescribeNamespaceRequest {
            namespace: self.namespace(),
            ..Default::default()
        };
        WorkflowService::describe_namespace(&mut client.clone(), request.into_request())
            .await
            .map(|_| ())
            .map_err(|status| format!("{}: {}", status.code(), status.message()))
    }

    /// The namespace in effect (flag, environment, default).
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| std::env::var("TEMPORAL_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned())
    }
}

/// The payflow database. Its `Debug` hides the URL's password.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the payflow database.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = defaults::DATABASE_URL,
        hide_env_values = true
    )]
    pub url: String,
    /// Connections in the pool.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
}

/// A replication factor: at least 1, or -1 for the brokers' default. Zero or another negative
/// number would make every topic creation fail, and the worker wait for topics for ever.
fn parse_replication(value: &str) -> Result<i32, String> {
    match value.parse::<i32>() {
        Ok(n) if n >= 1 || n == -1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a replication factor (1 or more, or -1 for the brokers' default)"
        )),
    }
}

/// Redis (stock reservations). Its `Debug` hides the URL's password.
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = defaults::REDIS_URL,
        hide_env_values = true
    )]
    pub url: String,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("url", &without_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field("url", &without_password(&self.url))
            .finish()
    }
}

/// A connection URL as it may be shown: the password of `scheme://user:password@host/...`
/// replaced by `***`.
pub fn without_password(url: &str) -> String {
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest
            .rsplit_once('@')
            .and_then(|(credentials, host)| Some((credentials.split_once(':')?.0, host)))
        {
            Some((user, host)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    // A password may also ride in the query (`?password=...`, as sqlx and others accept it).
    match shown.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => shown,
    }
}

/// Kafka (events) and the schema registry. Its `Debug` hides the registry URL's password.
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port]`.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = defaults::KAFKA_BOOTSTRAP_SERVERS
    )]
    pub bootstrap_servers: String,
    /// Prefix of every topic (none in production: the topics are the contract's
    /// `kafka_topic` names, e.g. `c4ang.payment.completed`).
    #[arg(
        long = "kafka-topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,
    /// Topic of an event type instead of the contract's, `event.type=topic` (e.g.
    /// `payment.completed=payments.done`); repeatable, comma-separated in the environment.
    #[arg(
        long = "kafka-topic",
        env = "KAFKA_TOPICS",
        value_delimiter = ',',
        value_parser = parse_topic_override
    )]
    pub topics: Vec<(EventType, String)>,
    /// Partitions of the topics payflow creates.
    #[arg(
        long = "kafka-partitions",
        env = "KAFKA_PARTITIONS",
        default_value_t = 3,
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub partitions: i32,
    /// Replication factor of the topics payflow creates (-1: the brokers' default).
    #[arg(
        long = "kafka-replication",
        env = "KAFKA_REPLICATION",
        default_value_t = 1,
        value_parser = parse_replication,
        allow_negative_numbers = true
    )]
    pub replication: i32,
    /// Framing of event values: `confluent` (wire format with a schema registry) or
    /// `single-object` (Avro single-object encoding, no registry).
    #[arg(
        long = "event-encoding",
        env = "EVENT_ENCODING",
        default_value = "confluent"
    )]
    pub encoding: Encoding,
    /// Schema registry base URL (Confluent REST API).
    #[arg(
        long = "schema-registry-url",
        env = "SCHEMA_REGISTRY_URL",
        default_value = defaults::SCHEMA_REGISTRY_URL,
        hide_env_values = true
    )]
    pub registry_url: String,
    /// Schema registry basic-auth user (Confluent Cloud: the API key).
    #[arg(long = "schema-registry-user", env = "SCHEMA_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Schema registry basic-auth password (Confluent Cloud: the API secret).
    #[arg(
        long = "schema-registry-password",
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub registry_password: Option<Secret>,
    /// Register a schema missing from its subject on first use (otherwise only
    /// `payflow admin setup` registers them).
    #[arg(
        long = "schema-registry-auto-register",
        env = "SCHEMA_REGISTRY_AUTO_REGISTER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auto_register: bool,
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("topics", &self.topics)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("encoding", &self.encoding)
            .field("registry_url", &without_password(&self.registry_url))
            .field("registry_user", &self.registry_user)
            .field("registry_password", &self.registry_password)
            .field("auto_register", &self.auto_register)
            .finish()
    }
}

/// `event.type=topic`
fn parse_topic_override(s: &str) -> Result<(EventType, String), String> {
    let (name, topic) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected event.type=topic"))?;
    let ty = EventType::ALL
        .into_iter()
        .find(|t| t.name() == name.trim())
        .ok_or_else(|| format!("{name:?} is not an event type"))?;
    let topic = topic.trim();
    if topic.is_empty() {
        return Err(format!("{s:?}: empty topic"));
    }
    Ok((ty, topic.to_owned()))
}

impl KafkaArgs {
    /// The publisher's configuration. Each event type needs a topic of its own: a topic's
    /// registry subject (`<topic>-value`) holds one schema, and a consumer tells the events
    /// apart by topic.
    pub fn config(&self) -> anyhow::Result<KafkaConfig> {
        let config = KafkaConfig {
            bootstrap_servers: self.bootstrap_servers.clone(),
            topic_prefix: self.topic_prefix.clone(),
            topics: self.topics.iter().cloned().collect(),
            partitions: self.partitions,
            replication: self.replication,
            encoding: self.encoding,
        };
        let mut seen = std::collections::BTreeMap::new();
        for ty in EventType::ALL {
            if let Some(other) = seen.insert(config.topic(ty), ty) {
                anyhow::bail!(
                    "{} and {} are both configured onto topic {} (--kafka-topic / KAFKA_TOPICS): \
                     each event type needs a topic of its own",
                    other.name(),
                    ty.name(),
                    config.topic(ty)
                );
            }
        }
        Ok(config)
    }

    /// The schema registry client, if the encoding uses one.
    pub fn registry(&self) -> anyhow::Result<Option<SchemaRegistry>> {
        if self.encoding != Encoding::Confluent {
            return Ok(None);
        }
        if self.registry_password.is_some() && self.registry_user.is_none() {
            anyhow::bail!(
                "SCHEMA_REGISTRY_PASSWORD is set without SCHEMA_REGISTRY_USER: basic auth needs both"
            );
        }
        let url: reqwest::Url = self.registry_url.parse().map_err(|e| {
            let shown = without_password(&self.registry_url);
            anyhow::anyhow!("schema registry URL {shown:?}: {e}")
        })?;
        Ok(Some(SchemaRegistry::new(RegistryConfig {
            url: url.as_str().trim_end_matches('/').to_owned(),
            username: self.registry_user.clone(),
            password: self.registry_password.clone(),
            auto_register: self.auto_register,
        })?))
    }
}

/// What Temporal answers to a namespace it does not have (`NotFound`), a key it does not take
/// (`Unauthenticated`) or a caller it does not let in (`PermissionDenied`): waiting cannot mend
/// any of them.
fn refuses_configuration(status: &temporalio_client::tonic::Status) -> bool {
    status.code() == temporalio_client::tonic::Code::NotFound || refuses_credentials(status)
}

/// A key Temporal does not take, or a caller it does not let in.
fn refuses_credentials(status: &temporalio_client::tonic::Status) -> bool {
    use temporalio_client::tonic::Code;
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

/// Runs `connect` until it succeeds: a dependency that is away while a process starts delays
/// what needs it and is logged (0.5 s between tries, doubling to 10 s); it never ends the
/// process. Check the configuration first, so a bad URL still fails at once; an answer that
/// says the configuration is wrong (`misconfigured`: a refused password, a database that does
/// not exist) ends the wait with an error, since waiting cannot mend it.
pub async fn until_available<T, E, F, Fut>(
    dependency: &'static str,
    connect: F,
    misconfigured: impl Fn(&E) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    until_available_reported(dependency, &Health::default(), connect, misconfigured).await
}

/// [`until_available`], telling `health` what it waits for.
pub async fn until_available_reported<T, E, F, Fut>(
    dependency: &'static str,
    health: &Health,
    mut connect: F,
    misconfigured: impl Fn(&E) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut pause = Duration::from_millis(500);
    loop {
        match connect().await {
            Ok(connected) => {
                health.up(dependency);
                return Ok(connected);
            }
            Err(e) if misconfigured(&e) => {
                anyhow::bail!("{dependency} refuses payflow's configuration: {e}")
            }
            Err(e) => {
                health.waiting(dependency, e.to_string());
                tracing::warn!(
                    dependency,
                    error = %e,
                    retry_in_ms = pause.as_millis() as u64,
                    "dependency unavailable; retrying"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The dev server asks for no credentials, so only the classification is tested here: a
    /// refused key or identity ends the wait like an unknown namespace; an outage does not.
    #[test]
    fn temporal_refusing_the_key_or_the_namespace_is_a_configuration_error() {
        use temporalio_client::tonic::{Code, Status};
        for code in [
            Code::NotFound,
            Code::Unauthenticated,
            Code::PermissionDenied,
        ] {
            assert!(
                super::refuses_configuration(&Status::new(code, "")),
                "{code:?}"
            );
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(
                !super::refuses_configuration(&Status::new(code, "")),
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_connection_url_is_shown_without_its_password() {
        for (url, shown) in [
            (
                "postgres://payflow:s3cret@db:5432/payflow",
                "postgres://payflow:***@db:5432/payflow",
            ),
            ("redis://:s3cret@cache:6379", "redis://:***@cache:6379"),
            (
                "postgres://127.0.0.1:5432/payflow",
                "postgres://127.0.0.1:5432/payflow",
            ),
            (
                "postgres://db/payflow?user=u&password=s3cret&sslmode=require",
                "postgres://db/payflow?user=u&password=***&sslmode=require",
            ),
            (
                "https://key:s3cret@registry.example/path?x=1",
                "https://key:***@registry.example/path?x=1",
            ),
        ] {
            assert_eq!(super::without_password(url), shown);
        }
        let args = super::DatabaseArgs {
            url: "postgres://u:s3cret@h/db".into(),
            max_connections: 4,
        };
        let redis = super::RedisArgs {
            url: "redis://:s3cret@h:6379".into(),
        };
        assert!(!format!("{args:?}{redis:?}").contains("s3cret"));
    }

    #[derive(clap::Parser)]
    struct Kafka {
        #[command(flatten)]
        kafka: super::KafkaArgs,
    }

    fn kafka(args: &[&str]) -> anyhow::Result<payflow_activities::events::KafkaConfig> {
        use clap::Parser;
        Kafka::try_parse_from(std::iter::once("payflow").chain(args.iter().copied()))
            .expect("parses")
            .kafka
            .config()
    }

    #[test]
    fn registry_credentials_stay_hidden_and_half_of_them_are_refused() {
        use clap::Parser;
        let args = Kafka::try_parse_from([
            "payflow",
            "--schema-registry-url",
            "https://key:s3cret@registry.example",
            "--schema-registry-user",
            "key",
            "--schema-registry-password",
            "s3cret",
        ])
        .unwrap()
        .kafka;
        assert!(!format!("{args:?}").contains("s3cret"), "{args:?}");
        let half = Kafka::try_parse_from(["payflow", "--schema-registry-password", "s3cret"])
            .unwrap()
            .kafka;
        let refused = half.registry().unwrap_err().to_string();
        assert!(refused.contains("SCHEMA_REGISTRY_USER"), "{refused}");
        assert!(!refused.contains("s3cret"));
    }

    #[test]
    fn two_event_types_on_one_topic_are_refused() {
        let config = kafka(&["--kafka-topic", "payment.failed=payments.done"]).unwrap();
        assert_eq!(
            config.topic(payflow_workflows::types::EventType::PaymentFailed),
            "payments.done"
        );
        for args in [
            &[
                "--kafka-topic",
                "payment.failed=x",
                "--kafka-topic",
                "payment.cancelled=x",
            ][..],
            // Onto another type's contract topic.
            &["--kafka-topic", "payment.failed=c4ang.payment.completed"][..],
        ] {
            let refused = kafka(args).unwrap_err().to_string();
            assert!(refused.contains("topic of its own"), "{refused}");
        }
    }

    #[test]
    fn counts_that_would_leave_nothing_working_are_refused_at_start() {
        use clap::Parser;
        for args in [
            &["--kafka-partitions", "0"][..],
            &["--kafka-replication", "0"][..],
            &["--kafka-replication", "-2"][..],
        ] {
            let refused =
                Kafka::try_parse_from(std::iter::once("payflow").chain(args.iter().copied()));
            assert!(refused.is_err(), "{args:?}");
        }
        assert_eq!(
            kafka(&["--kafka-replication", "-1"]).unwrap().replication,
            -1
        );
        assert_eq!(kafka(&["--kafka-replication", "3"]).unwrap().replication, 3);
        #[derive(clap::Parser)]
        struct Database {
            #[command(flatten)]
            database: super::DatabaseArgs,
        }
        assert!(Database::try_parse_from(["payflow", "--database-max-connections", "0"]).is_err());
    }
}
