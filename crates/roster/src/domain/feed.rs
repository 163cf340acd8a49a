//! The change feed: cursors, filters and the changes a consumer reads.
//!
//! A cursor is a position in the change log, `(xid, seq)`: every change with a smaller pair has
//! been read. On PostgreSQL `xid` is the writing transaction's id and readers only read changes of
//! transactions older than every transaction still running, so a transaction that took its
//! sequence numbers early and commits late is never skipped (see `docs/changes.md`). On SQLite,
//! which has one writer, `xid` is 0 and `seq` alone orders the log.
//!
//! An export's cursor also carries the snapshot the export was read in: changes of transactions
//! that snapshot already saw are in the export, so following from it skips them.

use super::change::ChangeKind;
use super::InvalidInput;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A position in the change log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub xid: u64,
    pub seq: i64,
    /// PostgreSQL only: the snapshot an export was read in (`xmin:xmax:xip,…`), kept until the
    /// cursor passes its `xmax`.
    pub snapshot: Option<String>,
}

const VERSION: &str = "c1";

impl Cursor {
    /// The start of the log.
    pub fn start() -> Self {
        Self::default()
    }

    /// Just past every change of transactions before `xid` (PostgreSQL's fence).
    pub fn before_xid(xid: u64) -> Self {
        Self {
            xid: xid.saturating_sub(1),
            seq: i64::MAX,
            snapshot: None,
        }
    }

    /// The position after the change with this sequence number (SQLite).
    pub fn at_seq(seq: i64) -> Self {
        Self {
            xid: 0,
            seq,
            snapshot: None,
        }
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        let plain = match &self.snapshot {
            Some(s) => format!("{VERSION}.{}.{}.{s}", self.xid, self.seq),
            None => format!("{VERSION}.{}.{}", self.xid, self.seq),
        };
        URL_SAFE_NO_PAD.encode(plain)
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
        let mut parts = plain.splitn(4, '.');
        if parts.next() != Some(VERSION) {
            return Err(bad());
        }
        let xid = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let snapshot = parts.next().map(str::to_owned);
        if snapshot.as_deref().is_some_and(|s| !valid_snapshot(s)) {
            return Err(bad());
        }
        Ok(Self { xid, seq, snapshot })
    }

    /// The later of two positions (a snapshot is kept only while it still matters).
    pub fn max(self, other: Self) -> Self {
        let later = if (other.xid, other.seq) > (self.xid, self.seq) {
            Cursor {
                snapshot: other.snapshot.or(self.snapshot),
                ..other
            }
        } else {
            Cursor {
                snapshot: self.snapshot.or(other.snapshot),
                ..self
            }
        };
        later.settled()
    }

    /// Whether this position is past every change that was visible at `head` (a head or export
    /// cursor): a consumer at this position has caught up with it.
    pub fn covers(&self, head: &Cursor) -> bool {
        let horizon = match head.snapshot.as_deref().and_then(snapshot_xmax) {
            Some(xmax) => (xmax.saturating_sub(1), i64::MAX),
            None => (head.xid, head.seq),
        };
        (self.xid, self.seq) >= horizon
    }

    /// Drops the snapshot once the cursor is past every transaction it could have seen.
    pub fn settled(mut self) -> Self {
        if let Some(xmax) = self.snapshot.as_deref().and_then(snapshot_xmax) {
            if self.xid >= xmax {
                self.snapshot = None;
            }
        }
        self
    }
}

/// `xmin:xmax:xip,…` as PostgreSQL writes a snapshot: `xmin ≤ xip < xmax`, ascending.
fn valid_snapshot(s: &str) -> bool {
    let mut parts = s.split(':');
    let (Some(xmin), Some(xmax), Some(xip), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(xmin), Ok(xmax)) = (xmin.parse::<u64>(), xmax.parse::<u64>()) else {
        return false;
    };
    let running: Option<Vec<u64>> = if xip.is_empty() {
        Some(Vec::new())
    } else {
        xip.split(',').map(|x| x.parse().ok()).collect()
    };
    let Some(running) = running else {
        return false;
    };
    xmin >= 1
        && xmin <= xmax
        && running.iter().all(|x| (xmin..xmax).contains(x))
        && running.windows(2).all(|w| w[0] < w[1])
}

fn snapshot_xmax(s: &str) -> Option<u64> {
    s.split(':').nth(1)?.parse().ok()
}

/// Which changes a consumer wants.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub source_system: Option<String>,
    /// Changes of this group's memberships and of the group itself.
    pub group_id: Option<super::ResourceId>,
    /// Empty: every kind.
    pub kinds: Vec<ChangeKind>,
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
    fn cursors_round_trip_and_refuse_garbage() {
        let plain = Cursor {
            xid: 812,
            seq: 9,
            snapshot: None,
        };
        assert_eq!(Cursor::decode(&plain.encode()), Ok(plain));
        let exported = Cursor {
            xid: 799,
            seq: i64::MAX,
            snapshot: Some("800:805:801,803".to_owned()),
        };
        assert_eq!(Cursor::decode(&exported.encode()), Ok(exported));
        for bad in [
            "",
            "12",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("c1.1.2.x:y:z"),
            &URL_SAFE_NO_PAD.encode("c1.1.2.5:3:"),
            &URL_SAFE_NO_PAD.encode("c1.1.2.5:9:12"),
            &URL_SAFE_NO_PAD.encode("c1.1.2.5:9:7,6"),
            &URL_SAFE_NO_PAD.encode("c1.1.2.5:99999999999999999999:"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_position_covers_a_head_once_past_its_snapshot() {
        let head = Cursor {
            xid: 799,
            seq: i64::MAX,
            snapshot: Some("800:805:801".to_owned()),
        };
        assert!(
            !head.covers(&head),
            "transactions 800 to 804 may still show"
        );
        assert!(!Cursor::before_xid(804).covers(&head));
        assert!(Cursor::before_xid(805).covers(&head));
        assert!(Cursor::at_seq(9).covers(&Cursor::at_seq(9)));
        assert!(!Cursor::at_seq(8).covers(&Cursor::at_seq(9)));
    }

    #[test]
    fn a_cursor_forgets_its_snapshot_past_xmax() {
        let exported = Cursor {
            xid: 799,
            seq: i64::MAX,
            snapshot: Some("800:805:801".to_owned()),
        };
        let inside = exported.clone().max(Cursor {
            xid: 802,
            seq: 4,
            snapshot: None,
        });
        assert_eq!(inside.snapshot.as_deref(), Some("800:805:801"));
        let past = inside.max(Cursor::before_xid(900));
        assert_eq!(past.snapshot, None);
        assert_eq!((past.xid, past.seq), (899, i64::MAX));
    }
}
