//! The JSON Schemas of SCIM's request and error bodies in the OpenAPI document. SCIM's wire
//! format is read by hand (names are case-insensitive, booleans may be strings), so these are
//! written as JSON Schema rather than derived: each states what a body must hold to be accepted.

use super::ScimError;
use crate::domain::scim::{ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A key as roster's rules take it: not blank, no control characters, at most 1024 bytes (the
/// schema can only state 1024 characters).
fn key() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
    })
}

fn schema(value: Value) -> RefOr<Schema> {
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("a SCIM schema of the OpenAPI document is malformed: {e}"))
}

/// The `schemas` attribute: a list of URNs, one of which is among `named`.
fn urns(named: &[&str]) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "contains": {"enum": named}})
}

impl PartialSchema for ScimError {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM error (RFC 7644 §3.12)",
            "required": ["schemas", "status", "detail"],
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string",
                    "enum": ["urn:ietf:params:scim:api:messages:2.0:Error"]}},
                "status": {"type": "string", "description": "The HTTP status, as a string"},
                "scimType": {"type": "string", "description": "The kind of error, when RFC 7644 names one"},
                "detail": {"type": "string", "description": "What was wrong, and how to fix it"},
            },
        }))
    }
}

impl ToSchema for ScimError {}

/// A SCIM User (RFC 7643 §4.1) as a POST or PUT sends it.
pub struct ScimUser;

impl PartialSchema for ScimUser {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM User; attributes roster does not keep in columns are stored as written",
            "required": ["userName"],
            "properties": {
                "schemas": urns(&[USER_SCHEMA, ENTERPRISE_SCHEMA]),
                "userName": key(),
                "externalId": key(),
                "displayName": {"type": "string", "description": "At most 64 KiB"},
                "active": {"type": "boolean"},
            },
        }))
    }
}

impl ToSchema for ScimUser {}

/// A SCIM Group (RFC 7643 §4.2) as a POST or PUT sends it.
pub struct ScimGroup;

impl PartialSchema for ScimGroup {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM Group; its members are users or groups of the same source",
            "required": ["displayName"],
            "properties": {
                "schemas": urns(&[GROUP_SCHEMA]),
                "displayName": {"type": "string", "minLength": 1, "description": "At most 64 KiB"},
                "externalId": key(),
                "members": {"type": "array", "items": {"type": "object", "required": ["value"],
                    "properties": {"value": {"type": "string", "format": "uuid"}}}},
            },
        }))
    }
}

impl ToSchema for ScimGroup {}

/// A PatchOp (RFC 7644 §3.5.2).
pub struct ScimPatchOp;

impl PartialSchema for ScimPatchOp {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM PatchOp: operations applied in order, all or none",
            "required": ["Operations"],
            "properties": {
                "schemas": {"type": "array", "items": {"type": "string"}},
                "Operations": {"type": "array", "items": {
                    "type": "object",
                    "required": ["op"],
                    "properties": {
                        "op": {"type": "string", "description": "add, replace or remove, in any case"},
                        "path": {"type": "string", "description": "An attribute path (RFC 7644 §3.5.2); remove needs one"},
                        "value": {"description": "The value; add and replace need one"},
                    },
                }},
            },
        }))
    }
}

impl ToSchema for ScimPatchOp {}

/// A SearchRequest (RFC 7644 §3.4.3).
pub struct ScimSearchRequest;

impl PartialSchema for ScimSearchRequest {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM SearchRequest; `schemas` names urn:ietf:params:scim:api:messages:2.0:SearchRequest",
            "required": ["schemas"],
            "properties": {
                "schemas": urns(&["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]),
                "filter": {"type": "string"},
                "startIndex": {"type": "integer", "minimum": 1},
                "count": {"type": "integer", "minimum": 0},
                "sortBy": {"type": "string"},
                "sortOrder": {"type": "string", "enum": ["ascending", "descending"]},
                "attributes": {"type": "array", "items": {"type": "string"}},
                "excludedAttributes": {"type": "array", "items": {"type": "string"}},
            },
        }))
    }
}

impl ToSchema for ScimSearchRequest {}

/// A BulkRequest (RFC 7644 §3.7).
pub struct ScimBulkRequest;

impl PartialSchema for ScimBulkRequest {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "A SCIM BulkRequest; `schemas` names urn:ietf:params:scim:api:messages:2.0:BulkRequest",
            "required": ["schemas", "Operations"],
            "properties": {
                "schemas": urns(&["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]),
                "failOnErrors": {"type": "integer", "minimum": 1},
                "Operations": {"type": "array", "items": {
                    "type": "object",
                    "required": ["method", "path"],
                    "properties": {
                        "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE"]},
                        "path": {"type": "string", "description": "/Users, /Groups, /Users/{id} or /Groups/{id}"},
                        "bulkId": {"type": "string"},
                        "version": {"type": "string"},
                        "data": {"type": "object"},
                    },
                }},
            },
        }))
    }
}

impl ToSchema for ScimBulkRequest {}
