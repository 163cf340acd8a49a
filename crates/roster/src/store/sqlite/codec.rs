//! How SQLite stores roster's types: a [`TextList`] is a JSON array in a text column.

use crate::store::query::TextList;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{Decode, Encode, Sqlite, Type};

impl Type<Sqlite> for TextList {
    fn type_info() -> SqliteTypeInfo {
        <Json<Vec<String>> as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <Json<Vec<String>> as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for TextList {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <Json<&Vec<String>> as Encode<Sqlite>>::encode(Json(&self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for TextList {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(
            <Json<Vec<String>> as Decode<Sqlite>>::decode(value)?.0,
        ))
    }
}
