//! SCIM PATCH (RFC 7644 §3.5.2) with the identity providers' documented quirks: `op` in any case
//! (`Add`, `Replace`, `Remove`), no-path `replace` of a map whose keys are dotted paths
//! (`name.givenName`) or extension URNs, boolean strings, `remove` of `members` with a value list
//! or with `members[value eq "…"]`, Okta's no-path group `replace` of `{id, displayName}`.
//! A user's operations apply to the user as one document; a group's `members` operations become
//! membership edits that touch only the members named.

use super::filter::{self, FilterError};
use super::ScimError;
use crate::domain::scim::{canonical, AttrPath, CompValue, CompareOp, Filter, ENTERPRISE_SCHEMA};
use crate::domain::ResourceId;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// `attr[.sub]`, `attr[filter][.sub]`, with an optional schema URN.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[type eq "work"].value`).
    pub then: Option<String>,
}

impl Path {
    fn is_members(&self) -> bool {
        self.attr.schema.is_none() && self.attr.name.eq_ignore_ascii_case("members")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<Path>,
    pub value: Option<Value>,
}

/// Reads a PatchOp body.
pub fn parse(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let object = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body must be a PatchOp JSON object"))?;
    let operations = object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .and_then(|(_, v)| v.as_array())
        .ok_or_else(|| ScimError::invalid_syntax("a PatchOp needs \"Operations\": a list"))?;
    operations.iter().map(operation).collect()
}

fn operation(value: &Value) -> Result<Operation, ScimError> {
    let field = |name: &str| {
        value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.clone())
    };
    let op = match field("op")
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
    {
        Some(op) if op == "add" => Op::Add,
        Some(op) if op == "replace" => Op::Replace,
        Some(op) if op == "remove" => Op::Remove,
        other => {
            return Err(ScimError::invalid_syntax(format!(
                "an operation's op must be add, replace or remove, not {}",
                other.unwrap_or_else(|| "missing".to_owned())
            )))
        }
    };
    let mut value = field("value");
    let path = match field("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.trim().is_empty() => None,
        Some(Value::String(p)) if p.trim().eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => {
            // The whole extension (as scim2-tester sends it): its object, without the
            // `schemas` some clients repeat inside it.
            if let Some(Value::Object(extension)) = &mut value {
                extension.retain(|k, _| !k.eq_ignore_ascii_case("schemas"));
            }
            Some(Path {
                attr: AttrPath {
                    schema: None,
                    name: ENTERPRISE_SCHEMA.to_owned(),
                    sub: None,
                },
                filter: None,
                then: None,
            })
        }
        Some(Value::String(p)) => Some(parse_path(&p)?),
        Some(other) => {
            return Err(ScimError::invalid_path(format!(
                "path must be a string, not {other}"
            )))
        }
    };
    if op != Op::Remove && value.is_none() {
        return Err(ScimError::invalid_value("add and replace need a value"));
    }
    if op == Op::Remove && path.is_none() {
        return Err(ScimError::no_target("remove needs a path"));
    }
    Ok(Operation { op, path, value })
}

/// Parses a PATCH path.
pub fn parse_path(text: &str) -> Result<Path, ScimError> {
    let bad = |e: FilterError| ScimError::invalid_path(format!("path {text:?}: {e}"));
    let (head, filter, then) = match text.split_once('[') {
        None => (text, None, None),
        Some((head, rest)) => {
            let (inner, after) = rest.rsplit_once(']').ok_or_else(|| {
                ScimError::invalid_path(format!("path {text:?} opens \"[\" and never closes it"))
            })?;
            let then = match after {
                "" => None,
                a => Some(
                    a.strip_prefix('.')
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| {
                            ScimError::invalid_path(format!(
                                "path {text:?}: expected \".sub-attribute\" after \"]\""
                            ))
                        })?
                        .to_owned(),
                ),
            };
            (head, Some(filter::parse(inner).map_err(bad)?), then)
        }
    };
    let attr = filter::attr_path(head.trim(), 0).map_err(bad)?;
    if filter.is_some() && attr.sub.is_some() {
        return Err(ScimError::invalid_path(format!(
            "path {text:?}: a value filter follows a multi-valued attribute, not a sub-attribute"
        )));
    }
    Ok(Path { attr, filter, then })
}

/// Applies operations to a user (or a group's attributes other than members) as one document.
pub fn apply(body: &mut Map<String, Value>, operations: &[Operation]) -> Result<(), ScimError> {
    for operation in operations {
        match &operation.path {
            None => apply_map(body, operation.op, operation.value.clone())?,
            Some(path) => apply_path(body, operation.op, path, operation.value.clone())?,
        }
    }
    Ok(())
}

/// A no-path add or replace: each key is an attribute, a dotted path or an extension URN (whole,
/// or followed by `:attribute`).
fn apply_map(body: &mut Map<String, Value>, op: Op, value: Option<Value>) -> Result<(), ScimError> {
    let Some(Value::Object(map)) = value else {
        return Err(ScimError::invalid_value(
            "an add or replace without a path needs an object value",
        ));
    };
    for (key, value) in map {
        if is_schema_key(body, &key) {
            let urn = canonical_urn(&key);
            match (value, body.get_mut(&urn)) {
                (Value::Object(attrs), Some(Value::Object(existing))) => {
                    for (k, v) in attrs {
                        existing.insert(canonical(&k), super::wire::canonical_value(v));
                    }
                }
                (value, _) => {
                    body.insert(urn, super::wire::canonical_value(value));
                }
            }
            continue;
        }
        apply_path(body, op, &parse_path(&key)?, Some(value))?;
    }
    Ok(())
}

/// Whether a no-path key names a whole schema (its value is that extension's attributes) rather
/// than an attribute prefixed with its schema: a schema roster knows, or one the resource has.
fn is_schema_key(body: &Map<String, Value>, key: &str) -> bool {
    let known = [
        crate::domain::scim::USER_SCHEMA,
        crate::domain::scim::GROUP_SCHEMA,
        crate::domain::scim::ENTERPRISE_SCHEMA,
    ];
    known.iter().any(|s| s.eq_ignore_ascii_case(key))
        || (key.to_ascii_lowercase().starts_with("urn:") && body.contains_key(key))
}

fn canonical_urn(urn: &str) -> String {
    if urn.eq_ignore_ascii_case(crate::domain::scim::ENTERPRISE_SCHEMA) {
        crate::domain::scim::ENTERPRISE_SCHEMA.to_owned()
    } else {
        urn.to_owned()
    }
}

/// The object that holds the path's attribute: the body, or an extension's object in it.
fn holder<'m>(
    body: &'m mut Map<String, Value>,
    path: &Path,
    create: bool,
) -> Option<&'m mut Map<String, Value>> {
    let Some(schema) = &path.attr.schema else {
        return Some(body);
    };
    let core = [
        crate::domain::scim::USER_SCHEMA,
        crate::domain::scim::GROUP_SCHEMA,
    ]
    .iter()
    .any(|s| s.eq_ignore_ascii_case(schema));
    if core {
        return Some(body);
    }
    let urn = canonical_urn(schema);
    if create && !body.get(&urn).is_some_and(Value::is_object) {
        body.insert(urn.clone(), Value::Object(Map::new()));
    }
    body.get_mut(&urn).and_then(Value::as_object_mut)
}

fn apply_path(
    body: &mut Map<String, Value>,
    op: Op,
    path: &Path,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let value = value.map(super::wire::canonical_value);
    let Some(holder) = holder(body, path, op != Op::Remove) else {
        return Ok(());
    };
    let name = canonical(&path.attr.name);
    if let Some(filter) = &path.filter {
        return apply_filtered(holder, op, &name, filter, path.then.as_deref(), value);
    }
    match (&path.attr.sub, op) {
        (None, Op::Remove) => {
            holder.remove(&name);
        }
        (None, Op::Add) => match (holder.get_mut(&name), value) {
            (Some(Value::Array(items)), Some(Value::Array(new))) => {
                for item in new {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            }
            (Some(Value::Object(existing)), Some(Value::Object(new))) => existing.extend(new),
            (_, Some(value)) => {
                holder.insert(name, value);
            }
            (_, None) => {}
        },
        (None, Op::Replace) => {
            if let Some(value) = value {
                holder.insert(name, value);
            }
        }
        (Some(sub), op) => {
            let sub = canonical(sub);
            if op == Op::Remove {
                if let Some(Value::Object(inner)) = holder.get_mut(&name) {
                    inner.remove(&sub);
                }
                return Ok(());
            }
            if !holder.get(&name).is_some_and(Value::is_object) {
                holder.insert(name.clone(), Value::Object(Map::new()));
            }
            if let (Some(Value::Object(inner)), Some(value)) = (holder.get_mut(&name), value) {
                inner.insert(sub, value);
            }
        }
    }
    Ok(())
}

/// An operation on the elements of a multi-valued attribute that match `filter`.
fn apply_filtered(
    holder: &mut Map<String, Value>,
    op: Op,
    name: &str,
    filter: &Filter,
    then: Option<&str>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if op != Op::Remove && !holder.get(name).is_some_and(Value::is_array) {
        holder.insert(name.to_owned(), Value::Array(Vec::new()));
    }
    let Some(Value::Array(items)) = holder.get_mut(name) else {
        return Ok(());
    };
    if op == Op::Remove && then.is_none() {
        items.retain(|item| !matches_element(filter, item));
        return Ok(());
    }
    let mut found = false;
    for item in items
        .iter_mut()
        .filter(|item| matches_element(filter, item))
    {
        found = true;
        match (then, op, item) {
            (Some(sub), Op::Remove, Value::Object(element)) => {
                element.remove(&canonical(sub));
            }
            (Some(sub), _, Value::Object(element)) => {
                if let Some(value) = value.clone() {
                    element.insert(canonical(sub), value);
                }
            }
            (None, _, Value::Object(element)) => {
                if let Some(Value::Object(value)) = value.clone() {
                    element.extend(value);
                }
            }
            (_, _, other) => {
                if let Some(value) = value.clone() {
                    *other = value;
                }
            }
        }
    }
    if !found && op != Op::Remove {
        // Entra ID adds a value this way (`emails[type eq "work"].value`): the new element is
        // what the filter's equalities say, with the value.
        let mut element = Map::new();
        if !equalities(filter, &mut element) {
            return Err(ScimError::no_target(format!(
                "no value of {name} matches the path's filter, and the filter does not describe a \
                 new one (it is not attribute eq \"…\" conditions joined by and)"
            )));
        }
        match (then, value) {
            (Some(sub), Some(value)) => {
                element.insert(canonical(sub), value);
            }
            (None, Some(Value::Object(value))) => element.extend(value),
            (None, Some(other)) => {
                element.insert("value".into(), other);
            }
            (_, None) => {}
        }
        items.push(Value::Object(element));
    }
    Ok(())
}

/// Collects `attr eq value` conditions joined by `and` into `element`; false for any other filter.
fn equalities(filter: &Filter, element: &mut Map<String, Value>) -> bool {
    match filter {
        Filter::And(a, b) => equalities(a, element) && equalities(b, element),
        Filter::Compare(path, CompareOp::Eq, value) if path.sub.is_none() => {
            let value = match value {
                CompValue::Str(s) => Value::from(s.as_str()),
                CompValue::Bool(b) => Value::from(*b),
                CompValue::Num(n) => {
                    serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
                }
                CompValue::Null => Value::Null,
            };
            element.insert(canonical(&path.name), value);
            true
        }
        _ => false,
    }
}

/// Whether an element of a multi-valued attribute matches a value filter; strings are compared
/// without case, as for the attributes SCIM does not mark case-exact.
pub fn matches_element(filter: &Filter, item: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches_element(a, item) && matches_element(b, item),
        Filter::Or(a, b) => matches_element(a, item) || matches_element(b, item),
        Filter::Not(a) => !matches_element(a, item),
        Filter::Any(..) => false,
        Filter::Present(path) => element_value(item, path).is_some_and(|v| !v.is_null()),
        Filter::Compare(path, op, value) => {
            let actual = element_value(item, path);
            compare_json(actual, *op, value)
        }
    }
}

fn element_value<'v>(item: &'v Value, path: &AttrPath) -> Option<&'v Value> {
    match item {
        Value::Object(map) => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&path.name))
            .map(|(_, v)| v),
        scalar if path.name.eq_ignore_ascii_case("value") => Some(scalar),
        _ => None,
    }
}

fn compare_json(actual: Option<&Value>, op: CompareOp, value: &CompValue) -> bool {
    let equal = match (actual, value) {
        (None | Some(Value::Null), CompValue::Null) => true,
        (Some(Value::String(a)), CompValue::Str(b)) => a.to_lowercase() == b.to_lowercase(),
        (Some(Value::Bool(a)), CompValue::Bool(b)) => a == b,
        (Some(Value::Number(a)), CompValue::Num(b)) => a.as_f64() == Some(*b),
        _ => false,
    };
    match (op, actual, value) {
        (CompareOp::Eq, ..) => equal,
        (CompareOp::Ne, ..) => !equal,
        (_, Some(Value::String(a)), CompValue::Str(b)) => {
            let (a, b) = (a.to_lowercase(), b.to_lowercase());
            match op {
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                _ => a <= b,
            }
        }
        (_, Some(Value::Number(a)), CompValue::Num(b)) => {
            let a = a.as_f64().unwrap_or(f64::NAN);
            match op {
                CompareOp::Gt => a > *b,
                CompareOp::Ge => a >= *b,
                CompareOp::Lt => a < *b,
                CompareOp::Le => a <= *b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// A group PATCH split: the membership edits and the operations on the group's other attributes.
#[derive(Debug, Default, PartialEq)]
pub struct GroupPatch {
    /// A full push of the members (Okta's `replace` of `members`, or a `remove` of them all).
    pub replace: Option<Vec<ResourceId>>,
    pub add: Vec<ResourceId>,
    pub remove: Vec<ResourceId>,
    pub attributes: Vec<Operation>,
}

/// Splits a group's operations, netting out members added then removed (or the reverse).
pub fn split_group(operations: Vec<Operation>) -> Result<GroupPatch, ScimError> {
    let mut out = GroupPatch::default();
    for operation in operations {
        match &operation.path {
            Some(path) if path.is_members() => members_op(&mut out, &operation, path)?,
            None => {
                let Some(Value::Object(map)) = &operation.value else {
                    return Err(ScimError::invalid_value(
                        "an add or replace without a path needs an object value",
                    ));
                };
                let mut rest = Map::new();
                for (key, value) in map {
                    if key.eq_ignore_ascii_case("members") {
                        let ids = super::wire::member_ids(value)?;
                        members_change(&mut out, operation.op, ids);
                    } else if !key.eq_ignore_ascii_case("id") {
                        rest.insert(key.clone(), value.clone());
                    }
                }
                if !rest.is_empty() {
                    out.attributes.push(Operation {
                        op: operation.op,
                        path: None,
                        value: Some(Value::Object(rest)),
                    });
                }
            }
            Some(_) => out.attributes.push(operation),
        }
    }
    Ok(out)
}

fn members_op(out: &mut GroupPatch, operation: &Operation, path: &Path) -> Result<(), ScimError> {
    if let Some(filter) = &path.filter {
        if operation.op != Op::Remove || path.then.is_some() {
            return Err(ScimError::invalid_path(
                "members[…] is supported in remove only, as members[value eq \"id\"]",
            ));
        }
        let ids = filter_ids(filter)?;
        members_change(out, Op::Remove, ids);
        return Ok(());
    }
    let ids = match &operation.value {
        Some(value) => super::wire::member_ids(value)?,
        None => Vec::new(),
    };
    if operation.op == Op::Remove && operation.value.is_none() {
        members_change(out, Op::Replace, Vec::new());
    } else {
        members_change(out, operation.op, ids);
    }
    Ok(())
}

fn members_change(out: &mut GroupPatch, op: Op, ids: Vec<ResourceId>) {
    match (op, &mut out.replace) {
        (Op::Replace, _) => {
            out.replace = Some(ids);
            out.add.clear();
            out.remove.clear();
        }
        (Op::Add, Some(set)) => set.extend(ids),
        (Op::Remove, Some(set)) => set.retain(|id| !ids.contains(id)),
        (Op::Add, None) => {
            out.remove.retain(|id| !ids.contains(id));
            out.add.extend(ids);
        }
        (Op::Remove, None) => {
            out.add.retain(|id| !ids.contains(id));
            out.remove.extend(ids);
        }
    }
}

/// The ids of `value eq "…"` conditions joined by `or`.
fn filter_ids(filter: &Filter) -> Result<Vec<ResourceId>, ScimError> {
    match filter {
        Filter::Or(a, b) => {
            let mut ids = filter_ids(a)?;
            ids.extend(filter_ids(b)?);
            Ok(ids)
        }
        Filter::Compare(path, CompareOp::Eq, CompValue::Str(id))
            if path.is("value", None) && path.schema.is_none() =>
        {
            id.parse::<uuid::Uuid>()
                .map(|u| vec![ResourceId(u)])
                .map_err(|_| ScimError::invalid_value(format!("member {id:?} is not a roster id")))
        }
        _ => Err(ScimError::invalid_path(
            "members[…] takes value eq \"id\" conditions, joined by or",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(body: Value) -> Vec<Operation> {
        parse(&body).expect("the input is accepted")
    }

    #[test]
    fn op_names_ignore_case_and_boolean_strings_are_read() {
        let list =
            ops(json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]}));
        assert_eq!(list[0].op, Op::Replace);
        assert_eq!(list[0].value, Some(json!("False")));
    }

    #[test]
    fn no_path_replace_takes_dotted_keys_and_extension_urns() {
        let mut body = Map::new();
        let list = ops(json!({"Operations": [{"op": "replace", "value": {
            "name.givenName": "Ada",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}
        }}]}));
        apply(&mut body, &list).expect("the input is accepted");
        assert_eq!(body["name"]["givenName"], json!("Ada"));
        let ext = &body[crate::domain::scim::ENTERPRISE_SCHEMA];
        assert_eq!(ext["employeeNumber"], json!("7"));
        assert_eq!(ext["department"], json!("R&D"));
    }

    #[test]
    fn value_path_replaces_the_matching_element_only() {
        let mut body = json!({"emails": [
            {"type": "work", "value": "a@w"}, {"type": "home", "value": "a@h"}
        ]})
        .as_object()
        .cloned()
        .expect("the input is accepted");
        let list = ops(json!({"Operations": [
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@w"}
        ]}));
        apply(&mut body, &list).expect("the input is accepted");
        assert_eq!(body["emails"][0]["value"], json!("b@w"));
        assert_eq!(body["emails"][1]["value"], json!("a@h"));
        let list =
            ops(json!({"Operations": [{"op": "remove", "path": "emails[type eq \"home\"]"}]}));
        apply(&mut body, &list).expect("the input is accepted");
        assert_eq!(body["emails"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn group_members_split_into_edits() {
        let a = uuid::Uuid::now_v7();
        let b = uuid::Uuid::now_v7();
        let patch = split_group(ops(json!({"Operations": [
            {"op": "Add", "path": "members", "value": [{"value": a.to_string()}]},
            {"op": "Remove", "path": "members", "value": [{"value": b.to_string()}]},
            {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
            {"op": "replace", "value": {"id": "x", "displayName": "Ops"}}
        ]})))
        .expect("the input is accepted");
        assert_eq!(patch.add, Vec::<ResourceId>::new());
        assert_eq!(patch.remove, vec![ResourceId(b), ResourceId(a)]);
        assert_eq!(patch.replace, None);
        assert_eq!(patch.attributes.len(), 1);
        let full = split_group(ops(json!({"Operations": [
            {"op": "replace", "path": "members", "value": [{"value": a.to_string()}]}
        ]})))
        .expect("the input is accepted");
        assert_eq!(full.replace, Some(vec![ResourceId(a)]));
    }

    #[test]
    fn the_bare_extension_urn_as_path_is_the_whole_extension() {
        let mut body = Map::new();
        let added = ops(
            json!({"Operations": [{"op": "add", "path": ENTERPRISE_SCHEMA,
            "value": {"schemas": [ENTERPRISE_SCHEMA], "department": "R&D"}}]}),
        );
        apply(&mut body, &added).expect("add");
        assert_eq!(body[ENTERPRISE_SCHEMA], json!({"department": "R&D"}));
        let removed = ops(json!({"Operations": [{"op": "remove", "path": ENTERPRISE_SCHEMA}]}));
        apply(&mut body, &removed).expect("remove");
        assert!(!body.contains_key(ENTERPRISE_SCHEMA), "{body:?}");
    }

    #[test]
    fn bad_operations_are_refused() {
        for body in [
            json!({"Operations": [{"op": "move", "path": "x"}]}),
            json!({"Operations": [{"op": "remove"}]}),
            json!({"Operations": [{"op": "add", "path": "x"}]}),
            json!({"Operations": [{"op": "add", "path": "emails[type eq", "value": 1}]}),
            json!({"ops": []}),
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
