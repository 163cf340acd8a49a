//! Changes as SCIM security events (RFC 9967): the claim set of a Security Event Token per
//! change. A membership change is a patch of the group's `members`; an update is a patch that
//! replaces the changed attributes (a change of `active` is `prov:activate` or
//! `prov:deactivate`); a soft delete (and a purge) is `prov:delete`; a create or a restore is
//! `prov:create:full` with the resource as it stands now.

use super::change::ChangeKind;
use super::feed::StoredChange;
use super::resource::{Resource, ResourceType};
use serde_json::{json, Map, Value};

const PREFIX: &str = "urn:ietf:params:scim:event:prov:";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Roster's attributes that SCIM's core schemas do not name.
pub const EXTENSION: &str = "urn:ietf:params:scim:schemas:extension:roster:2.0:Resource";

/// The endpoint a resource of this type lives under.
fn endpoint(ty: Option<ResourceType>) -> &'static str {
    match ty {
        Some(ResourceType::Group) => "Groups",
        _ => "Users",
    }
}

/// The SCIM name of a roster attribute.
fn attribute(name: &str, ty: Option<ResourceType>) -> String {
    match (name, ty) {
        ("identifier", Some(ResourceType::Group)) => "displayName".to_owned(),
        ("identifier", _) => "userName".to_owned(),
        ("displayname", _) => "displayName".to_owned(),
        ("external_id", _) => "externalId".to_owned(),
        ("active", _) => "active".to_owned(),
        (other, _) => format!("{EXTENSION}:{other}"),
    }
}

/// A resource in its SCIM form.
pub fn resource(r: &Resource) -> Value {
    let group = r.ty == ResourceType::Group;
    let mut out = Map::new();
    out.insert(
        "schemas".into(),
        json!([if group { GROUP } else { USER }, EXTENSION]),
    );
    out.insert("id".into(), json!(r.id));
    if let Some(e) = &r.external_id {
        out.insert("externalId".into(), json!(e));
    }
    if group {
        out.insert(
            "displayName".into(),
            json!(r.displayname.as_ref().or(r.identifier.as_ref())),
        );
    } else {
        out.insert("userName".into(), json!(r.identifier));
        out.insert("displayName".into(), json!(r.displayname));
        out.insert("active".into(), json!(r.active));
    }
    out.insert(
        EXTENSION.into(),
        json!({"type": r.ty, "subtype": r.subtype, "source_system": r.source_system,
               "prime_id": r.prime_id, "tags": r.tags}),
    );
    out.insert(
        "meta".into(),
        json!({"resourceType": if group { "Group" } else { "User" },
               "created": r.created, "lastModified": r.modified,
               "location": format!("/{}/{}", endpoint(Some(r.ty)), r.id)}),
    );
    Value::Object(out)
}

/// The claim set of the security event for `change`. `subject` is the changed resource (for
/// resource changes) as it stands now, if it still exists.
pub fn claims(change: &StoredChange, subject: Option<&Resource>) -> Value {
    let txn = change.cursor.encode();
    let ty = subject.map(|r| r.ty);
    let (id, ty) = match change.group_id {
        Some(group) => (group.0, Some(ResourceType::Group)),
        None => (change.resource_id.map(|r| r.0).unwrap_or_default(), ty),
    };
    let mut sub_id = json!({"format": "scim", "uri": format!("/{}/{id}", endpoint(ty)), "id": id});
    if let Some(e) = subject.and_then(|r| r.external_id.as_ref()) {
        sub_id["externalId"] = json!(e);
    }
    let events: Map<String, Value> = events(change, subject, ty)
        .into_iter()
        .map(|(event, payload)| (format!("{PREFIX}{event}"), payload))
        .collect();
    json!({
        "iss": "roster",
        "iat": change.at.timestamp(),
        "jti": txn,
        "txn": txn,
        "sub_id": sub_id,
        "events": events,
    })
}

fn patch(operations: Vec<Value>) -> Value {
    json!({"data": {"schemas": [PATCH_OP], "Operations": operations}})
}

/// The events of a change (after `…:prov:`) with their payloads: one, or for an update that
/// changes `active`, the patch of the other attributes (if any) and `activate` or `deactivate`.
fn events(
    change: &StoredChange,
    subject: Option<&Resource>,
    ty: Option<ResourceType>,
) -> Vec<(&'static str, Value)> {
    let active = change
        .attrs
        .as_ref()
        .and_then(|a| a.get("active"))
        .and_then(|a| a["new"].as_bool());
    let updates = matches!(
        change.kind,
        ChangeKind::ResourceUpdated
            | ChangeKind::ResourceDeactivated
            | ChangeKind::ResourceActivated
    );
    let (Some(active), true) = (active, updates) else {
        return vec![event(change, subject, ty)];
    };
    let mut out = Vec::new();
    let others = change
        .attrs
        .as_ref()
        .and_then(Value::as_object)
        .map_or(0, |a| a.len() - 1);
    if others > 0 {
        let mut rest = change.clone();
        if let Some(Value::Object(attrs)) = rest.attrs.as_mut() {
            attrs.remove("active");
        }
        out.push(event(&rest, subject, ty));
    }
    out.push((if active { "activate" } else { "deactivate" }, json!({})));
    out
}

/// The event name (after `…:prov:`) and its payload.
fn event(
    change: &StoredChange,
    subject: Option<&Resource>,
    ty: Option<ResourceType>,
) -> (&'static str, Value) {
    let member = change.member_id.map(|m| m.0).unwrap_or_default();
    let attrs = change
        .attrs
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match change.kind {
        ChangeKind::ResourceCreated | ChangeKind::ResourceRestored => match subject {
            Some(r) => ("create:full", json!({"data": resource(r)})),
            None => ("create:notice", json!({"attributes": ["id"]})),
        },
        ChangeKind::ResourceUpdated
        | ChangeKind::ResourceDeactivated
        | ChangeKind::ResourceActivated
        | ChangeKind::IdentityLinked
        | ChangeKind::IdentityUnlinked => {
            // Values that cannot be rendered: the resource changed, the receiver reads it again.
            if attrs.contains_key(super::feed::UNRENDERABLE) {
                return ("patch:notice", json!({"attributes": []}));
            }
            let operations = attrs
                .iter()
                .map(|(name, values)| {
                    json!({"op": "replace", "path": attribute(name, ty), "value": values["new"]})
                })
                .collect();
            ("patch:full", patch(operations))
        }
        ChangeKind::ResourceDeleted | ChangeKind::ResourcePurged => ("delete", json!({})),
        ChangeKind::MembershipAdded => (
            "patch:full",
            patch(vec![json!({"op": "add", "path": "members",
                "value": [{"value": member, "$ref": format!("/Users/{member}")}]})]),
        ),
        ChangeKind::MembershipRemoved => (
            "patch:full",
            patch(vec![
                json!({"op": "remove", "path": format!("members[value eq \"{member}\"]")}),
            ]),
        ),
        ChangeKind::MembershipUpdated => ("patch:notice", json!({"attributes": ["members"]})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_change(kind: ChangeKind, attrs: Value) -> StoredChange {
        StoredChange {
            cursor: crate::domain::feed::Cursor::at_seq(3),
            seq: 3,
            at: chrono::Utc::now(),
            kind,
            resource_id: Some(crate::domain::ResourceId(uuid::Uuid::nil())),
            group_id: None,
            member_id: None,
            source_system: Some("home".to_owned()),
            operation_id: None,
            token_name: None,
            attrs: Some(attrs),
        }
    }

    #[test]
    fn a_change_of_active_is_a_deactivation_beside_the_patch() {
        let change = account_change(
            ChangeKind::ResourceDeactivated,
            json!({"active": {"old": true, "new": false},
                   "displayname": {"old": "A", "new": "B"}}),
        );
        let set = claims(&change, None);
        let events = set["events"].as_object().expect("events");
        assert!(events.contains_key(&format!("{PREFIX}deactivate")), "{set}");
        let patch = &events[&format!("{PREFIX}patch:full")];
        assert_eq!(patch["data"]["Operations"][0]["path"], "displayName");
        assert_eq!(
            patch["data"]["Operations"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn values_that_cannot_be_rendered_are_a_patch_notice() {
        let change = account_change(
            ChangeKind::ResourceUpdated,
            json!({crate::domain::feed::UNRENDERABLE: "too deep"}),
        );
        let set = claims(&change, None);
        let events = set["events"].as_object().expect("events");
        assert_eq!(events.len(), 1, "{set}");
        assert_eq!(
            events[&format!("{PREFIX}patch:notice")],
            json!({"attributes": []})
        );
    }

    #[test]
    fn an_activation_alone_is_one_activate_event() {
        let change = account_change(
            ChangeKind::ResourceActivated,
            json!({"active": {"old": false, "new": true}}),
        );
        let set = claims(&change, None);
        let events = set["events"].as_object().expect("events");
        assert_eq!(events.len(), 1, "{set}");
        assert!(events.contains_key(&format!("{PREFIX}activate")), "{set}");
    }
}
