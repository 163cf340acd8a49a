//! The change feed: cursors, filters and the changes a consumer reads.
//!
//! A cursor is a position in the change log, `(tx, seq)`: every change with a smaller pair has
//! been read. `tx` is the commit position of the transaction that wrote the change: on PostgreSQL
//! every writing transaction takes the next position under a short lock just before it commits,
//! so positions are handed out in commit order and a reader that sees a position also sees every
//! smaller one (see `docs/changes.md`). On SQLite, which has one writer, `tx` is 0 and `seq` alone
//! orders the log.

use super::change::ChangeKind;
use super::InvalidInput;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A position in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// The writing transaction's commit position (PostgreSQL; 0 on SQLite).
    pub tx: u64,
    pub seq: i64,
}

const VERSION: &str = "c2";

impl Cursor {
    /// The start of the log.
    pub fn start() -> Self {
        Self::default()
    }

    /// Just past every change of the transactions committed up to position `tx` (PostgreSQL).
    pub fn after_tx(tx: u64) -> Self {
        Self { tx, seq: i64::MAX }
    }

    /// The position after the change with this sequence number (SQLite).
    pub fn at_seq(seq: i64) -> Self {
        Self { tx: 0, seq }
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}.{}.{}", self.tx, self.seq))
    }

    pub fn decode(text: &str) -> Result<Self, InvalidInput> {
        let bad = || {
            InvalidInput::new(format!(
                "{text:?} is not a change-feed cursor; use a `next` value of GET /api/v1/changes, \
                 the cursor at the end of an export, or GET /api/v1/changes/head"
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let plain = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = plain.split('.');
        if parts.next() != Some(VERSION) {
            return Err(bad());
        }
        let tx = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { tx, seq })
    }

    /// Whether this position is past every change that was visible at `head` (a head or export
    /// cursor): a consumer at this position has caught up with it.
    pub fn covers(&self, head: &Cursor) -> bool {
        self >= head
    }
}

/// Which changes a consumer wants.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub source_system: Option<String>,
    /// Changes of this group's memberships and of the group itself.
    pub group_id: Option<super::ResourceId>,
    /// Empty: every kind.
    pub kinds: Vec<ChangeKind>,
    /// Membership changes only of members of this source system (a reader bound to one source,
    /// or a SCIM base, sees no member of another); changes of no membership pass.
    pub member_source: Option<String>,
}

impl ChangeFilter {
    /// Parses `kind=a,b` (names like `membership.removed`).
    pub fn parse_kinds(text: Option<&str>) -> Result<Vec<ChangeKind>, InvalidInput> {
        let Some(text) = text else {
            return Ok(Vec::new());
        };
        text.split(',')
            .map(|name| {
                ChangeKind::from_name(name.trim()).ok_or_else(|| {
                    InvalidInput::new(format!(
                        "{name:?} is not a change kind; the kinds are {}",
                        ChangeKind::ALL.map(ChangeKind::name).join(", ")
                    ))
                })
            })
            .collect()
    }
}

/// One recorded change, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChange {
    pub cursor: Cursor,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: ChangeKind,
    pub resource_id: Option<super::ResourceId>,
    pub group_id: Option<super::ResourceId>,
    pub member_id: Option<super::ResourceId>,
    pub source_system: Option<String>,
    pub operation_id: Option<i64>,
    pub token_name: Option<String>,
    pub attrs: Option<serde_json::Value>,
}

/// The key of the marker that stands in for a change's attribute values when they cannot be
/// rendered: `{"_unrenderable": "<why>"}`.
pub const UNRENDERABLE: &str = "_unrenderable";

/// A page of the feed: the changes after a cursor and where to continue.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub items: Vec<StoredChange>,
    pub next: Cursor,
}

/// How much of each change a consumer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Ids, kind and the names of the changed attributes.
    #[default]
    Notice,
    /// The whole record for creates, old and new values for updates, ids and metadata for
    /// removals.
    Full,
    /// Each change as the claim set of a SCIM security event (RFC 9967).
    Scim,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Notice => "notice",
            Self::Full => "full",
            Self::Scim => "scim",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Notice, Self::Full, Self::Scim]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// What an export covers.
#[derive(Debug, Clone)]
pub enum ExportScope {
    /// A source system's resources and the active memberships of its groups.
    Source(String),
    /// One group and its active memberships.
    Group(super::ResourceId),
}

/// A change as the feed serves it (`format=notice` or `full`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangeItem {
    /// Pass as `after` to continue after this change.
    pub cursor: String,
    /// `resource.created`, `membership.removed`, …
    #[schema(value_type = String)]
    pub kind: ChangeKind,
    #[serde(serialize_with = "serialize_at")]
    pub at: DateTime<Utc>,
    pub source_system: Option<String>,
    pub operation_id: Option<i64>,
    /// The token that made the change.
    pub token_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<super::ResourceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<super::ResourceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<super::ResourceId>,
    /// The names of the attributes an update changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    /// `full`: the old and new value of each changed attribute (updates, links).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub changes: Option<serde_json::Value>,
    /// `full`: the record as it stands now (creates and restores; memberships for additions).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub record: Option<serde_json::Value>,
}

/// Writes `at` as chrono's own `Serialize` does (RFC 3339, `Z`, as many digits of the fraction as
/// it needs), remembering the last instant this thread wrote: the changes of a page mostly share
/// one instant, since an operation stamps all of its changes with one, and formatting it through
/// the serializer's escaping writer, a character at a time, took half of the time spent writing
/// a page.
fn serialize_at<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    thread_local! {
        static LAST: std::cell::RefCell<(DateTime<Utc>, String)> =
            const { std::cell::RefCell::new((DateTime::<Utc>::MIN_UTC, String::new())) };
    }
    LAST.with_borrow_mut(|(instant, text)| {
        if instant != at || text.is_empty() {
            *instant = *at;
            *text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        }
        serializer.serialize_str(text)
    })
}

impl ChangeItem {
    /// The notice form of a stored change.
    pub fn notice(change: &StoredChange) -> Self {
        let attributes = change
            .attrs
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Self {
            cursor: change.cursor.encode(),
            kind: change.kind,
            at: change.at,
            source_system: change.source_system.clone(),
            operation_id: change.operation_id,
            token_name: change.token_name.clone(),
            resource_id: change.resource_id,
            group_id: change.group_id,
            member_id: change.member_id,
            attributes,
            changes: None,
            record: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_as_chrono_writes_them() {
        let base = DateTime::parse_from_rfc3339("2026-12-07T07:01:07Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("a valid instant");
        for nanos in [0, 175_000_000, 175_271_000, 5_000, 999_999_999] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            let mut ours = serde_json::Serializer::new(Vec::new());
            serialize_at(&at, &mut ours).expect("written");
            assert_eq!(
                String::from_utf8(ours.into_inner()).expect("utf-8"),
                serde_json::to_string(&at).expect("written"),
                "{nanos} ns"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let plain = Cursor { tx: 812, seq: 9 };
        assert_eq!(Cursor::decode(&plain.encode()), Ok(plain));
        let after = Cursor::after_tx(7);
        assert_eq!(Cursor::decode(&after.encode()), Ok(after));
        for bad in [
            "",
            "12",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("c2.1.2.3"),
            &URL_SAFE_NO_PAD.encode("c2.-1.2"),
            &URL_SAFE_NO_PAD.encode("c1.1.2"),
            &URL_SAFE_NO_PAD.encode("c2.99999999999999999999.2"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_order_by_transaction_then_change() {
        assert!(Cursor { tx: 3, seq: 900 } < Cursor { tx: 4, seq: 1 });
        assert!(Cursor { tx: 4, seq: 1 } < Cursor::after_tx(4));
        assert!(Cursor::after_tx(4).covers(&Cursor::after_tx(4)));
        assert!(!Cursor { tx: 4, seq: 5 }.covers(&Cursor::after_tx(4)));
        assert!(Cursor::at_seq(9).covers(&Cursor::at_seq(9)));
        assert!(!Cursor::at_seq(8).covers(&Cursor::at_seq(9)));
    }
}
