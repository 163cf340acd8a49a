//! The kinds of change the change log records, with their stored codes.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub enum ChangeKind {
    #[serde(rename = "resource.created")]
    ResourceCreated,
    #[serde(rename = "resource.updated")]
    ResourceUpdated,
    #[serde(rename = "resource.deleted")]
    ResourceDeleted,
    #[serde(rename = "resource.restored")]
    ResourceRestored,
    #[serde(rename = "resource.purged")]
    ResourcePurged,
    #[serde(rename = "membership.added")]
    MembershipAdded,
    #[serde(rename = "membership.removed")]
    MembershipRemoved,
    #[serde(rename = "membership.updated")]
    MembershipUpdated,
    #[serde(rename = "identity.linked")]
    IdentityLinked,
    #[serde(rename = "identity.unlinked")]
    IdentityUnlinked,
    /// An account's `active` became false (its attrs carry every attribute the write changed).
    #[serde(rename = "resource.deactivated")]
    ResourceDeactivated,
    /// An account's `active` became true.
    #[serde(rename = "resource.activated")]
    ResourceActivated,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 12] = [
        Self::ResourceCreated,
        Self::ResourceUpdated,
        Self::ResourceDeleted,
        Self::ResourceRestored,
        Self::ResourcePurged,
        Self::MembershipAdded,
        Self::MembershipRemoved,
        Self::MembershipUpdated,
        Self::IdentityLinked,
        Self::IdentityUnlinked,
        Self::ResourceDeactivated,
        Self::ResourceActivated,
    ];

    /// The code stored in `change.kind`.
    pub fn code(self) -> i16 {
        match self {
            Self::ResourceCreated => 1,
            Self::ResourceUpdated => 2,
            Self::ResourceDeleted => 3,
            Self::ResourceRestored => 4,
            Self::ResourcePurged => 5,
            Self::MembershipAdded => 6,
            Self::MembershipRemoved => 7,
            Self::MembershipUpdated => 8,
            Self::IdentityLinked => 9,
            Self::IdentityUnlinked => 10,
            Self::ResourceDeactivated => 11,
            Self::ResourceActivated => 12,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The name consumers see, e.g. `membership.removed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResourceCreated => "resource.created",
            Self::ResourceUpdated => "resource.updated",
            Self::ResourceDeleted => "resource.deleted",
            Self::ResourceRestored => "resource.restored",
            Self::ResourcePurged => "resource.purged",
            Self::MembershipAdded => "membership.added",
            Self::MembershipRemoved => "membership.removed",
            Self::MembershipUpdated => "membership.updated",
            Self::IdentityLinked => "identity.linked",
            Self::IdentityUnlinked => "identity.unlinked",
            Self::ResourceDeactivated => "resource.deactivated",
            Self::ResourceActivated => "resource.activated",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of a write that changed a resource's attributes `changed`, `active` now being
    /// `active`: a flip of `active` is a deactivation or an activation, the rest an update.
    pub fn of_update(changed: &[&str], active: bool) -> Self {
        match (changed.contains(&"active"), active) {
            (true, false) => Self::ResourceDeactivated,
            (true, true) => Self::ResourceActivated,
            (false, _) => Self::ResourceUpdated,
        }
    }
}

/// One change, before it is appended to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub kind: ChangeKind,
    pub resource_id: Option<super::ResourceId>,
    pub group_id: Option<super::ResourceId>,
    pub member_id: Option<super::ResourceId>,
    pub source_system: Option<String>,
    pub operation_id: Option<super::OperationId>,
    /// For updates: `{"attribute": {"old": …, "new": …}}`.
    pub attrs: Option<serde_json::Value>,
}

impl ChangeRecord {
    /// A change of a resource.
    pub fn resource(kind: ChangeKind, resource: &super::resource::Resource) -> Self {
        Self {
            kind,
            resource_id: Some(resource.id),
            group_id: None,
            member_id: None,
            source_system: Some(resource.source_system.clone()),
            operation_id: None,
            attrs: None,
        }
    }

    /// A change of a membership, made by operation `operation_id` in the group's source.
    pub fn membership(
        kind: ChangeKind,
        membership: &super::membership::Membership,
        source_system: &str,
        operation_id: super::OperationId,
    ) -> Self {
        Self {
            kind,
            resource_id: None,
            group_id: Some(membership.group_id),
            member_id: Some(membership.member_id),
            source_system: Some(source_system.to_owned()),
            operation_id: Some(operation_id),
            attrs: None,
        }
    }

    pub fn with_operation(mut self, operation_id: super::OperationId) -> Self {
        self.operation_id = Some(operation_id);
        self
    }

    pub fn with_attrs(mut self, attrs: serde_json::Value) -> Self {
        self.attrs = Some(attrs);
        self
    }
}

/// The attributes that differ between two states of a resource, as `{"name": {"old", "new"}}`.
pub fn changed_attributes(
    before: &super::resource::Resource,
    after: &super::resource::Resource,
    names: &[&str],
) -> serde_json::Value {
    let (Ok(old), Ok(new)) = (serde_json::to_value(before), serde_json::to_value(after)) else {
        return serde_json::Value::Null;
    };
    let mut out = serde_json::Map::new();
    for name in names {
        out.insert(
            (*name).to_owned(),
            serde_json::json!({ "old": old[name], "new": new[name] }),
        );
    }
    serde_json::Value::Object(out)
}
