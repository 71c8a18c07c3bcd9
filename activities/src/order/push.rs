//! The push gateway client.

use crate::secret::Secret;
use payflow_workflows::types::PushNotification;
use serde::Serialize;
use std::time::Duration;

/// Push gateway settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Base URL; pushes go to `{base_url}/v1/push`.
    pub base_url: String,
    /// Bearer token for the gateway, if it wants one.
    pub api_key: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// The push gateway client: `POST /v1/push` with an `Idempotency-Key`, so the gateway delivers
/// a retried notification once.
#[derive(Debug, Clone)]
pub struct PushClient {
    http: reqwest::Client,
    config: PushConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushBody<'a> {
    user_id: &'a str,
    title: &'a str,
    body: &'a str,
    data: PushData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushData<'a> {
    order_id: &'a str,
}

impl PushClient {
    /// Builds the client.
    pub fn new(config: PushConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, config })
    }

    /// Sends one notification.
    pub async fn send(&self, n: &PushNotification) -> anyhow::Result<()> {
        let mut request = self
            .http
            .post(format!("{}/v1/push", self.config.base_url))
            .header("Idempotency-Key", &n.notification_id)
            .json(&PushBody {
                user_id: &n.user_id,
                title: &n.title,
                body: &n.body,
                data: PushData {
                    order_id: &n.order_id,
                },
            });
        if !self.config.api_key.is_empty() {
            request = request.bearer_auth(self.config.api_key.expose());
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "push gateway answered HTTP {}",
            response.status().as_u16()
        );
        Ok(())
    }
}
