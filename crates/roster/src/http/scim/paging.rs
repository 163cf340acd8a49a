//! Cursor pagination (RFC 9865) and the delta query (draft-sehgal-scim-delta-query-00) of SCIM
//! lists.
//!
//! A cursor is opaque to the client: the base64url form of a small JSON document naming the
//! query it pages (a digest of its parameters), its page size, and where the next page starts —
//! the last row of the page before (a full read), or a change-feed position (a delta read).
//! Cursors hold no server state, so they never expire; one from another query is `invalidCursor`,
//! a different `count` is `invalidCount`.
//!
//! A delta query follows the change feed: `?deltaQuery` on a full read takes the feed's head
//! before its first page and hands it out as `nextDeltaToken` on its last page; `?deltaQuery&
//! deltaToken=…` answers every user or group of the source created, changed or deleted since
//! (deleted ones as tombstones with `meta.isDeleted`), in pages, and a new token on the last one.
//! A change made while the full read pages is seen by both, never by neither.

use super::{document, documents, wire, ListParams, Projection, ScimError, LIST_SCHEMA};
use crate::domain::change::ChangeKind;
use crate::domain::feed::{ChangeFilter, Cursor, StoredChange};
use crate::domain::scim::{After, Attr, ScimQuery, ScimRecord, ScimType};
use crate::domain::time;
use crate::domain::ResourceId;
use crate::server::AppState;
use crate::store::StoreError;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Changes read per feed batch while a delta page fills.
const FEED_BATCH: u32 = 1000;
/// Most changes one delta page reads before it answers with what it found (and a cursor), so a
/// long stretch of changes to other resources does not hold one request.
const MAX_CHANGES_PER_PAGE: usize = 50_000;

/// How a list request pages.
pub enum Mode {
    /// `startIndex`/`count` (the default).
    Index,
    /// A full read by cursor; with `delta`, it ends with a delta token.
    Cursor {
        state: Option<PageToken>,
        delta: bool,
    },
    /// The changes since a delta token.
    Delta {
        state: Option<PageToken>,
        token: Cursor,
    },
}

/// What a cursor carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageToken {
    /// A digest of the query's parameters.
    q: String,
    /// Its page size.
    n: i64,
    /// Full read: the last row of the page before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<After>,
    /// Full read with `deltaQuery`: the feed's head before the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    /// Delta read: the feed position reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

impl PageToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

fn invalid_cursor(detail: impl Into<String>) -> ScimError {
    ScimError::new(StatusCode::BAD_REQUEST, Some("invalidCursor"), detail)
}

/// The history since a delta token (or a delta page's cursor: `expiredCursor`) is gone.
fn expired(by_cursor: bool, detail: impl Into<String>) -> ScimError {
    let scim_type = if by_cursor {
        "expiredCursor"
    } else {
        "expiredDeltaToken"
    };
    ScimError::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
}

/// The digest naming a query: what it reads and in which order.
fn digest(ty: ScimType, source: &str, params: &ListParams) -> String {
    let mut hash = Sha256::new();
    for part in [
        ty.name(),
        source,
        params.filter.as_deref().unwrap_or_default(),
        params.sort_by.as_deref().unwrap_or_default(),
        params.sort_order.as_deref().unwrap_or_default(),
        params.delta_token.as_deref().unwrap_or_default(),
        if params.delta_query.is_some() {
            "delta"
        } else {
            ""
        },
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a flag parameter (`deltaQuery`, present bare or as `true`/`false`) is on.
fn flag(name: &str, value: Option<&str>) -> Result<bool, ScimError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("" | "true") => Ok(true),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name} is a flag: give it bare or as true/false, not {other:?}"
        ))),
    }
}

/// Reads the cursor of a later page, checking that it belongs to this query and page size.
fn page_token(
    text: &str,
    ty: ScimType,
    source: &str,
    params: &ListParams,
    count: i64,
) -> Result<Option<PageToken>, ScimError> {
    if text.is_empty() {
        return Ok(None);
    }
    let token: PageToken = URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            invalid_cursor(format!(
                "{text:?} is not a cursor roster issued: use a nextCursor value, or an empty \
                 cursor for the first page"
            ))
        })?;
    if token.q != digest(ty, source, params) {
        return Err(invalid_cursor(
            "the cursor pages another query: repeat the first request's filter, sortBy, \
             sortOrder and deltaToken with it",
        ));
    }
    if token.n != count {
        return Err(ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidCount"),
            format!(
                "the cursor pages by {}: count must stay what the first request asked",
                token.n
            ),
        ));
    }
    Ok(Some(token))
}

/// The paging a request asks for.
pub fn mode(
    ty: ScimType,
    source: &str,
    params: &ListParams,
    count: i64,
) -> Result<Mode, ScimError> {
    let delta = flag("deltaQuery", params.delta_query.as_deref())?;
    let by_index = params.start_index.is_some();
    if params.delta_token.is_some() && !delta {
        return Err(ScimError::invalid_value(
            "deltaToken is given with deltaQuery: ?deltaQuery&deltaToken=…",
        ));
    }
    if by_index && (delta || params.cursor.is_some()) {
        return Err(ScimError::invalid_value(
            "startIndex pages by index; a cursor or a delta query pages by cursor: give one",
        ));
    }
    if delta && params.filter.is_some() {
        return Err(ScimError::invalid_value(
            "a delta query follows every user or group of the source: it takes no filter",
        ));
    }
    let state = params
        .cursor
        .as_deref()
        .map(|text| page_token(text, ty, source, params, count))
        .transpose()?
        .flatten();
    if let Some(text) = &params.delta_token {
        let token = Cursor::decode(text).map_err(|_| {
            ScimError::invalid_value(format!(
                "{text:?} is not a delta token roster issued: use the nextDeltaToken of a delta \
                 query's last page"
            ))
        })?;
        return Ok(Mode::Delta { state, token });
    }
    if delta || params.cursor.is_some() {
        return Ok(Mode::Cursor { state, delta });
    }
    Ok(Mode::Index)
}

fn list_body(resources: Vec<Value>, total: Option<i64>, extra: Map<String, Value>) -> Value {
    let mut body = json!({
        "schemas": [LIST_SCHEMA],
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    if let Some(total) = total {
        body["totalResults"] = Value::from(total);
    }
    if let Value::Object(fields) = &mut body {
        fields.extend(extra);
    }
    body
}

/// A page of a full read by cursor.
pub async fn cursor_page(
    state: &AppState,
    ty: ScimType,
    (source, params): (&str, &ListParams),
    mut query: ScimQuery,
    (token, delta): (Option<PageToken>, bool),
    projection: &Projection,
) -> Result<Value, ScimError> {
    let head = match token.as_ref().and_then(|t| t.h.clone()) {
        Some(h) => Some(h),
        None if delta => Some(state.store.head().await?.encode()),
        None => None,
    };
    query.offset = 0;
    query.keyed = true;
    query.after = token.and_then(|t| t.a);
    if let (Some(attr), Some(after)) = (&query.sort, &query.after) {
        check_key(attr, after.key.as_deref())?;
    }
    let page = state.store.scim_list(source, ty, &query).await?;
    let resources = documents(state, ty, source, &page.records, projection).await?;
    let mut extra = Map::new();
    match page.records.last() {
        _ if page.more && page.records.is_empty() => {
            // count=0: only totalResults; the token comes with the last page of a real read.
        }
        Some(last) if page.more => {
            let next = PageToken {
                q: digest(ty, source, params),
                n: query.count,
                a: Some(After {
                    key: page.last_key.clone(),
                    id: last.resource.id.0,
                }),
                h: head,
                p: None,
            };
            extra.insert("nextCursor".into(), Value::from(next.encode()));
        }
        _ => {
            if let Some(h) = head {
                extra.insert("nextDeltaToken".into(), Value::from(h));
            }
        }
    }
    Ok(list_body(resources, Some(page.total), extra))
}

/// Checks that a cursor's sort key can be the value of `attr` (a forged one could not be
/// compared with it).
fn check_key(attr: &Attr, key: Option<&str>) -> Result<(), ScimError> {
    let fits = match (attr, key) {
        (_, None) => true,
        // Roster stores no NUL character, so no position holds one.
        (_, Some(k)) if k.contains('\0') => false,
        (Attr::Active, Some(k)) => matches!(k, "true" | "false" | "t" | "f" | "1" | "0"),
        // A time as the backends write it, in the years roster stores.
        (Attr::Created | Attr::LastModified, Some(k)) => {
            let k = k.replacen('T', " ", 1);
            ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"]
                .iter()
                .filter_map(|f| DateTime::parse_from_str(&k, f).ok())
                .any(|at| time::check(at.with_timezone(&Utc)).is_ok())
        }
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(invalid_cursor(
            "the cursor's position is not one roster issued",
        ))
    }
}

/// The kinds of change that change a user (or a group, which its memberships change too).
fn kinds(ty: ScimType) -> Vec<ChangeKind> {
    let mut kinds = vec![
        ChangeKind::ResourceCreated,
        ChangeKind::ResourceUpdated,
        ChangeKind::ResourceDeleted,
        ChangeKind::ResourcePurged,
        ChangeKind::ResourceRestored,
        ChangeKind::ResourceDeactivated,
        ChangeKind::ResourceActivated,
    ];
    if ty == ScimType::Group {
        kinds.extend([
            ChangeKind::MembershipAdded,
            ChangeKind::MembershipRemoved,
            ChangeKind::MembershipUpdated,
        ]);
    }
    kinds
}

/// The user or group a change changes.
fn changed(change: &StoredChange) -> Option<ResourceId> {
    match change.kind {
        ChangeKind::MembershipAdded
        | ChangeKind::MembershipRemoved
        | ChangeKind::MembershipUpdated => change.group_id,
        _ => change.resource_id,
    }
}

/// Up to `count` resources changed after `from`, in the order of their first change since (each
/// with its last change's time), and the position just past the changes they account for; `true`
/// when changes follow it.
async fn changed_since(
    state: &AppState,
    source: &str,
    ty: ScimType,
    (from, by_cursor): (Cursor, bool),
    count: i64,
) -> Result<(Vec<(ResourceId, DateTime<Utc>)>, Cursor, bool), ScimError> {
    // A membership change of a member of another source changes nothing the base shows.
    let filter = ChangeFilter {
        source_system: Some(source.to_owned()),
        group_id: None,
        kinds: kinds(ty),
        member_source: Some(source.to_owned()),
    };
    let gone = |e: StoreError| match e {
        StoreError::Gone(m) => expired(
            by_cursor,
            format!(
                "{m}: the history since this delta token is no longer kept; read everything \
                 again with ?deltaQuery"
            ),
        ),
        other => other.into(),
    };
    let mut ids: Vec<(ResourceId, DateTime<Utc>)> = Vec::new();
    let mut seen: HashMap<ResourceId, usize> = HashMap::new();
    let mut position = from;
    let mut read = 0;
    loop {
        let batch = state
            .store
            .changes(&position, &filter, FEED_BATCH)
            .await
            .map_err(gone)?;
        let full = batch.items.len() >= FEED_BATCH as usize;
        read += batch.items.len();
        for change in &batch.items {
            if let Some(id) = changed(change) {
                match seen.get(&id) {
                    Some(&at) => ids[at].1 = change.at,
                    None if ids.len() as i64 >= count => return Ok((ids, position, true)),
                    None => {
                        seen.insert(id, ids.len());
                        ids.push((id, change.at));
                    }
                }
            }
            position = change.cursor;
        }
        if !full {
            return Ok((ids, batch.next, false));
        }
        position = batch.next;
        if read >= MAX_CHANGES_PER_PAGE {
            return Ok((ids, position, true));
        }
    }
}

/// A page of a delta read: the resources changed since the token (or the cursor's position).
pub async fn delta_page(
    state: &AppState,
    ty: ScimType,
    (source, params): (&str, &ListParams),
    count: i64,
    (page, token): (Option<PageToken>, Cursor),
    projection: &Projection,
) -> Result<Value, ScimError> {
    if count < 1 {
        return Err(ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidCount"),
            "a delta query pages at least one resource at a time",
        ));
    }
    let from = match page.and_then(|p| p.p) {
        Some(p) => (Cursor::decode(&p).map_err(|e| invalid_cursor(e.0))?, true),
        None => (token, false),
    };
    let (changed, reached, more) = changed_since(state, source, ty, from, count).await?;
    let ids: Vec<ResourceId> = changed.iter().map(|(id, _)| *id).collect();
    let records: HashMap<ResourceId, ScimRecord> = state
        .store
        .scim_records(&ids)
        .await?
        .into_iter()
        .map(|r| (r.resource.id, r))
        .collect();
    let kind = ty.resource_type();
    let base = super::base(source);
    let mut resources = Vec::with_capacity(changed.len());
    for (id, at) in &changed {
        match records.get(id) {
            // Another type (or source) of resource: the other list's delta answers it.
            Some(r) if r.resource.ty != kind || r.resource.source_system != source => {}
            Some(r) if r.resource.deleted => resources.push(wire::tombstone(
                ty,
                *id,
                r.resource.deleted_at.unwrap_or(*at),
                &base,
            )),
            Some(r) => resources.push(document(state, ty, source, r, projection).await?),
            // Purged: its type went with it, so both deltas answer its tombstone.
            None => resources.push(wire::tombstone(ty, *id, *at, &base)),
        }
    }
    let mut extra = Map::new();
    if more {
        let next = PageToken {
            q: digest(ty, source, params),
            n: count,
            a: None,
            h: None,
            p: Some(reached.encode()),
        };
        extra.insert("nextCursor".into(), Value::from(next.encode()));
    } else {
        extra.insert("nextDeltaToken".into(), Value::from(reached.encode()));
    }
    Ok(list_body(resources, None, extra))
}
