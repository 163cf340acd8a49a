//! SCIM discovery (RFC 7644 §4): what this service provider supports, its resource types and
//! their schemas (RFC 7643 §7), as roster actually implements them.

use super::{scim_response, ScimError, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::app::Caller;
use crate::domain::scim::{ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use crate::http::Path;
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// What the service provider supports.
#[utoipa::path(get, path = "/scim/v2/{source_system}/ServiceProviderConfig", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    responses((status = 200, description = "The ServiceProviderConfig")))]
pub async fn service_provider_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    let body_limit = state.limits.body_bytes;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/roster/roster/blob/main/docs/scim.md",
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": super::bulk::MAX_OPERATIONS,
                 "maxPayloadSize": body_limit},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": DEFAULT_PAGE_SIZE,
            "maxPageSize": MAX_PAGE_SIZE
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A roster API token with the scim scope, bound to this source system",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": format!("/scim/v2/{source}/ServiceProviderConfig")}
    });
    Ok(scim_response(StatusCode::OK, &body, None))
}

/// The resource types: User (with the enterprise extension) and Group.
#[utoipa::path(get, path = "/scim/v2/{source_system}/ResourceTypes", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    responses((status = 200, description = "A ListResponse of ResourceTypes")))]
pub async fn resource_types(
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    Ok(scim_response(StatusCode::OK, &list(&types(&source)), None))
}

/// One resource type, by id (`User` or `Group`).
#[utoipa::path(get, path = "/scim/v2/{source_system}/ResourceTypes/{id}", tag = "scim",
    security(("bearer" = ["scim"])),
    params(("source_system" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "The ResourceType"),
              (status = 404, description = "No such resource type")))]
pub async fn resource_type(
    caller: Caller,
    Path((source, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    one(types(&source), &id, "resource type")
}

/// One schema, by its URN.
#[utoipa::path(get, path = "/scim/v2/{source_system}/Schemas/{id}", tag = "scim",
    security(("bearer" = ["scim"])),
    params(("source_system" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "The Schema"),
              (status = 404, description = "No such schema")))]
pub async fn schema_by_id(
    caller: Caller,
    Path((source, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    one(all_schemas(), &id, "schema")
}

/// The document of `documents` whose `id` is `id`.
fn one<const N: usize>(documents: [Value; N], id: &str, what: &str) -> Result<Response, ScimError> {
    documents
        .into_iter()
        .find(|d| d["id"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(id)))
        .map(|d| scim_response(StatusCode::OK, &d, None))
        .ok_or_else(|| ScimError::not_found(format!("there is no {what} {id:?}")))
}

fn types(source: &str) -> [Value; 2] {
    [
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
            "meta": {"resourceType": "ResourceType",
                     "location": format!("/scim/v2/{source}/ResourceTypes/User")}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType",
                     "location": format!("/scim/v2/{source}/ResourceTypes/Group")}
        }),
    ]
}

/// The schemas of users, groups and the enterprise extension.
#[utoipa::path(get, path = "/scim/v2/{source_system}/Schemas", tag = "scim",
    security(("bearer" = ["scim"])), params(("source_system" = String, Path)),
    responses((status = 200, description = "A ListResponse of Schemas")))]
pub async fn schemas(caller: Caller, Path(source): Path<String>) -> Result<Response, ScimError> {
    caller.check_source(&source)?;
    Ok(scim_response(StatusCode::OK, &list(&all_schemas()), None))
}

fn all_schemas() -> [Value; 3] {
    [user_schema(), group_schema(), enterprise_schema()]
}

fn list(items: &[Value]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

/// One attribute definition; `sub` for a complex one.
fn attribute(name: &str, ty: &str, multi: bool, sub: &[Value]) -> Value {
    let mut a = json!({
        "name": name,
        "type": ty,
        "multiValued": multi,
        "required": name == "userName",
        "caseExact": matches!(name, "id" | "externalId"),
        "mutability": match name {
            "id" | "groups" => "readOnly",
            "password" => "writeOnly",
            _ => "readWrite",
        },
        "returned": if name == "password" { "never" } else { "default" },
        "uniqueness": if name == "userName" { "server" } else { "none" },
    });
    if !sub.is_empty() {
        a["subAttributes"] = Value::Array(sub.to_vec());
    }
    a
}

fn string(name: &str) -> Value {
    attribute(name, "string", false, &[])
}

/// `value`, `display`, `type` and `primary`: the sub-attributes of the multi-valued attributes.
fn multi(name: &str) -> Value {
    attribute(
        name,
        "complex",
        true,
        &[
            string("value"),
            string("display"),
            string("type"),
            attribute("primary", "boolean", false, &[]),
        ],
    )
}

fn schema(id: &str, name: &str, attributes: Vec<Value>) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("/Schemas/{id}")}
    })
}

fn user_schema() -> Value {
    let name = attribute(
        "name",
        "complex",
        false,
        &[
            string("formatted"),
            string("familyName"),
            string("givenName"),
            string("middleName"),
            string("honorificPrefix"),
            string("honorificSuffix"),
        ],
    );
    let mut attributes = vec![
        string("userName"),
        name,
        string("displayName"),
        string("nickName"),
        attribute("profileUrl", "reference", false, &[]),
        string("title"),
        string("userType"),
        string("preferredLanguage"),
        string("locale"),
        string("timezone"),
        // Every user has an active state, answered always (a new user that leaves it out is
        // active; a write that leaves it out keeps it): advertised as required, so that no
        // client expects to remove it.
        with(
            attribute("active", "boolean", false, &[]),
            json!({"required": true}),
        ),
        string("password"),
    ];
    attributes.extend(
        [
            "emails",
            "phoneNumbers",
            "ims",
            "photos",
            "entitlements",
            "roles",
            "x509Certificates",
        ]
        .map(multi),
    );
    attributes.push(attribute(
        "addresses",
        "complex",
        true,
        &[
            string("formatted"),
            string("streetAddress"),
            string("locality"),
            string("region"),
            string("postalCode"),
            string("country"),
            string("type"),
        ],
    ));
    attributes.push(multi("groups"));
    schema(USER_SCHEMA, "User", attributes)
}

/// `attribute` with some of its characteristics replaced.
fn with(mut attribute: Value, changes: Value) -> Value {
    if let (Value::Object(a), Value::Object(c)) = (&mut attribute, changes) {
        a.extend(c);
    }
    attribute
}

fn group_schema() -> Value {
    let kinds = json!(["User", "Group"]);
    let members = attribute(
        "members",
        "complex",
        true,
        &[
            with(string("value"), json!({"mutability": "immutable"})),
            with(
                attribute("$ref", "reference", false, &[]),
                json!({"mutability": "immutable", "referenceTypes": kinds}),
            ),
            with(
                string("type"),
                json!({"mutability": "immutable", "canonicalValues": kinds}),
            ),
            with(string("display"), json!({"mutability": "readOnly"})),
        ],
    );
    schema(
        GROUP_SCHEMA,
        "Group",
        vec![
            with(string("displayName"), json!({"required": true})),
            members,
        ],
    )
}

fn enterprise_schema() -> Value {
    let manager = attribute(
        "manager",
        "complex",
        false,
        &[
            string("value"),
            attribute("$ref", "reference", false, &[]),
            string("displayName"),
        ],
    );
    schema(
        ENTERPRISE_SCHEMA,
        "EnterpriseUser",
        vec![
            string("employeeNumber"),
            string("costCenter"),
            string("organization"),
            string("division"),
            string("department"),
            manager,
        ],
    )
}
