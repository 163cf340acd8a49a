//! The SCIM 2.0 service provider (RFC 7643/7644) under `/scim/v2/{source_system}`: one base per
//! source, so that each tenant connection of Entra ID or Okta gets its own URL and a token bound
//! to that source. SCIM users and groups are roster resources of that source; writes go through
//! the same store paths (and change feed) as the REST API. Errors are SCIM error documents.

mod bulk;
mod discovery;
pub mod filter;
mod openapi;
mod paging;
mod patch;
pub mod rate;
mod search;
mod wire;

use crate::app::{self, AppError, Caller};
use crate::domain::operation::{Operation, OperationStatus};
use crate::domain::scim::{self, MemberEdit, ScimQuery, ScimRecord, ScimType, ScimWrite};
use crate::domain::ResourceId;
use crate::error::ApiError;
use crate::http::{Path, Query};
use crate::server::AppState;
use crate::store::ConflictKind;
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Largest page a list returns (`count` above it is lowered to it).
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Page size when the client names none.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Most members a group document lists; a larger group is read with `excludedAttributes=members`
/// and its members paged through the REST API.
pub const MAX_MEMBERS_IN_DOCUMENT: i64 = 10_000;
/// Most members a PATCH's answer lists unless `attributes` names `members`: a group with more
/// is answered without them.
const MEMBERS_IN_PATCH_ANSWER: i64 = 100;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, replace_user, patch_user, delete_user))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, replace_group, patch_group, delete_group))
        .routes(routes!(search::search_all))
        .routes(routes!(bulk::bulk))
        .routes(routes!(search::search_users))
        .routes(routes!(search::search_groups))
        .routes(routes!(discovery::service_provider_config))
        .routes(routes!(discovery::resource_types))
        .routes(routes!(discovery::resource_type))
        .routes(routes!(discovery::schemas))
        .routes(routes!(discovery::schema_by_id))
}

/// A SCIM error: its status, `scimType` when RFC 7644 names one, and what was wrong.
#[derive(Debug, Clone)]
pub struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }

    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("noTarget"), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }

    fn too_many(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("tooMany"), detail)
    }
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let scim_type = match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Some("invalidValue"),
            _ => None,
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        Self::new(status, scim_type, e.detail())
    }
}

impl From<AppError> for ScimError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => e.into(),
            AppError::MembersNotReplaced(op) => not_replaced(&op),
            other => ApiError::from(other).into(),
        }
    }
}

/// The answer to a replace of all members that did not end applied.
fn not_replaced(op: &Operation) -> ScimError {
    let reason = op.reason.as_deref().unwrap_or_default();
    match op.status {
        OperationStatus::Pending => ScimError::new(
            StatusCode::CONFLICT,
            None,
            format!(
                "the replace of members was held for approval and changed nothing yet: {reason}; \
                 a person approves or rejects operation {id} (POST \
                 /api/v1/operations/{id}/approve)",
                id = op.id.0
            ),
        ),
        OperationStatus::Running => ScimError::new(
            StatusCode::ACCEPTED,
            None,
            format!(
                "the replace of members is still being applied as operation {}",
                op.id.0
            ),
        ),
        _ => ScimError::invalid_value(format!(
            "the replace of members failed and changed nothing: {reason}"
        )),
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict {
                kind: ConflictKind::Duplicate,
                message,
            } => Self::new(StatusCode::CONFLICT, Some("uniqueness"), message),
            StoreError::Stale(m) => Self::new(StatusCode::PRECONDITION_FAILED, None, m),
            other => ApiError::from(other).into(),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = Value::from(scim_type);
        }
        let mut response = scim_response(self.status, &body, None);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn scim_response(status: StatusCode, body: &Value, etag: Option<String>) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// Middleware: answers for SCIM paths that failed before a SCIM handler (no token, a bad path
/// or parameter, a timeout, a body too large) with a SCIM error document instead of a problem
/// document or plain text.
pub async fn scim_errors(request: Request, next: Next) -> Response {
    let scim = request.uri().path().starts_with("/scim/");
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let problem =
        content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let answered =
        content_type.is_some_and(|v| v.as_bytes().starts_with(SCIM_CONTENT_TYPE.as_bytes()));
    if !scim || answered || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = if problem {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
    } else {
        std::str::from_utf8(&body)
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    let detail = detail.unwrap_or_else(|| parts.status.to_string());
    let scim_type = (parts.status == StatusCode::BAD_REQUEST).then_some("invalidValue");
    let mut converted = ScimError::new(parts.status, scim_type, detail).into_response();
    for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER, header::ALLOW] {
        if let Some(value) = parts.headers.get(&name) {
            converted.headers_mut().insert(name, value.clone());
        }
    }
    converted
}

/// The list parameters of RFC 7644 §3.4.2; numbers are read here so a bad one gets a SCIM error.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// A filter (RFC 7644 §3.4.2.2), e.g. `userName eq "ada@example.com"`.
    filter: Option<String>,
    /// 1-based index of the first result (default 1).
    start_index: Option<String>,
    /// Results per page (default 100, at most 1000).
    count: Option<String>,
    sort_by: Option<String>,
    /// `ascending` (default) or `descending`.
    sort_order: Option<String>,
    /// Comma-separated attributes to return (besides id, schemas and meta).
    attributes: Option<String>,
    /// Comma-separated attributes to leave out (`members` for groups).
    excluded_attributes: Option<String>,
    /// Cursor paging (RFC 9865): empty for the first page, then a `nextCursor`.
    cursor: Option<String>,
    /// A delta query: on a full read, its last page gives `nextDeltaToken`; with `deltaToken`,
    /// the users or groups changed since.
    delta_query: Option<String>,
    /// The `nextDeltaToken` of an earlier delta query.
    delta_token: Option<String>,
}

/// `attributes` and `excludedAttributes` of a read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

fn names(list: Option<&str>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// What to leave out of (or keep in) the documents answered.
struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
    /// A group too large for one document comes without its members rather than failing the
    /// answer: a list's page (which would strand a reader there) and a write's answer (whose
    /// write is done).
    omit_oversized: bool,
    /// Most members a document lists; a group with more is oversized.
    most_members: i64,
}

impl Projection {
    fn new(attributes: Option<&str>, excluded: Option<&str>) -> Self {
        Self {
            attributes: names(attributes),
            excluded: names(excluded),
            omit_oversized: false,
            most_members: MAX_MEMBERS_IN_DOCUMENT,
        }
    }

    /// A list's page, or the answer to a POST or PUT.
    fn omitting_oversized(attributes: Option<&str>, excluded: Option<&str>) -> Self {
        Self {
            omit_oversized: true,
            ..Self::new(attributes, excluded)
        }
    }

    /// A PATCH's answer (RFC 7644 §3.5.2): a group's members when `attributes` names them (if
    /// they fit in one document), or when the group is small; a larger group's answer leaves
    /// them out, so that its PATCH costs the size of its edit, not of the group.
    fn patched(params: &ReadParams) -> Self {
        let mut projection = Self::omitting_oversized(
            params.attributes.as_deref(),
            params.excluded_attributes.as_deref(),
        );
        if !named(&projection.attributes, "members") {
            projection.most_members = MEMBERS_IN_PATCH_ANSWER;
        }
        projection
    }

    fn wants_members(&self) -> bool {
        !named(&self.excluded, "members")
            && (self.attributes.is_empty() || named(&self.attributes, "members"))
    }
}

fn named(list: &[String], attribute: &str) -> bool {
    list.iter().any(|a| a.eq_ignore_ascii_case(attribute))
}

fn base(source: &str) -> String {
    format!("/scim/v2/{source}")
}

/// A stored record as the document answered, with its members when they are wanted.
async fn document(
    state: &AppState,
    ty: ScimType,
    source: &str,
    record: &ScimRecord,
    projection: &Projection,
) -> Result<Value, ScimError> {
    let members = if ty == ScimType::Group && projection.wants_members() {
        let most = projection.most_members;
        let rows = state
            .store
            .scim_members(record.resource.id, most + 1)
            .await?;
        if rows.len() as i64 > most && projection.omit_oversized {
            None
        } else if rows.len() as i64 > most {
            return Err(ScimError::too_many(format!(
                "group {id} has more than {MAX_MEMBERS_IN_DOCUMENT} members: read it with \
                 excludedAttributes=members, and page its users with \
                 GET {}/Users?filter=groups.value eq \"{id}\"&cursor (or all its members \
                 through GET /api/v1/groups/{id}/members)",
                base(source),
                id = record.resource.id
            )));
        } else {
            Some(
                rows.into_iter()
                    .map(|(id, name, is_group)| {
                        wire::member_json(&base(source), id, name, is_group)
                    })
                    .collect(),
            )
        }
    } else {
        None
    };
    let mut value = wire::resource_json(ty, record, &base(source), members);
    wire::project(&mut value, &projection.attributes, &projection.excluded);
    Ok(value)
}

/// The documents of a page of records.
async fn documents(
    state: &AppState,
    ty: ScimType,
    source: &str,
    records: &[ScimRecord],
    projection: &Projection,
) -> Result<Vec<Value>, ScimError> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        out.push(document(state, ty, source, record, projection).await?);
    }
    Ok(out)
}

fn number(name: &str, value: Option<&str>, default: i64) -> Result<i64, ScimError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            ScimError::new(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                format!("{name} must be an integer, not {v:?}"),
            )
        }),
    }
}

/// The list query a request asks for.
fn list_query(ty: ScimType, params: &ListParams) -> Result<ScimQuery, ScimError> {
    let cond = params
        .filter
        .as_deref()
        .map(|text| {
            let parsed = filter::parse(text).map_err(|e| ScimError::invalid_filter(e.0))?;
            scim::resolve(ty, &parsed).map_err(|e| ScimError::invalid_filter(e.0))
        })
        .transpose()?;
    let sort = params
        .sort_by
        .as_deref()
        .map(|text| {
            let path = filter::attr_path(text.trim(), 0)
                .map_err(|e| ScimError::invalid_value(format!("sortBy: {e}")))?;
            scim::sort_attr(ty, &path).map_err(|e| ScimError::invalid_value(e.0))
        })
        .transpose()?;
    let descending = match params.sort_order.as_deref().map(str::to_ascii_lowercase) {
        None => false,
        Some(o) if o == "ascending" => false,
        Some(o) if o == "descending" => true,
        Some(o) => {
            return Err(ScimError::invalid_value(format!(
                "sortOrder must be ascending or descending, not {o:?}"
            )))
        }
    };
    let start = number("startIndex", params.start_index.as_deref(), 1)?.max(1);
    let count =
        number("count", params.count.as_deref(), DEFAULT_PAGE_SIZE)?.clamp(0, MAX_PAGE_SIZE);
    Ok(ScimQuery {
        cond,
        sort,
        descending,
        offset: start - 1,
        count,
        after: None,
        keyed: false,
    })
}

async fn list(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    source: &str,
    params: &ListParams,
) -> Result<Response, ScimError> {
    caller.check_source(source)?;
    let query = list_query(ty, params)?;
    let _running = expensive(&query)
        .then(|| state.scim_reads.enter(caller.principal.token_id))
        .transpose()?;
    let projection = Projection::omitting_oversized(
        params.attributes.as_deref(),
        params.excluded_attributes.as_deref(),
    );
    let body = match paging::mode(ty, source, params, query.count)? {
        paging::Mode::Index => index_page(state, ty, source, &query, &projection).await?,
        paging::Mode::Cursor { state: page, delta } => {
            let key = (source, params);
            paging::cursor_page(state, ty, key, query, (page, delta), &projection).await?
        }
        paging::Mode::Delta { state: page, token } => {
            let key = (source, params);
            paging::delta_page(state, ty, key, query.count, (page, token), &projection).await?
        }
    };
    Ok(scim_response(StatusCode::OK, &body, None))
}

/// Whether a list may make the database scan a source's rows: anything but a lookup by an
/// indexed key, unsorted. Such lists are bounded per token (`ReadGate`).
pub(super) fn expensive(query: &ScimQuery) -> bool {
    query.sort.is_some() || !query.cond.as_ref().is_some_and(scim::Cond::is_lookup)
}

/// A page by `startIndex`.
async fn index_page(
    state: &AppState,
    ty: ScimType,
    source: &str,
    query: &ScimQuery,
    projection: &Projection,
) -> Result<Value, ScimError> {
    let page = state.store.scim_list(source, ty, query).await?;
    let resources = documents(state, ty, source, &page.records, projection).await?;
    Ok(json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": page.total,
        "startIndex": query.offset + 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}

/// The resource a path names, for a caller that may use its source. An id that is not one of
/// roster's names no resource: a 404, whatever it looks like (RFC 7644 §3.12).
fn resource_key(
    caller: &Caller,
    ty: ScimType,
    (source, id): (String, String),
) -> Result<(String, ResourceId), ScimError> {
    caller.check_source(&source)?;
    let id = id.parse().map(ResourceId).map_err(|_| {
        ScimError::not_found(format!(
            "there is no {} {id:?} in source system {source:?}",
            ty.name()
        ))
    })?;
    Ok((source, id))
}

async fn get(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    key: (String, String),
    params: &ReadParams,
) -> Result<Response, ScimError> {
    let (source, id) = resource_key(caller, ty, key)?;
    let record = state.store.scim_get(&source, ty, id).await?;
    let projection = Projection::new(
        params.attributes.as_deref(),
        params.excluded_attributes.as_deref(),
    );
    let body = document(state, ty, &source, &record, &projection).await?;
    Ok(scim_response(
        StatusCode::OK,
        &body,
        Some(wire::version(&record)),
    ))
}

/// Reads a JSON body, refusing one that holds a NUL character or nests too deep.
fn json_body(body: &Bytes) -> Result<Value, ScimError> {
    use crate::domain::input::{check_json, JsonRefusal};
    check_json(body).map_err(|refusal| match refusal {
        JsonRefusal::TooDeep => ScimError::invalid_syntax(format!("the body {refusal}")),
        JsonRefusal::Nul { .. } => ScimError::invalid_value(format!("the body {refusal}")),
    })?;
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

/// The answer to a write: the resource as stored now.
async fn written(
    state: &AppState,
    ty: ScimType,
    (source, id): (&str, ResourceId),
    status: StatusCode,
    projection: &Projection,
) -> Result<Response, ScimError> {
    let record = state.store.scim_get(source, ty, id).await?;
    let body = document(state, ty, source, &record, projection).await?;
    let mut response = scim_response(status, &body, Some(wire::version(&record)));
    if status == StatusCode::CREATED {
        locate(&mut response, ty, source, id);
    }
    Ok(response)
}

/// Sets a created resource's `Location`.
fn locate(response: &mut Response, ty: ScimType, source: &str, id: ResourceId) {
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{}s/{id}", base(source), ty.name())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
}

/// The answer to a user's creation, from the record as written: a new user is in no group, so
/// its document needs nothing more from the database.
fn created_user(source: &str, record: &ScimRecord) -> Response {
    let body = wire::resource_json(ScimType::User, record, &base(source), None);
    let mut response = scim_response(StatusCode::CREATED, &body, Some(wire::version(record)));
    locate(&mut response, ScimType::User, source, record.resource.id);
    response
}

/// What a POST asks to create: the write, and the members it names (a group's).
fn create_request(
    caller: &Caller,
    ty: ScimType,
    source: &str,
    body: &Bytes,
) -> Result<(ScimWrite, Vec<ResourceId>), ScimError> {
    caller.check_source(source)?;
    let body = json_body(body)?;
    wire::check_schemas(ty, &body)?;
    let parsed = wire::parse(ty, source, body)?;
    Ok((parsed.write, parsed.members.unwrap_or_default()))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    source: &str,
    body: &Bytes,
) -> Result<Response, ScimError> {
    let (write, members) = create_request(caller, ty, source, body)?;
    let record = app::scim::create(state.app(), caller, &write, &members).await?;
    if ty == ScimType::User {
        return Ok(created_user(source, &record));
    }
    let all = Projection::omitting_oversized(None, None);
    let key = (source, record.resource.id);
    written(state, ty, key, StatusCode::CREATED, &all).await
}

/// The version an `If-Match` header asks for, checked against the stored record.
fn check_if_match(headers: &HeaderMap, record: &ScimRecord) -> Result<(), ScimError> {
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        Some(tag) if !wire::matches(tag, record) => Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            format!(
                "If-Match {tag} does not match the current version {}",
                wire::version(record)
            ),
        )),
        _ => Ok(()),
    }
}

async fn replace(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    key: (String, String),
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ScimError> {
    let (source, id) = resource_key(caller, ty, key)?;
    let body = json_body(body)?;
    wire::check_schemas(ty, &body)?;
    let parsed = wire::parse(ty, &source, body)?;
    let record = state.store.scim_get(&source, ty, id).await?;
    check_if_match(headers, &record)?;
    app::scim::replace(state.app(), caller, &record, &parsed.write, parsed.members).await?;
    let all = Projection::omitting_oversized(None, None);
    written(state, ty, (&source, id), StatusCode::OK, &all).await
}

/// The request of a PATCH, read from its path, query, headers and body.
pub(super) struct PatchRequest<'r> {
    pub key: (String, String),
    pub params: &'r ReadParams,
    pub headers: &'r HeaderMap,
    pub body: &'r Bytes,
}

/// Applies a PATCH; answers 200 with the resource as patched (RFC 7644 §3.5.2).
async fn patch_resource(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    request: PatchRequest<'_>,
) -> Result<Response, ScimError> {
    let (source, id) = resource_key(caller, ty, request.key)?;
    let operations = patch::parse(&json_body(request.body)?)?;
    let record = state.store.scim_get(&source, ty, id).await?;
    check_if_match(request.headers, &record)?;
    let answer = Projection::patched(request.params);
    if ty == ScimType::User {
        let write = patched(ty, &record, &operations)?;
        let edit = MemberEdit::default();
        app::scim::write_record(state.app(), caller, &record, &write, &edit).await?;
        return written(state, ty, (&source, id), StatusCode::OK, &answer).await;
    }
    let split = patch::split_group(operations)?;
    let attributes = (!split.attributes.is_empty())
        .then(|| patched(ty, &record, &split.attributes))
        .transpose()?;
    let group = app::scim::GroupPatch {
        replace: split.replace,
        attributes,
        edit: MemberEdit {
            add: split.add,
            remove: split.remove,
        },
        versioned: request.headers.contains_key(header::IF_MATCH),
    };
    app::scim::patch_group(state.app(), caller, &record, group).await?;
    written(state, ty, (&source, id), StatusCode::OK, &answer).await
}

/// The record's attributes after the operations, applied to its document.
fn patched(
    ty: ScimType,
    record: &ScimRecord,
    operations: &[patch::Operation],
) -> Result<scim::ScimWrite, ScimError> {
    let mut body = wire::as_body(ty, record);
    patch::apply(&mut body, operations)?;
    Ok(wire::parse(ty, &record.resource.source_system, Value::Object(body))?.write)
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    ty: ScimType,
    key: (String, String),
    headers: &HeaderMap,
) -> Result<Response, ScimError> {
    let (source, id) = resource_key(caller, ty, key)?;
    let record = state.store.scim_get(&source, ty, id).await?;
    check_if_match(headers, &record)?;
    app::scim::delete(state.app(), caller, &record).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The id parameter's description in the API document.
const ID: &str = "The resource's id; one that is not roster's names no resource (404)";

macro_rules! scim_handlers {
    ($ty:expr, $body:ty, $many:literal, $one:literal, $list:ident, $create:ident, $get:ident, $replace:ident, $patch:ident, $delete:ident) => {
        /// List (and filter) the resources of a source.
        #[utoipa::path(get, path = $many, tag = "scim",
            security(("bearer" = ["scim"])), params(("source_system" = String, Path), ListParams),
            responses((status = 200, description = "A SCIM ListResponse")))]
        async fn $list(
            State(state): State<AppState>,
            caller: Caller,
            Path(source): Path<String>,
            Query(params): Query<ListParams>,
        ) -> Result<Response, ScimError> {
            list(&state, &caller, $ty, &source, &params).await
        }

        /// Create a resource of the source.
        #[utoipa::path(post, path = $many, tag = "scim",
            security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
            request_body(content = $body, content_type = "application/scim+json"),
            responses((status = 201, description = "Created"),
                      (status = 409, description = "uniqueness")))]
        async fn $create(
            State(state): State<AppState>,
            caller: Caller,
            Path(source): Path<String>,
            body: Bytes,
        ) -> Result<Response, ScimError> {
            create(&state, &caller, $ty, &source, &body).await
        }

        /// Read one resource.
        #[utoipa::path(get, path = $one, tag = "scim",
            security(("bearer" = ["scim"])),
            params(("source_system" = String, Path), ("id" = String, Path, description = ID), ReadParams),
            responses((status = 200, description = "The resource"),
                      (status = 404, description = "No such resource in the source")))]
        async fn $get(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
            Query(params): Query<ReadParams>,
        ) -> Result<Response, ScimError> {
            get(&state, &caller, $ty, key, &params).await
        }

        /// Replace a resource's attributes.
        #[utoipa::path(put, path = $one, tag = "scim",
            security(("bearer" = ["scim"])), params(("source_system" = String, Path), ("id" = String, Path, description = ID)),
            request_body(content = $body, content_type = "application/scim+json"),
            responses((status = 200, description = "The resource as stored"),
                      (status = 412, description = "If-Match does not match")))]
        async fn $replace(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ScimError> {
            replace(&state, &caller, $ty, key, &headers, &body).await
        }

        /// Modify a resource with PatchOp operations.
        #[utoipa::path(patch, path = $one, tag = "scim",
            security(("bearer" = ["scim"])), params(("source_system" = String, Path), ("id" = String, Path, description = ID), ReadParams),
            request_body(content = openapi::ScimPatchOp, content_type = "application/scim+json"),
            responses((status = 200, description = "The resource as patched; a group's members when it has at most 100 or `attributes` names them")))]
        async fn $patch(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
            Query(params): Query<ReadParams>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ScimError> {
            let request = PatchRequest { key, params: &params, headers: &headers, body: &body };
            patch_resource(&state, &caller, $ty, request).await
        }

        /// Delete a resource (roster soft-deletes it and ends its memberships).
        #[utoipa::path(delete, path = $one, tag = "scim",
            security(("bearer" = ["scim"])), params(("source_system" = String, Path), ("id" = String, Path, description = ID)),
            responses((status = 204, description = "Deleted")))]
        async fn $delete(
            State(state): State<AppState>,
            caller: Caller,
            Path(key): Path<(String, String)>,
            headers: HeaderMap,
        ) -> Result<Response, ScimError> {
            delete(&state, &caller, $ty, key, &headers).await
        }
    };
}

scim_handlers!(
    ScimType::User,
    openapi::ScimUser,
    "/scim/v2/{source_system}/Users",
    "/scim/v2/{source_system}/Users/{id}",
    list_users,
    create_user,
    get_user,
    replace_user,
    patch_user,
    delete_user
);
scim_handlers!(
    ScimType::Group,
    openapi::ScimGroup,
    "/scim/v2/{source_system}/Groups",
    "/scim/v2/{source_system}/Groups/{id}",
    list_groups,
    create_group,
    get_group,
    replace_group,
    patch_group,
    delete_group
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_key_is_a_uniqueness_error() {
        let taken = ScimError::from(StoreError::conflict(ConflictKind::Duplicate, "taken"));
        assert_eq!(
            (taken.status, taken.scim_type),
            (StatusCode::CONFLICT, Some("uniqueness"))
        );
        for kind in [
            ConflictKind::State,
            ConflictKind::Lease,
            ConflictKind::Tree,
            ConflictKind::Threshold,
        ] {
            let other = ScimError::from(StoreError::conflict(kind, "not pending"));
            assert_eq!(
                (other.status, other.scim_type),
                (StatusCode::CONFLICT, None)
            );
            assert_eq!(other.detail, "not pending");
        }
    }
}
