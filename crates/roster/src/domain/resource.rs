//! Resources: user accounts, groups, prime identities and the other records roster keeps.

use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What kind of record a resource is. Stored as its integer code plus its name (`typename`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    User,
    Group,
    Prime,
    Worker,
    Device,
    Application,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        Self::User,
        Self::Group,
        Self::Prime,
        Self::Worker,
        Self::Device,
        Self::Application,
    ];

    pub fn code(self) -> i16 {
        match self {
            Self::User => 1,
            Self::Group => 2,
            Self::Prime => 3,
            Self::Worker => 4,
            Self::Device => 5,
            Self::Application => 6,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Prime => "prime",
            Self::Worker => "worker",
            Self::Device => "device",
            Self::Application => "application",
        }
    }
}

/// The finer kind: for accounts native, guest, privileged…; for groups imported or unified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Subtype {
    Native,
    Guest,
    Privileged,
    Service,
    Builtin,
    Training,
    Test,
    Contractor,
    Customer,
    Imported,
    Unified,
}

impl Subtype {
    pub const ALL: [Subtype; 11] = [
        Self::Native,
        Self::Guest,
        Self::Privileged,
        Self::Service,
        Self::Builtin,
        Self::Training,
        Self::Test,
        Self::Contractor,
        Self::Customer,
        Self::Imported,
        Self::Unified,
    ];

    pub fn code(self) -> i16 {
        match self {
            Self::Native => 1,
            Self::Guest => 2,
            Self::Privileged => 3,
            Self::Service => 4,
            Self::Builtin => 5,
            Self::Training => 6,
            Self::Test => 7,
            Self::Contractor => 8,
            Self::Customer => 9,
            Self::Imported => 10,
            Self::Unified => 11,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Guest => "guest",
            Self::Privileged => "privileged",
            Self::Service => "service",
            Self::Builtin => "builtin",
            Self::Training => "training",
            Self::Test => "test",
            Self::Contractor => "contractor",
            Self::Customer => "customer",
            Self::Imported => "imported",
            Self::Unified => "unified",
        }
    }

    fn is_group_subtype(self) -> bool {
        matches!(self, Self::Imported | Self::Unified)
    }

    /// Whether a resource of type `ty` may carry this subtype: group subtypes for groups only.
    pub fn check_fits(self, ty: ResourceType) -> Result<(), InvalidInput> {
        if self.is_group_subtype() == (ty == ResourceType::Group) {
            return Ok(());
        }
        let allowed = if ty == ResourceType::Group {
            "imported or unified"
        } else {
            "native, guest, privileged, service, builtin, training, test, contractor or customer"
        };
        Err(InvalidInput::new(format!(
            "subtype \"{}\" does not fit type \"{}\": a {} takes {allowed}",
            self.name(),
            ty.name(),
            ty.name()
        )))
    }
}

/// One stored resource.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Resource {
    pub id: ResourceId,
    #[serde(rename = "type")]
    pub ty: ResourceType,
    pub subtype: Option<Subtype>,
    pub source_system: String,
    pub identifier: Option<String>,
    /// The source's immutable id (Entra object id, AD objectGUID, Workday worker id).
    pub external_id: Option<String>,
    pub displayname: Option<String>,
    pub description: Option<String>,
    pub notes: Option<String>,
    pub tags: Vec<String>,
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the account is inactive, when roster deactivated it: `hr-terminated`, `expired`, or
    /// the reason given to a deactivate action. Null when active (or deactivated by a source).
    pub deactivation_reason: Option<String>,
    /// The prime this resource hangs under: an account's cohort prime, a prime's parent.
    pub prime_id: Option<ResourceId>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// A request to create a resource. Validated by [`NewResource::validate`].
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    #[serde(rename = "type")]
    pub ty: ResourceType,
    #[serde(default)]
    pub subtype: Option<Subtype>,
    /// The directory the resource comes from: an Entra tenant id, an AD domain, a Workday tenant…
    pub source_system: String,
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "super::time::optional")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Longest accepted source system name, identifier or external id.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest accepted display name, description or note.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most tags on one resource.
pub const MAX_TAGS: usize = 256;

impl NewResource {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_key("source_system", &self.source_system)?;
        if let Some(subtype) = self.subtype {
            subtype.check_fits(self.ty)?;
        }
        check_optional_key("identifier", self.identifier.as_deref())?;
        check_optional_key("external_id", self.external_id.as_deref())?;
        check_optional_text("displayname", self.displayname.as_deref())?;
        check_optional_text("description", self.description.as_deref())?;
        check_optional_text("notes", self.notes.as_deref())?;
        check_tags(&self.tags)
    }
}

/// A partial update: absent fields are left alone, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Subtype>)]
    pub subtype: Option<Option<Subtype>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub identifier: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub displayname: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "super::time::clearable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

impl ResourcePatch {
    /// Applies the patch to `current`, checking every new value. Returns the new state and the
    /// names of the attributes whose value changed; an empty list means the patch is a no-op.
    pub fn apply(&self, current: &Resource) -> Result<(Resource, Vec<&'static str>), InvalidInput> {
        let mut next = current.clone();
        let mut changed = Vec::new();
        if let Some(subtype) = self.subtype {
            if let Some(s) = subtype {
                s.check_fits(current.ty)?;
            }
            set(&mut next.subtype, subtype, "subtype", &mut changed);
        }
        if let Some(v) = &self.identifier {
            check_optional_key("identifier", v.as_deref())?;
            set(&mut next.identifier, v.clone(), "identifier", &mut changed);
        }
        if let Some(v) = &self.external_id {
            check_optional_key("external_id", v.as_deref())?;
            set(
                &mut next.external_id,
                v.clone(),
                "external_id",
                &mut changed,
            );
        }
        if let Some(v) = &self.displayname {
            check_optional_text("displayname", v.as_deref())?;
            set(
                &mut next.displayname,
                v.clone(),
                "displayname",
                &mut changed,
            );
        }
        if let Some(v) = &self.description {
            check_optional_text("description", v.as_deref())?;
            set(
                &mut next.description,
                v.clone(),
                "description",
                &mut changed,
            );
        }
        if let Some(v) = &self.notes {
            check_optional_text("notes", v.as_deref())?;
            set(&mut next.notes, v.clone(), "notes", &mut changed);
        }
        if let Some(v) = &self.tags {
            check_tags(v)?;
            set(&mut next.tags, v.clone(), "tags", &mut changed);
        }
        if let Some(v) = self.active {
            set(&mut next.active, v, "active", &mut changed);
        }
        if let Some(v) = self.expires_at {
            set(&mut next.expires_at, v, "expires_at", &mut changed);
        }
        Ok((next, changed))
    }
}

fn set<T: PartialEq>(slot: &mut T, value: T, name: &'static str, changed: &mut Vec<&'static str>) {
    if *slot != value {
        *slot = value;
        changed.push(name);
    }
}

pub(crate) fn check_key(field: &str, value: &str) -> Result<(), InvalidInput> {
    if value.trim().is_empty() {
        return Err(InvalidInput::new(format!("{field} must not be empty")));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(InvalidInput::new(format!(
            "{field} is {} bytes long; the limit is {MAX_KEY_LEN}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::new(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_optional_key(field: &str, value: Option<&str>) -> Result<(), InvalidInput> {
    value.map_or(Ok(()), |v| check_key(field, v))
}

pub(crate) fn check_optional_text(field: &str, value: Option<&str>) -> Result<(), InvalidInput> {
    match value {
        Some(v) if v.len() > MAX_TEXT_LEN => Err(InvalidInput::new(format!(
            "{field} is {} bytes long; the limit is {MAX_TEXT_LEN}",
            v.len()
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn check_tags(tags: &[String]) -> Result<(), InvalidInput> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidInput::new(format!(
            "{} tags given; the limit is {MAX_TAGS}",
            tags.len()
        )));
    }
    tags.iter().try_for_each(|t| check_key("a tag", t))
}

/// Serde support for `Option<Option<T>>`: absent → `None`, `null` → `Some(None)`.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// Filters for listing resources; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub ty: Option<ResourceType>,
    pub subtype: Option<Subtype>,
    pub source_system: Option<String>,
    pub identifier: Option<String>,
    pub external_id: Option<String>,
    pub tag: Option<String>,
    pub active: Option<bool>,
    /// Only resources whose `expires_at` is before this time.
    pub expires_before: Option<DateTime<Utc>>,
    pub include_deleted: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Resource {
        let now = Utc::now();
        Resource {
            id: ResourceId::generate(),
            ty: ResourceType::User,
            subtype: Some(Subtype::Native),
            source_system: "home".into(),
            identifier: Some("sean@home.com".into()),
            external_id: None,
            displayname: Some("Sean".into()),
            description: None,
            notes: None,
            tags: vec![],
            active: true,
            expires_at: None,
            deactivation_reason: None,
            prime_id: None,
            deleted: false,
            deleted_at: None,
            created: now,
            modified: now,
        }
    }

    #[test]
    fn patch_with_same_values_changes_nothing() {
        let current = sample();
        let patch = ResourcePatch {
            displayname: Some(Some("Sean".into())),
            active: Some(true),
            ..Default::default()
        };
        let (next, changed) = patch.apply(&current).expect("valid patch");
        assert!(changed.is_empty());
        assert_eq!(next, current);
    }

    #[test]
    fn patch_null_clears_and_reports_the_attribute() {
        let current = sample();
        let patch: ResourcePatch = serde_json::from_str(r#"{"displayname": null}"#).unwrap();
        let (next, changed) = patch.apply(&current).expect("valid patch");
        assert_eq!(changed, vec!["displayname"]);
        assert_eq!(next.displayname, None);
    }

    #[test]
    fn group_subtypes_only_fit_groups() {
        assert!(Subtype::Unified.check_fits(ResourceType::Group).is_ok());
        assert!(Subtype::Unified.check_fits(ResourceType::User).is_err());
        assert!(Subtype::Guest.check_fits(ResourceType::Group).is_err());
    }

    #[test]
    fn codes_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(t.code()), Some(t));
        }
        for s in Subtype::ALL {
            assert_eq!(Subtype::from_code(s.code()), Some(s));
        }
    }
}
