//! Keyset pagination: stable order, opaque cursors, no duplicates or gaps between pages.

use super::feed::Cursor;
use super::InvalidInput;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Serialize;
use std::str::FromStr;
use utoipa::ToSchema;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Which list a cursor belongs to, so that a cursor of one list is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Resources,
    Members,
    Groups,
    Operations,
    Tokens,
    Audit,
    Preview,
    Rejections,
    History,
    Subscriptions,
    Paths,
    Cycles,
}

impl ListKind {
    fn tag(self) -> &'static str {
        match self {
            Self::Resources => "r",
            Self::Members => "m",
            Self::Groups => "g",
            Self::Operations => "o",
            Self::Tokens => "t",
            Self::Audit => "a",
            Self::Preview => "p",
            Self::Rejections => "j",
            Self::History => "h",
            Self::Subscriptions => "s",
            Self::Paths => "w",
            Self::Cycles => "y",
        }
    }
}

/// A page request: continue after `after` (exclusive), at most `limit` items.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<K> {
    pub after: Option<K>,
    pub limit: u32,
}

impl<K: FromStr> PageRequest<K> {
    /// Builds a request from the query parameters `limit` and `cursor` (an empty cursor is the
    /// first page).
    pub fn parse(
        kind: ListKind,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Self, InvalidInput> {
        let limit = match limit.unwrap_or(DEFAULT_LIMIT) {
            0 => return Err(InvalidInput::new("limit must be at least 1")),
            n if n > MAX_LIMIT => {
                return Err(InvalidInput::new(format!(
                    "limit {n} is too large; the maximum is {MAX_LIMIT}"
                )))
            }
            n => n,
        };
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(|c| decode(kind, c))
            .transpose()?;
        Ok(Self { after, limit })
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// The rows of a page of a list (one more than the page, see [`PageRequest::fetch`]) and, for a
/// first page, the head of the change feed as of their snapshot or before it: following the
/// feed from it misses no change the rows do not show.
pub struct Listing<T> {
    pub rows: Vec<T>,
    pub as_of: Option<Cursor>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next: Option<String>,
    /// Lists of resources and memberships, first page: the change-feed cursor at or before the
    /// snapshot the list was read from. Following the feed from it after paging converges to the
    /// server's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

impl<T> Page<T> {
    /// Cuts `rows` (fetched with [`PageRequest::fetch`]) to the page and makes the next cursor.
    pub fn from_rows<K: ToString>(
        mut rows: Vec<T>,
        request_limit: u32,
        kind: ListKind,
        key: impl Fn(&T) -> K,
    ) -> Self {
        let limit = request_limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode(kind, &key(last).to_string()))
        } else {
            None
        };
        Self {
            items: rows,
            next,
            as_of: None,
        }
    }

    /// The page after `request`'s key of `all`, a whole list already in key order (computed in
    /// memory rather than read a page at a time).
    pub fn of_sorted<K: PartialOrd + ToString>(
        all: Vec<T>,
        request: &PageRequest<K>,
        kind: ListKind,
        key: impl Fn(&T) -> K,
    ) -> Self {
        let rows = all
            .into_iter()
            .filter(|row| request.after.as_ref().is_none_or(|after| key(row) > *after))
            .take(request.limit as usize + 1)
            .collect();
        Self::from_rows(rows, request.limit, kind, key)
    }

    /// The page of a listing, with the feed cursor it was read after.
    pub fn listed<K: ToString>(
        listing: Listing<T>,
        request_limit: u32,
        kind: ListKind,
        key: impl Fn(&T) -> K,
    ) -> Self {
        Self {
            as_of: listing.as_of.map(|cursor| cursor.encode()),
            ..Self::from_rows(listing.rows, request_limit, kind, key)
        }
    }
}

/// The cursor that continues a list of `kind` after `key`.
pub fn cursor(kind: ListKind, key: impl ToString) -> String {
    encode(kind, &key.to_string())
}

fn encode(kind: ListKind, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{key}", kind.tag()))
}

fn decode<K: FromStr>(kind: ListKind, cursor: &str) -> Result<K, InvalidInput> {
    let invalid = || {
        InvalidInput::new(format!(
            "cursor {cursor:?} is not a cursor of this list; pass the `next` value of the previous page unchanged"
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let key = text
        .strip_prefix(kind.tag())
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    // Roster never issues a key with a NUL character, which no backend compares alike.
    if key.contains('\0') {
        return Err(invalid());
    }
    key.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn cursor_round_trips_within_its_list_only() {
        let id = Uuid::now_v7();
        let c = encode(ListKind::Resources, &id.to_string());
        let back: PageRequest<Uuid> =
            PageRequest::parse(ListKind::Resources, None, Some(&c)).unwrap();
        assert_eq!(back.after, Some(id));
        assert!(PageRequest::<Uuid>::parse(ListKind::Members, None, Some(&c)).is_err());
        assert!(PageRequest::<Uuid>::parse(ListKind::Resources, None, Some("%%")).is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert!(PageRequest::<i64>::parse(ListKind::Operations, Some(0), None).is_err());
        assert!(PageRequest::<i64>::parse(ListKind::Operations, Some(1001), None).is_err());
        let p = PageRequest::<i64>::parse(ListKind::Operations, None, None).unwrap();
        assert_eq!(p.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn page_knows_whether_more_follow() {
        let page = Page::from_rows(vec![1, 2, 3], 2, ListKind::Operations, |v| *v);
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.next.is_some());
        let last = Page::from_rows(vec![1, 2], 2, ListKind::Operations, |v| *v);
        assert!(last.next.is_none());
    }
}
