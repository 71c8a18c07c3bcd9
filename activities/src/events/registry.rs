//! A Confluent Schema Registry client: the ids of payflow's schemas, cached.
//!
//! Values in the Confluent wire format carry a schema's registry id, found under the subject
//! `<topic>-value` (TopicNameStrategy, the serializer's default). An id never changes once a
//! schema is registered, so each subject is asked once per process; after that, publishing
//! makes no registry round trip. A registry that cannot be reached is a transient failure:
//! the event waits and is retried like a Kafka outage, in order.

use crate::secret::Secret;
use serde_json::{Value, json};
use std::{collections::HashMap, sync::RwLock, time::Duration};

/// Where the registry is and how payflow may use it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// Basic-auth user (Confluent Cloud: the API key), if the registry requires one.
    pub username: Option<String>,
    /// Basic-auth password (Confluent Cloud: the API secret).
    pub password: Option<Secret>,
    /// Register a schema that is missing from its subject on first use (as Confluent's
    /// serializer does with `auto.register.schemas=true`); otherwise `payflow admin setup`
    /// registers them and a missing one waits for it.
    pub auto_register: bool,
}

/// A registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not reachable, timed out, or answered 5xx/429: try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The schema is not registered under the subject, and payflow may not register it.
    #[error("schema not registered under subject {0} (run `payflow admin setup`)")]
    NotRegistered(String),
    /// The registry refused the request (e.g. an incompatible schema, bad credentials).
    #[error("schema registry refused {what}: {status} {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
}

impl RegistryError {
    /// Whether a later try may succeed without a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            // Bad credentials, an incompatible schema, or a schema payflow may not register
            // (`payflow admin setup` does) need a person.
            Self::Refused { .. } | Self::NotRegistered(_) => false,
        }
    }
}

/// The registry client with its id cache. One per process; cheap to share.
#[derive(Debug)]
pub struct SchemaRegistry {
    config: RegistryConfig,
    http: reqwest::Client,
    ids: RwLock<HashMap<String, u32>>,
}

/// The subject of a topic's values (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

impl SchemaRegistry {
    /// A client; connects on first use.
    pub fn new(config: RegistryConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            config,
            http,
            ids: RwLock::new(HashMap::new()),
        })
    }

    /// Whether payflow registers a schema missing from its subject on first use.
    pub fn auto_registers(&self) -> bool {
        self.config.auto_register
    }

    /// The id of `schema` under `subject`: from the cache, else looked up (and registered if
    /// allowed).
    pub async fn id(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        if let Some(id) = self.ids.read().expect("id cache").get(subject) {
            return Ok(*id);
        }
        let id = match self.lookup(subject, schema).await? {
            Some(id) => id,
            None if self.config.auto_register => self.register(subject, schema).await?,
            None => return Err(RegistryError::NotRegistered(subject.to_owned())),
        };
        self.ids
            .write()
            .expect("id cache")
            .insert(subject.to_owned(), id);
        Ok(id)
    }

    /// Registers `schema` under `subject` (idempotent: an existing registration answers its
    /// id).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base());
        let body = self
            .send(
                &format!("register {subject}"),
                self.http.post(url).json(&json!({ "schema": schema })),
            )
            .await?
            .ok_or_else(|| RegistryError::NotRegistered(subject.to_owned()))?;
        schema_id(&body, subject)
    }

    /// The schema with registry id `id` (what a deserializer asks).
    pub async fn schema(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base());
        let body = self
            .send(&format!("schema {id}"), self.http.get(url))
            .await?;
        Ok(body.and_then(|b| b["schema"].as_str().map(str::to_owned)))
    }

    /// Whether the registry answers payflow as it will be asked: a look-up of `schema` under
    /// one of payflow's own `subject`s, which credentials allowed to read only payflow's
    /// subjects may make (listing every subject needs more). Registered or not, any answer of
    /// the registry's own is `Ok`; a 404 that is not the registry's ("subject" or "schema not
    /// found") means no registry answers at this URL. What the worker checks at start and
    /// `/readyz` reports after; ids already cached keep publishing while it is away.
    pub async fn answers_for(&self, subject: &str, schema: &str) -> Result<(), RegistryError> {
        let what = format!("look-up {subject}");
        let url = format!("{}/subjects/{subject}", self.base());
        let request = self
            .authorized(self.http.post(url))
            .json(&json!({ "schema": schema }));
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            // The id it answers is the one publishing needs: kept, so the warm-up after the
            // worker's start-up check does not ask again.
            if let Ok(body) = response.json::<Value>().await
                && let Ok(id) = schema_id(&body, subject)
            {
                self.ids
                    .write()
                    .expect("id cache")
                    .insert(subject.to_owned(), id);
            }
            return Ok(());
        }
        if status.as_u16() != 404 {
            return Self::failure(&what, status, response).await;
        }
        let body: Option<Value> = response.json().await.ok();
        match body.as_ref().and_then(|b| b["error_code"].as_u64()) {
            // Subject not found, schema not found: the registry's own answers.
            Some(40401 | 40403) => Ok(()),
            _ => Err(RegistryError::Refused {
                what,
                status: 404,
                message: "no schema registry answers at this URL".to_owned(),
            }),
        }
    }

    /// The id of `schema` if it is registered under `subject`.
    async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let url = format!("{}/subjects/{subject}", self.base());
        match self
            .send(
                &format!("look-up {subject}"),
                self.http.post(url).json(&json!({ "schema": schema })),
            )
            .await?
        {
            Some(body) => schema_id(&body, subject).map(Some),
            None => Ok(None),
        }
    }

    fn base(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    /// `request` with the registry's media type and payflow's credentials, if any.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header("accept", "application/vnd.schemaregistry.v1+json");
        match &self.config.username {
            Some(user) => {
                request.basic_auth(user, self.config.password.as_ref().map(Secret::expose))
            }
            None => request,
        }
    }

    /// The error of an answer that is neither a success nor a 404: a registry (or what stands
    /// before it) that is away, or a refusal.
    async fn failure<T>(
        what: &str,
        status: reqwest::StatusCode,
        response: reqwest::Response,
    ) -> Result<T, RegistryError> {
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            return Err(RegistryError::Unavailable(format!("{what}: HTTP {status}")));
        }
        let text = response
            .text()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {}", e.without_url())))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        // A gateway's refusal (401/403 from a proxy) may not be JSON: still a refusal.
        Err(RegistryError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            message: match body.as_ref().and_then(|b| b["message"].as_str()) {
                Some(message) => message.to_owned(),
                None => text.chars().take(100).collect(),
            },
        })
    }

    /// Sends a request; 404 answers `None`.
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, RegistryError> {
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {}", e.without_url())))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if !status.is_success() {
            return Self::failure(what, status, response).await;
        }
        let text = response
            .text()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {}", e.without_url())))?;
        serde_json::from_str::<Value>(&text)
            .map(Some)
            .map_err(|_| RegistryError::Unavailable(format!("{what}: an answer that is not JSON")))
    }
}

fn schema_id(body: &Value, subject: &str) -> Result<u32, RegistryError> {
    body["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| RegistryError::Refused {
            what: format!("id of {subject}"),
            status: 200,
            message: "the answer holds no schema id".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request with `status` and an HTML `page`; its URL.
    fn serve(status: &'static str, page: &'static str) -> String {
        crate::test_http::serve(status, "text/html", page)
    }

    fn registry_at(url: String) -> SchemaRegistry {
        SchemaRegistry::new(RegistryConfig {
            url,
            username: Some("payflow".into()),
            password: None,
            auto_register: true,
        })
        .unwrap()
    }

    /// A gateway in front of the registry refuses payflow's credentials with a page, not
    /// JSON: that is a refusal only a person can lift, not an outage to wait out.
    #[tokio::test]
    async fn a_refusal_that_is_not_json_is_still_a_refusal() {
        let url = serve("403 Forbidden", "<html><body>403 Forbidden</body></html>");
        let refused = registry_at(url)
            .id("t-value", "\"string\"")
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, RegistryError::Refused { status: 403, message, .. }
                if message.contains("403 Forbidden")),
            "{refused:?}"
        );
        assert!(!refused.is_transient());
    }

    /// A URL with a wrong path (or another server) answers a look-up 404 in words that are
    /// not the registry's: the health check says so instead of reporting the registry up. The
    /// registry's own "subject not found" is an answer.
    #[tokio::test]
    async fn a_url_where_no_registry_answers_look_ups_is_not_a_registry_that_answers() {
        let url = serve("404 Not Found", "<html><body>no such page</body></html>");
        let refused = registry_at(url)
            .answers_for("t-value", "\"string\"")
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, RegistryError::Refused { status: 404, .. }),
            "{refused:?}"
        );
        let url = crate::test_http::serve(
            "404 Not Found",
            "application/vnd.schemaregistry.v1+json",
            r#"{"error_code":40401,"message":"Subject 't-value' not found."}"#,
        );
        registry_at(url)
            .answers_for("t-value", "\"string\"")
            .await
            .expect("the registry's own answer");
    }
}
