//! Account sync: the resource lines a connector uploads in a full-update or a partial-update of
//! resources, and the checks each line passes before it is staged.

use super::resource::{self, ResourceType, Subtype};
use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One resource as its source sees it, keyed by `external_id` (stable across renames) or by
/// `identifier` and `type`. Attributes left out keep their stored value; `null` clears one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLine {
    /// The operation's source system; may be left out.
    #[serde(default)]
    pub source_system: Option<String>,
    /// The source's immutable id (Entra object id, AD objectGUID, Workday worker id).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The source's name for it (a UPN, a sAMAccountName); a changed identifier under the same
    /// `external_id` is a rename.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Needed unless the operation covers one type.
    #[serde(default, rename = "type")]
    pub ty: Option<ResourceType>,
    #[serde(default, with = "resource::double_option")]
    #[schema(value_type = Option<Subtype>)]
    pub subtype: Option<Option<Subtype>>,
    #[serde(default, with = "resource::double_option")]
    #[schema(value_type = Option<String>)]
    pub displayname: Option<Option<String>>,
    #[serde(default, with = "resource::double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, with = "resource::double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "expires_at")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// In a partial-update only: `upsert` (the default) or `delete`.
    #[serde(default)]
    pub action: Option<ResourceAction>,
}

/// Reads `expires_at` (a time roster stores, or null), naming it in a refusal: the errors of an
/// upload line or of a line inside an operation's body reach the client without their path.
fn expires_at<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    super::time::clearable(deserializer)
        .map_err(|e| serde::de::Error::custom(format!("expires_at: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAction {
    Upsert,
    Delete,
}

/// What a resource operation covers: the resources of one source system, optionally of one type
/// and subtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub source_system: String,
    pub ty: Option<ResourceType>,
    pub subtype: Option<Subtype>,
    /// A partial-update, whose lines may delete.
    pub partial: bool,
}

impl ResourceScope {
    /// How the scope reads in messages: `source system "foo"` or `the users of source system "foo"`.
    pub fn describe(&self) -> String {
        let source = format!("source system {:?}", self.source_system);
        match (self.ty, self.subtype) {
            (None, _) => source,
            (Some(ty), None) => format!("the {} resources of {source}", ty.name()),
            (Some(ty), Some(sub)) => {
                format!("the {} {} resources of {source}", sub.name(), ty.name())
            }
        }
    }
}

/// Which attributes a line sets, as bits of [`StagedResource::present`].
pub mod present {
    pub const SUBTYPE: i16 = 1;
    pub const DISPLAYNAME: i16 = 2;
    pub const DESCRIPTION: i16 = 4;
    pub const NOTES: i16 = 8;
    pub const TAGS: i16 = 16;
    pub const ACTIVE: i16 = 32;
    pub const EXPIRES_AT: i16 = 64;
}

/// A resource line checked and ready to stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedResource {
    /// 1-based line number within its chunk.
    pub line: i32,
    /// The id the resource gets if the line creates it.
    pub new_id: ResourceId,
    pub external_id: Option<String>,
    pub identifier: Option<String>,
    pub ty: ResourceType,
    pub subtype: Option<Subtype>,
    pub displayname: Option<String>,
    pub description: Option<String>,
    pub notes: Option<String>,
    /// None when the line does not give them: staged as NULL on PostgreSQL (most connectors send
    /// no tags, and an empty array costs its COPY a parse per line), as an empty list on SQLite;
    /// a new resource gets none.
    pub tags: Option<Vec<String>>,
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Which of the attributes above the line set (bits of [`present`]).
    pub present: i16,
    /// A partial-update line that deletes the resource.
    pub delete: bool,
}

impl ResourceLine {
    /// Checks a parsed line against the operation's scope.
    pub fn stage(self, line: i32, scope: &ResourceScope) -> Result<StagedResource, InvalidInput> {
        if let Some(source) = &self.source_system {
            if *source != scope.source_system {
                return Err(InvalidInput::new(format!(
                    "the line names source system {source:?}, but the operation covers {:?}",
                    scope.source_system
                )));
            }
        }
        if self.external_id.is_none() && self.identifier.is_none() {
            return Err(InvalidInput::new(
                "name the resource by external_id or identifier (or both)",
            ));
        }
        resource::check_optional_key("external_id", self.external_id.as_deref())?;
        resource::check_optional_key("identifier", self.identifier.as_deref())?;
        let ty = match (self.ty, scope.ty) {
            (Some(ty), Some(only)) if ty != only => {
                return Err(InvalidInput::new(format!(
                    "the line is a {}, but the operation covers only {} resources",
                    ty.name(),
                    only.name()
                )))
            }
            (Some(ty), _) | (None, Some(ty)) => ty,
            (None, None) => {
                return Err(InvalidInput::new(
                    "the line needs a \"type\" (the operation covers every type)",
                ))
            }
        };
        let delete = match self.action {
            None | Some(ResourceAction::Upsert) => false,
            Some(ResourceAction::Delete) if scope.partial => true,
            Some(ResourceAction::Delete) => {
                return Err(InvalidInput::new(
                    "\"action\" belongs to partial-updates; a full-update deletes what its \
                     snapshot leaves out",
                ))
            }
        };
        let mut bits = 0;
        let mut mark = |given: bool, bit: i16| {
            if given {
                bits |= bit;
            }
        };
        mark(self.subtype.is_some(), present::SUBTYPE);
        mark(self.displayname.is_some(), present::DISPLAYNAME);
        mark(self.description.is_some(), present::DESCRIPTION);
        mark(self.notes.is_some(), present::NOTES);
        mark(self.tags.is_some(), present::TAGS);
        mark(self.active.is_some(), present::ACTIVE);
        mark(self.expires_at.is_some(), present::EXPIRES_AT);
        let subtype = match (self.subtype, scope.subtype) {
            (Some(given), Some(only)) if given != Some(only) => {
                return Err(InvalidInput::new(format!(
                    "the operation covers only {} resources",
                    only.name()
                )))
            }
            (Some(given), _) => given,
            (None, only) => {
                if only.is_some() {
                    bits |= present::SUBTYPE;
                }
                only
            }
        };
        if let Some(sub) = subtype {
            sub.check_fits(ty)?;
        }
        let text = |field, value: &Option<Option<String>>| {
            resource::check_optional_text(field, value.as_ref().and_then(Option::as_deref))
        };
        text("displayname", &self.displayname)?;
        text("description", &self.description)?;
        text("notes", &self.notes)?;
        if let Some(tags) = &self.tags {
            resource::check_tags(tags)?;
        }
        Ok(StagedResource {
            line,
            new_id: ResourceId::generate(),
            external_id: self.external_id,
            identifier: self.identifier,
            ty,
            subtype,
            displayname: self.displayname.flatten(),
            description: self.description.flatten(),
            notes: self.notes.flatten(),
            tags: self.tags,
            active: self.active.unwrap_or(true),
            expires_at: self.expires_at.flatten(),
            present: bits,
            delete,
        })
    }
}

/// One change a pending full-update of resources would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourcePreviewEntry {
    /// Null for a resource the operation would create.
    pub resource_id: Option<ResourceId>,
    pub identifier: Option<String>,
    pub external_id: Option<String>,
    pub action: super::full_update::PreviewAction,
    /// For an addition: the upload line that makes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(ty: Option<ResourceType>, subtype: Option<Subtype>) -> ResourceScope {
        ResourceScope {
            source_system: "home".into(),
            ty,
            subtype,
            partial: false,
        }
    }

    fn line(json: &str) -> ResourceLine {
        serde_json::from_str(json).expect("a line")
    }

    #[test]
    fn absent_attributes_are_not_marked_present() {
        let staged = line(r#"{"external_id": "e1", "type": "user", "displayname": null}"#)
            .stage(1, &scope(None, None))
            .expect("valid");
        assert_eq!(staged.present, present::DISPLAYNAME);
        assert_eq!(staged.displayname, None);
        assert!(staged.active);
    }

    #[test]
    fn the_scope_supplies_and_limits_type_and_subtype() {
        let users = scope(Some(ResourceType::User), Some(Subtype::Guest));
        let staged = line(r#"{"identifier": "a"}"#)
            .stage(1, &users)
            .expect("valid");
        assert_eq!(staged.ty, ResourceType::User);
        assert_eq!(staged.subtype, Some(Subtype::Guest));
        assert_ne!(staged.present & present::SUBTYPE, 0);
        assert!(line(r#"{"identifier": "a", "type": "group"}"#)
            .stage(1, &users)
            .is_err());
        assert!(line(r#"{"identifier": "a", "subtype": "native"}"#)
            .stage(1, &users)
            .is_err());
        assert!(line(r#"{"identifier": "a", "subtype": null}"#)
            .stage(1, &users)
            .is_err());
    }

    #[test]
    fn a_line_needs_a_key_a_type_and_its_own_source() {
        let any = scope(None, None);
        assert!(line(r#"{"type": "user"}"#).stage(1, &any).is_err());
        assert!(line(r#"{"identifier": "a"}"#).stage(1, &any).is_err());
        assert!(
            line(r#"{"identifier": "a", "type": "user", "source_system": "foo"}"#)
                .stage(1, &any)
                .is_err()
        );
        assert!(
            line(r#"{"identifier": "a", "type": "user", "action": "delete"}"#)
                .stage(1, &any)
                .is_err()
        );
    }
}
