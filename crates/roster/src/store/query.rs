//! The one convention for SQL text and parameters: a statement's text with `$1`, `$2`, …
//! placeholders (which both PostgreSQL and SQLite read), and its arguments as backend-neutral
//! [`Value`]s, bound by the transaction that runs it.

use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use sqlx::{Arguments, Database, Encode, Type};
use std::borrow::Cow;
use uuid::Uuid;

/// A list of texts in one column (a resource's tags, a token's scopes): a `text[]` on
/// PostgreSQL, a JSON array on SQLite (each backend encodes and decodes it, see `postgres` and
/// `sqlite`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextList(pub Vec<String>);

/// A value bound to one parameter of a statement. Each kind but `Bytes` is nullable.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uuid(Option<Uuid>),
    Small(Option<i16>),
    Int(Option<i32>),
    Big(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
    Json(Option<serde_json::Value>),
    Texts(Option<TextList>),
    Bytes(Vec<u8>),
}

/// A Rust type that binds as one kind of [`Value`].
pub trait Scalar: Sized {
    fn value(v: Option<Self>) -> Value;
}

impl<T: Scalar> From<T> for Value {
    fn from(v: T) -> Self {
        T::value(Some(v))
    }
}

impl<T: Scalar> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        T::value(v)
    }
}

impl Scalar for Uuid {
    fn value(v: Option<Self>) -> Value {
        Value::Uuid(v)
    }
}

impl Scalar for ResourceId {
    fn value(v: Option<Self>) -> Value {
        Value::Uuid(v.map(|id| id.0))
    }
}

impl Scalar for OperationId {
    fn value(v: Option<Self>) -> Value {
        Value::Big(v.map(|id| id.0))
    }
}

impl Scalar for i16 {
    fn value(v: Option<Self>) -> Value {
        Value::Small(v)
    }
}

impl Scalar for i32 {
    fn value(v: Option<Self>) -> Value {
        Value::Int(v)
    }
}

impl Scalar for i64 {
    fn value(v: Option<Self>) -> Value {
        Value::Big(v)
    }
}

impl Scalar for f64 {
    fn value(v: Option<Self>) -> Value {
        Value::Float(v)
    }
}

impl Scalar for bool {
    fn value(v: Option<Self>) -> Value {
        Value::Bool(v)
    }
}

impl Scalar for String {
    fn value(v: Option<Self>) -> Value {
        Value::Text(v)
    }
}

impl Scalar for &str {
    fn value(v: Option<Self>) -> Value {
        Value::Text(v.map(str::to_owned))
    }
}

impl Scalar for &String {
    fn value(v: Option<Self>) -> Value {
        Value::Text(v.cloned())
    }
}

impl Scalar for DateTime<Utc> {
    fn value(v: Option<Self>) -> Value {
        Value::Time(v)
    }
}

impl Scalar for serde_json::Value {
    fn value(v: Option<Self>) -> Value {
        Value::Json(v)
    }
}

impl From<TextList> for Value {
    fn from(v: TextList) -> Self {
        Value::Texts(Some(v))
    }
}

impl From<Option<TextList>> for Value {
    fn from(v: Option<TextList>) -> Self {
        Value::Texts(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

/// A statement and its arguments.
#[derive(Debug, Clone)]
pub struct Sql {
    text: Cow<'static, str>,
    args: Vec<Value>,
    replanned: bool,
}

impl Sql {
    /// A statement whose placeholders the following [`Sql::bind`]s fill, in order.
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
            replanned: false,
        }
    }

    /// Plans the statement afresh, with its arguments, each time it runs, instead of keeping it
    /// prepared. For a lookup into a table that grows from empty under one connection: a kept
    /// statement may settle on its generic plan while the table is tiny (a scan, then the
    /// cheapest) and keep it as the table grows, unless an ANALYZE happens to invalidate it.
    pub fn replanned(mut self) -> Self {
        self.replanned = true;
        self
    }

    /// Whether the statement is kept prepared on its connection.
    pub(super) fn persistent(&self) -> bool {
        !self.replanned
    }

    /// Binds the next placeholder (`$1` first).
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends text.
    pub fn push(&mut self, text: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.text.to_mut(), "{text}");
        self
    }

    /// Appends a new placeholder and binds `value` to it.
    pub fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        let n = self.args.len();
        self.text.to_mut().push_str(&format!("${n}"));
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// How many arguments are bound.
    #[cfg(test)]
    pub fn args_len(&self) -> usize {
        self.args.len()
    }

    /// The highest `$N` placeholder of `text` (0 when it has none).
    #[cfg(test)]
    pub fn highest_placeholder(text: &str) -> usize {
        text.split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// The backend's arguments for this statement.
    pub(super) fn arguments<'q, DB>(&'q self) -> Result<DB::Arguments<'q>, sqlx::Error>
    where
        DB: Database,
        Option<Uuid>: Encode<'q, DB> + Type<DB>,
        Option<i16>: Encode<'q, DB> + Type<DB>,
        Option<i32>: Encode<'q, DB> + Type<DB>,
        Option<i64>: Encode<'q, DB> + Type<DB>,
        Option<f64>: Encode<'q, DB> + Type<DB>,
        Option<bool>: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
        Option<sqlx::types::Json<&'q serde_json::Value>>: Encode<'q, DB> + Type<DB>,
        Option<&'q TextList>: Encode<'q, DB> + Type<DB>,
        &'q [u8]: Encode<'q, DB> + Type<DB>,
    {
        let mut out = DB::Arguments::default();
        for value in &self.args {
            match value {
                Value::Uuid(v) => out.add(*v),
                Value::Small(v) => out.add(*v),
                Value::Int(v) => out.add(*v),
                Value::Big(v) => out.add(*v),
                Value::Float(v) => out.add(*v),
                Value::Bool(v) => out.add(*v),
                Value::Text(v) => out.add(v.as_deref()),
                Value::Time(v) => out.add(*v),
                Value::Json(v) => out.add(v.as_ref().map(sqlx::types::Json)),
                Value::Texts(v) => out.add(v.as_ref()),
                Value::Bytes(v) => out.add(v.as_slice()),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(out)
    }
}
