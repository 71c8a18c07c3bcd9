//! The payload codec server (Temporal's remote codec protocol): the Web UI and the CLI send
//! payloads here to see them decrypted. `/codec/encode` and `/codec/decode` take an API key;
//! the Web UI, which cannot send one, calls `/codec/<codec token>/decode`, a capability URL
//! that decodes only (a codec token never pays).

use super::{ApiError, ApiJson, ApiState};
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::post,
};
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// `/codec/encode` and `/codec/decode`, for bearers of an API key (the caller adds the check).
pub(super) fn with_api_key() -> Router<ApiState> {
    Router::new()
        .route("/codec/encode", post(encode))
        .route("/codec/decode", post(decode))
}

/// `/codec/<codec token>/decode`: the Web UI cannot send a bearer key, so it calls a capability
/// URL holding a codec token (`--ui-codec-endpoint http://host:8080/codec/<codec token>`),
/// which decodes only.
pub(super) fn for_web_ui() -> Router<ApiState> {
    Router::new().route("/codec/{token}/decode", post(decode_with_token))
}

/// `{"payloads": [{"metadata": {"k": base64}, "data": base64}]}`, as the Web UI and the CLI send.
#[derive(Debug, Serialize, Deserialize)]
struct CodecPayloads {
    payloads: Vec<JsonPayload>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct JsonPayload {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    data: String,
}

fn from_json(p: JsonPayload) -> Result<Payload, ApiError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |_| ApiError::BadRequest("INVALID_REQUEST", "payloads must be base64".into());
    Ok(Payload {
        metadata: p
            .metadata
            .into_iter()
            .map(|(k, v)| b64.decode(v).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        data: b64.decode(p.data).map_err(bad)?,
        ..Default::default()
    })
}

fn to_json(p: Payload) -> JsonPayload {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    JsonPayload {
        metadata: p
            .metadata
            .into_iter()
            .map(|(k, v)| (k, b64.encode(v)))
            .collect(),
        data: b64.encode(p.data),
    }
}

fn run_codec(
    state: &ApiState,
    body: CodecPayloads,
    encode: bool,
) -> Result<Json<CodecPayloads>, ApiError> {
    let mut out = Vec::with_capacity(body.payloads.len());
    for p in body.payloads {
        let p = from_json(p)?;
        out.push(to_json(match &state.inner.codec {
            None => p,
            Some(keys) if encode => keys
                .encrypt(&p)
                .map_err(|e| ApiError::Unavailable(e.into()))?,
            Some(keys) => keys
                .decrypt(p)
                .map_err(|e| ApiError::BadRequest("UNDECODABLE_PAYLOAD", e.to_string()))?,
        }));
    }
    Ok(Json(CodecPayloads { payloads: out }))
}

async fn encode(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CodecPayloads>,
) -> Result<Json<CodecPayloads>, ApiError> {
    run_codec(&state, body, true)
}

async fn decode(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CodecPayloads>,
) -> Result<Json<CodecPayloads>, ApiError> {
    run_codec(&state, body, false)
}

async fn decode_with_token(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<CodecPayloads>,
) -> Result<Json<CodecPayloads>, ApiError> {
    if !state.codec_token_ok(&token) {
        return Err(ApiError::Unauthorized);
    }
    run_codec(&state, body, false)
}
