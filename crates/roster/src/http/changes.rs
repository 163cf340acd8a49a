//! The change feed: `/api/v1/changes` (long-poll), `/api/v1/changes/stream` (Server-Sent Events),
//! `/api/v1/changes/head`, `/api/v1/export` (a consistent NDJSON snapshot ending with its cursor)
//! and `/api/v1/resources/{id}/history`. The protocol is in `docs/changes.md`.

use super::{Path, Query};
use crate::app::resources::check_readable;
use crate::app::Caller;
use crate::domain::feed::{
    ChangeBatch, ChangeFilter, ChangeItem, Cursor, ExportScope, Format, StoredChange,
};
use crate::domain::page::{ListKind, Page, MAX_LIMIT};
use crate::domain::ResourceId;
use crate::error::{ApiError, Problem};
use crate::render::{full, render};
use crate::server::AppState;
use crate::store::{ExportItem, StoreError, StoreResult};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// How often a waiting reader looks for new changes.
const POLL: Duration = Duration::from_millis(200);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_changes))
        .routes(routes!(stream_changes))
        .routes(routes!(head))
        .routes(routes!(export))
        .routes(routes!(history))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// Continue after this cursor (a `next`, an item's `cursor`, an export's or head's cursor).
    /// Without it (or empty), the feed starts at the oldest change it holds.
    after: Option<String>,
    /// Changes per answer, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Seconds to wait for a change when there is none yet (long poll; capped by the server).
    #[serde(default, deserialize_with = "super::wait_seconds")]
    #[param(maximum = 3600)]
    wait: Option<u64>,
    /// Only changes of this source system (a token whose reads are bound reads only its own).
    source_system: Option<String>,
    /// Only changes of this group's memberships and of the group itself.
    group_id: Option<ResourceId>,
    /// Only these kinds, comma-separated (e.g. `membership.added,membership.removed`).
    kind: Option<String>,
    /// `notice` (default), `full` or `scim`.
    format: Option<Format>,
}

impl FeedParams {
    /// Where to start, what to read and how much. A caller whose reads are bound reads only its
    /// source's changes, and of memberships only those of its source's members.
    fn read(
        &self,
        caller: &Caller,
        last_event_id: Option<&str>,
    ) -> Result<(Cursor, ChangeFilter, u32), ApiError> {
        let bad = |e: crate::domain::InvalidInput| ApiError::BadRequest(e.0);
        // A reconnecting EventSource repeats its URL (with `after`) and adds Last-Event-ID,
        // which is where it really stands. An empty `after` is the start.
        let after = match last_event_id
            .or(self.after.as_deref())
            .filter(|a| !a.is_empty())
        {
            Some(text) => Cursor::decode(text).map_err(bad)?,
            None => Cursor::start(),
        };
        let filter = ChangeFilter {
            source_system: caller.read_filter(self.source_system.clone())?,
            group_id: self.group_id,
            kinds: ChangeFilter::parse_kinds(self.kind.as_deref()).map_err(bad)?,
            member_source: caller.read_source().map(str::to_owned),
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok((after, filter, limit))
    }
}

/// A page of the feed. (`T` is the form of its items: the notice form is written straight from
/// the log, the others as rendered documents.)
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePage<T = Value> {
    /// Changes in order: `ChangeItem`s, or SCIM event claim sets with `format=scim`.
    #[schema(value_type = Vec<Object>)]
    items: Vec<T>,
    /// Where to continue (also when `items` is empty).
    next: String,
}

/// The changes after a cursor, in commit-consistent order; with `wait`, waits for the first one.
#[utoipa::path(get, path = "/api/v1/changes", tag = "changes", security(("bearer" = ["read"])),
    params(FeedParams),
    responses((status = 200, description = "Changes and the cursor to continue from", body = ChangePage),
              (status = 400, description = "A malformed cursor or filter", body = Problem),
              (status = 403, description = "Another source system than the token's reads are bound to", body = Problem),
              (status = 410, description = "The cursor is older than the retained history: re-export", body = Problem)))]
async fn list_changes(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<FeedParams>,
) -> Result<Response, ApiError> {
    let (after, filter, limit) = p.read(&caller, None)?;
    let wait = Duration::from_secs(p.wait.unwrap_or(0)).min(state.operations.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let mut batch = state.store.changes(&after, &filter, limit).await?;
    while batch.items.is_empty() && tokio::time::Instant::now() + POLL <= deadline {
        tokio::time::sleep(POLL).await;
        batch = state.store.changes(&batch.next, &filter, limit).await?;
    }
    let next = batch.next.encode();
    let format = p.format.unwrap_or_default();
    if format == Format::Notice {
        let items = batch.items.iter().map(ChangeItem::notice).collect();
        return json_page(&ChangePage { items, next });
    }
    let mut items = Vec::with_capacity(batch.items.len());
    for change in &batch.items {
        items.push(render(state.store.as_ref(), change, format).await?);
    }
    json_page(&ChangePage { items, next })
}

/// A page as JSON, written into a buffer sized for it up front (a page of 1000 changes is some
/// 300 kB: grown from small, it would be copied a dozen times).
fn json_page<T: Serialize>(page: &ChangePage<T>) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(page.items.len() * EVENT_BYTES + 128);
    serde_json::to_writer(&mut body, page)
        .map_err(|e| ApiError::Internal(format!("a page of changes could not be written: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The feed as Server-Sent Events: each change is an event whose `id` is its cursor, so a
/// reconnecting client resumes with `Last-Event-ID`; a comment line every 15 s keeps it open.
#[utoipa::path(get, path = "/api/v1/changes/stream", tag = "changes", security(("bearer" = ["read"])),
    params(FeedParams),
    responses((status = 200, description = "`text/event-stream` of changes", content_type = "text/event-stream", body = String),
              (status = 403, description = "Another source system than the token's reads are bound to", body = Problem),
              (status = 410, description = "The cursor is older than the retained history: re-export", body = Problem)))]
async fn stream_changes(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Query<FeedParams>,
) -> Result<Response, ApiError> {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (after, filter, limit) = p.read(&caller, resume)?;
    // A cursor that is already gone is refused before the stream starts.
    let first = state.store.changes(&after, &filter, limit).await?;
    let format = p.format.unwrap_or_default();
    let feed = Feed {
        ends_at: Instant::now() + state.limits.stream_lifetime,
        state,
        filter,
        limit,
        format,
        token_id: caller.principal.token_id,
    };
    let now = Instant::now();
    let chunks = stream::unfold(Step::Ready(first, now, now), move |step| {
        let feed = feed.clone();
        async move { feed.step(step).await }
    })
    .fuse()
    .filter(|chunk| std::future::ready(!chunk.is_empty()))
    .map(|chunk| Ok::<_, Infallible>(Bytes::from(chunk.0)));
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, Body::from_stream(chunks)).into_response())
}

/// What an event stream reads from.
#[derive(Clone)]
struct Feed {
    state: AppState,
    filter: ChangeFilter,
    limit: u32,
    format: Format,
    /// The token the stream was opened with: it is checked again every [`TOKEN_RECHECK`].
    token_id: uuid::Uuid,
    /// When the stream ends so that the client reconnects (and authenticates) again.
    ends_at: Instant,
}

/// How often an open event stream checks that its token still stands.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// How long an event stream may stay silent before it sends a comment, which keeps proxies from
/// closing it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Where an event stream stands; each carries when the token was last checked and when the
/// stream last sent something.
enum Step {
    /// A batch to send.
    Ready(ChangeBatch, Instant, Instant),
    /// Look for changes after this cursor: at once when the last read was a full batch (more
    /// are waiting), after [`POLL`] otherwise.
    After(Cursor, Instant, Instant, bool),
    /// A batch read while the one before was written out: sent once the stream may go on.
    Read(StoreResult<ChangeBatch>, Instant, Instant),
    /// An error event was sent; the stream ends (the client reconnects with Last-Event-ID).
    Done,
}

/// Events as `text/event-stream` text: each batch of the feed is sent as one chunk.
#[derive(Default)]
struct Events(Vec<u8>);

impl Events {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An event whose data is `data` as JSON (one line: compact JSON has no line break).
    /// A change that cannot be written leaves nothing of its event behind.
    fn json(&mut self, id: &str, name: &str, data: &impl Serialize) -> Result<(), StoreError> {
        use std::io::Write;
        let start = self.0.len();
        let _ = write!(self.0, "id: {id}\nevent: {name}\ndata: ");
        if let Err(e) = serde_json::to_writer(&mut self.0, data) {
            self.0.truncate(start);
            return Err(StoreError::BadValue(format!(
                "a change could not be written: {e}"
            )));
        }
        self.0.extend_from_slice(b"\n\n");
        Ok(())
    }

    /// An event without an id whose data is `text`, a line of data per line of text.
    fn text(mut self, name: &str, text: &str) -> Self {
        use std::io::Write;
        let _ = writeln!(self.0, "event: {name}");
        for line in text.lines() {
            let _ = writeln!(self.0, "data: {line}");
        }
        self.0.push(b'\n');
        self
    }

    /// A comment, which clients ignore.
    fn keep_alive() -> Self {
        Self(b":\n\n".to_vec())
    }
}

impl Feed {
    /// The events of one step and the next step. A change whose rendering fails is not sent
    /// (its cursor would let the client skip it): the stream ends with an `error` event instead.
    async fn step(&self, step: Step) -> Option<(Events, Step)> {
        let (batch, checked, sent) = match step {
            Step::Done => return None,
            Step::Ready(batch, checked, sent) => (batch, checked, sent),
            Step::After(cursor, checked, sent, more) => {
                if !more {
                    tokio::time::sleep(POLL).await;
                }
                let checked = match self.still_open(checked).await {
                    Ok(checked) => checked,
                    Err(last) => return Some((last, Step::Done)),
                };
                match self.read(&cursor).await {
                    Ok(batch) => (batch, checked, sent),
                    Err(e) => return Some((error_event(&e), Step::Done)),
                }
            }
            Step::Read(read, checked, sent) => {
                let checked = match self.still_open(checked).await {
                    Ok(checked) => checked,
                    Err(last) => return Some((last, Step::Done)),
                };
                match read {
                    Ok(batch) => (batch, checked, sent),
                    Err(e) => return Some((error_event(&e), Step::Done)),
                }
            }
        };
        let more = batch.items.len() >= self.limit as usize;
        if batch.items.is_empty() {
            let next = |sent| Step::After(batch.next, checked, sent, more);
            return Some(if sent.elapsed() >= KEEP_ALIVE {
                (Events::keep_alive(), next(Instant::now()))
            } else {
                (Events::default(), next(sent))
            });
        }
        if !more {
            let (events, next) = self.events(&batch.items).await;
            return Some((
                events,
                next.unwrap_or(Step::After(batch.next, checked, Instant::now(), more)),
            ));
        }
        // More are waiting: the next batch is read while this one is written out.
        let (read, (events, next)) =
            tokio::join!(self.read(&batch.next), self.events(&batch.items));
        Some((
            events,
            next.unwrap_or(Step::Read(read, checked, Instant::now())),
        ))
    }

    /// `checked` when the stream may go on (its token checked again when it was last checked
    /// [`TOKEN_RECHECK`] ago: then now), or its last event.
    async fn still_open(&self, checked: Instant) -> Result<Instant, Events> {
        if Instant::now() >= self.ends_at {
            return Err(end_event(LIFETIME_ENDED));
        }
        if checked.elapsed() < TOKEN_RECHECK {
            return Ok(checked);
        }
        match self.state.authenticator.still_stands(self.token_id).await {
            Ok(()) => Ok(Instant::now()),
            Err(e) => Err(refused_event(e)),
        }
    }

    async fn read(&self, after: &Cursor) -> StoreResult<ChangeBatch> {
        self.state
            .store
            .changes(after, &self.filter, self.limit)
            .await
    }

    /// The events of `changes`; with [`Step::Done`] when one could not be rendered (its error
    /// event ends them).
    async fn events(&self, changes: &[StoredChange]) -> (Events, Option<Step>) {
        let mut events = Events(Vec::with_capacity(changes.len() * EVENT_BYTES));
        for change in changes {
            let id = change.cursor.encode();
            let written = match self.format {
                Format::Notice => events.json(&id, change.kind.name(), &ChangeItem::notice(change)),
                format => match render(self.state.store.as_ref(), change, format).await {
                    Ok(body) => events.json(&id, change.kind.name(), &body),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = written {
                events.0.extend_from_slice(&error_event(&e).0);
                return (events, Some(Step::Done));
            }
        }
        (events, None)
    }
}

/// About how many bytes an event of the notice form takes.
const EVENT_BYTES: usize = 320;

const LIFETIME_ENDED: &str =
    "the stream reached the longest life the server allows; reconnect with Last-Event-ID to resume";

/// The last event of a stream that ends for its caller's sake: the token no longer stands, or
/// the stream's life is over.
fn end_event(why: &str) -> Events {
    Events::default().text("error", why)
}

/// The last event of a stream whose token no longer stands: why (a 401's sentence), or, when the
/// token could not be read, what the client should do, never internals.
fn refused_event(e: ApiError) -> Events {
    match e {
        ApiError::Unauthorized(why) => end_event(&why),
        other => {
            tracing::warn!(error = %other, "change stream ended: its token could not be read");
            end_event(SERVER_ERROR)
        }
    }
}

const SERVER_ERROR: &str =
    "the stream ended on a server error; reconnect with Last-Event-ID to resume";

/// The last event of a stream that cannot go on: what the client should do, never internals.
fn error_event(e: &StoreError) -> Events {
    match e {
        StoreError::Gone(why) => end_event(why),
        other => {
            tracing::warn!(error = %other, "change stream ended");
            end_event(SERVER_ERROR)
        }
    }
}

/// The current position of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Head {
    /// Follow from here to get every change committed from now on.
    cursor: String,
}

/// The cursor of "now", to follow the feed without reading its past.
#[utoipa::path(get, path = "/api/v1/changes/head", tag = "changes", security(("bearer" = ["read"])),
    responses((status = 200, description = "The current cursor", body = Head)))]
async fn head(State(state): State<AppState>) -> Result<axum::Json<Head>, ApiError> {
    Ok(axum::Json(Head {
        cursor: state.store.head().await?.encode(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Export this source system's resources and its groups' active memberships.
    source_system: Option<String>,
    /// Or: export this group and its active memberships.
    group_id: Option<ResourceId>,
}

/// A consistent snapshot as NDJSON: `{"resource": …}` lines, then `{"membership": …}` lines, all
/// read in one database snapshot, then `{"cursor": …}`: following the feed from that cursor
/// repeats and loses nothing. Should reading fail midway, the last line is `{"error": …}` instead
/// (the status is already sent): retry the export.
#[utoipa::path(get, path = "/api/v1/export", tag = "changes", security(("bearer" = ["read"])),
    params(ExportParams),
    responses((status = 200, description = "NDJSON lines, the last one the cursor; of the token's source only, when its reads are bound", content_type = "application/x-ndjson", body = String),
              (status = 400, description = "Neither or both of source_system and group_id", body = Problem),
              (status = 403, description = "A source system or group of another source than the token's reads are bound to", body = Problem)))]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let scope = match (p.source_system, p.group_id) {
        (Some(source), None) => ExportScope::Source(source),
        (None, Some(group)) => ExportScope::Group(group),
        _ => {
            return Err(ApiError::BadRequest(
                "export takes exactly one of source_system and group_id".to_owned(),
            ))
        }
    };
    match &scope {
        ExportScope::Source(source) => {
            caller.read_filter(Some(source.clone()))?;
        }
        ExportScope::Group(group) => check_readable(state.app(), &caller, *group).await?,
    }
    let members = caller.read_source().map(str::to_owned);
    let (sink, receiver) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.export(&scope, members.as_deref(), sink.clone()).await {
            // The receiver learns of the failure in the stream (the status is already sent).
            let _ = sink.send(Err(e)).await;
        }
    });
    // The lines ready at once go out as one chunk (a page of the export, not a line at a time).
    // After an error line nothing more is sent: an export without its cursor is incomplete.
    let chunks = tokio_stream_of(receiver)
        .ready_chunks(EXPORT_BUFFER)
        .scan(false, |failed, items| {
            if *failed {
                return std::future::ready(None);
            }
            let mut chunk = Vec::with_capacity(items.len() * EVENT_BYTES);
            for item in items {
                let written = match item {
                    Ok(ExportItem::Resource(r)) => write_line(&mut chunk, &Line::Resource(&r)),
                    Ok(ExportItem::Membership(m)) => write_line(&mut chunk, &Line::Membership(&m)),
                    Ok(ExportItem::End(cursor)) => {
                        write_line(&mut chunk, &Line::Cursor(cursor.encode()))
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    let _ = write_line(&mut chunk, &Line::Error(export_error(&e)));
                    *failed = true;
                    break;
                }
            }
            std::future::ready(Some(Ok::<_, Infallible>(Bytes::from(chunk))))
        })
        .fuse();
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Export lines a channel holds before the store waits for the client.
const EXPORT_BUFFER: usize = 1024;

/// A line of an export: `{"resource": …}`, `{"membership": …}`, then `{"cursor": …}`, or
/// `{"error": …}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Line<'a> {
    Resource(&'a crate::domain::resource::Resource),
    Membership(&'a crate::domain::membership::Membership),
    Cursor(String),
    Error(String),
}

/// Appends a line; one that cannot be written leaves nothing behind.
fn write_line(out: &mut Vec<u8>, line: &Line<'_>) -> Result<(), StoreError> {
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, line) {
        out.truncate(start);
        return Err(StoreError::BadValue(format!(
            "an export line could not be written: {e}"
        )));
    }
    out.push(b'\n');
    Ok(())
}

fn export_error(e: &StoreError) -> String {
    tracing::error!(error = %e, "export failed");
    "the export failed; the server log has the details. Retry it".to_owned()
}

/// The receiving half of a channel as a stream; fused, as a compressor polls it again after its
/// end.
fn tokio_stream_of<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> {
    stream::unfold(receiver, |mut r| async move {
        r.recv().await.map(|item| (item, r))
    })
    .fuse()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// A resource's history, oldest first: its own changes and those of its memberships, as group
/// and as member, in `full` form.
#[utoipa::path(get, path = "/api/v1/resources/{id}/history", tag = "changes", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Resource id"), HistoryParams),
    responses((status = 200, description = "A page of changes (of the token's source only, when its reads are bound)", body = Page<ChangeItem>),
              (status = 403, description = "A resource of another source system than the token's reads are bound to", body = Problem)))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<HistoryParams>,
) -> Result<axum::Json<Page<ChangeItem>>, ApiError> {
    let page = super::page_request::<i64>(ListKind::History, p.limit, p.cursor.as_deref())?;
    check_readable(state.app(), &caller, id).await?;
    let bound = caller.read_source().map(str::to_owned);
    let filter = ChangeFilter {
        source_system: bound.clone(),
        member_source: bound,
        ..ChangeFilter::default()
    };
    let rows = state
        .store
        .history(id, &filter, page.after, page.limit + 1)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for change in &rows {
        items.push((change.seq, full(state.store.as_ref(), change).await?));
    }
    let page = Page::from_rows(items, page.limit, ListKind::History, |(seq, _)| *seq);
    Ok(axum::Json(Page {
        items: page.items.into_iter().map(|(_, item)| item).collect(),
        next: page.next,
        as_of: None,
    }))
}
