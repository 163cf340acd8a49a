//! `POST /Bulk` (RFC 7644 §3.7): many writes in one request. Each operation is applied in order
//! as its own request would be (bulk is not atomic), with the same checks, audit and change
//! records; `bulkId:` references to resources created earlier in the same request are resolved;
//! `failOnErrors` stops after that many errors.

use super::scim_response;
use super::{create, create_request, created_user, delete, json_body, patch_resource, replace};
use super::{PatchRequest, ReadParams, ScimError};
use crate::app::{self, Caller};
use crate::domain::scim::{ScimType, ScimWrite};
use crate::http::Path;
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Instant;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// Most operations one bulk request may carry (advertised in ServiceProviderConfig).
pub const MAX_OPERATIONS: usize = 1000;
/// Users created in a row are written together, set-based, in runs of at most this many (see
/// `app::scim::create_all`): a run costs a handful of statements whatever its size, and stays
/// short enough not to keep other writers waiting.
const CREATES_PER_RUN: usize = 100;

/// A field of a JSON object, its name matched without regard to case.
fn field<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    object
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Apply many writes in order, each as its own request would be.
#[utoipa::path(post, path = "/scim/v2/{source_system}/Bulk", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    request_body(content = super::openapi::ScimBulkRequest, content_type = "application/scim+json"),
    responses((status = 200, description = "A BulkResponse: each operation's status"),
              (status = 413, description = "More operations than maxOperations")))]
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    let body = json_body(&body)?;
    let named = field(&body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(BULK_REQUEST)));
    if !named {
        return Err(ScimError::invalid_value(format!(
            "schemas must name {BULK_REQUEST}"
        )));
    }
    let operations = field(&body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a BulkRequest needs \"Operations\": a list"))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!(
                "a bulk request carries at most {MAX_OPERATIONS} operations, not {}",
                operations.len()
            ),
        ));
    }
    // Each operation counts against the token's rate (the request itself counted as one).
    let more = u32::try_from(operations.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Some(seconds) = auth.and_then(|a| state.scim_limiter.charge(a, more)) {
        return Ok(super::rate::too_many(seconds));
    }
    let fail_on = match field(&body, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| ScimError::invalid_value("failOnErrors is a positive integer"))?,
        ),
    };
    let done = apply(&state, &caller, &source, operations, fail_on).await;
    let answer = json!({"schemas": [BULK_RESPONSE], "Operations": done.results});
    Ok(scim_response(StatusCode::OK, &answer, None))
}

/// Applies the operations in order until the request's time is half spent or `fail_on` errors;
/// users created one after another are written together in runs.
async fn apply(
    state: &AppState,
    caller: &Caller,
    source: &str,
    operations: &[Value],
    fail_on: Option<u64>,
) -> Done {
    // Stop in time to answer what was done before the request's timeout would drop it all.
    let deadline = Instant::now() + state.limits.request_timeout / 2;
    // Errors are counted as runs are written: under `failOnErrors` a run is no longer than the
    // errors still allowed, so no operation starts after the last one allowed.
    let run_size = |done: &Done| match fail_on {
        Some(n) => usize::try_from(n.saturating_sub(done.errors))
            .unwrap_or(CREATES_PER_RUN)
            .clamp(1, CREATES_PER_RUN),
        None => CREATES_PER_RUN,
    };
    let mut done = Done::default();
    let mut run = Run {
        state,
        caller,
        source,
        writes: Vec::new(),
        entries: Vec::new(),
    };
    for operation in operations {
        if fail_on.is_some_and(|n| done.errors >= n) || Instant::now() >= deadline {
            break;
        }
        let asked = match request(operation, &done.created) {
            // It may name by `bulkId` a user of the run not written yet.
            Err(_) if !run.entries.is_empty() => {
                run.write(&mut done).await;
                request(operation, &done.created)
            }
            asked => asked,
        };
        match asked {
            Ok(asked) if asked.method == "POST" && asked.ty == ScimType::User => {
                run.queue(operation, &asked, &mut done).await;
                if run.entries.len() >= run_size(&done) {
                    run.write(&mut done).await;
                }
            }
            _ => {
                run.write(&mut done).await;
                let result = one(state, caller, source, operation, &mut done.created).await;
                done.push(result);
            }
        }
    }
    run.write(&mut done).await;
    done
}

/// What a bulk request did so far: each operation's entry, how many failed, and the ids its
/// `bulkId`s name.
#[derive(Default)]
struct Done {
    results: Vec<Value>,
    errors: u64,
    created: HashMap<String, String>,
}

impl Done {
    fn push(&mut self, result: Value) {
        if !succeeded(&result) {
            self.errors += 1;
        }
        self.results.push(result);
    }

    /// Keeps the place of an entry that is written later (see [`Done::fill`]).
    fn reserve(&mut self) -> usize {
        self.results.push(Value::Null);
        self.results.len() - 1
    }

    fn fill(&mut self, index: usize, result: Value) {
        if !succeeded(&result) {
            self.errors += 1;
        }
        if let Some(slot) = self.results.get_mut(index) {
            *slot = result;
        }
    }
}

/// Whether an entry of the BulkResponse tells of success.
fn succeeded(entry: &Value) -> bool {
    entry["status"]
        .as_str()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| s < 400)
}

/// Users to create, queued until they are written together, and their operations and the places
/// of their entries.
struct Run<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    source: &'a str,
    writes: Vec<ScimWrite>,
    entries: Vec<(&'a Value, usize)>,
}

impl<'a> Run<'a> {
    /// Queues the user `operation` asks for (`asked`, read from it), or answers its entry now
    /// when the user is not one roster could create.
    async fn queue(&mut self, operation: &'a Value, asked: &Request, done: &mut Done) {
        match create_request(self.caller, ScimType::User, self.source, &asked.body) {
            Ok((write, _)) => {
                self.writes.push(write);
                self.entries.push((operation, done.reserve()));
            }
            Err(e) => {
                let result = entry(operation, e.into_response(), &mut done.created).await;
                done.push(result);
            }
        }
    }

    /// Writes the queued users and fills in their entries; when the run as a whole fails, none
    /// of its users was created, and their entries say why.
    async fn write(&mut self, done: &mut Done) {
        if self.entries.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        let entries = std::mem::take(&mut self.entries);
        let responses: Vec<Response> =
            match app::scim::create_all(self.state.app(), self.caller, &writes).await {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        Ok(record) => created_user(self.source, &record),
                        Err(e) => ScimError::from(e).into_response(),
                    })
                    .collect(),
                Err(e) => {
                    let e = ScimError::from(e);
                    entries.iter().map(|_| e.clone().into_response()).collect()
                }
            };
        for ((operation, index), response) in entries.into_iter().zip(responses) {
            let result = entry(operation, response, &mut done.created).await;
            done.fill(index, result);
        }
    }
}

/// Replaces every `bulkId:X` reference in `value` (a string, or the `value` of an object in it)
/// by the id created for X earlier in the request.
fn resolve(value: &mut Value, created: &HashMap<String, String>) -> Result<(), ScimError> {
    match value {
        Value::String(s) => {
            if let Some(key) = s.strip_prefix("bulkId:") {
                *s = created.get(key).cloned().ok_or_else(|| {
                    ScimError::new(
                        StatusCode::CONFLICT,
                        Some("invalidValue"),
                        format!("bulkId {key:?} names no resource created earlier in this request"),
                    )
                })?;
            }
        }
        Value::Array(items) => {
            for item in items {
                resolve(item, created)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                // A reference is a value (`members[].value`, `manager.value`); other strings that
                // happen to start with `bulkId:` are left as written.
                if key.eq_ignore_ascii_case("value") || item.is_array() || item.is_object() {
                    resolve(item, created)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// What one bulk operation asks: its method, resource type, id (but for POST), body and
/// `If-Match`.
struct Request {
    method: String,
    ty: ScimType,
    id: Option<String>,
    body: Bytes,
    headers: HeaderMap,
}

fn request(operation: &Value, created: &HashMap<String, String>) -> Result<Request, ScimError> {
    let text = |name: &str| field(operation, name).and_then(Value::as_str);
    let method = text("method")
        .map(str::to_ascii_uppercase)
        .filter(|m| matches!(m.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .ok_or_else(|| ScimError::invalid_value("method is POST, PUT, PATCH or DELETE"))?;
    let path = text("path").unwrap_or_default().trim_start_matches('/');
    let (kind, id) = path.split_once('/').unwrap_or((path, ""));
    let mut id = Value::from(id);
    resolve(&mut id, created)?;
    let id = id.as_str().unwrap_or_default();
    let ty = match kind {
        "Users" => ScimType::User,
        "Groups" => ScimType::Group,
        _ => {
            return Err(ScimError::invalid_path(format!(
                "path {path:?}: a bulk operation writes /Users or /Groups"
            )))
        }
    };
    let id = match (method.as_str(), id) {
        ("POST", "") => None,
        ("POST", _) => {
            return Err(ScimError::invalid_path("a POST names /Users or /Groups"));
        }
        (_, "") => {
            return Err(ScimError::invalid_path(format!(
                "path {path:?} does not end in a resource id"
            )));
        }
        (_, id) => Some(id.to_owned()),
    };
    let mut data = field(operation, "data").cloned().unwrap_or(Value::Null);
    resolve(&mut data, created)?;
    let mut headers = HeaderMap::new();
    if let Some(version) = text("version") {
        let tag = HeaderValue::from_str(version)
            .map_err(|_| ScimError::invalid_value(format!("version {version:?} is not an ETag")))?;
        headers.insert(header::IF_MATCH, tag);
    }
    Ok(Request {
        method,
        ty,
        id,
        body: Bytes::from(data.to_string()),
        headers,
    })
}

/// Applies one operation; its entry in the BulkResponse.
async fn one(
    state: &AppState,
    caller: &Caller,
    source: &str,
    operation: &Value,
    created: &mut HashMap<String, String>,
) -> Value {
    let outcome = match request(operation, created) {
        Ok(r) => {
            let key = |id: String| (source.to_owned(), id);
            match (r.method.as_str(), r.id) {
                ("POST", _) => create(state, caller, r.ty, source, &r.body).await,
                ("PUT", Some(id)) => {
                    replace(state, caller, r.ty, key(id), &r.headers, &r.body).await
                }
                ("PATCH", Some(id)) => {
                    let request = PatchRequest {
                        key: key(id),
                        params: &ReadParams::default(),
                        headers: &r.headers,
                        body: &r.body,
                    };
                    patch_resource(state, caller, r.ty, request).await
                }
                (_, Some(id)) => delete(state, caller, r.ty, key(id), &r.headers).await,
                (_, None) => Err(ScimError::invalid_path("the operation names no resource")),
            }
        }
        Err(e) => Err(e),
    };
    let response = outcome.unwrap_or_else(IntoResponse::into_response);
    entry(operation, response, created).await
}

/// The entry of `operation` in the BulkResponse, from its `response`; a created resource's id is
/// kept under its `bulkId`.
async fn entry(
    operation: &Value,
    response: Response,
    created: &mut HashMap<String, String>,
) -> Value {
    let bulk_id = field(operation, "bulkId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let method = field(operation, "method").cloned().unwrap_or(Value::Null);
    let status = response.status();
    let mut entry = Map::new();
    entry.insert("method".into(), method);
    entry.insert("status".into(), Value::from(status.as_u16().to_string()));
    for (name, key) in [(header::LOCATION, "location"), (header::ETAG, "version")] {
        if let Some(value) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
            entry.insert(key.into(), Value::from(value));
        }
    }
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    if let Some(id) = bulk_id {
        if status == StatusCode::CREATED {
            if let Some(new) = body.as_ref().and_then(|b| b["id"].as_str()) {
                created.insert(id.clone(), new.to_owned());
            }
        }
        entry.insert("bulkId".into(), Value::from(id));
    }
    if status.is_client_error() || status.is_server_error() {
        entry.insert("response".into(), body.unwrap_or(Value::Null));
    }
    Value::Object(entry)
}
