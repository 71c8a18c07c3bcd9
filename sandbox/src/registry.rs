//! A development stand-in for the Confluent Schema Registry.
//!
//! No Confluent Schema Registry (nor Karapace or Apicurio) can be installed on the machines
//! payflow is developed and tested on, so the dev stack runs this one. It speaks the subset of
//! the Confluent REST API that Confluent's serializers and deserializers use, with Confluent's
//! JSON shapes and error codes:
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /subjects/{subject}/versions` `{"schema": ...}` | `{"id": N}` (registers, or finds) |
//! | `POST /subjects/{subject}` `{"schema": ...}` | the registered version of that schema |
//! | `GET /schemas/ids/{id}` | `{"schema": ...}` |
//! | `GET /schemas/ids/{id}/versions` | `[{"subject": ..., "version": N}]` |
//! | `GET /subjects` | subject names |
//! | `GET /subjects/{subject}/versions` | version numbers |
//! | `GET /subjects/{subject}/versions/{version or latest}` | `{"subject","id","version","schema"}` |
//! | `POST /compatibility/subjects/{subject}/versions/{version or latest}` | `{"is_compatible": b}` |
//! | `GET`/`PUT /config`, `/config/{subject}` | the compatibility level (default `BACKWARD`) |
//!
//! With [`Registry::with_basic_auth`] (`payflow-registry --basic-auth USER:PASSWORD`) every
//! request but `/healthz` needs those credentials, as a Confluent registry with basic
//! authentication does, and is answered `401` without them.
//!
//! Schema ids are global: one schema (by its JSON, whitespace aside) has one id under every
//! subject, and an id never changes once given. The state is written to a JSON file after
//! every change (write and rename), so ids survive restarts. Only Avro schemas are accepted.
//! `docker-compose.yml` runs the real `confluentinc/cp-schema-registry` instead.

use apache_avro::{Schema, schema_compatibility::SchemaCompatibility};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};
use tokio::net::TcpListener;

/// Compatibility levels, as Confluent names them.
const LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];

/// What the registry keeps.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Stored {
    /// Schema text by id (ids start at 1).
    schemas: BTreeMap<u32, String>,
    /// Schema ids of each subject, by version (version = index + 1).
    subjects: BTreeMap<String, Vec<u32>>,
    /// The global compatibility level (`None`: `BACKWARD`).
    compatibility: Option<String>,
    /// Per-subject compatibility levels.
    subject_compatibility: BTreeMap<String, String>,
}

/// The registry: its state and, if given, the file that keeps it.
#[derive(Clone)]
pub struct Registry {
    state: Arc<Mutex<Stored>>,
    file: Option<PathBuf>,
    /// The `Authorization` header every request but `/healthz` must carry, if any.
    basic_auth: Option<Arc<str>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry kept in `file` (read if it exists), or in memory only.
    pub fn open(file: Option<PathBuf>) -> anyhow::Result<Self> {
        let state = match &file {
            Some(path) if path.exists() => serde_json::from_slice(&std::fs::read(path)?)
                .map_err(|e| anyhow::anyhow!("registry state {}: {e}", path.display()))?,
            _ => Stored::default(),
        };
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            file,
            basic_auth: None,
        })
    }

    /// Asks every request but `/healthz` for HTTP basic auth with `user` and `password`, as a
    /// Confluent registry with `authentication.method=BASIC` does: `401` without them.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.basic_auth = Some(format!("Basic {token}").into());
        self
    }

    fn save(&self, state: &Stored) -> Result<(), Failure> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(Failure::internal)?;
        std::fs::File::create(&tmp)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(Failure::internal)
    }

    /// Applies `change` to a copy of the state and saves it; only then is it the state. A
    /// change that could not be kept is not served either (an id handed out and then lost in a
    /// restart could go to another schema, and a deserializer that cached it would misread).
    fn commit<T>(
        &self,
        state: &mut Stored,
        change: impl FnOnce(&mut Stored) -> T,
    ) -> Result<T, Failure> {
        let mut next = state.clone();
        let out = change(&mut next);
        self.save(&next)?;
        *state = next;
        Ok(out)
    }

    /// Registers `schema` under `subject` in process, as `POST /subjects/{subject}/versions`
    /// would: for a test that needs a registry holding a given schema before anyone asks it.
    pub fn seed(&self, subject: &str, schema: &str) -> anyhow::Result<u32> {
        self.register(subject, schema)
            .map_err(|Failure(status, _, message)| anyhow::anyhow!("{status}: {message}"))
    }

    /// Registers `schema` under `subject` (or finds it there); answers its id.
    fn register(&self, subject: &str, schema: &str) -> Result<u32, Failure> {
        let (parsed, key) = parse(schema)?;
        let mut state = self.state.lock().expect("registry lock");
        if let Some(id) = find_in_subject(&state, subject, &key) {
            return Ok(id);
        }
        check_compatibility(&state, subject, &parsed, None)?;
        let id = self.commit(&mut state, |state| {
            let id = match state.schemas.iter().find(|(_, s)| same(s, &key)) {
                Some((id, _)) => *id,
                None => {
                    let id = state.schemas.keys().next_back().map_or(1, |last| last + 1);
                    state.schemas.insert(id, schema.to_owned());
                    id
                }
            };
            state
                .subjects
                .entry(subject.to_owned())
                .or_default()
                .push(id);
            id
        })?;
        tracing::info!(subject, id, "schema registered");
        Ok(id)
    }
}

/// An error in Confluent's shape: HTTP status, `error_code`, message.
#[derive(Debug)]
struct Failure(StatusCode, u32, String);

impl Failure {
    fn subject_not_found(subject: &str) -> Self {
        Self(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }
    fn version_not_found() -> Self {
        Self(StatusCode::NOT_FOUND, 40402, "Version not found.".into())
    }
    fn schema_not_found() -> Self {
        Self(StatusCode::NOT_FOUND, 40403, "Schema not found".into())
    }
    fn invalid_schema(why: impl std::fmt::Display) -> Self {
        Self(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {why}"),
        )
    }
    fn internal(why: impl std::fmt::Display) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, 50001, why.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "error_code": self.1, "message": self.2 })),
        )
            .into_response()
    }
}

/// The schema parsed, and its identity: its JSON without whitespace (keys sorted).
fn parse(schema: &str) -> Result<(Schema, String), Failure> {
    let json: Value = serde_json::from_str(schema).map_err(Failure::invalid_schema)?;
    let parsed = Schema::parse(&json).map_err(Failure::invalid_schema)?;
    Ok((parsed, json.to_string()))
}

/// Whether a stored schema text is the schema whose identity is `key`.
fn same(text: &str, key: &str) -> bool {
    let identity = serde_json::from_str::<Value>(text)
        .ok()
        .map(|v| v.to_string());
    identity.as_deref() == Some(key)
}

fn find_in_subject(state: &Stored, subject: &str, key: &str) -> Option<u32> {
    state
        .subjects
        .get(subject)?
        .iter()
        .copied()
        .find(|id| state.schemas.get(id).is_some_and(|s| same(s, key)))
}

fn level(state: &Stored, subject: &str) -> String {
    state
        .subject_compatibility
        .get(subject)
        .or(state.compatibility.as_ref())
        .cloned()
        .unwrap_or_else(|| "BACKWARD".to_owned())
}

/// Whether `new` may join `subject` under its compatibility level (against `against`, or the
/// versions the level names).
fn compatible(
    state: &Stored,
    subject: &str,
    new: &Schema,
    against: Option<u32>,
) -> Result<bool, Failure> {
    let level = level(state, subject);
    let versions = state.subjects.get(subject).cloned().unwrap_or_default();
    let others: Vec<u32> = match against {
        Some(id) => vec![id],
        None if level.ends_with("_TRANSITIVE") => versions,
        None => versions.last().copied().into_iter().collect(),
    };
    let backward = level.starts_with("BACKWARD") || level.starts_with("FULL");
    let forward = level.starts_with("FORWARD") || level.starts_with("FULL");
    for id in others {
        let text = state
            .schemas
            .get(&id)
            .ok_or_else(Failure::schema_not_found)?;
        let (old, _) = parse(text)?;
        // BACKWARD: the new schema reads what the old one wrote; FORWARD: the other way.
        if backward && SchemaCompatibility::can_read(&old, new).is_err() {
            return Ok(false);
        }
        if forward && SchemaCompatibility::can_read(new, &old).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn check_compatibility(
    state: &Stored,
    subject: &str,
    new: &Schema,
    against: Option<u32>,
) -> Result<(), Failure> {
    if compatible(state, subject, new, against)? {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({})",
                level(state, subject)
            ),
        ))
    }
}

/// `{"schema": "...", "schemaType": "AVRO"}`
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
}

fn avro_only(body: &SchemaBody) -> Result<(), Failure> {
    match body.schema_type.as_deref() {
        None | Some("AVRO") => Ok(()),
        Some(other) => Err(Failure::invalid_schema(format!(
            "schema type {other} is not supported by the dev registry"
        ))),
    }
}

type Reply = Result<Json<Value>, Failure>;

fn body(
    result: Result<Json<SchemaBody>, axum::extract::rejection::JsonRejection>,
) -> Result<SchemaBody, Failure> {
    result.map(|Json(b)| b).map_err(|e| {
        Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid request: {e}"),
        )
    })
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    request: Result<Json<SchemaBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let request = body(request)?;
    avro_only(&request)?;
    let id = registry.register(&subject, &request.schema)?;
    Ok(Json(json!({ "id": id })))
}

fn version_json(state: &Stored, subject: &str, version: usize) -> Result<Value, Failure> {
    let ids = state
        .subjects
        .get(subject)
        .ok_or_else(|| Failure::subject_not_found(subject))?;
    let id = *ids
        .get(version.wrapping_sub(1))
        .ok_or_else(Failure::version_not_found)?;
    Ok(json!({
        "subject": subject,
        "version": version,
        "id": id,
        "schema": state.schemas.get(&id).cloned().unwrap_or_default(),
    }))
}

async fn lookup(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    request: Result<Json<SchemaBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let request = body(request)?;
    let (_, key) = parse(&request.schema)?;
    let state = registry.state.lock().expect("registry lock");
    let ids = state
        .subjects
        .get(&subject)
        .ok_or_else(|| Failure::subject_not_found(&subject))?;
    let version = ids
        .iter()
        .position(|id| state.schemas.get(id).is_some_and(|s| same(s, &key)))
        .ok_or_else(Failure::schema_not_found)?;
    Ok(Json(version_json(&state, &subject, version + 1)?))
}

async fn schema_by_id(State(registry): State<Registry>, Path(id): Path<u32>) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    let schema = state
        .schemas
        .get(&id)
        .ok_or_else(Failure::schema_not_found)?;
    Ok(Json(json!({ "schema": schema })))
}

async fn versions_of_id(State(registry): State<Registry>, Path(id): Path<u32>) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    if !state.schemas.contains_key(&id) {
        return Err(Failure::schema_not_found());
    }
    let found: Vec<Value> = state
        .subjects
        .iter()
        .flat_map(|(subject, ids)| {
            ids.iter()
                .enumerate()
                .filter(|(_, i)| **i == id)
                .map(move |(n, _)| json!({ "subject": subject, "version": n + 1 }))
        })
        .collect();
    Ok(Json(Value::Array(found)))
}

async fn subjects(State(registry): State<Registry>) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    Ok(Json(json!(state.subjects.keys().collect::<Vec<_>>())))
}

async fn versions(State(registry): State<Registry>, Path(subject): Path<String>) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    let ids = state
        .subjects
        .get(&subject)
        .ok_or_else(|| Failure::subject_not_found(&subject))?;
    Ok(Json(json!((1..=ids.len()).collect::<Vec<_>>())))
}

fn version_number(state: &Stored, subject: &str, version: &str) -> Result<usize, Failure> {
    let count = state
        .subjects
        .get(subject)
        .ok_or_else(|| Failure::subject_not_found(subject))?
        .len();
    match version {
        "latest" | "-1" => Ok(count),
        n => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=count).contains(n))
            .ok_or_else(Failure::version_not_found),
    }
}

async fn version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    let n = version_number(&state, &subject, &version)?;
    Ok(Json(version_json(&state, &subject, n)?))
}

async fn check(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    request: Result<Json<SchemaBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let request = body(request)?;
    avro_only(&request)?;
    let (parsed, _) = parse(&request.schema)?;
    let state = registry.state.lock().expect("registry lock");
    let n = version_number(&state, &subject, &version)?;
    let id = state.subjects[&subject][n - 1];
    let ok = compatible(&state, &subject, &parsed, Some(id))?;
    Ok(Json(json!({ "is_compatible": ok })))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn set_level(
    registry: &Registry,
    subject: Option<String>,
    request: Result<Json<ConfigBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let Ok(Json(request)) = request else {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level".into(),
        ));
    };
    let level = request.compatibility.to_uppercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level".into(),
        ));
    }
    let mut state = registry.state.lock().expect("registry lock");
    registry.commit(&mut state, |state| match subject {
        Some(subject) => {
            state.subject_compatibility.insert(subject, level.clone());
        }
        None => state.compatibility = Some(level.clone()),
    })?;
    Ok(Json(json!({ "compatibility": level })))
}

async fn get_config(State(registry): State<Registry>) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    Ok(Json(json!({ "compatibilityLevel": level(&state, "") })))
}

async fn put_config(
    State(registry): State<Registry>,
    request: Result<Json<ConfigBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    set_level(&registry, None, request)
}

async fn get_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Reply {
    let state = registry.state.lock().expect("registry lock");
    Ok(Json(
        json!({ "compatibilityLevel": level(&state, &subject) }),
    ))
}

async fn put_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    request: Result<Json<ConfigBody>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    set_level(&registry, Some(subject), request)
}

/// The registry's routes.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check),
        )
        .route("/config", get(get_config).put(put_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .layer(axum::middleware::from_fn_with_state(
            registry.basic_auth.clone(),
            authorized,
        ))
        .with_state(registry)
}

/// Lets a request through if the registry asks for no credentials, it carries the right ones,
/// or it asks `/healthz`; answers `401` (Confluent's shape) otherwise.
async fn authorized(
    State(expected): State<Option<Arc<str>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let carried = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match expected {
        Some(expected) if request.uri().path() != "/healthz" && carried != Some(&*expected) => {
            let mut refused = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error_code": 401, "message": "Unauthorized" })),
            )
                .into_response();
            refused.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"SchemaRegistry\""),
            );
            refused
        }
        _ => next.run(request).await,
    }
}

/// Serves until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        r#"{"type":"record","name":"E","namespace":"x","fields":[{"name":"a","type":"string"}]}"#;
    const V2_OPTIONAL: &str = r#"{"type":"record","name":"E","namespace":"x","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}]}"#;
    const V2_REQUIRED: &str = r#"{"type":"record","name":"E","namespace":"x","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn one_schema_has_one_id_under_every_subject_and_across_restarts() {
        let dir = std::env::temp_dir().join(format!("registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("state.json");
        let _ = std::fs::remove_file(&file);
        let registry = Registry::open(Some(file.clone())).unwrap();
        let a = registry.register("t1-value", V1).unwrap();
        let spaced = V1.replace(',', " , ");
        assert_eq!(registry.register("t1-value", &spaced).unwrap(), a);
        assert_eq!(registry.register("t2-value", V1).unwrap(), a);
        let b = registry.register("t1-value", V2_OPTIONAL).unwrap();
        assert_ne!(a, b);
        let reopened = Registry::open(Some(file)).unwrap();
        assert_eq!(reopened.register("t1-value", V2_OPTIONAL).unwrap(), b);
        assert_eq!(reopened.register("t3-value", V1).unwrap(), a);
    }

    #[test]
    fn a_schema_that_could_not_be_saved_gets_no_id() {
        let dir = std::env::temp_dir().join(format!("registry-unsaved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let registry = Registry::open(Some(dir.join("state.json"))).unwrap();
        // The disk refuses the write: no directory to write in.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(registry.register("a-value", V1).is_err());
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            registry.register("b-value", V2_OPTIONAL).unwrap(),
            1,
            "the unsaved schema's id was not handed out"
        );
        let reopened = Registry::open(Some(dir.join("state.json"))).unwrap();
        assert_eq!(reopened.register("b-value", V2_OPTIONAL).unwrap(), 1);
        assert!(
            !reopened
                .state
                .lock()
                .unwrap()
                .subjects
                .contains_key("a-value")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backward_compatibility_refuses_a_new_required_field() {
        let registry = Registry::open(None).unwrap();
        registry.register("s-value", V1).unwrap();
        let err = registry.register("s-value", V2_REQUIRED).unwrap_err();
        assert_eq!(err.1, 409);
        assert!(registry.register("s-value", V2_OPTIONAL).is_ok());
    }

    #[test]
    fn an_invalid_schema_is_refused_with_42201() {
        let registry = Registry::open(None).unwrap();
        assert_eq!(registry.register("s-value", "{").unwrap_err().1, 42201);
        assert_eq!(
            registry
                .register("s-value", r#"{"type":"record","name":"E"}"#)
                .unwrap_err()
                .1,
            42201
        );
    }
}
