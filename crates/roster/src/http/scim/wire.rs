//! SCIM documents in and out: a user or group body becomes roster's columns plus the SCIM
//! document (every other attribute, extensions included, kept as written with the core
//! attributes' names spelled as RFC 7643 spells them); a stored record becomes a SCIM resource.

use super::ScimError;
use crate::domain::scim::{
    canonical, ScimRecord, ScimType, ScimWrite, ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA,
};
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// `W/"…"`: changes with every write of the resource.
pub fn version(record: &ScimRecord) -> String {
    format!("W/\"{}\"", record.resource.modified.timestamp_micros())
}

/// Whether an `If-Match` header's value admits `record`.
pub fn matches(if_match: &str, record: &ScimRecord) -> bool {
    let current = version(record);
    if_match.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag == current
            || tag.trim_start_matches("W/") == current.trim_start_matches("W/")
    })
}

/// A stored user or group as a SCIM resource; `members` for a group when they are asked for.
pub fn resource_json(
    ty: ScimType,
    record: &ScimRecord,
    base: &str,
    members: Option<Vec<Value>>,
) -> Value {
    let r = &record.resource;
    let mut out = record.doc.clone();
    let mut schemas = vec![Value::from(ty.core_schema())];
    schemas.extend(
        out.keys()
            .filter(|k| k.to_ascii_lowercase().starts_with("urn:"))
            .map(|k| Value::from(k.as_str())),
    );
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::from(r.id.to_string()));
    if let Some(external) = &r.external_id {
        out.insert("externalId".into(), Value::from(external.as_str()));
    }
    if let Some(name) = &r.displayname {
        out.insert("displayName".into(), Value::from(name.as_str()));
    }
    if ty == ScimType::User {
        if let Some(user_name) = &r.identifier {
            out.insert("userName".into(), Value::from(user_name.as_str()));
        }
        out.insert("active".into(), Value::from(r.active));
    }
    if let Some(members) = members {
        out.insert("members".into(), Value::Array(members));
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": ty.name(),
            "created": r.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": r.modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base}/{}s/{}", ty.name(), r.id),
            "version": version(record),
        }),
    );
    Value::Object(out)
}

/// A deleted user or group as a delta query answers it: its id and `meta.isDeleted`, deleted at
/// `at`.
pub fn tombstone(ty: ScimType, id: ResourceId, at: DateTime<Utc>, base: &str) -> Value {
    json!({
        "schemas": [ty.core_schema()],
        "id": id.to_string(),
        "meta": {
            "resourceType": ty.name(),
            "isDeleted": true,
            "lastModified": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base}/{}s/{id}", ty.name()),
        },
    })
}

/// A member as a group lists it.
pub fn member_json(base: &str, id: ResourceId, display: Option<String>, is_group: bool) -> Value {
    let ty = if is_group { "Group" } else { "User" };
    let mut member = json!({
        "value": id.to_string(),
        "$ref": format!("{base}/{ty}s/{id}"),
        "type": ty,
    });
    if let Some(display) = display {
        member["display"] = Value::from(display);
    }
    member
}

/// What a user or group body says, split into roster's columns and the SCIM document; for a
/// group, also the members it lists (when it lists them).
pub struct Parsed {
    pub write: ScimWrite,
    pub members: Option<Vec<ResourceId>>,
}

/// Reads a POST or PUT body (or the document a PATCH made).
pub fn parse(ty: ScimType, source: &str, body: Value) -> Result<Parsed, ScimError> {
    let Value::Object(object) = body else {
        return Err(ScimError::invalid_syntax(format!(
            "the body must be a JSON object (a SCIM {})",
            ty.name()
        )));
    };
    let mut write = ScimWrite {
        ty,
        source_system: source.to_owned(),
        identifier: None,
        external_id: None,
        displayname: None,
        active: None,
        doc: Map::new(),
    };
    let mut members = None;
    for (key, value) in object {
        set_attribute(&mut write, &mut members, &key, value)?;
    }
    check_required(&write)?;
    Ok(Parsed { write, members })
}

/// Checks what SCIM requires (a user's `userName`, a group's `displayName`) and what every
/// resource's keys and names must be, whichever way it is written.
pub fn check_required(write: &ScimWrite) -> Result<(), ScimError> {
    write
        .check_keys()
        .map_err(|e| ScimError::invalid_value(e.0))?;
    match write.ty {
        ScimType::User if write.identifier.as_deref().is_none_or(str::is_empty) => Err(
            ScimError::invalid_value("a User needs a userName (a non-empty string)"),
        ),
        ScimType::Group if write.displayname.as_deref().is_none_or(str::is_empty) => Err(
            ScimError::invalid_value("a Group needs a displayName (a non-empty string)"),
        ),
        _ => Ok(()),
    }
}

/// Sets one top-level attribute of a body (or of a PATCH); `null` clears it.
pub fn set_attribute(
    write: &mut ScimWrite,
    members: &mut Option<Vec<ResourceId>>,
    key: &str,
    value: Value,
) -> Result<(), ScimError> {
    let name = canonical(key);
    match (name.as_str(), write.ty) {
        ("schemas" | "id" | "meta", _) => {}
        ("userName", ScimType::User) => write.identifier = string(key, value)?,
        ("externalId", _) => write.external_id = string(key, value)?,
        ("displayName", _) => write.displayname = string(key, value)?,
        ("active", ScimType::User) => write.active = Some(boolean(key, &value)?),
        // Never stored, never returned (RFC 7643 §4.1.1: returned "never").
        ("password", ScimType::User) => {}
        // Read-only: a user's groups are the groups' members.
        ("groups", ScimType::User) => {}
        ("members", ScimType::Group) => *members = Some(member_ids(&value)?),
        _ if name.to_ascii_lowercase().starts_with("urn:") => set_extension(write, &name, value)?,
        _ if value.is_null() => {
            write.doc.remove(&name);
        }
        _ => {
            write.doc.insert(name, canonical_value(value));
        }
    }
    Ok(())
}

/// An extension's attributes (or the core schema's, written under its URN).
fn set_extension(write: &mut ScimWrite, urn: &str, value: Value) -> Result<(), ScimError> {
    if urn.eq_ignore_ascii_case(write.ty.core_schema()) {
        let Value::Object(attrs) = value else {
            return Err(ScimError::invalid_value(format!(
                "{urn} must hold an object of attributes"
            )));
        };
        let mut members = None;
        for (key, value) in attrs {
            set_attribute(write, &mut members, &key, value)?;
        }
        return Ok(());
    }
    let urn = if urn.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
        ENTERPRISE_SCHEMA.to_owned()
    } else {
        urn.to_owned()
    };
    if value.is_null() {
        write.doc.remove(&urn);
    } else {
        write.doc.insert(urn, canonical_value(value));
    }
    Ok(())
}

/// The value with the core attributes' names spelled as RFC 7643 spells them, at every level.
pub fn canonical_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (canonical(&k), canonical_value(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_value).collect()),
        other => other,
    }
}

fn string(key: &str, value: Value) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(ScimError::invalid_value(format!(
            "{key} must be a string, not {other}"
        ))),
    }
}

/// A boolean, also written as a string in any case (`"False"`), as Entra ID sends it.
pub fn boolean(key: &str, value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::invalid_value(format!(
            "{key} must be true or false, not {other}"
        ))),
    }
}

/// The ids of `[{"value": "…"}, …]` (also a single object).
pub fn member_ids(value: &Value) -> Result<Vec<ResourceId>, ScimError> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        single @ Value::Object(_) => std::slice::from_ref(single),
        other => {
            return Err(ScimError::invalid_value(format!(
                "members must be a list of {{\"value\": id}}, not {other}"
            )))
        }
    };
    items
        .iter()
        .map(|item| {
            let id = item
                .get("value")
                .or_else(|| item.get("Value"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ScimError::invalid_value(format!(
                        "a member must be {{\"value\": id}}, not {item}"
                    ))
                })?;
            id.parse::<uuid::Uuid>().map(ResourceId).map_err(|_| {
                ScimError::invalid_value(format!(
                    "member {id:?} is not the id of a roster resource"
                ))
            })
        })
        .collect()
}

/// The record as a body again, for a PATCH to apply its operations to.
pub fn as_body(ty: ScimType, record: &ScimRecord) -> Map<String, Value> {
    match resource_json(ty, record, "", None) {
        Value::Object(mut map) => {
            map.remove("meta");
            map
        }
        _ => Map::new(),
    }
}

/// Keeps the attributes asked for (`attributes`) or drops those excluded (`excludedAttributes`);
/// `id`, `schemas` and `meta` always stay.
pub fn project(value: &mut Value, attributes: &[String], excluded: &[String]) {
    let Value::Object(map) = value else { return };
    let always = |k: &str| matches!(k, "id" | "schemas" | "meta");
    let named = |list: &[String], k: &str| {
        list.iter().any(|a| {
            let a = a.rsplit_once(':').map_or(a.as_str(), |(_, rest)| rest);
            let top = a.split('.').next().unwrap_or(a);
            top.eq_ignore_ascii_case(k) || a.eq_ignore_ascii_case(k)
        })
    };
    if !attributes.is_empty() {
        map.retain(|k, _| always(k) || named(attributes, k));
    }
    map.retain(|k, _| always(k) || !named(excluded, k));
}

/// The schema URNs a document names, for checking that a body's `schemas` fit its type.
pub fn check_schemas(ty: ScimType, body: &Value) -> Result<(), ScimError> {
    let Some(schemas) = body.get("schemas") else {
        return Ok(());
    };
    let fits = schemas.as_array().is_some_and(|list| {
        list.iter().filter_map(Value::as_str).any(|s| {
            s.eq_ignore_ascii_case(ty.core_schema())
                || (ty == ScimType::User && s.eq_ignore_ascii_case(ENTERPRISE_SCHEMA))
        })
    });
    if fits {
        Ok(())
    } else {
        Err(ScimError::invalid_value(format!(
            "schemas must name {}",
            if ty == ScimType::User {
                USER_SCHEMA
            } else {
                GROUP_SCHEMA
            }
        )))
    }
}
