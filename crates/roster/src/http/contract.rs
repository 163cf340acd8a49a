//! Completes the OpenAPI document with what every route can answer besides its own outcomes: each
//! refusal as a problem document (`application/problem+json`, REST) or a SCIM error
//! (`application/scim+json`, RFC 7644 §3.12), with its schema, so that a generated client knows
//! every status and body it may receive. It also states two rules of request bodies that the
//! derived schemas cannot: what a key is, and how a tagged body's variants carry their tag.

use super::scim::ScimError;
use crate::domain::change::ChangeKind;
use crate::domain::resource::MAX_KEY_LEN;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::PartialSchema;

/// A refusal any route of a kind can give, named once under `components/responses`.
struct Refusal {
    status: u16,
    name: &'static str,
    description: &'static str,
    applies: fn(&Shape) -> bool,
}

/// What decides which refusals a route can give.
struct Shape {
    secured: bool,
    has_path_parameters: bool,
    has_parameters: bool,
    has_body: bool,
    scim: bool,
    health: bool,
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        status: 400,
        name: "BadRequest",
        description:
            "The request could not be read: a malformed path or query parameter, an unknown \
                      query parameter, or a body that is not valid for this call",
        applies: |s| s.has_parameters || s.has_body,
    },
    Refusal {
        status: 401,
        name: "Unauthorized",
        description:
            "No valid bearer token: missing, unknown, revoked or expired (the answer carries \
                      `WWW-Authenticate`)",
        applies: |s| s.secured,
    },
    Refusal {
        status: 403,
        name: "Forbidden",
        description:
            "The token lacks the scope this route needs, or it is bound to another source \
                      system",
        applies: |s| s.secured,
    },
    Refusal {
        status: 404,
        name: "NotFound",
        description: "Nothing is found under this path",
        applies: |s| s.has_path_parameters,
    },
    Refusal {
        status: 408,
        name: "Timeout",
        description:
            "The request took longer than the server's request timeout; nothing it had not \
                      committed is kept",
        applies: |s| !s.health,
    },
    Refusal {
        status: 413,
        name: "PayloadTooLarge",
        description: "The body is larger than the server's limit",
        applies: |s| s.has_body,
    },
    Refusal {
        status: 415,
        name: "UnsupportedMediaType",
        description: "The body is not sent as JSON (`Content-Type: application/json` or \
                      `application/…+json`)",
        applies: |s| s.has_body,
    },
    Refusal {
        status: 422,
        name: "Unprocessable",
        description: "The body was read, but a value breaks a rule",
        applies: |s| s.has_body && !s.scim,
    },
    Refusal {
        status: 429,
        name: "TooManyRequests",
        description:
            "The token's SCIM request rate or its concurrent SCIM reads are exceeded; retry \
                      after `Retry-After`",
        applies: |s| s.scim,
    },
    Refusal {
        status: 500,
        name: "Internal",
        description: "Roster failed to handle the request; the server log has the details",
        applies: |s| !s.health,
    },
    Refusal {
        status: 503,
        name: "Unavailable",
        description: "The database is unavailable; retry later",
        applies: |s| !s.health,
    },
];

const PROBLEM: &str = "application/problem+json";
const SCIM: &str = super::scim::SCIM_CONTENT_TYPE;

/// Completes `openapi`: every route's refusals, the schemas and responses they name, and the
/// rules of keys and tagged bodies.
///
/// # Errors
/// When the document cannot be written as JSON (a programming error every test would catch).
pub fn document(mut openapi: OpenApi) -> Result<Value, serde_json::Error> {
    add_refusals(&mut openapi);
    let mut document = serde_json::to_value(&openapi)?;
    let requested = request_schemas(&document);
    if let Some(Value::Object(schemas)) = document.pointer_mut("/components/schemas") {
        let variants = schemas.clone();
        for (name, schema) in schemas.iter_mut() {
            inline_tagged_variants(schema, &variants);
            overlap_untagged(schema);
            if requested.contains(name) {
                constrain_strings(schema);
            }
        }
    }
    constrain_parameters(&mut document);
    Ok(document)
}

fn add_refusals(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ScimError".to_owned(), ScimError::schema());
    for refusal in REFUSALS {
        for scim in [false, true] {
            let response = ResponseBuilder::new()
                .description(refusal.description)
                .content(content_type(scim), error_content(scim))
                .build();
            components
                .responses
                .insert(response_name(refusal, scim), RefOr::T(response));
        }
    }
    for (path, item) in &mut openapi.paths.paths {
        let scim = path.starts_with("/scim/");
        let health = matches!(path.as_str(), "/healthz" | "/readyz");
        for operation in operations(item) {
            let shape = Shape {
                secured: operation
                    .security
                    .as_ref()
                    .is_some_and(|list| !list.is_empty()),
                has_path_parameters: path.contains('{'),
                has_parameters: operation.parameters.as_ref().is_some_and(|p| !p.is_empty()),
                has_body: operation.request_body.is_some(),
                scim,
                health,
            };
            complete(operation, &shape);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Gives the operation's own refusals the error body, and adds the refusals it does not name.
fn complete(operation: &mut Operation, shape: &Shape) {
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        let refused = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (refused, response) {
            as_error(response, shape.scim);
        }
    }
    for refusal in REFUSALS.iter().filter(|r| (r.applies)(shape)) {
        responses
            .entry(refusal.status.to_string())
            .or_insert_with(|| {
                RefOr::Ref(Ref::from_response_name(response_name(refusal, shape.scim)))
            });
    }
}

fn as_error(response: &mut Response, scim: bool) {
    response.content.clear();
    response
        .content
        .insert(content_type(scim).to_owned(), error_content(scim));
}

fn response_name(refusal: &Refusal, scim: bool) -> String {
    if scim {
        format!("Scim{}", refusal.name)
    } else {
        refusal.name.to_owned()
    }
}

fn content_type(scim: bool) -> &'static str {
    if scim {
        SCIM
    } else {
        PROBLEM
    }
}

fn error_content(scim: bool) -> Content {
    let schema = if scim { "ScimError" } else { "Problem" };
    Content::new(Some(Ref::from_schema_name(schema)))
}

/// The fields of request bodies that hold keys: each follows roster's key rule (see
/// `domain::resource::check_key`).
const KEY_FIELDS: &[&str] = &[
    "source_system",
    "target_source_system",
    "identifier",
    "external_id",
    "reason",
    "name",
];

/// A key: not blank, no control characters, at most 1024 bytes (the schema can state only 1024
/// characters).
fn key_constraints(schema: &mut Map<String, Value>) {
    schema.insert("minLength".into(), json!(1));
    schema.entry("maxLength").or_insert(json!(MAX_KEY_LEN));
    schema.insert(
        "pattern".into(),
        json!(r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"),
    );
}

/// Roster stores no NUL character: a body holding one is refused.
const WITHOUT_NUL: &str = r"^[^\u0000]*$";

fn is_string(schema: &Map<String, Value>) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// The component schemas a request body names, directly or through other components.
fn request_schemas(document: &Value) -> BTreeSet<String> {
    let mut pending = Vec::new();
    if let Some(Value::Object(paths)) = document.get("paths") {
        for item in paths.values().filter_map(Value::as_object) {
            for operation in item.values() {
                if let Some(body) = operation.get("requestBody") {
                    collect_refs(body, &mut pending);
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if found.insert(name.clone()) {
            if let Some(schema) = document.pointer(&format!("/components/schemas/{name}")) {
                collect_refs(schema, &mut pending);
            }
        }
    }
    found
}

fn collect_refs(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                names.push(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, names)),
        _ => {}
    }
}

/// A body tagged by a field (`{"type": "delete", …}`) is documented as the variant's schema and
/// the tag's, both required; when the variant admits no other fields, nothing satisfies both.
/// Each such variant is written out with its tag among its fields instead.
fn inline_tagged_variants(schema: &mut Value, all: &Map<String, Value>) {
    let Some(Value::Array(branches)) = schema.get_mut("oneOf") else {
        return;
    };
    for branch in branches.iter_mut() {
        let Some([variant, tag]) = branch
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .and_then(|parts| <&[Value; 2]>::try_from(parts).ok())
        else {
            continue;
        };
        let Some(target) = variant
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| all.get(name))
        else {
            continue;
        };
        let (Some(Value::Object(tag_properties)), Some(Value::Array(tag_required))) =
            (tag.get("properties"), tag.get("required"))
        else {
            continue;
        };
        let mut inlined = target.clone();
        if let Some(Value::Object(properties)) = inlined.get_mut("properties") {
            properties.extend(tag_properties.clone());
        }
        match inlined.get_mut("required") {
            Some(Value::Array(required)) => required.extend(tag_required.iter().cloned()),
            _ => {
                inlined["required"] = Value::Array(tag_required.clone());
            }
        }
        if let Some(description) = branch.get("description") {
            inlined["description"] = description.clone();
        }
        *branch = inlined;
    }
}

/// An answer of several forms told apart by their fields (an untagged enum) is documented as
/// `oneOf` its forms; where forms overlap (an empty page is a page of either), the answer is
/// `anyOf` them.
fn overlap_untagged(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    let untagged = map
        .get("oneOf")
        .and_then(Value::as_array)
        .is_some_and(|branches| branches.iter().all(|b| b.get("$ref").is_some()));
    if untagged {
        if let Some(branches) = map.remove("oneOf") {
            map.insert("anyOf".into(), branches);
        }
    }
}

/// States the key rule on every key field of a request schema, and that no string holds a NUL
/// character.
fn constrain_strings(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let Value::Object(field) = property else {
                continue;
            };
            if KEY_FIELDS.contains(&name.as_str()) && is_string(field) {
                key_constraints(field);
            } else if name == "tags" {
                if let Some(Value::Object(item)) = field.get_mut("items") {
                    key_constraints(item);
                }
            }
        }
    }
    forbid_nul(map);
    let free_form = map.get("type").is_some_and(|t| t == "object")
        && map.get("additionalProperties") != Some(&Value::Bool(false));
    if free_form {
        map.insert("propertyNames".into(), json!({"pattern": WITHOUT_NUL}));
    }
    for (key, value) in map.iter_mut() {
        match (key.as_str(), value) {
            ("properties", Value::Object(fields)) => {
                fields.values_mut().for_each(constrain_strings)
            }
            ("items" | "additionalProperties", nested) => constrain_strings(nested),
            ("allOf" | "oneOf" | "anyOf", Value::Array(branches)) => {
                branches.iter_mut().for_each(constrain_strings);
            }
            _ => {}
        }
    }
}

/// A source system named in the path of a write follows the key rule too; no parameter holds a
/// NUL character; an event stream's events are described as the reader parses them.
fn constrain_parameters(document: &mut Value) {
    let Some(Value::Object(paths)) = document.get_mut("paths") else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for (method, operation) in item.iter_mut() {
            let write = matches!(method.as_str(), "post" | "put" | "patch");
            if let Some(Value::Array(parameters)) = operation.get_mut("parameters") {
                for parameter in parameters {
                    let key =
                        write && parameter["name"] == "source_system" && parameter["in"] == "path";
                    let kinds = parameter["name"] == "kind" && parameter["in"] == "query";
                    if let Some(Value::Object(schema)) = parameter.get_mut("schema") {
                        if key {
                            key_constraints(schema);
                        } else if kinds {
                            schema.insert("pattern".into(), json!(kinds_pattern()));
                        } else {
                            forbid_nul(schema);
                        }
                    }
                }
            }
            describe_events(operation);
        }
    }
}

/// A comma-separated list of change kinds.
fn kinds_pattern() -> String {
    let one = format!(
        r"\s*({})\s*",
        ChangeKind::ALL
            .map(|k| k.name().replace('.', r"\."))
            .join("|")
    );
    format!("^{one}(,{one})*$")
}

/// A string without a stated form holds no NUL character.
fn forbid_nul(schema: &mut Map<String, Value>) {
    if is_string(schema)
        && !["pattern", "format", "enum"]
            .iter()
            .any(|k| schema.contains_key(*k))
    {
        schema.insert("pattern".into(), json!(WITHOUT_NUL));
    }
}

/// Server-sent events, each with its `id` (the cursor), `event` (the change's kind) and `data`
/// (the change as JSON).
fn describe_events(operation: &mut Value) {
    let Some(Value::Object(responses)) = operation.get_mut("responses") else {
        return;
    };
    for response in responses.values_mut() {
        if let Some(content) = response.pointer_mut("/content/text~1event-stream") {
            content["schema"] = json!({
                "type": "object",
                "required": ["data"],
                "properties": {
                    "id": {"type": "string", "description": "The change's cursor"},
                    "event": {"type": "string", "description": "The change's kind, or `error`"},
                    "data": {"type": "string", "description": "The change (or the error) as JSON"},
                    "retry": {"type": "integer"},
                },
            });
        }
    }
}
