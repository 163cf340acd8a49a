//! `POST …/.search` (RFC 7644 §3.4.3): a list query in a `SearchRequest` body, for queries too
//! long for a URL or that should stay out of access logs. It answers exactly as the GET list with
//! the same parameters would, cursors and delta queries included.

use super::{json_body, list, ListParams, ScimError};
use crate::app::AppState;
use crate::domain::scim::ScimType;
use crate::http::auth::Caller;
use crate::http::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

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
    request_body(content = Object, content_type = "application/scim+json"),
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
    request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "A SCIM ListResponse")))]
pub async fn search_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    list(&state, &caller, ScimType::Group, &source, &params(&body)?).await
}
