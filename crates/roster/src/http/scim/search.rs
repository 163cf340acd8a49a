//! `POST …/.search` (RFC 7644 §3.4.3): a list query in a `SearchRequest` body, for queries too
//! long for a URL or that should stay out of access logs. On `/Users` or `/Groups` it answers
//! exactly as the GET list with the same parameters would, cursors and delta queries included; at
//! the source's root it searches users, then groups, paged by index.

use super::{
    documents, json_body, list, list_query, scim_response, ListParams, Projection, ScimError,
    LIST_SCHEMA,
};
use crate::app::Caller;
use crate::domain::scim::ScimType;
use crate::http::Path;
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// A text parameter of the body: a string, or a number or boolean written as one.
fn text(body: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name} is a string or a number, not {other}"
        ))),
    }
}

/// `attributes` or `excludedAttributes`: an array of names (or one comma-separated string).
fn names(body: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match body.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    ScimError::invalid_value(format!("{name} lists attribute names, not {item}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|list| Some(list.join(","))),
        _ => text(body, name),
    }
}

/// The list parameters a `SearchRequest` names.
fn params(body: &Bytes) -> Result<ListParams, ScimError> {
    let body = json_body(body)?;
    if !body.is_object() {
        return Err(ScimError::invalid_syntax(
            "a SearchRequest is a JSON object",
        ));
    }
    let named = body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(SEARCH_SCHEMA)));
    if !named {
        return Err(ScimError::invalid_value(format!(
            "schemas must name {SEARCH_SCHEMA}"
        )));
    }
    let delta_query = match body.get("deltaQuery") {
        Some(Value::Bool(false)) | None => None,
        Some(_) => text(&body, "deltaQuery")?,
    };
    Ok(ListParams {
        filter: text(&body, "filter")?,
        start_index: text(&body, "startIndex")?,
        count: text(&body, "count")?,
        sort_by: text(&body, "sortBy")?,
        sort_order: text(&body, "sortOrder")?,
        attributes: names(&body, "attributes")?,
        excluded_attributes: names(&body, "excludedAttributes")?,
        cursor: text(&body, "cursor")?,
        delta_query,
        delta_token: text(&body, "deltaToken")?,
    })
}

/// Search the users of a source.
#[utoipa::path(post, path = "/scim/v2/{source_system}/Users/.search", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    request_body(content = super::openapi::ScimSearchRequest, content_type = "application/scim+json"),
    responses((status = 200, description = "A SCIM ListResponse")))]
pub async fn search_users(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    list(&state, &caller, ScimType::User, &source, &params(&body)?).await
}

/// Search the groups of a source.
#[utoipa::path(post, path = "/scim/v2/{source_system}/Groups/.search", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    request_body(content = super::openapi::ScimSearchRequest, content_type = "application/scim+json"),
    responses((status = 200, description = "A SCIM ListResponse")))]
pub async fn search_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    list(&state, &caller, ScimType::Group, &source, &params(&body)?).await
}

/// Search the users and then the groups of a source (an attribute one type lacks matches none
/// of that type). Sorting applies within each type; paging is by index.
#[utoipa::path(post, path = "/scim/v2/{source_system}/.search", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    request_body(content = super::openapi::ScimSearchRequest, content_type = "application/scim+json"),
    responses((status = 200, description = "A SCIM ListResponse of users, then groups")))]
pub async fn search_all(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    let params = params(&body)?;
    if params.cursor.is_some() || params.delta_query.is_some() || params.delta_token.is_some() {
        return Err(ScimError::invalid_value(
            "a search of every resource type pages by index: search /Users/.search or \
             /Groups/.search to page by cursor or to follow a delta token",
        ));
    }
    let (users, groups) = match (
        list_query(ScimType::User, &params),
        list_query(ScimType::Group, &params),
    ) {
        (Err(e), Err(_)) => return Err(e),
        pair => pair,
    };
    let costly = [&users, &groups]
        .into_iter()
        .any(|q| q.as_ref().is_ok_and(super::expensive));
    let _running = costly
        .then(|| state.scim_reads.enter(caller.principal.token_id))
        .transpose()?;
    let projection = Projection::omitting_oversized(
        params.attributes.as_deref(),
        params.excluded_attributes.as_deref(),
    );
    let (mut skip, mut room) = match (&users, &groups) {
        (Ok(q), _) | (_, Ok(q)) => (q.offset, q.count),
        _ => (0, 0),
    };
    let start = skip + 1;
    let mut total = 0;
    let mut resources = Vec::new();
    for (ty, query) in [(ScimType::User, users), (ScimType::Group, groups)] {
        let Ok(mut query) = query else {
            continue;
        };
        query.offset = skip;
        query.count = room;
        let page = state.store.scim_list(&source, ty, &query).await?;
        total += page.total;
        skip = (skip - page.total).max(0);
        room -= page.records.len() as i64;
        resources.extend(documents(&state, ty, &source, &page.records, &projection).await?);
    }
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    Ok(scim_response(StatusCode::OK, &body, None))
}
