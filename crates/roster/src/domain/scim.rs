//! SCIM filters (RFC 7644 §3.4.2.2) as a tree: what the HTTP layer parses and the store turns
//! into SQL. Attribute names keep the case they were written in; SCIM compares them without case.

use super::InvalidInput;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr op value`.
    Compare(AttrPath, CompareOp, CompValue),
    /// `attr pr`.
    Present(AttrPath),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`, whose paths name
    /// sub-attributes of that value. `emails[type eq "work"].value eq "x"` is read as
    /// `emails[type eq "work" and value eq "x"]`.
    Any(AttrPath, Box<Filter>),
}

impl Filter {
    /// How many comparisons (`attr op value`, `attr pr`) the filter holds.
    pub fn terms(&self) -> usize {
        match self {
            Self::And(a, b) | Self::Or(a, b) => a.terms() + b.terms(),
            Self::Not(f) | Self::Any(_, f) => f.terms(),
            Self::Compare(..) | Self::Present(_) => 1,
        }
    }
}

/// `[URI ":"] name ["." sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URI, when written (`urn:ietf:params:scim:schemas:core:2.0:User`).
    pub schema: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    #[cfg(test)]
    pub fn new(name: &str, sub: Option<&str>) -> Self {
        Self {
            schema: None,
            name: name.to_owned(),
            sub: sub.map(str::to_owned),
        }
    }

    /// Whether this path names `name` (and `sub`), ignoring case as SCIM does.
    pub fn is(&self, name: &str, sub: Option<&str>) -> bool {
        self.name.eq_ignore_ascii_case(name)
            && match (&self.sub, sub) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }
}

impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    /// Whether the operator is one of the substring operators, which take strings only.
    pub fn is_substring(self) -> bool {
        matches!(self, Self::Co | Self::Sw | Self::Ew)
    }
}

/// The value a comparison compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl std::fmt::Display for CompValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Num(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Null => f.write_str("null"),
        }
    }
}

/// The two SCIM resource types roster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    User,
    Group,
}

impl ScimType {
    /// The roster resource type this SCIM resource type is.
    pub fn resource_type(self) -> super::resource::ResourceType {
        match self {
            Self::User => super::resource::ResourceType::User,
            Self::Group => super::resource::ResourceType::Group,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    pub fn core_schema(self) -> &'static str {
        match self {
            Self::User => USER_SCHEMA,
            Self::Group => GROUP_SCHEMA,
        }
    }
}

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Where a SCIM attribute is kept: in one of roster's columns, or in the resource's SCIM
/// document (every attribute without a column, extensions included, as it was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Id,
    /// Compared exactly (`caseExact`).
    ExternalId,
    /// A user's `userName`: roster's identifier, compared without case.
    UserName,
    DisplayName,
    Active,
    Created,
    LastModified,
    /// A single value in the document, by its keys; compared without case unless `exact`.
    Doc(Vec<String>),
    /// One element of a multi-valued attribute inside [`Cond::Any`]: a sub-attribute, or the
    /// element itself when it is a plain value.
    Element(Option<String>),
    /// A member's id inside `Cond::Any` over a group's members.
    MemberId,
    /// A member's display name inside `Cond::Any` over a group's members.
    MemberDisplay,
    /// A group's id inside `Cond::Any` over a user's groups.
    GroupId,
}

/// A filter resolved against roster's storage: what the store turns into SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Compare(Attr, CompareOp, CompValue),
    Present(Attr),
    /// Some element of a multi-valued attribute matches.
    Any(List, Box<Cond>),
    /// What can never match (an attribute roster does not keep for this type).
    Never,
}

impl Cond {
    /// Whether the condition only looks rows up by an indexed key (`id`, `externalId`,
    /// `userName` or `displayName` equal to a value, joined by `and`/`or`): the lookup an
    /// identity provider makes before every push, which costs no scan.
    pub fn is_lookup(&self) -> bool {
        match self {
            Self::And(a, b) | Self::Or(a, b) => a.is_lookup() && b.is_lookup(),
            Self::Compare(attr, CompareOp::Eq, _) => matches!(
                attr,
                Attr::Id | Attr::ExternalId | Attr::UserName | Attr::DisplayName
            ),
            Self::Never => true,
            _ => false,
        }
    }
}

/// A multi-valued attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum List {
    /// An array in the SCIM document, by its keys.
    Doc(Vec<String>),
    /// A group's active members.
    Members,
    /// The groups a user is an active member of (`groups`, from the membership table).
    Groups,
}

/// The multi-valued attributes of the core User schema.
const USER_LISTS: [&str; 9] = [
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
    "groups",
];

/// Single-valued attributes of the core User schema kept in the document, as RFC 7643 spells them.
const USER_SINGLES: [&str; 9] = [
    "name",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "password",
];

/// The name as RFC 7643 spells it, when it is one of the core attributes; else as written.
pub fn canonical(name: &str) -> String {
    USER_LISTS
        .iter()
        .chain(USER_SINGLES.iter())
        .chain(
            [
                "id",
                "externalId",
                "userName",
                "displayName",
                "active",
                "meta",
                "members",
                "schemas",
                "givenName",
                "familyName",
                "middleName",
                "formatted",
                "honorificPrefix",
                "honorificSuffix",
                "value",
                "display",
                "type",
                "primary",
                "employeeNumber",
                "costCenter",
                "organization",
                "division",
                "department",
                "manager",
                "streetAddress",
                "locality",
                "region",
                "postalCode",
                "country",
            ]
            .iter(),
        )
        .find(|known| known.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// Resolves a parsed filter for `ty`; an attribute path that cannot be used is an error.
pub fn resolve(ty: ScimType, filter: &Filter) -> Result<Cond, InvalidInput> {
    Ok(match filter {
        Filter::And(a, b) => Cond::And(Box::new(resolve(ty, a)?), Box::new(resolve(ty, b)?)),
        Filter::Or(a, b) => Cond::Or(Box::new(resolve(ty, a)?), Box::new(resolve(ty, b)?)),
        Filter::Not(a) => Cond::Not(Box::new(resolve(ty, a)?)),
        Filter::Present(path) => match place(ty, path)? {
            Place::Single(attr) => Cond::Present(attr),
            Place::List(List::Members, None) => {
                Cond::Any(List::Members, Box::new(Cond::Present(Attr::MemberId)))
            }
            Place::List(List::Groups, None) => {
                Cond::Any(List::Groups, Box::new(Cond::Present(Attr::GroupId)))
            }
            Place::List(list, None) => {
                Cond::Any(list, Box::new(Cond::Present(Attr::Element(None))))
            }
            Place::List(list, Some(sub)) => Cond::Any(list, Box::new(Cond::Present(sub))),
            Place::Nowhere => Cond::Never,
        },
        Filter::Compare(path, op, value) => match place(ty, path)? {
            Place::Single(attr) => compare(attr, *op, value)?,
            Place::List(list, sub) => {
                let sub = match sub {
                    Some(sub) => sub,
                    None => element(&list, None)?,
                };
                Cond::Any(list, Box::new(compare(sub, *op, value)?))
            }
            Place::Nowhere => Cond::Never,
        },
        Filter::Any(path, inner) => match place(ty, path)? {
            Place::List(list, None) => {
                let cond = resolve_element(&list, inner)?;
                Cond::Any(list, Box::new(cond))
            }
            Place::Nowhere => Cond::Never,
            _ => {
                return Err(InvalidInput::new(format!(
                "{path}[…]: a value filter needs a multi-valued attribute, and {path} is not one"
            )))
            }
        },
    })
}

fn resolve_element(list: &List, filter: &Filter) -> Result<Cond, InvalidInput> {
    Ok(match filter {
        Filter::And(a, b) => Cond::And(
            Box::new(resolve_element(list, a)?),
            Box::new(resolve_element(list, b)?),
        ),
        Filter::Or(a, b) => Cond::Or(
            Box::new(resolve_element(list, a)?),
            Box::new(resolve_element(list, b)?),
        ),
        Filter::Not(a) => Cond::Not(Box::new(resolve_element(list, a)?)),
        Filter::Present(path) => Cond::Present(element_attr(list, path)?),
        Filter::Compare(path, op, value) => compare(element_attr(list, path)?, *op, value)?,
        Filter::Any(path, _) => {
            return Err(InvalidInput::new(format!(
                "{path}[…] inside a value filter: value filters do not nest"
            )))
        }
    })
}

fn element_attr(list: &List, path: &AttrPath) -> Result<Attr, InvalidInput> {
    if path.schema.is_some() || path.sub.is_some() {
        return Err(InvalidInput::new(format!(
            "{path} inside a value filter: name a sub-attribute of the value, such as type or value"
        )));
    }
    element(list, Some(&path.name))
}

fn element(list: &List, sub: Option<&str>) -> Result<Attr, InvalidInput> {
    let sub = sub.unwrap_or("value");
    match list {
        List::Members if sub.eq_ignore_ascii_case("value") => Ok(Attr::MemberId),
        List::Members if sub.eq_ignore_ascii_case("display") => Ok(Attr::MemberDisplay),
        List::Members => Err(InvalidInput::new(format!(
            "members.{sub} cannot be filtered on: a member filter takes value or display"
        ))),
        List::Groups if sub.eq_ignore_ascii_case("value") => Ok(Attr::GroupId),
        List::Groups => Err(InvalidInput::new(format!(
            "groups.{sub} cannot be filtered on: a groups filter takes value"
        ))),
        List::Doc(_) => Ok(Attr::Element(Some(canonical(sub)))),
    }
}

enum Place {
    Single(Attr),
    List(List, Option<Attr>),
    Nowhere,
}

fn place(ty: ScimType, path: &AttrPath) -> Result<Place, InvalidInput> {
    let name = canonical(&path.name);
    let sub = path.sub.as_deref().map(canonical);
    let core = path
        .schema
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case(ty.core_schema()));
    if !core {
        let schema = path.schema.clone().unwrap_or_default();
        if ty == ScimType::Group && schema.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
            return Ok(Place::Nowhere);
        }
        let schema = if schema.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
            ENTERPRISE_SCHEMA.to_owned()
        } else {
            schema
        };
        let mut keys = vec![schema, name];
        keys.extend(sub);
        return Ok(Place::Single(Attr::Doc(keys)));
    }
    let column = match (name.as_str(), sub.as_deref()) {
        ("id", None) => Some(Attr::Id),
        ("externalId", None) => Some(Attr::ExternalId),
        ("displayName", None) => Some(Attr::DisplayName),
        ("meta", Some("created")) => Some(Attr::Created),
        ("meta", Some("lastModified")) => Some(Attr::LastModified),
        ("userName", None) if ty == ScimType::User => Some(Attr::UserName),
        ("active", None) if ty == ScimType::User => Some(Attr::Active),
        _ => None,
    };
    if let Some(attr) = column {
        return Ok(Place::Single(attr));
    }
    if name == "meta" || name == "schemas" || name == "id" {
        return Err(InvalidInput::new(format!("{path} cannot be filtered on")));
    }
    match ty {
        ScimType::Group if name == "members" => Ok(Place::List(
            List::Members,
            sub.map(|s| element(&List::Members, Some(&s))).transpose()?,
        )),
        ScimType::Group => Ok(Place::Nowhere),
        ScimType::User if USER_LISTS.contains(&name.as_str()) && name != "groups" => {
            let list = List::Doc(vec![name]);
            let sub = sub.map(|s| element(&list, Some(&s))).transpose()?;
            Ok(Place::List(list, sub))
        }
        ScimType::User if name == "groups" => Ok(Place::List(
            List::Groups,
            sub.map(|s| element(&List::Groups, Some(&s))).transpose()?,
        )),
        ScimType::User => {
            let mut keys = vec![name];
            keys.extend(sub);
            Ok(Place::Single(Attr::Doc(keys)))
        }
    }
}

/// The attribute a list is sorted by: a single-valued one.
pub fn sort_attr(ty: ScimType, path: &AttrPath) -> Result<Attr, InvalidInput> {
    match place(ty, path)? {
        Place::Single(attr) => Ok(attr),
        _ => Err(InvalidInput::new(format!(
            "sortBy {path}: only a single-valued attribute that {} has can order a list",
            ty.name()
        ))),
    }
}

/// A comparison of `attr`, checking that the value fits the attribute's type.
fn compare(attr: Attr, op: CompareOp, value: &CompValue) -> Result<Cond, InvalidInput> {
    let fits = match (&attr, value) {
        (Attr::Active, CompValue::Bool(_)) => true,
        (Attr::Active, CompValue::Str(s)) => {
            return match s.to_ascii_lowercase().as_str() {
                "true" => compare(attr, op, &CompValue::Bool(true)),
                "false" => compare(attr, op, &CompValue::Bool(false)),
                _ => Err(InvalidInput::new(format!(
                    "active {} {value}: active is true or false",
                    op.name()
                ))),
            }
        }
        (Attr::Active, _) => false,
        (Attr::Id | Attr::MemberId | Attr::GroupId, CompValue::Str(_)) => {
            matches!(op, CompareOp::Eq | CompareOp::Ne)
        }
        (Attr::Id | Attr::MemberId | Attr::GroupId, _) => false,
        (Attr::Created | Attr::LastModified, CompValue::Str(s)) => {
            super::time::parse(s).map_err(InvalidInput)?;
            true
        }
        (Attr::Created | Attr::LastModified, CompValue::Null) => {
            op == CompareOp::Eq || op == CompareOp::Ne
        }
        (Attr::Created | Attr::LastModified, _) => false,
        _ => true,
    };
    if !fits {
        return Err(InvalidInput::new(format!(
            "\"{}\" with {value} does not fit this attribute",
            op.name()
        )));
    }
    Ok(Cond::Compare(attr, op, value.clone()))
}

/// A resource as SCIM serves it: roster's record and its SCIM document.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimRecord {
    pub resource: super::resource::Resource,
    /// The attributes kept in no column, by their SCIM names.
    pub doc: serde_json::Map<String, serde_json::Value>,
}

/// A user or group as a SCIM write gives it: the attributes roster keeps in columns, and the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimWrite {
    pub ty: ScimType,
    pub source_system: String,
    /// `userName` of a user; none for a group.
    pub identifier: Option<String>,
    pub external_id: Option<String>,
    pub displayname: Option<String>,
    pub active: Option<bool>,
    pub doc: serde_json::Map<String, serde_json::Value>,
}

impl ScimWrite {
    /// The rules every resource's keys and names follow, as a REST create checks them.
    pub fn check_keys(&self) -> Result<(), super::InvalidInput> {
        use super::resource::{check_optional_key, check_optional_text};
        check_optional_key("the source system", Some(&self.source_system))?;
        check_optional_key("userName", self.identifier.as_deref())?;
        check_optional_key("externalId", self.external_id.as_deref())?;
        check_optional_text("displayName", self.displayname.as_deref())?;
        let size = serde_json::to_vec(&self.doc).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_DOCUMENT_BYTES {
            return Err(super::InvalidInput::new(format!(
                "the resource's other attributes would take {size} bytes; the limit is \
                 {MAX_DOCUMENT_BYTES}"
            )));
        }
        Ok(())
    }
}

/// Largest a SCIM resource's stored document (its attributes beyond roster's own fields) may
/// grow, by PATCHes as by a POST or PUT: every change of it stores the old and the new one.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Members to add to a group and members to remove from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberEdit {
    pub add: Vec<super::ResourceId>,
    pub remove: Vec<super::ResourceId>,
}

impl MemberEdit {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// A list request: the filter, the order and the page (a 0-based offset, or a cursor's
/// position).
#[derive(Debug, Clone, PartialEq)]
pub struct ScimQuery {
    pub cond: Option<Cond>,
    pub sort: Option<Attr>,
    pub descending: bool,
    pub offset: i64,
    pub count: i64,
    /// Cursor paging: the page starts just after this row of the order.
    pub after: Option<After>,
    /// Cursor paging: the answer carries its last row's sort key, for the next cursor.
    pub keyed: bool,
}

/// A row's place in a list's order: its sort key as text (`None` when it has no value) and its
/// id. A cursor carries the last row of its page, so inserts and deletes between pages shift
/// nothing: the next page starts after that row wherever it now stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct After {
    pub key: Option<String>,
    pub id: uuid::Uuid,
}

/// A page of a list: how many resources match, the page, whether more follow, and the sort key of
/// its last row (when the list is sorted), for the cursor of the next page.
#[derive(Debug, Clone)]
pub struct ScimPage {
    pub total: i64,
    pub records: Vec<ScimRecord>,
    /// Whether rows follow the page.
    pub more: bool,
    pub last_key: Option<String>,
}
