//! Loading lines into a full-update's staging table. A line says once what its staging row holds
//! ([`StagedRow::values`]); PostgreSQL streams the rows in with COPY (its text format), SQLite
//! inserts them in multi-row INSERTs that stay under its limit of bound variables.

use super::db::{Db, Link, Tx};
use super::engine_sql::{self as esql, Staging};
use super::query::{Sql, Value};
use super::resource_sql;
use super::{now, ChunkReceipt, LineStream, StoreResult};
use crate::domain::full_update::{GroupRef, LineError, MemberRef, StagedLine};
use crate::domain::resource::ResourceType;
use crate::domain::resource_sync::StagedResource;
use crate::domain::OperationId;
use futures_util::StreamExt;
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, Sqlite, SqliteConnection};
use std::fmt::Write;
use uuid::Uuid;

/// Rejection reasons kept per chunk; the count beyond is exact, the details are not kept.
const MAX_REJECTIONS_KEPT: usize = 10_000;

/// Bound variables per multi-row INSERT: well under SQLite's limit (32,766), and enough for a
/// few hundred lines a statement.
const MAX_VARIABLES: usize = 8_000;

/// A line of an upload, as one row of its staging table.
pub(super) trait StagedRow: Send + Sync {
    /// The staging table's columns, in the order of [`StagedRow::values`].
    const COLUMNS: &'static str;
    /// The row's values, the line being of chunk `chunk`.
    fn values(&self, chunk: i32) -> Vec<Value>;
}

impl StagedRow for StagedLine {
    const COLUMNS: &'static str = esql::STAGING_COLUMNS;

    fn values(&self, chunk: i32) -> Vec<Value> {
        let (group_id, group_ref) = match &self.group {
            GroupRef::Scope => (None, None),
            GroupRef::Id(id) => (Some(*id), None),
            GroupRef::Identifier(identifier) => (None, Some(identifier.as_str())),
        };
        let (member_id, member_source, identifier, external_id) = match &self.member {
            MemberRef::Id(id) => (Some(*id), None, None, None),
            MemberRef::Identifier {
                source_system,
                identifier,
            } => (
                None,
                Some(source_system.as_str()),
                Some(identifier.as_str()),
                None,
            ),
            MemberRef::ExternalId {
                source_system,
                external_id,
            } => (
                None,
                Some(source_system.as_str()),
                None,
                Some(external_id.as_str()),
            ),
        };
        vec![
            chunk.into(),
            self.line.into(),
            group_id.into(),
            group_ref.into(),
            member_id.into(),
            member_source.into(),
            identifier.into(),
            external_id.into(),
            self.member_type.map(ResourceType::code).into(),
            self.member_name.as_deref().into(),
            self.contributing.into(),
        ]
    }
}

impl StagedRow for StagedResource {
    const COLUMNS: &'static str = resource_sql::STAGING_COLUMNS;

    fn values(&self, chunk: i32) -> Vec<Value> {
        vec![
            chunk.into(),
            self.line.into(),
            self.new_id.into(),
            self.external_id.as_deref().into(),
            self.identifier.as_deref().into(),
            self.ty.code().into(),
            self.subtype.map(|s| s.code()).into(),
            self.displayname.as_deref().into(),
            self.description.as_deref().into(),
            self.notes.as_deref().into(),
            self.tags.clone().map(super::query::TextList).into(),
            self.active.into(),
            self.expires_at.into(),
            self.present.into(),
            self.delete.into(),
        ]
    }
}

/// Appends one row to a COPY text-format buffer: fields separated by tabs, `\N` for NULL, the
/// row ended by a newline.
fn copy_row(out: &mut String, row: &[Value]) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        copy_value(out, value);
    }
    out.push('\n');
}

/// Appends one field in COPY's text format.
fn copy_value(out: &mut String, value: &Value) {
    // Writing to a String does not fail.
    let _ = match value {
        Value::Uuid(Some(v)) => {
            out.push_str(v.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            Ok(())
        }
        Value::Small(Some(v)) => write!(out, "{v}"),
        Value::Int(Some(v)) => write!(out, "{v}"),
        Value::Big(Some(v)) => write!(out, "{v}"),
        Value::Float(Some(v)) => write!(out, "{v}"),
        Value::Bool(Some(v)) => {
            out.push(if *v { 't' } else { 'f' });
            Ok(())
        }
        Value::Time(Some(v)) => write!(out, "{}", v.to_rfc3339()),
        Value::Text(Some(v)) => escaped(out, v),
        Value::Json(Some(v)) => escaped(out, &v.to_string()),
        Value::Texts(Some(list)) => escaped(out, &array_literal(&list.0)),
        // `\x` and the hex digits: bytea's hex input, its backslash escaped for COPY.
        Value::Bytes(bytes) => {
            out.push_str("\\\\x");
            bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
        }
        Value::Uuid(None)
        | Value::Small(None)
        | Value::Int(None)
        | Value::Big(None)
        | Value::Float(None)
        | Value::Bool(None)
        | Value::Time(None)
        | Value::Text(None)
        | Value::Json(None)
        | Value::Texts(None) => write!(out, "\\N"),
    };
}

/// Appends `text` escaped for COPY's text format, a run of plain text at a time (through a
/// formatter, a character at a time, it took a sixth of an upload's time).
fn escaped(out: &mut String, mut text: &str) -> std::fmt::Result {
    while let Some(at) = text.find(['\\', '\t', '\n', '\r']) {
        out.push_str(&text[..at]);
        out.push_str(match text.as_bytes()[at] {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            _ => "\\r",
        });
        text = &text[at + 1..];
    }
    out.push_str(text);
    Ok(())
}

/// A PostgreSQL text array literal, `{"a","b"}`.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Multi-row INSERTs of `rows`: `head` (`INSERT INTO t (columns) `), then as many rows as keep
/// the statement's bound variables within [`MAX_VARIABLES`], then `tail`.
fn insert_batches(head: &str, rows: Vec<Vec<Value>>, tail: &str) -> Vec<Sql> {
    let width = rows.first().map_or(1, Vec::len).max(1);
    let per_statement = (MAX_VARIABLES / width).max(1);
    let mut statements = Vec::with_capacity(rows.len().div_ceil(per_statement));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut insert = Sql::new(format!("{head}VALUES "));
        for (i, row) in rows.by_ref().take(per_statement).enumerate() {
            insert.push(if i == 0 { "(" } else { ", (" });
            for (j, value) in row.into_iter().enumerate() {
                if j > 0 {
                    insert.push(", ");
                }
                insert.push_bind(value);
            }
            insert.push(")");
        }
        insert.push(tail);
        statements.push(insert);
    }
    statements
}

/// Where staged rows go: a COPY on PostgreSQL, multi-row INSERTs on SQLite.
enum Sink<'t> {
    Copy {
        copy: PgCopyIn<&'t mut PgConnection>,
        buffer: String,
    },
    Insert {
        conn: &'t mut SqliteConnection,
        head: String,
        staged: u64,
    },
}

impl<'t> Sink<'t> {
    async fn open(link: Link<'t>, staging: &Staging, columns: &str) -> StoreResult<Self> {
        Ok(match link {
            Link::Postgres(conn) => Self::Copy {
                copy: conn
                    .copy_in_raw(&format!("COPY {staging} ({columns}) FROM STDIN"))
                    .await?,
                buffer: String::new(),
            },
            Link::Sqlite(conn) => Self::Insert {
                conn,
                head: format!("INSERT INTO {staging} ({columns}) "),
                staged: 0,
            },
        })
    }

    async fn send<L: StagedRow>(&mut self, lines: &[L], chunk: i32) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Self::Copy { copy, buffer } => {
                buffer.clear();
                for line in lines {
                    copy_row(buffer, &line.values(chunk));
                }
                copy.send(buffer.as_bytes()).await?;
            }
            Self::Insert { conn, head, staged } => {
                let rows = lines
                    .iter()
                    .map(|line| no_null_lists(line.values(chunk)))
                    .collect();
                for insert in insert_batches(head, rows, "") {
                    *staged += sqlx::query_with(insert.text(), insert.arguments::<Sqlite>()?)
                        .execute(&mut **conn)
                        .await?
                        .rows_affected();
                }
            }
        }
        Ok(())
    }

    /// Gives up: the rows sent are not kept (SQLite's are rolled back with the transaction).
    async fn abort(self) -> StoreResult<()> {
        if let Self::Copy { copy, .. } = self {
            copy.abort("the upload was refused").await?;
        }
        Ok(())
    }

    /// Ends the load; how many rows it staged.
    async fn finish(self) -> StoreResult<i64> {
        let staged = match self {
            Self::Copy { copy, .. } => copy.finish().await?,
            Self::Insert { staged, .. } => staged,
        };
        Ok(i64::try_from(staged).unwrap_or(i64::MAX))
    }
}

/// `row` with an empty list for each NULL list. SQLite stages an absent list (a line's tags) as
/// an empty one: its staging tables created before absent lists were staged as NULL keep their
/// `NOT NULL`, which SQLite cannot drop, and an empty list costs it nothing (PostgreSQL's COPY
/// parses one, hence NULL there).
fn no_null_lists(mut row: Vec<Value>) -> Vec<Value> {
    for value in &mut row {
        if let Value::Texts(list @ None) = value {
            *list = Some(super::query::TextList(Vec::new()));
        }
    }
    row
}

/// Stages `lines` (all of chunk 0) into `staging`, inside the caller's transaction.
pub(super) async fn stage_lines<L: StagedRow>(
    tx: &mut Tx,
    staging: &Staging,
    lines: &[L],
) -> StoreResult<i64> {
    let mut sink = Sink::open(tx.link(), staging, L::COLUMNS).await?;
    sink.send(lines, 0).await?;
    sink.finish().await
}

/// Replaces chunk `chunk` of an uploading full-update with the streamed lines, and records the
/// lines the stream skipped.
pub(super) async fn stage_chunk<L: StagedRow>(
    db: &Db,
    id: OperationId,
    chunk: i32,
    mut lines: LineStream<'_, L>,
) -> StoreResult<ChunkReceipt> {
    let staging = Staging(id);
    let mut tx = db.write().await?;
    let state = Sql::new(format!(
        "SELECT phase, status FROM operation WHERE id = $1{}",
        tx.dialect().for_share()
    ))
    .bind(id);
    esql::check_uploading(id, tx.fetch_optional(&state).await?)?;
    // Two uploads of the same chunk at once replace it one after the other.
    let lock =
        Sql::new("SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 1))");
    tx.advisory_lock(&lock.bind(id).bind(chunk)).await?;
    let clear = Sql::new(format!("DELETE FROM {staging} WHERE chunk = $1")).bind(chunk);
    tx.execute(&clear).await?;
    let clear = Sql::new("DELETE FROM operation_rejection WHERE operation_id = $1 AND chunk = $2")
        .bind(id)
        .bind(chunk);
    tx.execute(&clear).await?;
    let mut rejected = Vec::new();
    let mut rejected_count = 0i64;
    let mut sink = Sink::open(tx.link(), &staging, L::COLUMNS).await?;
    while let Some(batch) = lines.next().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                sink.abort().await?;
                return Err(e);
            }
        };
        sink.send(&batch.lines, chunk).await?;
        rejected_count += i64::try_from(batch.rejected.len()).unwrap_or(i64::MAX);
        let room = MAX_REJECTIONS_KEPT.saturating_sub(rejected.len());
        rejected.extend(batch.rejected.into_iter().take(room));
    }
    let staged = sink.finish().await?;
    insert_rejections(&mut tx, id, rejected).await?;
    let upsert = Sql::new(esql::UPSERT_CHUNK)
        .bind(id)
        .bind(chunk)
        .bind(staged + rejected_count)
        .bind(now());
    tx.execute(&upsert).await?;
    tx.commit().await?;
    Ok(ChunkReceipt {
        staged,
        rejected: rejected_count,
    })
}

async fn insert_rejections(
    tx: &mut Tx,
    id: OperationId,
    rejected: Vec<LineError>,
) -> StoreResult<()> {
    let rows = rejected
        .into_iter()
        .map(|e| vec![id.into(), e.chunk.into(), e.line.into(), e.reason.into()])
        .collect();
    let head = "INSERT INTO operation_rejection (operation_id, chunk, line, reason) ";
    for insert in insert_batches(head, rows, " ON CONFLICT DO NOTHING") {
        tx.execute(&insert).await?;
    }
    Ok(())
}

/// The rejected lines of an operation, in (chunk, line) order after `after`, at most `limit`.
pub(super) async fn rejected_lines(
    tx: &mut Tx,
    id: OperationId,
    after: (i32, i32),
    limit: i64,
) -> StoreResult<Vec<LineError>> {
    let select = Sql::new(esql::LIST_REJECTIONS)
        .bind(id)
        .bind(after.0)
        .bind(after.1)
        .bind(limit);
    let rows: Vec<(i32, i32, String)> = tx.fetch_all(&select).await?;
    Ok(rows
        .into_iter()
        .map(|(chunk, line, reason)| LineError {
            chunk,
            line,
            reason,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResourceId;
    use uuid::Uuid;

    fn copied(row: &[Value]) -> String {
        let mut out = String::new();
        copy_row(&mut out, row);
        out
    }

    #[test]
    fn copy_escapes_text_and_writes_null() {
        let row = [
            Value::Text(Some("a\tb\nc\rd\\e".to_owned())),
            Value::Text(None),
            Value::Bool(Some(true)),
            Value::Bool(Some(false)),
            Value::Bool(None),
            Value::Small(Some(3)),
        ];
        assert_eq!(copied(&row), "a\\tb\\nc\\rd\\\\e\t\\N\tt\tf\t\\N\t3\n");
        for (text, written) in [
            ("\t\t", "\\t\\t"),
            ("x\\", "x\\\\"),
            ("\\x", "\\\\x"),
            ("é\\\tß", "é\\\\\\tß"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(
                copied(&[Value::Text(Some(text.to_owned()))]),
                format!("{written}\n")
            );
        }
    }

    #[test]
    fn copy_writes_arrays_times_and_bytes() {
        let tags = super::super::query::TextList(vec!["x\"y".to_owned(), "b\\s".to_owned()]);
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let row = [
            Value::Texts(Some(tags)),
            Value::Time(Some(at)),
            Value::Bytes(vec![0, 0xab]),
        ];
        assert_eq!(
            copied(&row),
            "{\"x\\\\\"y\",\"b\\\\\\\\s\"}\t1970-01-01T00:00:00+00:00\t\\\\x00ab\n"
        );
    }

    #[test]
    fn copy_writes_a_membership_line() {
        let member = Uuid::from_u128(7);
        let line = StagedLine {
            line: 4,
            group: GroupRef::Identifier("g\t1".to_owned()),
            member: MemberRef::Id(ResourceId(member)),
            member_type: Some(ResourceType::User),
            member_name: None,
            contributing: Some(true),
        };
        assert_eq!(
            copied(&line.values(2)),
            format!(
                "2\t4\t\\N\tg\\t1\t{member}\t\\N\t\\N\t\\N\t{}\t\\N\tt\n",
                ResourceType::User.code()
            )
        );
    }

    #[test]
    fn inserts_stay_under_the_variable_limit() {
        let rows: Vec<Vec<Value>> = (0..2000)
            .map(|i| (0..11).map(|j| Value::Int(Some(i * 11 + j))).collect())
            .collect();
        let statements = insert_batches("INSERT INTO t (a) ", rows, " ON CONFLICT DO NOTHING");
        let per_statement = MAX_VARIABLES / 11;
        assert_eq!(statements.len(), 2000usize.div_ceil(per_statement));
        for insert in &statements {
            assert!(insert
                .text()
                .starts_with("INSERT INTO t (a) VALUES ($1, $2,"));
            assert!(insert.text().ends_with(") ON CONFLICT DO NOTHING"));
            let placeholders = insert.text().matches('$').count();
            assert!(placeholders <= MAX_VARIABLES);
            assert_eq!(placeholders % 11, 0);
        }
        let last = statements.last().unwrap().text();
        let rows_in_last = 2000 % per_statement;
        assert!(last.contains(&format!("${})", rows_in_last * 11)));
        assert!(!last.contains(&format!("${}", rows_in_last * 11 + 1)));
    }

    #[test]
    fn sqlite_stages_an_absent_list_as_an_empty_one() {
        let tags = super::super::query::TextList(vec!["t".to_owned()]);
        let row = vec![
            Value::Texts(None),
            Value::Text(None),
            Value::Texts(Some(tags.clone())),
        ];
        assert_eq!(
            no_null_lists(row),
            vec![
                Value::Texts(Some(super::super::query::TextList(Vec::new()))),
                Value::Text(None),
                Value::Texts(Some(tags)),
            ]
        );
    }

    #[test]
    fn no_rows_make_no_inserts() {
        assert!(insert_batches("INSERT INTO t (a) ", Vec::new(), "").is_empty());
    }

    #[test]
    fn a_resource_line_has_a_value_per_column() {
        let line = StagedResource {
            line: 1,
            new_id: ResourceId(Uuid::from_u128(1)),
            external_id: None,
            identifier: Some("u".to_owned()),
            ty: ResourceType::User,
            subtype: None,
            displayname: None,
            description: None,
            notes: None,
            tags: Some(vec!["t".to_owned()]),
            active: true,
            expires_at: None,
            present: 0,
            delete: false,
        };
        let columns = StagedResource::COLUMNS.split(',').count();
        assert_eq!(line.values(0).len(), columns);
        let columns = StagedLine::COLUMNS.split(',').count();
        let line = StagedLine {
            line: 1,
            group: GroupRef::Scope,
            member: MemberRef::Id(ResourceId(Uuid::from_u128(2))),
            member_type: None,
            member_name: None,
            contributing: None,
        };
        assert_eq!(line.values(0).len(), columns);
    }
}
